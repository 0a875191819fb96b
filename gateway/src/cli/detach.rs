//! `iotgw detach --config FILE --yes`: switches enforcement off. The XDP programs stay
//! attached through their pinned links after the controller stops (by design: a crash must
//! not open the network); this removes those links, which detaches the programs from every
//! interface, and the pinned maps. Before anything it says what stops, from the pinned device
//! table: quarantine and blocks, certificate-gated access, per-device policy. Without `--yes`
//! it only says so and exits 1.
//!
//! It refuses while a controller runs on the same pins (`iotgw run` holds the links too, so
//! removing the pins would not detach and it would go on without them): stop it first. The
//! store keeps the device table; the next `iotgw run` restores it and attaches again.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use gateway_ebpf::device_state;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway configuration file (its `[datapath] pin_path` names the pins).
    #[arg(long, short, default_value = "/etc/iotgw/iotgw.toml")]
    pub config: PathBuf,
    /// Detach: without it, only say what would stop.
    #[arg(long)]
    pub yes: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match super::run::load(&args.config) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let pin_path = &config.datapath.pin_path;
    let links = link_pins(pin_path);
    if links.is_empty() && !pin_path.exists() {
        println!("nothing to detach: no pins under {}", pin_path.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(pid) = running_controller(pin_path) {
        eprintln!(
            "iotgw: a controller (pid {pid}) runs on {}: stop it first (systemctl stop iotgw); \
             detaching under it would leave it enforcing without pins",
            pin_path.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("{}", consequences(pin_path, &links));
    if !args.yes {
        eprintln!("iotgw: nothing detached: repeat with --yes to switch enforcement off");
        return Ok(ExitCode::FAILURE);
    }
    let removed = crate::datapath::loader::detach_all(pin_path)
        .with_context(|| format!("removing the pins under {}", pin_path.display()))?;
    println!("detached: {removed} pins removed under {}; no XDP program of iotgw runs", pin_path.display());
    Ok(ExitCode::SUCCESS)
}

/// The names of the link pins (`iotgw_lan@lan0:driver`), one per attached program.
fn link_pins(pin_path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pin_path.join("links"))
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// What stops, in words: the interfaces losing their program and the devices whose isolation
/// ends, counted from the pinned device table when it can be read.
fn consequences(pin_path: &Path, links: &[String]) -> String {
    let interfaces: Vec<&str> =
        links.iter().map(|name| name.split_once('@').map_or(name.as_str(), |(_, rest)| rest)).collect();
    if interfaces.is_empty() {
        return format!(
            "No XDP program of iotgw is attached through {}: detaching removes its leftover pins.",
            pin_path.display()
        );
    }
    let mut text = format!(
        "Detaching removes iotgw's XDP programs from {} and every pin under {}.\n\
         Enforcement stops on those interfaces until `iotgw run` starts again: every frame passes unchecked.",
        interfaces.join(", "),
        pin_path.display()
    );
    if let Ok(maps) = crate::datapath::maps::Maps::open_pinned(pin_path) {
        let devices = maps.devices();
        let count = |state| devices.iter().filter(|(_, entry)| entry.state == state).count();
        text.push_str(&format!(
            "\n  {} quarantined device(s) leave quarantine\n  {} blocked device(s) are let through\n  \
             {} enrolled device(s) lose their policy, and devices without a certificate are no longer held \
             to the onboarding lane",
            count(device_state::QUARANTINED),
            count(device_state::BLOCKED),
            count(device_state::ENROLLED),
        ));
    }
    text
}

/// The pid of an `iotgw run` whose configuration names the same pin path, if one runs.
fn running_controller(pin_path: &Path) -> Option<u32> {
    let own = std::process::id();
    let processes = std::fs::read_dir("/proc").ok()?;
    processes.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_run = args.first().is_some_and(|a| a.ends_with(b"iotgw")) && args.get(1) == Some(&&b"run"[..]);
        if pid == own || !is_run {
            return None;
        }
        let config = args
            .iter()
            .find_map(|a| a.strip_prefix(b"--config="))
            .or_else(|| args.windows(2).find(|w| w[0] == b"--config" || w[0] == b"-c").map(|w| w[1]))?;
        let config = Path::new(std::str::from_utf8(config).ok()?);
        // A relative path is the controller's own working directory's.
        let config = if config.is_relative() {
            std::fs::read_link(entry.path().join("cwd")).ok()?.join(config)
        } else {
            config.to_owned()
        };
        let theirs = crate::config::load(&config).ok()?.datapath.pin_path;
        (theirs == pin_path).then_some(pid)
    })
}
