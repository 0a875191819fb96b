//! One access-control entry (RFC 8519, with RFC 8520's `ietf-mud` and `ietf-acldns`
//! augmentations) as the importer reads it: every match it can represent, or the field that
//! it cannot. Reads one ACE's JSON; writes an `Ace`, a `Refusal` naming the field, or a
//! `MudError` when the value is not what the YANG model allows (the file is refused).
use std::fmt;

use gateway_ebpf::PortRange;
use ipnet::IpNet;
use serde_json::{Map, Value};

use super::{MudError, invalid};
use crate::policy::{
    model::{Family, Protocol},
    remote::{Remote, authority_of},
    values::{DnsPattern, merge_ranges, parse_net},
};

/// Which policy an ACL serves: the device's packets, or the packets towards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    FromDevice,
    ToDevice,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::FromDevice => "from-device",
            Side::ToDevice => "to-device",
        }
    }
}

/// The far end of an ACE: what the device talks to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// No address given: every address (of the ACE's family, when it has one).
    Any,
    Net(IpNet),
    Name(DnsPattern),
    /// A MUD abstraction, narrowed by a network match when the ACE has one too.
    Remote {
        remote: Remote,
        within: Option<IpNet>,
    },
    /// Frames of a non-IP EtherType on the LAN.
    LinkLayer(u16),
}

/// An ICMP type with one code or any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Icmp {
    pub kind: u8,
    pub code: Option<u8>,
}

impl fmt::Display for Icmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{}/{code}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// What an accepting or denying ACE matches, in device terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ace {
    pub acl: String,
    pub name: String,
    pub side: Side,
    pub accept: bool,
    /// `None`: both families (no IP match, in an ACL of no family).
    pub family: Option<Family>,
    pub target: Target,
    pub protocol: Protocol,
    /// The remote's port (destination of a from-device packet, source of a to-device one).
    /// Empty: every port.
    pub remote_ports: Vec<PortRange>,
    /// The device's own port. Empty: every port.
    pub device_ports: Vec<PortRange>,
    pub icmp: Option<Icmp>,
    /// `ietf-mud:direction-initiated`: who opened the TCP connections it matches.
    pub initiated: Option<Side>,
    /// The controller it names for the operator to list (a `controller` URI other than the
    /// gateway's own, or `my-controller`).
    pub controller: Option<String>,
}

/// An ACE the gateway cannot represent exactly, and the field that makes it so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub acl: String,
    pub ace: String,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    /// `ACL "a" ACE "b": field: reason`, or `field: reason` outside any ACE (extensions).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.acl.is_empty() {
            write!(f, "ACL {:?} ACE {:?}: ", self.acl, self.ace)?;
        }
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The context one ACE is read in.
pub struct AceContext<'a> {
    pub acl: &'a str,
    pub side: Side,
    /// From the ACL's `type`.
    pub family: Option<Family>,
    /// JSON pointer of the ACE, for errors.
    pub pointer: &'a str,
    /// The file's own MUD URL (`same-manufacturer`).
    pub mud_url: &'a str,
}

/// The standard controller URNs of RFC 8520 §8 the gateway serves itself, and MUDgee's
/// `gateway` (its DHCP ACEs).
const GATEWAY_URNS: &[&str] = &["urn:ietf:params:mud:dns", "urn:ietf:params:mud:ntp", "urn:ietf:params:mud:gateway"];

