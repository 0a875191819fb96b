//! The hub's own configuration file.
//!
//! ```toml
//! nats_url = "tls://nats.example:4222"
//! credentials = "/etc/iotgw/hub.nk"        # the hub's NKey seed
//! tls_ca = "/etc/iotgw/nats-ca.pem"
//! database_url = "postgres://iotgw@db.example/iotgw"
//! signing_key = "/etc/iotgw/bundle.pem"    # Ed25519 private key that signs policy bundles (`iotgw hub keygen`)
//! command_ttl_secs = 86400                 # a command a gateway has not taken by then expires
//!
//! [streams]
//! max_age_days = 30
//! max_bytes = 1073741824                  # JetStream reserves this much disk when the stream is made
//! duplicate_window_secs = 7200
//!
//! [ingest]
//! batch = 1000                             # reports taken from the broker at once, at most
//! writers = 2                              # PostgreSQL transactions in flight, each for its own sites
//! clone_window_secs = 300                  # one certificate active at two sites this close: a clone
//! ack_wait_secs = 60                       # an unacknowledged report is delivered again after this
//!
//! [api]                                    # the gateway's [api] section: listen, tls, users, tokens
//! listen = "0.0.0.0:8443"
//! ```
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub nats_url: String,
    pub credentials: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub database_url: String,
    pub signing_key: Option<PathBuf>,
    #[serde(default = "default_command_ttl")]
    pub command_ttl_secs: u64,
    #[serde(default)]
    pub streams: Streams,
    #[serde(default)]
    pub ingest: super::ingest::Settings,
    #[serde(default)]
    pub api: crate::api::Config,
}

/// Limits of the report stream: what the broker keeps for a hub that is down.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Streams {
    pub max_age_days: u64,
    pub max_bytes: i64,
    /// JetStream drops a report whose `Nats-Msg-Id` it saw this recently.
    pub duplicate_window_secs: u64,
}

impl Default for Streams {
    fn default() -> Self {
        Self { max_age_days: 30, max_bytes: 1 << 30, duplicate_window_secs: 7200 }
    }
}

fn default_command_ttl() -> u64 {
    86_400
}

impl Config {
    /// Reads and checks the file; errors carry line and column.
    pub fn load(path: &Path) -> Result<Self, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config: Self = toml::from_str(&text).map_err(|error| {
            let (line, column) = crate::toml_error::position(&text, &error).unwrap_or((0, 0));
            ConfigError::Parse { path: path.to_owned(), line, column, message: error.message().to_owned() }
        })?;
        let problems = config.problems();
        if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { path: path.to_owned(), problems }) }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = self.api.problems();
        if self.command_ttl_secs == 0 {
            problems.push("command_ttl_secs: must be at least 1".to_owned());
        }
        problems.extend(self.ingest.problems());
        if self.streams.max_bytes <= 0 || self.streams.max_age_days == 0 {
            problems.push("streams: max_bytes and max_age_days must be positive".to_owned());
        }
        problems
    }
}
