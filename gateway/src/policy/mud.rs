//! Imports an RFC 8520 Manufacturer Usage Description (MUD) file as a policy class: its
//! access lists (RFC 8519 ACEs with the MUD and `ietf-acldns` augmentations) become the
//! class's allow rules. Reads MUD JSON (serde_json); writes policy TOML text, which is
//! checked with `load` before it is returned.
//!
//! Mapping, per accepting ACE:
//! - from-device ACLs: the destination network or `ietf-acldns:dst-dnsname` is the remote,
//!   `destination-port` its ports;
//! - to-device ACLs: the source network or `ietf-acldns:src-dnsname` is the remote,
//!   `source-port` its ports;
//! - `ietf-mud:direction-initiated = "to-device"` makes the rule `inbound`, otherwise
//!   `outbound`; protocol 6/17/1/58 become tcp/udp/icmp/icmp, none `any`;
//! - an ACE without a remote network or name allows the whole address family.
//!
//! ACEs the model cannot express exactly are skipped, each with a comment in the output:
//! `drop`/`reject` actions (the model is allow-only, everything else is already denied),
//! MUD abstractions (`ietf-mud:mud`: same-manufacturer, controller, local-networks...) whose
//! addresses are only known at run time, Ethernet matches and other IP protocols.
//! Structural problems (not JSON, missing container, an ACL reference without its ACL, bad
//! addresses or ports) refuse the whole file.
use std::{fmt::Write as _, path::PathBuf};

use serde_json::Value;

use super::{
    load::parse_sources,
    values::{DnsPattern, merge_ranges, parse_net},
};
use gateway_ebpf::PortRange;

/// Why a MUD file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MudError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A required member is absent or of the wrong type; `path` is a JSON pointer.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// The generated TOML did not pass the policy checks (a bug, or a bad class name/id).
    #[error("the imported class does not pass `policy check`: {0}")]
    Check(String),
}

fn invalid(path: &str, reason: impl Into<String>) -> MudError {
    MudError::Invalid { path: path.to_owned(), reason: reason.into() }
}

/// What `import` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MudImport {
    /// Policy TOML holding one `[[class]]`.
    pub toml: String,
    /// Number of allow rules written.
    pub rules: usize,
    /// Why each skipped ACE was skipped (also written as comments in `toml`).
    pub skipped: Vec<String>,
}

/// One rule before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImportedRule {
    /// Names of the ACEs this rule comes from.
    aces: Vec<String>,
    net: Option<String>,
    name: Option<String>,
    protocol: &'static str,
    ports: Vec<PortRange>,
    direction: &'static str,
}

impl ImportedRule {
    fn same_access(&self, other: &Self) -> bool {
        (&self.net, &self.name, self.protocol, &self.ports, self.direction)
            == (&other.net, &other.name, other.protocol, &other.ports, other.direction)
    }
}