/// Reads one ACE.
pub fn read(ace: &Value, cx: &AceContext) -> Result<Result<Ace, Refusal>, MudError> {
    let pointer = cx.pointer;
    let name = ace
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{pointer}/name"), "missing or not a string"))?;
    let refuse = |field: &str, reason: &str| {
        Ok(Err(Refusal {
            acl: cx.acl.to_owned(),
            ace: name.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }))
    };
    let action = ace
        .pointer("/actions/forwarding")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{pointer}/actions/forwarding"), "missing or not a string"))?;
    let accept = match identity(action) {
        "accept" => true,
        "drop" | "reject" => false,
        other => return Err(invalid(&format!("{pointer}/actions/forwarding"), format!("unknown action {other:?}"))),
    };
    if let Some(actions) = ace.get("actions").and_then(Value::as_object)
        && let Some(other) = actions.keys().find(|key| key.as_str() != "forwarding")
    {
        return refuse(&format!("actions/{other}"), "only forwarding actions are represented");
    }
    let empty = Map::new();
    let matches = match ace.get("matches") {
        None => &empty,
        Some(value) => value.as_object().ok_or_else(|| invalid(&format!("{pointer}/matches"), "not an object"))?,
    };
    let mut l3 = None;
    let mut l4 = None;
    let mut mud = None;
    let mut eth = None;
    for (key, value) in matches {
        match key.as_str() {
            "ipv4" => l3 = Some((Family::Ipv4, value)),
            "ipv6" => l3 = Some((Family::Ipv6, value)),
            "tcp" | "udp" | "icmp" => {
                if l4.is_some() {
                    return Err(invalid(&format!("{pointer}/matches"), "more than one of tcp, udp, icmp"));
                }
                l4 = Some((key.as_str(), value));
            }
            "ietf-mud:mud" => mud = Some(value),
            "eth" => match eth_match(value) {
                EthMatch::Beyond(field) => {
                    return refuse(
                        &format!("matches/eth/{field}"),
                        "the gateway's rules match IP, not Ethernet fields",
                    );
                }
                other => eth = Some(other),
            },
            other => return refuse(&format!("matches/{other}"), "not represented by the gateway's rules"),
        }
    }
    if matches.contains_key("ipv4") && matches.contains_key("ipv6") {
        return Err(invalid(&format!("{pointer}/matches"), "both ipv4 and ipv6"));
    }
    let family = match (l3.map(|(family, _)| family), cx.family) {
        (Some(own), Some(acl)) if own != acl => {
            return Err(invalid(&format!("{pointer}/matches"), "an IP match of the other family than its ACL's type"));
        }
        (own, acl) => own.or(acl),
    };
    let family = match eth {
        None | Some(EthMatch::Ip(None)) => family,
        Some(EthMatch::Ip(Some(ethertype))) if family.is_none_or(|family| family == ethertype) => Some(ethertype),
        Some(EthMatch::LinkLayer(ethertype)) if family.is_none() && l4.is_none() => {
            return link_layer(ethertype, mud, cx, name, accept);
        }
        Some(_) => {
            let reason = "contradicts the ACE's IP or transport match, or its ACL's type";
            return Err(invalid(&format!("{pointer}/matches/eth/ethertype"), reason));
        }
    };
    let (remote_side, device_side) = match cx.side {
        Side::FromDevice => ("destination", "source"),
        Side::ToDevice => ("source", "destination"),
    };
    let (remote_dns, device_dns) = match cx.side {
        Side::FromDevice => ("ietf-acldns:dst-dnsname", "ietf-acldns:src-dnsname"),
        Side::ToDevice => ("ietf-acldns:src-dnsname", "ietf-acldns:dst-dnsname"),
    };
    let mut net = None;
    let mut dns = None;
    let mut declared = None;
    if let Some((family, ip)) = l3 {
        let version = family.as_str();
        let ip_pointer = format!("{pointer}/matches/{version}");
        let ip = ip.as_object().ok_or_else(|| invalid(&ip_pointer, "not an object"))?;
        let remote_net = format!("{remote_side}-{version}-network");
        let device_net = format!("{device_side}-{version}-network");
        for (key, value) in ip {
            let at = format!("{ip_pointer}/{key}");
            match key.as_str() {
                "protocol" => {
                    let number = value.as_u64().filter(|n| *n <= 255).ok_or_else(|| invalid(&at, "not 0..=255"))?;
                    declared = Some(number as u8);
                }
                key if key == remote_net => {
                    let text = value.as_str().ok_or_else(|| invalid(&at, "not a string"))?;
                    let parsed = parse_net(text).map_err(|kind| invalid(&at, kind.to_string()))?;
                    if Family::of(&parsed) != family {
                        return Err(invalid(&at, "a network of the other family"));
                    }
                    net = Some(parsed);
                }
                key if key == remote_dns => {
                    let text = value.as_str().ok_or_else(|| invalid(&at, "not a string"))?;
                    dns = Some(DnsPattern::parse(text).map_err(|reason| invalid(&at, reason))?);
                }
                key if key == device_net || key == device_dns => {
                    return refuse(
                        &format!("matches/{version}/{key}"),
                        "the device's own address is the device's; the gateway's rules name the remote only",
                    );
                }
                other => {
                    return refuse(&format!("matches/{version}/{other}"), "not represented by the gateway's rules");
                }
            }
        }
    }
    let mut controller = None;
    let target = match (net, dns, mud) {
        (_, Some(_), Some(_)) => {
            return refuse(&format!("matches/{remote_dns}"), "a DNS name and a MUD abstraction together");
        }
        (Some(_), Some(_), None) => {
            return refuse(&format!("matches/{remote_dns}"), "a DNS name and a network together");
        }
        (None, Some(name), None) => Target::Name(name),
        (net, None, Some(mud)) => match abstraction(mud, &format!("{pointer}/matches/ietf-mud:mud"), cx.mud_url)? {
            Ok((remote, label)) => {
                controller = label;
                Target::Remote { remote, within: net }
            }
            Err((field, reason)) => return refuse(&format!("matches/ietf-mud:mud/{field}"), &reason),
        },
        (Some(net), None, None) => Target::Net(net),
        (None, None, None) => Target::Any,
    };
    let icmp_number = |family: Option<Family>| match family {
        Some(Family::Ipv6) => 58,
        _ => 1,
    };
    let protocol = match (declared, l4.map(|(key, _)| key)) {
        (None, None) => Protocol::Any,
        (Some(6) | None, Some("tcp")) | (Some(6), None) => Protocol::Tcp,
        (Some(17) | None, Some("udp")) | (Some(17), None) => Protocol::Udp,
        (None, Some("icmp")) => Protocol::Icmp,
        (Some(number), Some("icmp") | None) if number == icmp_number(family) && family.is_some() => Protocol::Icmp,
        (Some(number), None) => {
            return refuse(
                "matches/protocol",
                &format!("IP protocol {number}: the gateway's rules name tcp, udp, icmp or any"),
            );
        }
        (declared, Some(l4)) => {
            let declared = declared.map_or_else(|| "none".to_owned(), |n| n.to_string());
            return Err(invalid(
                &format!("{pointer}/matches"),
                format!("protocol {declared} contradicts the {l4} match"),
            ));
        }
    };
    let mut ace = Ace {
        acl: cx.acl.to_owned(),
        name: name.to_owned(),
        side: cx.side,
        accept,
        family,
        target,
        protocol,
        remote_ports: Vec::new(),
        device_ports: Vec::new(),
        icmp: None,
        initiated: None,
        controller,
    };
    if let Some((key, value)) = l4 {
        let l4_pointer = format!("{pointer}/matches/{key}");
        let fields = value.as_object().ok_or_else(|| invalid(&l4_pointer, "not an object"))?;
        let (remote_port, device_port) = match cx.side {
            Side::FromDevice => ("destination-port", "source-port"),
            Side::ToDevice => ("source-port", "destination-port"),
        };
        for (field, value) in fields {
            let at = format!("{l4_pointer}/{field}");
            match (key, field.as_str()) {
                ("tcp" | "udp", port) if port == remote_port => ace.remote_ports = port_ranges(value, &at)?,
                ("tcp" | "udp", port) if port == device_port => ace.device_ports = port_ranges(value, &at)?,
                ("tcp", "ietf-mud:direction-initiated") => {
                    ace.initiated = Some(match value.as_str().map(identity) {
                        Some("from-device") => Side::FromDevice,
                        Some("to-device") => Side::ToDevice,
                        _ => return Err(invalid(&at, "expected from-device or to-device")),
                    });
                }
                ("icmp", "type") => {
                    let kind = value.as_u64().filter(|n| *n <= 255).ok_or_else(|| invalid(&at, "not 0..=255"))?;
                    let code = ace.icmp.and_then(|icmp| icmp.code);
                    ace.icmp = Some(Icmp { kind: kind as u8, code });
                }
                ("icmp", "code") => {}
                (_, other) => {
                    return refuse(&format!("matches/{key}/{other}"), "not represented by the gateway's rules");
                }
            }
        }
        if key == "icmp"
            && let Some(code) = fields.get("code")
        {
            let code = code
                .as_u64()
                .filter(|n| *n <= 255)
                .ok_or_else(|| invalid(&format!("{l4_pointer}/code"), "not 0..=255"))?;
            match &mut ace.icmp {
                Some(icmp) => icmp.code = Some(code as u8),
                None => return refuse(&format!("matches/{key}/code"), "an ICMP code without its type"),
            }
        }
    }
    Ok(Ok(ace))
}

