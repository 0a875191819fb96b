//! Loads the XDP object, pins every map under the pin path (reusing maps a previous
//! controller pinned, so enforcement never resets), and attaches the programs through pinned
//! XDP links: a running program keeps enforcing after the controller exits or is killed, and
//! a restarted controller swaps in its program atomically (`bpf_link_update`).
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use gateway_ebpf::{maps as abi, programs};

use crate::config::{AttachMode, DatapathConfig};

/// The XDP object, built by build.rs from gateway-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/iotgw-xdp"));

/// The embedded XDP object (empty when built with `AYA_BUILD_SKIP`).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// bpffs magic number (statfs f_type), to tell whether /sys/fs/bpf is mounted.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The binary was built with `AYA_BUILD_SKIP`, so it carries no XDP object.
    #[error("this iotgw binary was built without its XDP object (AYA_BUILD_SKIP); rebuild it")]
    NoObject,
    #[error("cannot prepare bpffs at {path}: {message}")]
    BpfFs { path: PathBuf, message: String },
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program { name: &'static str, source: aya::programs::ProgramError },
    #[error("interface {interface}: {message}")]
    Attach { interface: String, message: String },
}

/// How a program ended up attached.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub interface: String,
    pub program: &'static str,
    /// "driver" (native) or "skb" (generic).
    pub mode: &'static str,
    /// True when an existing pinned link was updated in place.
    pub replaced: bool,
}

/// The loaded object (maps still inside, for `maps::Maps::take`) and what was attached.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub attachments: Vec<Attachment>,
}

/// Makes sure bpffs is mounted and the pin directories exist.
pub fn prepare_bpffs(pin_path: &Path) -> Result<(), LoadError> {
    let fail = |message: String| LoadError::BpfFs { path: pin_path.to_owned(), message };
    let root = Path::new("/sys/fs/bpf");
    let mounted = nix::sys::statfs::statfs(root)
        .map(|fs| fs.filesystem_type().0 as i64 == BPF_FS_MAGIC)
        .unwrap_or(false);
    if !mounted {
        std::fs::create_dir_all(root).map_err(|e| fail(e.to_string()))?;
        nix::mount::mount(Some("bpf"), root, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|e| fail(format!("mount -t bpf: {e}")))?;
        tracing::info!(path = %root.display(), "mounted bpffs");
    }
    std::fs::create_dir_all(pin_path.join("links")).map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// Loads the object with its maps pinned under `config.pin_path`, then attaches the LAN
/// program (and the WAN one if configured).
pub fn load_and_attach(config: &DatapathConfig) -> Result<Loaded, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    prepare_bpffs(&config.pin_path)?;
    forget_stale_pins(&config.pin_path);
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&config.pin_path)
        .map_max_entries(abi::DEVICES, config.devices_capacity)
        .map_max_entries(abi::DEVICE_STATS, config.devices_capacity)
        .map_max_entries(abi::DEVICE_IPV4, config.devices_capacity)
        .map_max_entries(abi::FLOWS, config.flows_capacity)
        .load(OBJECT)?;
    if let Err(error) = aya_log::EbpfLogger::init(&mut ebpf) {
        // Only debug paths log from XDP; without them there is nothing to forward.
        tracing::debug!(%error, "aya-log not initialised");
    }
    let mut attachments = Vec::new();
    attachments.push(attach(&mut ebpf, programs::LAN_INGRESS, &config.lan_interface, config)?);
    if let Some(wan) = &config.wan_interface {
        attachments.push(attach(&mut ebpf, programs::WAN_INGRESS, wan, config)?);
    }
    for a in &attachments {
        tracing::info!(interface = %a.interface, program = a.program, mode = a.mode, replaced = a.replaced, "XDP attached");
    }
    Ok(Loaded { ebpf, attachments })
}

/// Pinned maps of another ABI may have other layouts: when the pinned `CONFIG` holds another
/// `ABI_VERSION`, or a pinned map's value size is not this build's (pins from before a layout
/// change, whose `CONFIG` cannot even be read as today's `GatewayConfig`), drop the map pins
/// (not the links) so the load creates fresh maps. Returns whether it did.
pub fn forget_stale_pins(pin_path: &Path) -> bool {
    let mismatch = VALUE_SIZES.iter().find_map(|&(name, size)| {
        let info = aya::maps::MapInfo::from_pin(pin_path.join(name)).ok()?;
        (info.value_size() as usize != size).then(|| format!("{name} holds {}-byte values, this build {size}", info.value_size()))
    });
    let stale = mismatch.or_else(|| {
        let map = aya::maps::MapData::from_pin(pin_path.join(abi::CONFIG)).ok()?;
        let array = aya::maps::Array::<_, gateway_ebpf::GatewayConfig>::try_from(aya::maps::Map::Array(map)).ok()?;
        let config = array.get(&0, 0).ok()?;
        let known = config.abi_version == gateway_ebpf::ABI_VERSION || config.abi_version == 0;
        (!known).then(|| format!("CONFIG is of ABI {}", config.abi_version))
    });
    let Some(why) = stale else { return false };
    tracing::warn!(%why, expected = gateway_ebpf::ABI_VERSION, "pinned maps have another ABI; recreating them");
    for name in PINNED_MAPS {
        let _ = std::fs::remove_file(pin_path.join(name));
    }
    true
}