/// Converts the MUD document `json` into a class named `class` with id `id`.
pub fn import(json: &str, class: &str, id: u16) -> Result<MudImport, MudError> {
    let root: Value = serde_json::from_str(json)?;
    let mud = root
        .get("ietf-mud:mud")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("/ietf-mud:mud", "missing: not a MUD file (RFC 8520 §2.1)"))?;
    match mud.get("mud-version").and_then(Value::as_u64) {
        Some(1) => {}
        Some(other) => {
            return Err(invalid("/ietf-mud:mud/mud-version", format!("version {other}, only 1 is known")));
        }
        None => {
            return Err(invalid("/ietf-mud:mud/mud-version", "missing or not a number"));
        }
    }
    let mud_url = mud
        .get("mud-url")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("/ietf-mud:mud/mud-url", "missing or not a string"))?;
    let systeminfo = mud.get("systeminfo").and_then(Value::as_str).unwrap_or("");
    let acls = root
        .get("ietf-access-control-list:acls")
        .and_then(|acls| acls.get("acl"))
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("/ietf-access-control-list:acls/acl", "missing or not a list"))?;

    let mut rules: Vec<ImportedRule> = Vec::new();
    let mut skipped = Vec::new();
    for (side, from_device) in [("from-device-policy", true), ("to-device-policy", false)] {
        let Some(policy) = mud.get(side) else {
            continue;
        };
        let pointer = format!("/ietf-mud:mud/{side}/access-lists/access-list");
        let names = policy
            .pointer("/access-lists/access-list")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(&pointer, "missing or not a list"))?;
        for (index, reference) in names.iter().enumerate() {
            let name = reference
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{pointer}/{index}/name"), "missing or not a string"))?;
            let (acl_index, acl) = acls
                .iter()
                .enumerate()
                .find(|(_, acl)| acl.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| {
                    invalid(&format!("{pointer}/{index}/name"), format!("ACL {name:?} is referenced but not defined"))
                })?;
            let acl_pointer = format!("/ietf-access-control-list:acls/acl/{acl_index}");
            let aces = acl
                .pointer("/aces/ace")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid(&format!("{acl_pointer}/aces/ace"), "missing or not a list"))?;
            for (ace_index, ace) in aces.iter().enumerate() {
                let ace_pointer = format!("{acl_pointer}/aces/ace/{ace_index}");
                match convert_ace(ace, &ace_pointer, from_device)? {
                    Ok(rule) => match rules.iter_mut().find(|known| known.same_access(&rule)) {
                        // MUD files state most flows twice (from- and to-device ACLs).
                        Some(known) => {
                            for ace in rule.aces {
                                if !known.aces.contains(&ace) {
                                    known.aces.push(ace);
                                }
                            }
                        }
                        None => rules.push(rule),
                    },
                    Err(reason) => skipped.push(reason),
                }
            }
        }
    }
    let text = render(class, id, mud_url, systeminfo, &rules, &skipped);
    // The output must be a valid policy on its own: never hand ops a file `check` refuses.
    parse_sources(&[(PathBuf::from(format!("{class}.toml")), text.clone())])
        .map_err(|errors| MudError::Check(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
    Ok(MudImport { toml: text, rules: rules.len(), skipped })
}

/// One ACE: `Ok(Ok(rule))`, `Ok(Err(why it is skipped))`, or `Err` when malformed.
fn convert_ace(ace: &Value, pointer: &str, from_device: bool) -> Result<Result<ImportedRule, String>, MudError> {
    let name = ace
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{pointer}/name"), "missing or not a string"))?;
    let action = ace
        .pointer("/actions/forwarding")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{pointer}/actions/forwarding"), "missing or not a string"))?;
    // YANG identities may carry their module prefix.
    let action = action.rsplit(':').next().unwrap_or(action);
    match action {
        "accept" => {}
        "drop" | "reject" => {
            return Ok(Err(format!("ACE {name:?}: {action} (the policy denies by default)")));
        }
        other => {
            return Err(invalid(&format!("{pointer}/actions/forwarding"), format!("unknown action {other:?}")));
        }
    }
    let matches = ace
        .get("matches")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(&format!("{pointer}/matches"), "missing or not an object"))?;
    for key in matches.keys() {
        match key.as_str() {
            "ipv4" | "ipv6" | "tcp" | "udp" | "icmp" => {}
            "ietf-mud:mud" => {
                let kinds: Vec<&str> =
                    matches[key].as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
                return Ok(Err(format!("ACE {name:?}: MUD abstraction {kinds:?} needs run-time addresses")));
            }
            "eth" => {
                return Ok(Err(format!("ACE {name:?}: Ethernet matches are not supported")));
            }
            other => {
                return Ok(Err(format!("ACE {name:?}: match {other:?} is not supported")));
            }
        }
    }
    let (family, ip) = match (matches.get("ipv4"), matches.get("ipv6")) {
        (Some(ip), None) => (4u8, ip),
        (None, Some(ip)) => (6, ip),
        (Some(_), Some(_)) => {
            return Err(invalid(&format!("{pointer}/matches"), "both ipv4 and ipv6"));
        }
        (None, None) => {
            return Err(invalid(&format!("{pointer}/matches"), "neither ipv4 nor ipv6"));
        }
    };
    let ip_pointer = format!("{pointer}/matches/ipv{family}");
    let (remote_side, port_side) =
        if from_device { ("destination", "destination-port") } else { ("source", "source-port") };
    let dns_key = if from_device { "ietf-acldns:dst-dnsname" } else { "ietf-acldns:src-dnsname" };
    let net_key = format!("{remote_side}-ipv{family}-network");
    let net = match ip.get(&net_key) {
        None => None,
        Some(value) => {
            let text = value.as_str().ok_or_else(|| invalid(&format!("{ip_pointer}/{net_key}"), "not a string"))?;
            let parsed =
                parse_net(text).map_err(|kind| invalid(&format!("{ip_pointer}/{net_key}"), kind.to_string()))?;
            Some(parsed.to_string())
        }
    };
    let dns = match ip.get(dns_key) {
        None => None,
        Some(value) => {
            let text = value.as_str().ok_or_else(|| invalid(&format!("{ip_pointer}/{dns_key}"), "not a string"))?;
            let parsed =
                DnsPattern::parse(text).map_err(|reason| invalid(&format!("{ip_pointer}/{dns_key}"), reason))?;
            Some(parsed.to_string())
        }
    };
    let net = match (&net, &dns) {
        (None, None) => Some(if family == 4 { "0.0.0.0/0".to_owned() } else { "::/0".to_owned() }),
        _ => net,
    };
    let declared = match ip.get("protocol") {
        None => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| invalid(&format!("{ip_pointer}/protocol"), "not a number"))?),
    };
    let l4 = ["tcp", "udp", "icmp"].into_iter().find(|key| matches.contains_key(*key));
    let protocol = match (declared, l4) {
        (Some(6), None | Some("tcp")) | (None, Some("tcp")) => "tcp",
        (Some(17), None | Some("udp")) | (None, Some("udp")) => "udp",
        (Some(1 | 58), None | Some("icmp")) | (None, Some("icmp")) => "icmp",
        (None, None) => "any",
        (Some(number), None) => {
            return Ok(Err(format!("ACE {name:?}: IP protocol {number} is not supported")));
        }
        (declared, Some(l4)) => {
            return Err(invalid(
                &format!("{pointer}/matches"),
                format!("protocol {declared:?} contradicts the {l4} match"),
            ));
        }
    };
    let mut ports = Vec::new();
    let mut direction = "outbound";
    if let Some(l4_key) = l4 {
        let l4_match = &matches[l4_key];
        let l4_pointer = format!("{pointer}/matches/{l4_key}");
        if let Some(port) = l4_match.get(port_side) {
            ports = port_ranges(port, &format!("{l4_pointer}/{port_side}"))?;
        }
        match l4_match.get("ietf-mud:direction-initiated").map(|v| v.as_str()) {
            None => {}
            Some(Some("from-device")) => direction = "outbound",
            Some(Some("to-device")) => direction = "inbound",
            Some(_) => {
                return Err(invalid(
                    &format!("{l4_pointer}/ietf-mud:direction-initiated"),
                    "expected from-device or to-device",
                ));
            }
        }
    }
    Ok(Ok(ImportedRule { aces: vec![name.to_owned()], net, name: dns, protocol, ports, direction }))
}