/// A YANG identity without its module prefix.
pub fn identity(text: &str) -> &str {
    text.rsplit(':').next().unwrap_or(text)
}

/// What an `eth` match says.
enum EthMatch {
    /// At most an IP EtherType (`None`: no EtherType): the IP match says the rest.
    Ip(Option<Family>),
    /// A non-IP EtherType, nothing else.
    LinkLayer(u16),
    /// A field the gateway's rules cannot express.
    Beyond(String),
}

fn eth_match(eth: &Value) -> EthMatch {
    let Some(fields) = eth.as_object() else { return EthMatch::Beyond("(not an object)".into()) };
    let mut found = EthMatch::Ip(None);
    for (key, value) in fields {
        found = match (key.as_str(), ethertype(value)) {
            ("ethertype", Some(0x0800)) => EthMatch::Ip(Some(Family::Ipv4)),
            ("ethertype", Some(0x86dd)) => EthMatch::Ip(Some(Family::Ipv6)),
            ("ethertype", Some(other)) => EthMatch::LinkLayer(other),
            _ => return EthMatch::Beyond(key.clone()),
        };
    }
    found
}

/// An EtherType as RFC 8519's `ietf-ethertypes` writes it (a number, or the name of IPv4,
/// ARP, IPv6 or EAPOL), or as MUDgee does (`"0x0806"`).
fn ethertype(value: &Value) -> Option<u16> {
    if let Some(number) = value.as_u64() {
        return u16::try_from(number).ok();
    }
    let text = value.as_str()?.to_ascii_lowercase();
    match identity(&text) {
        "ipv4" => Some(0x0800),
        "arp" => Some(0x0806),
        "ipv6" => Some(0x86dd),
        "eapol" => Some(0x888e),
        other => u16::from_str_radix(other.strip_prefix("0x").unwrap_or(other), 16).ok(),
    }
}

