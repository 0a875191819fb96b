//! `[fleet]`: where the broker is and who this gateway is in the fleet. Without `nats_url` the
//! gateway stands alone, as before.
//!
//! ```toml
//! [fleet]
//! nats_url = "tls://nats.example:4222"  # or nats://127.0.0.1:4222 for a local leaf node
//! site = "berlin-3"                      # NATS token: letters, digits, '-' and '_'
//! gateway = "gw-1"
//! credentials = "/etc/iotgw/fleet.nk"    # this gateway's NKey seed (`iotgw hub provision-gateway`)
//! tls_ca = "/etc/iotgw/nats-ca.pem"      # extra roots for a tls:// broker
//! bundle_key = "/etc/iotgw/bundle.pub.pem"  # Ed25519 public key policy bundles must verify against (`iotgw hub keygen`)
//! groups = ["retail"]                    # bundle groups this gateway takes, after its site's own
//! health_secs = 30
//! jetstream_domain = "hub"               # the hub's JetStream domain, when a site leaf node stands between
//! ```
use std::path::PathBuf;

use async_nats::jetstream;
use serde::Deserialize;

use super::subjects;

/// The `[fleet]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Broker URL; `None` keeps the gateway out of any fleet.
    pub nats_url: Option<String>,
    pub site: String,
    pub gateway: String,
    /// NKey seed file (`SU...`) this gateway authenticates with.
    pub credentials: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Public key policy bundles are signed with; without it no bundle is applied.
    pub bundle_key: Option<PathBuf>,
    pub groups: Vec<String>,
    /// Seconds between health reports.
    pub health_secs: u64,
    /// The hub's JetStream domain (`jetstream { domain: ... }` on the hub's servers). Needed when
    /// the gateway connects through a site's leaf node: nats-server does not carry the plain
    /// JetStream API (`$JS.API.>`) across a leaf connection, only the domain's
    /// (`$JS.<domain>.API.>`).
    pub jetstream_domain: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: None,
            site: String::new(),
            gateway: String::new(),
            credentials: None,
            tls_ca: None,
            bundle_key: None,
            groups: Vec::new(),
            health_secs: 30,
            jetstream_domain: None,
        }
    }
}

impl Config {
    pub fn enabled(&self) -> bool {
        self.nats_url.is_some()
    }

    /// The JetStream API on `client`, in the hub's domain when one is configured.
    pub fn jetstream(&self, client: async_nats::Client) -> jetstream::Context {
        match &self.jetstream_domain {
            Some(domain) => jetstream::with_domain(client, domain),
            None => jetstream::new(client),
        }
    }

    /// Every problem with the section, for `config::load`.
    pub fn problems(&self) -> Vec<String> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut problems = Vec::new();
        for (key, value) in [("site", &self.site), ("gateway", &self.gateway)] {
            if let Err(why) = subjects::check_token(value) {
                problems.push(format!("fleet.{key}: {why}"));
            }
        }
        for group in &self.groups {
            if let Err(why) = subjects::check_token(group) {
                problems.push(format!("fleet.groups: {why}"));
            }
        }
        if let Some(domain) = &self.jetstream_domain
            && let Err(why) = subjects::check_token(domain)
        {
            problems.push(format!("fleet.jetstream_domain: {why}"));
        }
        if self.health_secs == 0 {
            problems.push("fleet.health_secs: must be at least 1".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_section_is_no_fleet_and_no_problem() {
        let config = Config::default();
        assert!(!config.enabled());
        assert!(config.problems().is_empty());
    }

    #[test]
    fn names_that_are_not_nats_tokens_are_refused() {
        let config = Config {
            nats_url: Some("nats://127.0.0.1:4222".into()),
            site: "berlin.3".into(),
            gateway: String::new(),
            groups: vec!["a b".into()],
            ..Config::default()
        };
        let problems = config.problems().join("\n");
        assert!(problems.contains("fleet.site"), "{problems}");
        assert!(problems.contains("fleet.gateway"), "{problems}");
        assert!(problems.contains("fleet.groups"), "{problems}");
    }
}