/// RFC 8519 port matches: `{operator, port}` or `{lower-port, upper-port}`.
fn port_ranges(value: &Value, pointer: &str) -> Result<Vec<PortRange>, MudError> {
    let port = |key: &str| -> Result<u16, MudError> {
        value
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|port| u16::try_from(port).ok())
            .ok_or_else(|| invalid(&format!("{pointer}/{key}"), "missing or not a port (0..=65535)"))
    };
    if value.get("lower-port").is_some() {
        let (first, last) = (port("lower-port")?, port("upper-port")?);
        if first > last {
            return Err(invalid(pointer, format!("lower-port {first} above upper-port {last}")));
        }
        return Ok(vec![PortRange { first, last }]);
    }
    let operator = value.get("operator").and_then(Value::as_str).unwrap_or("eq");
    let number = port("port")?;
    let ranges = match operator {
        "eq" => vec![PortRange { first: number, last: number }],
        "lte" => vec![PortRange { first: 0, last: number }],
        "gte" => vec![PortRange { first: number, last: u16::MAX }],
        "neq" => {
            let mut ranges = Vec::new();
            if number > 0 {
                ranges.push(PortRange { first: 0, last: number - 1 });
            }
            if number < u16::MAX {
                ranges.push(PortRange { first: number + 1, last: u16::MAX });
            }
            ranges
        }
        other => {
            return Err(invalid(&format!("{pointer}/operator"), format!("unknown operator {other:?}")));
        }
    };
    Ok(merge_ranges(ranges))
}

