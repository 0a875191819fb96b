//! Loads the XDP object, pins every map under the pin path (reusing maps a previous
//! controller pinned, so enforcement never resets), and attaches the programs through pinned
//! XDP links: a running program keeps enforcing after the controller exits or is killed, and
//! a restarted controller swaps in its program atomically (`bpf_link_update`).
//!
//! Attach modes: native (driver) XDP where the interface's driver has it, generic (skb) XDP
//! elsewhere (macvlan, ipvlan, bridges, tunnels...). `auto` tries native, then generic with a
//! warning. A link pin's name records the mode it was attached in (the kernel's link info for
//! XDP holds only the ifindex), so a restarted controller reports the mode it really reuses.
//! Generic XDP on a stacked interface (a macvlan on a NIC, a VLAN) sees only the frames the
//! stack hands to that interface: frames addressed to the lower device's MAC bypass it (the
//! netns lab showed them forwarded and delivered locally), so the lower device must drop IP
//! itself (`net.ipv4.conf.<lower>.rp_filter=1`, IPv6 disabled on it).
//! Reads the object and `DatapathConfig`; writes bpffs pins and the interfaces' XDP hooks.
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

use super::{AttachMode, DatapathConfig, capacity};
use crate::{
    datapath::xdp_log::{self, XdpLog},
    error_chain::error_chain,
};

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
    #[error("cannot tell the possible CPUs: {0}")]
    Cpus(String),
}

/// The XDP mode a link was attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Native XDP, in the driver.
    Driver,
    /// Generic XDP, on the skb after the driver.
    Skb,
}

impl LinkMode {
    /// The name used in logs, the API and link pin names.
    pub fn name(self) -> &'static str {
        match self {
            LinkMode::Driver => "driver",
            LinkMode::Skb => "skb",
        }
    }

    fn xdp_mode(self) -> XdpMode {
        match self {
            LinkMode::Driver => XdpMode::Driver,
            LinkMode::Skb => XdpMode::Skb,
        }
    }
}

/// Logged with the generic fallback: the usual reason for it is a stacked interface.
const GENERIC_ON_STACKED_HINT: &str = "if this interface is stacked on another (macvlan, VLAN), frames to the lower \
     device's MAC bypass XDP: set net.ipv4.conf.<lower>.rp_filter=1 and disable IPv6 on it";

/// Mode name of a pin left by a controller that did not record the mode in pin names.
pub const UNKNOWN_MODE: &str = "unknown";

/// The modes to try, in order, for a configured attach mode.
pub fn modes_to_try(attach_mode: AttachMode) -> &'static [LinkMode] {
    match attach_mode {
        AttachMode::Native => &[LinkMode::Driver],
        AttachMode::Generic => &[LinkMode::Skb],
        AttachMode::Auto => &[LinkMode::Driver, LinkMode::Skb],
    }
}

/// True when a pinned link attached in `pinned` mode is not what `attach_mode` asks for
/// (`auto` accepts either; an unrecorded mode cannot be judged).
pub fn pinned_mode_conflicts(attach_mode: AttachMode, pinned: Option<LinkMode>) -> bool {
    matches!(
        (attach_mode, pinned),
        (AttachMode::Native, Some(LinkMode::Skb)) | (AttachMode::Generic, Some(LinkMode::Driver))
    )
}

/// How a program ended up attached.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub interface: String,
    pub program: &'static str,
    /// "driver" (native), "skb" (generic), or `UNKNOWN_MODE` for a reused pin of an older
    /// controller; "tcx" for the LAN egress observer (`lan_egress::TCX`).
    pub mode: &'static str,
    /// True when an existing pinned link was updated in place.
    pub replaced: bool,
    /// How long loading the program took (the kernel verifying it): on a fresh start, most
    /// of the time before the device table is enforced.
    pub load_time: std::time::Duration,
}

