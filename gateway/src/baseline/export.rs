//! A learnt profile rendered as a MUD-style policy (RFC 8520 in spirit: which services a
//! device reaches, where), in TOML for ops to review and then enforce ("learn, then
//! enforce"). Reads a `Profile`, writes text.
use std::time::SystemTime;

use serde::Serialize;

use super::{DeviceBaseline, profile::proto_name};
use crate::device::Mac;

/// The exported document.
#[derive(Debug, Serialize)]
pub struct MudPolicy {
    pub class: Vec<ClassRules>,
}

/// One class's rules, in the shape of a `[[class]]` table of the policy files.
#[derive(Debug, Serialize)]
pub struct ClassRules {
    pub name: String,
    /// Devices the rules were learnt from.
    pub macs: Vec<String>,
    /// `learning` or `baselined`: a profile still learning is incomplete.
    pub learnt_state: String,
    pub allow: Vec<AllowRule>,
}

/// One allowed service.
#[derive(Debug, Serialize)]
pub struct AllowRule {
    pub proto: String,
    /// Absent for protocols without ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Upstream prefixes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// DNS names those prefixes were resolved from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// LAN hosts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lan_peers: Vec<String>,
    /// Multicast or broadcast only (mDNS, SSDP, DHCP).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub local_broadcast: bool,
    /// Flows seen while learning.
    pub flows_learnt: u64,
}

/// The policy for one device's baseline.
pub fn mud_policy(mac: Mac, class: Option<&str>, baseline: &DeviceBaseline) -> MudPolicy {
    let profile = baseline.profile();
    let allow = profile
        .services
        .iter()
        .map(|(service, seen)| {
            let has_port = service.proto == 0x06 || service.proto == 0x11;
            AllowRule {
                proto: proto_name(service.proto),
                port: has_port.then_some(service.port),
                to: seen.prefixes.iter().map(ToString::to_string).collect(),
                names: seen.names.iter().cloned().collect(),
                lan_peers: seen.peers.iter().map(ToString::to_string).collect(),
                local_broadcast: seen.prefixes.is_empty() && seen.peers.is_empty(),
                flows_learnt: seen.flows,
            }
        })
        .collect();
    let name = class.map(str::to_owned).unwrap_or_else(|| format!("device-{}", mac.to_string().replace(':', "")));
    MudPolicy {
        class: vec![ClassRules {
            name,
            macs: vec![mac.to_string()],
            learnt_state: baseline.state_name().to_owned(),
            allow,
        }],
    }
}

/// The policy as TOML, with a header saying where it comes from and what to check.
pub fn to_toml(mac: Mac, class: Option<&str>, baseline: &DeviceBaseline) -> Result<String, toml::ser::Error> {
    let policy = mud_policy(mac, class, baseline);
    let body = toml::to_string_pretty(&policy)?;
    let since = match baseline {
        DeviceBaseline::Baselined(b) => format_time(b.since),
        DeviceBaseline::Learning(l) => format!("still learning since {}", format_time(l.started)),
    };
    let mut periodic = String::new();
    for (key, timing) in baseline.profile().periodic() {
        periodic.push_str(&format!(
            "#   {key}: every {:.0} s (±{:.1} s)\n",
            timing.mean_secs,
            timing.std_dev_secs()
        ));
    }
    Ok(format!(
        "# MUD-style policy learnt by iotgw for {mac} (baselined: {since}).\n\
         # Review before enforcing: each rule is what the device did while learning, nothing more.\n\
         # Periodic flows seen:\n{periodic}\n{body}"
    ))
}

fn format_time(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".to_owned())
}