/// TOML strings, quoted and escaped by the toml crate.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn render(class: &str, id: u16, mud_url: &str, systeminfo: &str, rules: &[ImportedRule], skipped: &[String]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "# Imported from the MUD file of {mud_url}");
    if !systeminfo.is_empty() {
        let _ = writeln!(out, "# System: {}", systeminfo.replace('\n', " "));
    }
    for reason in skipped {
        let _ = writeln!(out, "# Skipped {}", reason.replace('\n', " "));
    }
    let _ = writeln!(out, "\n[[class]]\nname = {}\nid = {id}", quoted(class));
    let description = if systeminfo.is_empty() { format!("MUD {mud_url}") } else { systeminfo.to_owned() };
    let _ = writeln!(out, "description = {}", quoted(&description));
    let _ = writeln!(out, "\n[class.match]");
    let _ = writeln!(out, "# Add how devices join this class: macs, ouis, fingerprint_types, cert_subjects.");
    for rule in rules {
        let description = format!("MUD ACE {}", rule.aces.join(", "));
        let _ = writeln!(out, "\n[[class.allow]]\ndescription = {}", quoted(&description));
        if let Some(net) = &rule.net {
            let _ = writeln!(out, "nets = [{}]", quoted(net));
        }
        if let Some(name) = &rule.name {
            let _ = writeln!(out, "names = [{}]", quoted(name));
        }
        let _ = writeln!(out, "protocol = {}", quoted(rule.protocol));
        if !rule.ports.is_empty() {
            let ports: Vec<String> = rule
                .ports
                .iter()
                .map(|range| {
                    if range.first == range.last {
                        range.first.to_string()
                    } else {
                        quoted(&format!("{}-{}", range.first, range.last))
                    }
                })
                .collect();
            let _ = writeln!(out, "ports = [{}]", ports.join(", "));
        }
        let _ = writeln!(out, "direction = {}", quoted(rule.direction));
    }
    out
}

#[cfg(test)]
mod tests {
    use gateway_ebpf::{lane, proto};

    use super::*;
    use crate::policy::{PolicyId, check_text, entries::tests::outbound, model::Direction};

    const SAMPLE: &str = include_str!("testdata/lightbulb.mud.json");