/// Whether the pins (links and maps) outlive this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinPersistence {
    /// The pin path is on the bpffs the host's init process (PID 1) sees: the programs keep
    /// enforcing after the controller stops, crashes or is killed.
    Host,
    /// The pins die with this process (a private bpffs in a mount namespace of its own, as
    /// `ip netns exec` makes; or no bpffs at all): XDP detaches when the controller exits,
    /// and only the next start's restore from the store brings enforcement back.
    Private { why: String },
}

impl PinPersistence {
    /// One word for the start-up log line.
    pub fn describe(&self) -> &'static str {
        match self {
            PinPersistence::Host => "host",
            PinPersistence::Private { .. } => "private",
        }
    }
}

/// Judges pin persistence from the pin path's filesystem (`own`: its device and statfs
/// type) and the devices of the bpffs mounts PID 1 sees (`host`, from `/proc/1/mountinfo`;
/// `None` when unreadable). Every bpffs mount is a new instance with a device of its own, so
/// the pins outlive this process only when their device is one of the host's.
pub fn judge_pins(pin_path: &Path, own: Option<(u64, i64)>, host: Option<&[u64]>) -> PinPersistence {
    let path = pin_path.display();
    match (own, host) {
        (None, _) => PinPersistence::Private { why: format!("{path} cannot be examined") },
        (Some((_, kind)), _) if kind != BPF_FS_MAGIC => {
            PinPersistence::Private { why: format!("{path} is not on a bpffs") }
        }
        (Some(_), None) => PinPersistence::Private {
            why: "the host's mounts (/proc/1/mountinfo) cannot be read, so the pins may be private".to_owned(),
        },
        (Some((own, _)), Some(host)) if !host.contains(&own) => PinPersistence::Private {
            why: format!(
                "the bpffs holding {path} is not mounted in the host's mount namespace (a private mount, e.g. \
                 under `ip netns exec`)"
            ),
        },
        (Some(_), Some(_)) => PinPersistence::Host,
    }
}

/// The devices of the bpffs mounts in `mountinfo` text (proc(5): field 3 is `major:minor`,
/// the filesystem type follows the ` - ` separator).
pub fn bpffs_devices(mountinfo: &str) -> Vec<u64> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let separator = fields.iter().position(|f| *f == "-")?;
            if fields.get(separator + 1) != Some(&"bpf") {
                return None;
            }
            let (major, minor) = fields.get(2)?.split_once(':')?;
            Some(nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?))
        })
        .collect()
}

/// Whether pins under `pin_path` (prepared by `prepare_bpffs`) outlive this process.
pub fn pin_persistence(pin_path: &Path) -> PinPersistence {
    use std::os::unix::fs::MetadataExt as _;
    let own = std::fs::metadata(pin_path).ok().and_then(|meta| {
        let kind = nix::sys::statfs::statfs(pin_path).ok()?.filesystem_type().0;
        Some((meta.dev(), kind))
    });
    let host = std::fs::read_to_string("/proc/1/mountinfo").ok().map(|text| bpffs_devices(&text));
    judge_pins(pin_path, own, host.as_deref())
}

/// The loaded object (maps still inside, for `maps::Maps::take`) and what was attached.
pub struct Loaded {
    /// Whether the pins outlive this process (warned about at load when they do not).
    pub pins: PinPersistence,
    pub ebpf: Ebpf,
    pub attachments: Vec<Attachment>,
    /// The programs' log records, to forward with `XdpLog::forward` (None when the object
    /// has no log ring buffer: the failure was logged).
    pub xdp_log: Option<XdpLog>,
}