/// Value sizes of the pinned maps whose layout is an ABI struct (per CPU for per-CPU maps).
const VALUE_SIZES: [(&str, usize); 6] = [
    (abi::CONFIG, size_of::<gateway_ebpf::GatewayConfig>()),
    (abi::FLOWS, size_of::<gateway_ebpf::FlowStats>()),
    (abi::DEVICES, size_of::<gateway_ebpf::DeviceEntry>()),
    (abi::DEVICE_STATS, size_of::<gateway_ebpf::DeviceStats>()),
    (abi::POLICY_V4, size_of::<gateway_ebpf::PolicyRule>()),
    (abi::POLICY_V6, size_of::<gateway_ebpf::PolicyRule>()),
];

/// Every map the object pins.
pub const PINNED_MAPS: [&str; 10] = [
    abi::DEVICES,
    abi::DEVICE_IPV4,
    abi::DEVICE_STATS,
    abi::FLOWS,
    abi::POLICY_V4,
    abi::POLICY_V6,
    abi::CONFIG,
    abi::GLOBAL_STATS,
    abi::REDIRECT_PORTS,
    abi::EVENTS,
];

fn link_pin(pin_path: &Path, program: &str, interface: &str) -> PathBuf {
    pin_path.join("links").join(format!("{program}@{interface}"))
}

/// Attaches `program` to `interface`, reusing (atomically replacing) a pinned link if a
/// previous controller left one.
pub fn attach(ebpf: &mut Ebpf, program: &'static str, interface: &str, config: &DatapathConfig) -> Result<Attachment, LoadError> {
    let xdp: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or(LoadError::Program { name: program, source: aya::programs::ProgramError::NotLoaded })?
        .try_into()
        .map_err(|source| LoadError::Program { name: program, source })?;
    xdp.load().map_err(|source| LoadError::Program { name: program, source })?;
    let pin = link_pin(&config.pin_path, program, interface);
    let attach_error = |message: String| LoadError::Attach { interface: interface.to_owned(), message };

    if let Ok(pinned) = PinnedLink::from_pin(&pin) {
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| attach_error(format!("pinned link {}: {e}", pin.display())))?;
        xdp.attach_to_link(link).map_err(|e| attach_error(format!("replacing pinned link: {e}")))?;
        // The pin stays; the in-memory link is leaked on purpose so dropping `Ebpf` on exit
        // cannot detach what the pin keeps attached.
        return Ok(Attachment { interface: interface.to_owned(), program, mode: "pinned", replaced: true });
    }

    let modes: &[(XdpMode, &'static str)] = match config.attach_mode {
        AttachMode::Native => &[(XdpMode::Driver, "driver")],
        AttachMode::Generic => &[(XdpMode::Skb, "skb")],
        AttachMode::Auto => &[(XdpMode::Driver, "driver"), (XdpMode::Skb, "skb")],
    };
    let mut last_error = String::new();
    for &(mode, mode_name) in modes {
        match xdp.attach(interface, mode) {
            Ok(id) => {
                if mode_name == "skb" && config.attach_mode == AttachMode::Auto {
                    tracing::warn!(interface, %last_error, "native XDP unavailable; running in generic (skb) mode, slower");
                }
                let link = xdp.take_link(id).map_err(|e| attach_error(e.to_string()))?;
                let fd_link = FdLink::try_from(link)
                    .map_err(|e| attach_error(format!("kernel without bpf_link for XDP: {e}")))?;
                fd_link.pin(&pin).map_err(|e| attach_error(format!("pinning link at {}: {e}", pin.display())))?;
                return Ok(Attachment { interface: interface.to_owned(), program, mode: mode_name, replaced: false });
            }
            Err(error) => last_error = error.to_string(),
        }
    }
    Err(attach_error(last_error))
}

/// Removes the pinned links (detaching the programs) and the pinned maps: `iotgw detach`.
pub fn detach_all(pin_path: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(pin_path.join("links")) {
        for entry in entries.flatten() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    for name in PINNED_MAPS {
        if std::fs::remove_file(pin_path.join(name)).is_ok() {
            removed += 1;
        }
    }
    let _ = std::fs::remove_dir(pin_path.join("links"));
    let _ = std::fs::remove_dir(pin_path);
    Ok(removed)
}
