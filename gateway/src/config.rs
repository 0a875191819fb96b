//! The gateway's configuration file (TOML). Every key has a typed default here or in its
//! component's `Config`; `load` reports every bad value with its place in the file, and the
//! binary exits with `cli::EXIT_CONFIG` before anything is attached.
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default location of the SQLite store.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/iotgw/iotgw.db";
/// Default folder of the policy files.
pub const DEFAULT_POLICY_DIR: &str = "/etc/iotgw/policies";

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub datapath: DatapathConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub inventory: crate::inventory::Config,
    #[serde(default)]
    pub baseline: crate::baseline::Config,
    #[serde(default)]
    pub detect: crate::detect::Config,
    #[serde(default)]
    pub api: crate::api::Config,
    #[serde(default)]
    pub identity: crate::identity::Config,
    #[serde(default)]
    pub integrations: crate::integrations::Config,
    #[serde(default)]
    pub ota: crate::ota::Config,
}

/// How the XDP programs are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

/// Default `datapath.counter_interval_ms`: a quarter of a second keeps a flood's detection
/// well inside the one-second response target.
pub const DEFAULT_COUNTER_INTERVAL_MS: u64 = 250;
/// Shortest `datapath.counter_interval_ms` accepted.
pub const MIN_COUNTER_INTERVAL_MS: u64 = 50;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathConfig {
    /// The interface facing the devices.
    pub lan_interface: String,
    /// The upstream interface (traffic towards devices is checked there too). Optional.
    pub wan_interface: Option<String>,
    /// Where quarantined traffic is redirected (when the policy's quarantine verdict is
    /// `redirect`). Optional: without it quarantined traffic is dropped.
    pub quarantine_interface: Option<String>,
    /// Destination MAC written into redirected frames (the quarantine host).
    pub quarantine_host_mac: Option<crate::device::Mac>,
    pub attach_mode: AttachMode,
    /// Where maps are pinned.
    pub pin_path: PathBuf,
    /// Copy DHCP, DNS, ARP and TLS handshakes to userspace for fingerprinting.
    pub sample_packets: bool,
    pub devices_capacity: u32,
    pub flows_capacity: u32,
    /// How often per-device counters are read into traffic samples, in milliseconds: how
    /// soon a flood or an exfiltration shows (rates stay per second, over the last second of
    /// samples); each read walks the per-device counter map.
    pub counter_interval_ms: u64,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            lan_interface: "eth0".into(),
            wan_interface: None,
            quarantine_interface: None,
            quarantine_host_mac: None,
            attach_mode: AttachMode::Auto,
            pin_path: PathBuf::from(gateway_ebpf::PIN_ROOT),
            sample_packets: true,
            devices_capacity: gateway_ebpf::maps::DEVICES_CAPACITY,
            flows_capacity: gateway_ebpf::maps::FLOWS_CAPACITY,
            counter_interval_ms: DEFAULT_COUNTER_INTERVAL_MS,
        }
    }
}

/// `[store]`: the SQLite file and how durable its commits are.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite file (WAL mode; `-wal` and `-shm` files sit beside it).
    pub path: PathBuf,
    /// Durability of every commit: `"full"` (default) fsyncs the WAL at each commit, so an
    /// acknowledged audit record or outbox event survives a power loss; `"normal"` skips that
    /// fsync and survives a process crash only (a power loss may lose the last commits). Keep
    /// `"full"` for the audit trail unless the storage is battery-backed. See `store`.
    pub synchronous: crate::store::Synchronous,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { path: DEFAULT_STORE_PATH.into(), synchronous: crate::store::Synchronous::default() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Folder of `*.toml` policy files, loaded together.
    pub dir: PathBuf,
    /// Reload when a file in `dir` changes (SIGHUP always reloads).
    pub watch: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self { dir: DEFAULT_POLICY_DIR.into(), watch: true }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Syntax or type error; the message carries line and column.
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    /// Values that parse but cannot work together, all of them.
    #[error("{path}: {}", .problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

/// Reads and checks the configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(path, &text)
}

/// Parses configuration text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|error| {
        let (line, column) = crate::toml_error::position(text, &error).unwrap_or((0, 0));
        ConfigError::Parse { path: path.to_owned(), line, column, message: error.message().to_owned() }
    })?;
    let problems = config.problems();
    if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { path: path.to_owned(), problems }) }
}

impl Config {
    /// Every semantic problem, so the operator fixes them in one go.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let d = &self.datapath;
        if d.lan_interface.is_empty() {
            problems.push("datapath.lan_interface must not be empty".to_owned());
        }
        if d.quarantine_interface.is_some() && d.quarantine_host_mac.is_none() {
            problems.push(
                "datapath.quarantine_host_mac is required to redirect to datapath.quarantine_interface".to_owned(),
            );
        }
        if !(MIN_COUNTER_INTERVAL_MS..=60_000).contains(&d.counter_interval_ms) {
            problems.push(format!(
                "datapath.counter_interval_ms = {} must be within {MIN_COUNTER_INTERVAL_MS}..=60000",
                d.counter_interval_ms
            ));
        }
        for (name, value) in [("devices_capacity", d.devices_capacity), ("flows_capacity", d.flows_capacity)] {
            if value == 0 {
                problems.push(format!("datapath.{name} must be above 0"));
            }
        }
        problems.extend(self.api.problems());
        problems.extend(self.baseline.problems());
        problems.extend(self.integrations.problems());
        problems.extend(self.identity.problems());
        problems
    }
}

/// Where a device-facing service listens: `listen` when configured, else the first of the LAN
/// interface's addresses (IPv4 first) on `port`. Binding 0.0.0.0 would offer the service to
/// the WAN side too.
pub fn lan_side(
    listen: Option<std::net::SocketAddr>,
    lan_addresses: &[std::net::IpAddr],
    port: u16,
) -> Option<std::net::SocketAddr> {
    listen.or_else(|| {
        let first = lan_addresses.iter().find(|a| a.is_ipv4()).or(lan_addresses.first())?;
        Some(std::net::SocketAddr::new(*first, port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(config.datapath.attach_mode, AttachMode::Auto);
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let err = parse(Path::new("x.toml"), "[datapath]\nlan_interface = \"a\"\nbogus = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("x.toml:3:1:"), "{text}");
        assert!(text.contains("bogus"), "{text}");
    }

    #[test]
    fn store_synchronous_defaults_to_full_and_takes_normal() {
        let config = parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(config.store.synchronous, crate::store::Synchronous::Full);
        let config = parse(Path::new("x.toml"), "[store]\nsynchronous = \"normal\"\n").unwrap();
        assert_eq!(config.store.synchronous, crate::store::Synchronous::Normal);
    }

    #[test]
    fn bad_store_synchronous_is_refused_with_its_place_and_the_choices() {
        let err = parse(Path::new("x.toml"), "[store]\nsynchronous = \"off\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("x.toml:2:15:"), "{text}");
        assert!(text.contains("off") && text.contains("full") && text.contains("normal"), "{text}");
        let err = parse(Path::new("x.toml"), "[store]\nsynchronous = 2\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let err = parse(
            Path::new("x.toml"),
            "[datapath]\nlan_interface = \"\"\nquarantine_interface = \"q0\"\nflows_capacity = 0\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else { panic!("{err}") };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
