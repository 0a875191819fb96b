//! `[policy]` of the gateway configuration: where the policy files are, whether a change
//! reloads them, and `[policy.dns]` (how DNS answers open DNS-name rules: `dns::DnsConfig`).
use std::path::PathBuf;

use serde::Deserialize;

/// Default folder of the policy files.
pub const DEFAULT_DIR: &str = "/etc/iotgw/policies";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder of `*.toml` policy files, loaded together.
    pub dir: PathBuf,
    /// Reload when a file in `dir` changes (SIGHUP always reloads).
    pub watch: bool,
    /// `[policy.dns]`.
    pub dns: super::dns::DnsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self { dir: DEFAULT_DIR.into(), watch: true, dns: super::dns::DnsConfig::default() }
    }
}

impl Config {
    /// Every semantic problem of the `[policy]` section (the policy files are checked apart).
    pub fn problems(&self) -> Vec<String> {
        self.dns.problems()
    }
}