    #[test]
    fn rfc8520_sample_imports_as_a_class_that_checks_and_compiles() {
        let imported = import(SAMPLE, "lightbulb", 40).expect("valid MUD");
        assert_eq!(imported.skipped.len(), 2, "{:?}", imported.skipped);
        assert!(imported.skipped[0].contains("my-controller"));
        assert!(imported.skipped[1].contains("block-telnet"));
        assert!(imported.toml.contains("# Skipped ACE \"myctl-frdev\""));
        let compiled = check_text(&imported.toml);
        let class = &compiled.source.classes[0];
        assert_eq!((class.name.as_str(), class.id.0), ("lightbulb", 40));
        assert_eq!(class.description.as_deref(), Some("The BMS Example Light Bulb"));
        let id = PolicyId(lane::FIRST_CLASS_POLICY + 40);
        // test.example.com on 443 (v4 and v6 ACLs, from- and to-device): one DNS rule.
        assert_eq!(compiled.dns_rules.len(), 1);
        assert_eq!(compiled.dns_rules[0].pattern.to_string(), "test.example.com");
        assert_eq!(compiled.dns_rules[0].matches_v4, outbound(&[(443, 443)]));
        // NTP both ways collapse into one outbound udp/123 entry.
        let ntp = compiled.rules.iter().find(|rule| rule.net.to_string() == "198.51.100.123/32").expect("ntp entry");
        assert_eq!((ntp.policy_id, ntp.proto), (id, proto::UDP));
        assert_eq!(ntp.matches, outbound(&[(123, 123)]));
        // Management initiated by 10.77.0.30 towards the bulb: inbound.
        let mgmt = class.rules.iter().find(|rule| rule.nets.iter().any(|n| n.to_string() == "10.77.0.30/32"));
        assert_eq!(mgmt.expect("mgmt rule").direction, Direction::Inbound);
        assert_eq!(imported.rules, 3);
        assert!(imported.toml.contains("MUD ACE cl0-frdev, cl0-todev"), "{}", imported.toml);
    }

    #[test]
    fn malformed_mud_is_refused_with_the_json_path() {
        let not_json = import("{", "x", 1).expect_err("not JSON");
        assert!(matches!(not_json, MudError::Json(_)));
        let not_mud = import("{\"foo\": 1}", "x", 1).expect_err("not MUD");
        assert!(not_mud.to_string().starts_with("/ietf-mud:mud:"), "{not_mud}");
        let dangling = SAMPLE.replace("\"name\": \"mud-76100-v4to\",", "\"name\": \"renamed\",");
        assert_ne!(dangling, SAMPLE);
        let error = import(&dangling, "x", 1).expect_err("missing ACL");
        assert!(error.to_string().contains("\"mud-76100-v4to\" is referenced but not defined"), "{error}");
        let bad_net = SAMPLE.replace("198.51.100.123/32\",\n                  \"protocol\": 17\n                },\n                \"udp\": {\n                  \"destination-port\"", "198.51.100.300/32\",\n                  \"protocol\": 17\n                },\n                \"udp\": {\n                  \"destination-port\"");
        assert_ne!(bad_net, SAMPLE);
        let error = import(&bad_net, "x", 1).expect_err("bad network");
        assert!(error.to_string().contains("destination-ipv4-network"), "{error}");
        let bad_port = SAMPLE.replace("\"port\": 123 }\n                }\n              },\n              \"actions\": { \"forwarding\": \"accept\" }\n            },\n            {\n              \"name\": \"myctl", "\"port\": 70000 }\n                }\n              },\n              \"actions\": { \"forwarding\": \"accept\" }\n            },\n            {\n              \"name\": \"myctl");
        assert_ne!(bad_port, SAMPLE);
        assert!(import(&bad_port, "x", 1).expect_err("bad port").to_string().contains("not a port"));
        let version = SAMPLE.replace("\"mud-version\": 1", "\"mud-version\": 2");
        assert!(import(&version, "x", 1).is_err());
    }

    #[test]
    fn bad_class_name_or_id_is_refused_by_the_policy_check() {
        let error = import(SAMPLE, "bad name", 1).expect_err("bad class name");
        assert!(matches!(error, MudError::Check(_)), "{error}");
        assert!(matches!(import(SAMPLE, "ok", 0), Err(MudError::Check(_))));
    }
}