/// A non-IP ACE (ARP, EAPOL...), towards the LAN only: the gateway passes every device's
/// non-IP frames (they stay on the LAN), so it needs no rule; anything more is refused.
fn link_layer(
    ethertype: u16,
    mud: Option<&Value>,
    cx: &AceContext,
    name: &str,
    accept: bool,
) -> Result<Result<Ace, Refusal>, MudError> {
    let local = |mud: &Value| mud.as_object().is_some_and(|fields| fields.keys().eq(["local-networks"]));
    if mud.is_some_and(|mud| !local(mud)) {
        return Ok(Err(Refusal {
            acl: cx.acl.to_owned(),
            ace: name.to_owned(),
            field: "matches/ietf-mud:mud".into(),
            reason: "non-IP frames stay on the LAN: only local-networks names where they go".into(),
        }));
    }
    Ok(Ok(Ace {
        acl: cx.acl.to_owned(),
        name: name.to_owned(),
        side: cx.side,
        accept,
        family: None,
        target: Target::LinkLayer(ethertype),
        protocol: Protocol::Any,
        remote_ports: Vec::new(),
        device_ports: Vec::new(),
        icmp: None,
        initiated: None,
        controller: None,
    }))
}

/// The remote and, for controllers the operator lists, the controller's name.
type Abstraction = (Remote, Option<String>);

/// An `ietf-mud:mud` match as a gateway-resolved remote, or the field and why not.
fn abstraction(mud: &Value, pointer: &str, mud_url: &str) -> Result<Result<Abstraction, (String, String)>, MudError> {
    let fields = mud.as_object().ok_or_else(|| invalid(pointer, "not an object"))?;
    if fields.len() != 1 {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        return Ok(Err((names.join(","), "one MUD abstraction per ACE is represented".into())));
    }
    let (key, value) = fields.iter().next().expect("one field");
    let at = format!("{pointer}/{key}");
    let text = || value.as_str().ok_or_else(|| invalid(&at, "not a string"));
    Ok(Ok(match key.as_str() {
        "local-networks" => (Remote::LocalNetworks, None),
        "my-controller" => (Remote::MyController, Some("my-controller".to_owned())),
        "same-manufacturer" => match authority_of(mud_url) {
            Some(authority) => (Remote::Manufacturer(authority), None),
            None => return Ok(Err((key.clone(), "the file's mud-url has no https authority".into()))),
        },
        "manufacturer" | "model" => {
            let remote = Remote::parse(&format!("{key}:{}", text()?)).map_err(|reason| invalid(&at, reason))?;
            (remote, None)
        }
        "controller" => {
            let uri = text()?;
            if GATEWAY_URNS.contains(&uri) {
                (Remote::Gateway, None)
            } else {
                let remote = Remote::parse(&format!("controller:{uri}")).map_err(|reason| invalid(&at, reason))?;
                (remote, Some(uri.to_owned()))
            }
        }
        other => return Ok(Err((other.to_owned(), "not an RFC 8520 abstraction".into()))),
    }))
}

/// RFC 8519 port matches: `{operator, port}` or `{lower-port, upper-port}`; merged ranges.
pub fn port_ranges(value: &Value, pointer: &str) -> Result<Vec<PortRange>, MudError> {
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
    let operator = value.get("operator").and_then(Value::as_str).map(identity).unwrap_or("eq");
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
        other => return Err(invalid(&format!("{pointer}/operator"), format!("unknown operator {other:?}"))),
    };
    Ok(merge_ranges(ranges))
}