/// Makes sure bpffs is mounted and the pin directories exist.
pub fn prepare_bpffs(pin_path: &Path) -> Result<(), LoadError> {
    let fail = |message: String| LoadError::BpfFs { path: pin_path.to_owned(), message };
    let root = Path::new("/sys/fs/bpf");
    let mounted = nix::sys::statfs::statfs(root).map(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC).unwrap_or(false);
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
/// Loads the programs and opens (or creates) the pinned maps, without attaching anything:
/// the caller writes the configuration and policy first, so fresh maps (first start, or an
/// ABI change that recreated them) never meet traffic unconfigured. Then `attach_all`.
pub fn load(config: &DatapathConfig) -> Result<Loaded, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    prepare_bpffs(&config.pin_path)?;
    let pins = pin_persistence(&config.pin_path);
    if let PinPersistence::Private { why } = &pins {
        tracing::warn!(
            pin_path = %config.pin_path.display(),
            %why,
            "PINS ARE PRIVATE: enforcement will NOT survive a controller crash or stop (XDP detaches with this \
             process; the next start restores the device table from the store). Run the controller in the host's \
             mount namespace (`nsenter --net=...`, not `ip netns exec`) to keep enforcing through a crash"
        );
    }
    let sizes = capacity::capacities(config, possible_cpus()?);
    forget_stale_pins(&config.pin_path, &sizes);
    let log_level = xdp_log::level_for(tracing::level_filters::LevelFilter::current());
    let mut loader = object_loader(&config.pin_path, &sizes)?;
    xdp_log::set_level(&mut loader, &log_level);
    let mut ebpf = loader.load(OBJECT)?;
    let xdp_log = match XdpLog::take(&mut ebpf) {
        Ok(xdp_log) => Some(xdp_log),
        Err(error) => {
            // Enforcement does not depend on it: go on, but say the programs are mute.
            tracing::warn!(%error, "XDP log lines will not be forwarded");
            None
        }
    };
    Ok(Loaded { pins, ebpf, attachments: Vec::new(), xdp_log })
}

/// The possible CPUs (`/sys/devices/system/cpu/possible`), read once: the copies of a per-CPU
/// value, and the elements per slot of `DEVICE_STATS` (`gateway_ebpf::N_CPUS_GLOBAL`).
pub fn possible_cpus() -> Result<u32, LoadError> {
    possible_cpus_ref().copied()
}

fn possible_cpus_ref() -> Result<&'static u32, LoadError> {
    static CPUS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if let Some(cpus) = CPUS.get() {
        return Ok(cpus);
    }
    let cpus = aya::util::nr_cpus()
        .map_err(|(path, e)| LoadError::Cpus(format!("{path}: {e}")))
        .and_then(|n| u32::try_from(n).map_err(|e| LoadError::Cpus(e.to_string())))?;
    Ok(CPUS.get_or_init(|| cpus))
}

/// A loader of the object with its maps pinned under `pin_path`, sized by `sizes` (name,
/// `max_entries`; `DEVICE_STATS`, unless given, one CPU's capacity of the object times the
/// possible CPUs), and the possible CPUs patched into the programs (`N_CPUS_GLOBAL`). Every
/// loader of the object goes through here (the controller's, tests', the benchmark's): an
/// object loaded without it counts no device in `DEVICES`.
pub fn object_loader<'a>(pin_path: &Path, sizes: &[(&'a str, u32)]) -> Result<EbpfLoader<'a>, LoadError> {
    let cpus = possible_cpus_ref()?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin_path);
    loader.map_max_entries(abi::DEVICE_STATS, capacity::device_stats_entries(abi::DEVICE_STATS_CAPACITY, *cpus));
    for &(map, max_entries) in sizes {
        loader.map_max_entries(map, max_entries);
    }
    loader.override_global(gateway_ebpf::N_CPUS_GLOBAL, cpus, true);
    Ok(loader)
}

/// Attaches (or atomically swaps in) the LAN and WAN programs of `loaded`, then the LAN
/// egress observer (`lan_egress`), without which the gateway still enforces: it is warned
/// about, not fatal.
pub fn attach_all(loaded: &mut Loaded, config: &DatapathConfig) -> Result<(), LoadError> {
    loaded.attachments.push(attach(&mut loaded.ebpf, programs::LAN_INGRESS, &config.lan_interface, config)?);
    if let Some(wan) = &config.wan_interface {
        loaded.attachments.push(attach(&mut loaded.ebpf, programs::WAN_INGRESS, wan, config)?);
    }
    for a in &loaded.attachments {
        tracing::info!(
            interface = %a.interface,
            program = a.program,
            mode = a.mode,
            replaced = a.replaced,
            load_ms = a.load_time.as_millis() as u64,
            "XDP attached"
        );
    }
    match super::lan_egress::attach(&mut loaded.ebpf, &config.lan_interface, &config.pin_path) {
        Ok(a) => tracing::info!(
            interface = %a.interface,
            program = a.program,
            mode = a.mode,
            replaced = a.replaced,
            "LAN egress observer attached (answers of a DNS resolver on the gateway open DNS-name rules)"
        ),
        Err(error) => tracing::warn!(
            error = %error_chain(&error),
            "LAN egress observer not attached: answers of a DNS resolver on the gateway itself open no DNS-name \
             rules (only answers from upstream do)"
        ),
    }
    Ok(())
}

