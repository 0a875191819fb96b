//! `[policy]` of the gateway configuration: where the policy files are and whether a change
//! reloads them.
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
}

impl Default for Config {
    fn default() -> Self {
        Self { dir: DEFAULT_DIR.into(), watch: true }
    }
}
