//! `[policy]` of the gateway configuration: where the policy files are, whether a change
//! reloads them, `[policy.dns]` (how DNS answers open DNS-name rules: `dns::DnsConfig`) and
//! what rules with a `remote` resolve to (`policy::remote::Site`).
use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::remote::Site;

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
    /// The LAN's prefixes: what `remote = "local-networks"` reaches. None: such rules allow
    /// nothing.
    pub lan_prefixes: Vec<IpNet>,
    /// The gateway's own LAN addresses: what `remote = "gateway"` (and so MUD's DNS and NTP
    /// controllers) reaches. None: such rules allow nothing.
    pub gateway_addresses: Vec<IpAddr>,
    /// The controllers that registered with the MUD manager, by URI: what
    /// `remote = "controller:<URI>"` (MUD's `controller`) reaches. A URI not listed allows
    /// nothing.
    pub controllers: BTreeMap<String, Vec<IpNet>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dir: DEFAULT_DIR.into(),
            watch: true,
            dns: super::dns::DnsConfig::default(),
            lan_prefixes: Vec::new(),
            gateway_addresses: Vec::new(),
            controllers: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Every semantic problem of the `[policy]` section (the policy files are checked apart).
    pub fn problems(&self) -> Vec<String> {
        self.dns.problems()
    }

    /// The site `remote` rules resolve against.
    pub fn site(&self) -> Site {
        Site {
            lan_prefixes: self.lan_prefixes.iter().map(IpNet::trunc).collect(),
            gateway: self.gateway_addresses.clone(),
            controllers: self
                .controllers
                .iter()
                .map(|(uri, nets)| (uri.clone(), nets.iter().map(IpNet::trunc).collect()))
                .collect(),
        }
    }
}