/// Pinned maps of another ABI may have other layouts: when the pinned `CONFIG` holds another
/// `ABI_VERSION`, a pinned map's key or value size is not this build's (pins from before a
/// layout change, whose `CONFIG` cannot even be read as today's `GatewayConfig`), or a map
/// this build no longer has is still pinned (`abi::RETIRED`) or `DEVICE_STATS` is of another
/// map type (per-CPU before ABI 9), drop the map pins (not the
/// links) so the load creates fresh maps. A pin of another size than `sizes`
/// (`capacity::capacities`) is dropped the same way: the kernel cannot resize a map. The
/// store refills the device table before the programs are swapped in. Returns whether it did.
pub fn forget_stale_pins(pin_path: &Path, sizes: &[capacity::Capacity]) -> bool {
    let mismatch = LAYOUTS.iter().find_map(|&(name, key, value)| {
        let info = aya::maps::MapInfo::from_pin(pin_path.join(name)).ok()?;
        let pinned = (info.key_size() as usize, info.value_size() as usize);
        (pinned != (key, value)).then(|| {
            format!("{name} holds {}-byte keys and {}-byte values, this build {key} and {value}", pinned.0, pinned.1)
        })
    });
    let retired =
        || abi::RETIRED.iter().find(|name| pin_path.join(name).exists()).map(|name| format!("{name} is retired"));
    // ABI 8's per-CPU `DEVICE_STATS` had today's key and value sizes.
    let retyped = || {
        let kind = aya::maps::MapInfo::from_pin(pin_path.join(abi::DEVICE_STATS)).ok()?.map_type().ok()?;
        (kind != aya::maps::MapType::Array)
            .then(|| format!("{} is a {kind:?}, this build's an array", abi::DEVICE_STATS))
    };
    let stale =
        mismatch.or_else(retired).or_else(retyped).or_else(|| capacity::mismatch(pin_path, sizes)).or_else(|| {
            let map = aya::maps::MapData::from_pin(pin_path.join(abi::CONFIG)).ok()?;
            let array =
                aya::maps::Array::<_, gateway_ebpf::GatewayConfig>::try_from(aya::maps::Map::Array(map)).ok()?;
            let config = array.get(&0, 0).ok()?;
            let known = config.abi_version == gateway_ebpf::ABI_VERSION || config.abi_version == 0;
            (!known).then(|| format!("CONFIG is of ABI {}", config.abi_version))
        });
    let Some(why) = stale else { return false };
    tracing::warn!(%why, expected = gateway_ebpf::ABI_VERSION, "pinned maps have another ABI or size; recreating them");
    for name in PINNED_MAPS.iter().chain(&abi::RETIRED) {
        let _ = std::fs::remove_file(pin_path.join(name));
    }
    true
}

