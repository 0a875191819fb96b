//! A learnt profile rendered as a MUD-style policy (RFC 8520 in spirit: which services a
//! device reaches, where), in TOML for ops to review and then enforce ("learn, then
//! enforce"). Reads a `Profile`, writes text.
use gateway_ebpf::proto;
use std::time::SystemTime;

use serde::Serialize;

use super::DeviceBaseline;
use crate::device::Mac;

/// The exported document: one `[[class]]` in the shape of the policy files
/// (`policies/*.toml`), so `iotgw policy check` reads it as it is.
#[derive(Debug, Serialize)]
pub struct MudPolicy {
    pub class: Vec<ClassRules>,
}

/// One class's rules, as a `[[class]]` table of the policy files.
#[derive(Debug, Serialize)]
pub struct ClassRules {
    pub name: String,
    /// The class id ops assign (1..=65535); `DEFAULT_EXPORT_CLASS_ID` until they do.
    pub id: u16,
    pub description: String,
    #[serde(rename = "match")]
    pub matching: ClassMatch,
    pub allow: Vec<AllowRule>,
}

/// `[class.match]`: the device the rules were learnt from, by MAC.
#[derive(Debug, Serialize)]
pub struct ClassMatch {
    pub macs: Vec<String>,
}

/// One `[[class.allow]]` rule.
#[derive(Debug, Serialize)]
pub struct AllowRule {
    pub description: String,
    /// Upstream prefixes and LAN hosts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    /// DNS names the upstream prefixes were resolved from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    pub protocol: String,
    /// Absent for protocols without ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// Class id of an exported policy until ops give it one (high, to stay clear of shipped
/// classes).
pub const DEFAULT_EXPORT_CLASS_ID: u16 = 60_000;

/// The policy for one device's baseline. Services seen only towards multicast or broadcast
/// (mDNS, SSDP, DHCP) have no destination to allow and are listed in the header instead.
pub fn mud_policy(mac: Mac, class: Option<&str>, class_id: u16, baseline: &DeviceBaseline) -> MudPolicy {
    let profile = baseline.profile();
    let allow = profile
        .services
        .iter()
        .filter(|(_, seen)| !(seen.prefixes.is_empty() && seen.peers.is_empty()))
        .map(|(service, seen)| {
            let has_port = service.proto == proto::TCP || service.proto == proto::UDP;
            let mut nets: Vec<String> = seen.prefixes.iter().map(ToString::to_string).collect();
            nets.extend(seen.peers.iter().map(|p| ipnet::IpNet::from(*p).to_string()));
            AllowRule {
                description: format!("learnt: {service}, {} flow(s)", seen.flows),
                nets,
                names: seen.names.iter().cloned().collect(),
                protocol: policy_protocol(service.proto).to_owned(),
                ports: if has_port { vec![service.port] } else { Vec::new() },
            }
        })
        .collect();
    let name = class.map(str::to_owned).unwrap_or_else(|| format!("learnt-{}", mac.to_string().replace(':', "")));
    MudPolicy {
        class: vec![ClassRules {
            name,
            id: class_id,
            description: format!("Learnt from {mac} ({})", baseline.state_name()),
            matching: ClassMatch { macs: vec![mac.to_string()] },
            allow,
        }],
    }
}

/// The policy as TOML, with a header saying where it comes from and what to check.
pub fn to_toml(
    mac: Mac,
    class: Option<&str>,
    class_id: u16,
    baseline: &DeviceBaseline,
) -> Result<String, toml::ser::Error> {
    let policy = mud_policy(mac, class, class_id, baseline);
    let body = toml::to_string_pretty(&policy)?;
    let since = match baseline {
        DeviceBaseline::Baselined(b) => format_time(b.since),
        DeviceBaseline::Learning(l) => format!("still learning since {}", format_time(l.started)),
    };
    let mut periodic = String::new();
    for (key, timing) in baseline.profile().periodic() {
        periodic.push_str(&format!("#   {key}: every {:.0} s (±{:.1} s)\n", timing.mean_secs, timing.std_dev_secs()));
    }
    let broadcast: Vec<String> = baseline
        .profile()
        .services
        .iter()
        .filter(|(_, seen)| seen.prefixes.is_empty() && seen.peers.is_empty())
        .map(|(service, _)| service.to_string())
        .collect();
    Ok(format!(
        "# MUD-style policy learnt by iotgw for {mac} (baselined: {since}).\n\
         # Review before enforcing: each rule is what the device did while learning, nothing more.\n\
         # Set `id` to a free class id and merge with the class's file if it has one.\n\
         # Multicast/broadcast only (not listed as rules): {}\n\
         # Periodic flows seen:\n{periodic}\n{body}",
        if broadcast.is_empty() { "none".to_owned() } else { broadcast.join(", ") }
    ))
}

/// The policy files' protocol names; protocols they cannot name become `any` (the rule's
/// description keeps the number).
fn policy_protocol(proto: u8) -> &'static str {
    match proto {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP | proto::ICMPV6 => "icmp",
        _ => "any",
    }
}

fn format_time(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".to_owned())
}