/// Key and value sizes of the pinned maps whose layout is an ABI struct (values per CPU for
/// per-CPU maps; an LPM trie's key is its 4-byte prefix length, then the data).
const LAYOUTS: [(&str, usize, usize); 13] = [
    (abi::CONFIG, size_of::<u32>(), size_of::<gateway_ebpf::GatewayConfig>()),
    (abi::FLOWS_V4, size_of::<gateway_ebpf::FlowKeyV4>(), size_of::<gateway_ebpf::FlowStats>()),
    (abi::FLOWS_V6, size_of::<gateway_ebpf::FlowKey>(), size_of::<gateway_ebpf::FlowStats>()),
    (abi::DEVICES, size_of::<gateway_ebpf::MacKey>(), size_of::<gateway_ebpf::DeviceRecord>()),
    (abi::DEVICE_STATS, size_of::<u32>(), size_of::<gateway_ebpf::DeviceStats>()),
    (abi::UNKNOWN_DEVICE_STATS, size_of::<gateway_ebpf::MacKey>(), size_of::<gateway_ebpf::DeviceStats>()),
    (abi::DEVICE_SLOTS, size_of::<u32>(), size_of::<gateway_ebpf::MacKey>()),
    (abi::POLICY_V4, size_of::<u32>() + size_of::<gateway_ebpf::PolicyKey<4>>(), size_of::<gateway_ebpf::PolicyRule>()),
    (
        abi::POLICY_V6,
        size_of::<u32>() + size_of::<gateway_ebpf::PolicyKey<16>>(),
        size_of::<gateway_ebpf::PolicyRule>(),
    ),
    (abi::SOURCE_BINDINGS_V4, size_of::<[u8; 4]>(), size_of::<gateway_ebpf::MacKey>()),
    (abi::SOURCE_BINDINGS_V6, size_of::<[u8; 16]>(), size_of::<gateway_ebpf::MacKey>()),
    (abi::SOURCE_VIOLATIONS, size_of::<gateway_ebpf::MacKey>(), size_of::<gateway_ebpf::SourceViolation>()),
    (abi::BUDGETS, size_of::<u32>(), size_of::<gateway_ebpf::BudgetWindows>()),
];

/// Every map the object pins.
pub const PINNED_MAPS: [&str; 18] = [
    abi::DEVICES,
    abi::DEVICE_IPV4,
    abi::DEVICE_STATS,
    abi::UNKNOWN_DEVICE_STATS,
    abi::DEVICE_SLOTS,
    abi::CHANGED_DEVICES,
    abi::FLOWS_V4,
    abi::FLOWS_V6,
    abi::POLICY_V4,
    abi::POLICY_V6,
    abi::CONFIG,
    abi::GLOBAL_STATS,
    abi::REDIRECT_PORTS,
    abi::EVENTS,
    abi::SOURCE_BINDINGS_V4,
    abi::SOURCE_BINDINGS_V6,
    abi::SOURCE_VIOLATIONS,
    abi::BUDGETS,
];

/// Where the link of `program` on `interface` attached in `mode` is pinned:
/// `links/{program}@{interface}:{mode}`. bpffs refuses dots in names (reserved for the
/// kernel), and VLAN interfaces have one (`eth0.100`), so dots become colons: interface
/// names never contain a colon, so the name stays unambiguous.
fn link_pin(pin_path: &Path, program: &str, interface: &str, mode: Option<LinkMode>) -> PathBuf {
    match mode {
        Some(mode) => tagged_link_pin(pin_path, program, interface, mode.name()),
        // Controllers before the mode was recorded (which could not pin dotted names).
        None => pin_path.join("links").join(format!("{program}@{interface}")),
    }
}

/// `links/{program}@{interface}:{tag}`, dots in `interface` made colons (see `link_pin`).
pub(super) fn tagged_link_pin(pin_path: &Path, program: &str, interface: &str, tag: &str) -> PathBuf {
    pin_path.join("links").join(format!("{program}@{}:{tag}", interface.replace('.', ":")))
}

/// The pin a previous controller left for `program` on `interface`, and its mode if recorded.
pub fn existing_link_pin(pin_path: &Path, program: &str, interface: &str) -> Option<(PathBuf, Option<LinkMode>)> {
    [Some(LinkMode::Driver), Some(LinkMode::Skb), None]
        .into_iter()
        .map(|mode| (link_pin(pin_path, program, interface, mode), mode))
        .find(|(pin, _)| pin.exists())
}

/// Attaches `program` to `interface`, reusing (atomically replacing) a pinned link if a
/// previous controller left one.
pub fn attach(
    ebpf: &mut Ebpf,
    program: &'static str,
    interface: &str,
    config: &DatapathConfig,
) -> Result<Attachment, LoadError> {
    let xdp: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or(LoadError::Program { name: program, source: aya::programs::ProgramError::NotLoaded })?
        .try_into()
        .map_err(|source| LoadError::Program { name: program, source })?;
    let loading = std::time::Instant::now();
    xdp.load().map_err(|source| LoadError::Program { name: program, source })?;
    let load_time = loading.elapsed();
    let attach_error = |message: String| LoadError::Attach { interface: interface.to_owned(), message };

    if let Some((pin, pinned_mode)) = existing_link_pin(&config.pin_path, program, interface) {
        let pinned =
            PinnedLink::from_pin(&pin).map_err(|e| attach_error(format!("pinned link {}: {e}", pin.display())))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .map_err(|e| attach_error(format!("pinned link {}: {e}", pin.display())))?;
        xdp.attach_to_link(link).map_err(|e| attach_error(format!("replacing pinned link: {e}")))?;
        let mode = pinned_mode.map_or(UNKNOWN_MODE, LinkMode::name);
        if pinned_mode_conflicts(config.attach_mode, pinned_mode) {
            // Switching modes means detaching first (the kernel refuses native and generic
            // programs on one interface at once): a gap in enforcement, and if the new mode
            // then fails, no enforcement at all. So the running mode stays, loudly.
            tracing::warn!(interface, mode, configured = ?config.attach_mode,
                "the pinned XDP link runs in another mode than attach_mode asks; kept so enforcement never stops                  (to switch: `iotgw detach`, then start again)");
        }
        // The pin stays; the in-memory link is leaked on purpose so dropping `Ebpf` on exit
        // cannot detach what the pin keeps attached.
        return Ok(Attachment { interface: interface.to_owned(), program, mode, replaced: true, load_time });
    }

    // Failed attempts leave nothing behind: with bpf_link a failed attach attaches nothing,
    // and a link not yet pinned is detached when dropped on an error path below.
    let mut errors = Vec::new();
    for &mode in modes_to_try(config.attach_mode) {
        match xdp.attach(interface, mode.xdp_mode()) {
            Ok(id) => {
                if !errors.is_empty() {
                    tracing::warn!(
                        interface,
                        native_error = %errors.join("; "),
                        hint = GENERIC_ON_STACKED_HINT,
                        "native XDP unavailable; running in generic (skb) mode, slower"
                    );
                }
                let link = xdp.take_link(id).map_err(|e| attach_error(e.to_string()))?;
                let fd_link = FdLink::try_from(link)
                    .map_err(|e| attach_error(format!("kernel without bpf_link for XDP: {e}")))?;
                let pin = link_pin(&config.pin_path, program, interface, Some(mode));
                fd_link.pin(&pin).map_err(|e| attach_error(format!("pinning link at {}: {e}", pin.display())))?;
                return Ok(Attachment {
                    interface: interface.to_owned(),
                    program,
                    mode: mode.name(),
                    replaced: false,
                    load_time,
                });
            }
            // aya's attach errors keep the errno in a source.
            Err(error) => errors.push(format!("{} mode: {}", mode.name(), error_chain(&error))),
        }
    }
    Err(attach_error(errors.join("; ")))
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
    for name in PINNED_MAPS.iter().chain(&abi::RETIRED) {
        if std::fs::remove_file(pin_path.join(name)).is_ok() {
            removed += 1;
        }
    }
    let _ = std::fs::remove_dir(pin_path.join("links"));
    let _ = std::fs::remove_dir(pin_path);
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tries_native_then_generic_and_explicit_modes_try_only_themselves() {
        assert_eq!(modes_to_try(AttachMode::Auto), [LinkMode::Driver, LinkMode::Skb]);
        assert_eq!(modes_to_try(AttachMode::Native), [LinkMode::Driver]);
        assert_eq!(modes_to_try(AttachMode::Generic), [LinkMode::Skb]);
    }

    #[test]
    fn a_pinned_link_conflicts_only_with_the_other_explicit_mode() {
        assert!(pinned_mode_conflicts(AttachMode::Native, Some(LinkMode::Skb)));
        assert!(pinned_mode_conflicts(AttachMode::Generic, Some(LinkMode::Driver)));
        assert!(!pinned_mode_conflicts(AttachMode::Native, Some(LinkMode::Driver)));
        assert!(!pinned_mode_conflicts(AttachMode::Generic, Some(LinkMode::Skb)));
        assert!(!pinned_mode_conflicts(AttachMode::Auto, Some(LinkMode::Skb)), "auto takes what runs");
        assert!(!pinned_mode_conflicts(AttachMode::Auto, Some(LinkMode::Driver)));
        assert!(!pinned_mode_conflicts(AttachMode::Native, None), "an unrecorded mode cannot be judged");
    }

    #[test]
    fn link_pin_names_record_the_mode_and_never_contain_a_dot() {
        let root = Path::new("/sys/fs/bpf/iotgw");
        assert_eq!(link_pin(root, "iotgw_lan", "lan0", Some(LinkMode::Skb)), root.join("links/iotgw_lan@lan0:skb"));
        assert_eq!(
            link_pin(root, "iotgw_wan", "wan0", Some(LinkMode::Driver)),
            root.join("links/iotgw_wan@wan0:driver")
        );
        let vlan = link_pin(root, "iotgw_lan", "eth0.100", Some(LinkMode::Driver));
        assert_eq!(vlan.file_name().and_then(|n| n.to_str()), Some("iotgw_lan@eth0:100:driver"));
        assert_eq!(
            link_pin(root, "iotgw_lan", "lan0", None),
            root.join("links/iotgw_lan@lan0"),
            "older controllers' name"
        );
    }

    #[test]
    fn existing_link_pin_finds_the_recorded_mode_or_an_older_unrecorded_pin() {
        let dir = iotgw_test_support::services::scratch("loader-test");
        std::fs::create_dir_all(dir.join("links")).unwrap();
        assert_eq!(existing_link_pin(&dir, "iotgw_lan", "lan0"), None, "nothing pinned yet");

        let skb = link_pin(&dir, "iotgw_lan", "lan0", Some(LinkMode::Skb));
        std::fs::write(&skb, b"").unwrap();
        assert_eq!(existing_link_pin(&dir, "iotgw_lan", "lan0"), Some((skb.clone(), Some(LinkMode::Skb))));
        assert_eq!(existing_link_pin(&dir, "iotgw_wan", "lan0"), None, "another program's pin");
        assert_eq!(existing_link_pin(&dir, "iotgw_lan", "lan1"), None, "another interface's pin");
        std::fs::remove_file(&skb).unwrap();

        let legacy = link_pin(&dir, "iotgw_lan", "lan0", None);
        std::fs::write(&legacy, b"").unwrap();
        assert_eq!(existing_link_pin(&dir, "iotgw_lan", "lan0"), Some((legacy, None)));
    }

    #[test]
    fn pins_persist_only_on_the_hosts_bpffs() {
        let path = Path::new("/sys/fs/bpf/iotgw");
        let host = [nix::sys::stat::makedev(0, 40)];
        let own = |minor| Some((nix::sys::stat::makedev(0, minor), BPF_FS_MAGIC));
        assert_eq!(judge_pins(path, own(40), Some(&host)), PinPersistence::Host);
        let private = |own, host| matches!(judge_pins(path, own, host), PinPersistence::Private { .. });
        assert!(private(own(41), Some(&host)), "another bpffs instance: a private mount");
        assert!(private(own(40), None), "the host's mounts unreadable: say so");
        assert!(private(Some((host[0], 0xef53)), Some(&host)), "not a bpffs (ext4)");
        assert!(private(None, Some(&host)));
    }

    #[test]
    fn bpffs_devices_are_read_from_mountinfo() {
        let mountinfo = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                         45 23 0:40 / /sys/fs/bpf rw,relatime shared:7 - bpf bpf rw\n\
                         23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n";
        assert_eq!(bpffs_devices(mountinfo), [nix::sys::stat::makedev(0, 40)]);
        assert!(bpffs_devices("garbage\n").is_empty());
    }
}
