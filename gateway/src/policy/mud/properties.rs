//! Property test of the importer: for random MUD files, the imported class never admits a
//! packet the file's ACEs would not. The ACEs are evaluated here, independently of the
//! importer (first match in order, RFC 8519; the MUD augmentations as RFC 8520 defines them),
//! and the imported class is read from its TOML with the contract's meaning of each key.
//! IPv6 as well as IPv4: typed ACLs of both, and every network, name and abstraction of the
//! test's world has addresses in both families. Seeded and bounded, so a failure reproduces.
use std::net::IpAddr;

use ipnet::IpNet;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde_json::{Value, json};

use super::{MudError, import};

/// Where names and abstractions point in the test's world.
const NAMES: &[(&str, &[&str])] =
    &[("cloud.example.com", &["203.0.113.80", "2001:db8:80::1"]), ("ntp.example.org", &["198.51.100.123"])];
const NETS: &[&str] = &["203.0.113.0/24", "203.0.113.80/32", "198.51.100.0/24", "2001:db8:80::/48", "10.77.0.9/32"];
const LAN: &[&str] = &["10.77.0.0/16", "2001:db8:77::/64"];
/// The gateway's own addresses (the standard DNS and NTP controllers).
const GATEWAY: &[&str] = &["10.77.0.1", "2001:db8:77::1"];
const MUD_URL: &str = "https://lighting.example.com/bulb";
/// Devices on the LAN, with their MUD URLs (manufacturer and model matches), in each family.
const DEVICES: &[(&str, &str)] = &[
    ("10.77.0.40", "https://lighting.example.com/switch"),
    ("2001:db8:77::40", "https://lighting.example.com/switch"),
    ("10.77.0.41", "https://other.example.net/cam"),
    ("2001:db8:77::41", "https://other.example.net/cam"),
];
/// Controllers: each identity its own addresses.
const CONTROLLERS: &[(&str, &str)] = &[
    ("my-controller", "10.77.0.9"),
    ("my-controller", "2001:db8:77::9"),
    ("https://lighting.example.com/hub", "10.77.0.8"),
    ("https://lighting.example.com/hub", "2001:db8:77::8"),
];
const PROBE_ADDRS: &[&str] = &[
    "203.0.113.80",
    "203.0.113.5",
    "198.51.100.123",
    "198.51.100.7",
    "2001:db8:80::1",
    "2001:db8:80::2",
    "10.77.0.1",
    "10.77.0.8",
    "10.77.0.9",
    "10.77.0.40",
    "10.77.0.41",
    "2001:db8:77::5",
    "2001:db8:77::1",
    "2001:db8:77::8",
    "2001:db8:77::9",
    "2001:db8:77::40",
    "2001:db8:77::41",
    "192.0.2.1",
];
const PROBE_PORTS: &[u16] = &[23, 53, 123, 443, 1000, 5683, 8443, 40000];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

fn family_of(addr: IpAddr) -> Family {
    if addr.is_ipv4() { Family::V4 } else { Family::V6 }
}

/// A generated ACE, kept beside its JSON so the test evaluates what it wrote.
#[derive(Clone, Debug)]
struct GenAce {
    accept: bool,
    /// The IP match's own family, if it has one.
    l3: Option<Family>,
    target: GenTarget,
    /// 6, 17, 1/58, or none.
    protocol: Option<u8>,
    /// (first, last) of the remote's and the device's port.
    remote_port: Option<(u16, u16)>,
    device_port: Option<(u16, u16)>,
    icmp: Option<(u8, Option<u8>)>,
    /// Some(true): initiated by the device.
    initiated: Option<bool>,
}

#[derive(Clone, Debug)]
enum GenTarget {
    Any,
    Net(IpNet),
    Name(&'static str),
    /// (the `ietf-mud:mud` member, its value), narrowed by a network match or not.
    Abstraction(&'static str, Value, Option<IpNet>),
}

/// A probe: one packet a device sends, and who opened its flow.
#[derive(Clone, Copy, Debug)]
struct Probe {
    remote: IpAddr,
    protocol: u8,
    remote_port: u16,
    device_port: u16,
    icmp: (u8, u8),
    opened_by_device: bool,
}

fn random_ports(rng: &mut StdRng) -> Option<(u16, u16)> {
    match rng.gen_range(0..4) {
        0 | 1 => None,
        2 => {
            let port = *PROBE_PORTS.choose(rng).expect("non-empty");
            Some((port, port))
        }
        _ => Some((400, 1024)),
    }
}

fn random_ace(rng: &mut StdRng, acl_family: Option<Family>) -> GenAce {
    let l3 = match rng.gen_range(0..4) {
        0 => None,
        _ => acl_family.or(Some(if rng.gen_bool(0.5) { Family::V4 } else { Family::V6 })),
    };
    let protocol = match rng.gen_range(0..5) {
        0 => None,
        1 | 2 => Some(6),
        3 => Some(17),
        _ => match l3.or(acl_family) {
            Some(Family::V6) => Some(58),
            Some(Family::V4) => Some(1),
            None => None,
        },
    };
    let net_of_family = |rng: &mut StdRng, family: Option<Family>| -> Option<IpNet> {
        let candidates: Vec<IpNet> = NETS
            .iter()
            .map(|net| net.parse::<IpNet>().expect("net"))
            .filter(|net| family.is_none_or(|f| family_of(net.addr()) == f))
            .collect();
        candidates.choose(rng).copied()
    };
    let target = match rng.gen_range(0..6) {
        0 => GenTarget::Any,
        1 if l3.is_some() => net_of_family(rng, l3).map_or(GenTarget::Any, GenTarget::Net),
        2 if l3.is_some() => GenTarget::Name(NAMES.choose(rng).expect("non-empty").0),
        _ => {
            let (key, value) = [
                ("local-networks", json!([null])),
                ("same-manufacturer", json!([null])),
                ("manufacturer", json!("other.example.net")),
                ("model", json!("https://lighting.example.com/switch")),
                ("controller", json!("urn:ietf:params:mud:dns")),
                ("controller", json!("https://lighting.example.com/hub")),
                ("my-controller", json!([null])),
            ]
            .choose(rng)
            .expect("non-empty")
            .clone();
            let within = if l3.is_some() && rng.gen_bool(0.3) { net_of_family(rng, l3) } else { None };
            GenTarget::Abstraction(key, value, within)
        }
    };
    let has_ports = matches!(protocol, Some(6 | 17));
    GenAce {
        accept: rng.gen_range(0..5) != 0,
        l3,
        target,
        protocol,
        remote_port: if has_ports { random_ports(rng) } else { None },
        device_port: if has_ports { random_ports(rng) } else { None },
        icmp: match protocol {
            Some(1 | 58) if rng.gen_bool(0.7) => {
                Some((*[0u8, 8, 128, 129].choose(rng).expect("non-empty"), rng.gen_bool(0.5).then_some(0)))
            }
            _ => None,
        },
        initiated: if protocol == Some(6) && rng.gen_bool(0.5) { Some(rng.gen_bool(0.5)) } else { None },
    }
}

fn port_json(range: (u16, u16)) -> Value {
    if range.0 == range.1 {
        json!({"operator": "eq", "port": range.0})
    } else {
        json!({"lower-port": range.0, "upper-port": range.1})
    }
}

/// The ACE's JSON on `from_device`'s side.
fn ace_json(ace: &GenAce, name: &str, from_device: bool) -> Value {
    let (remote, device) = if from_device { ("destination", "source") } else { ("source", "destination") };
    let mut matches = serde_json::Map::new();
    let mut ip = serde_json::Map::new();
    if let Some(protocol) = ace.protocol {
        ip.insert("protocol".into(), json!(protocol));
    }
    let version = |family| if family == Family::V4 { "ipv4" } else { "ipv6" };
    match &ace.target {
        GenTarget::Any => {}
        GenTarget::Net(net) | GenTarget::Abstraction(_, _, Some(net)) => {
            let family = family_of(net.addr());
            ip.insert(format!("{remote}-{}-network", version(family)), json!(net.to_string()));
        }
        GenTarget::Name(name) => {
            let key = if from_device { "ietf-acldns:dst-dnsname" } else { "ietf-acldns:src-dnsname" };
            ip.insert(key.into(), json!(name));
        }
        GenTarget::Abstraction(..) => {}
    }
    if let GenTarget::Abstraction(key, value, _) = &ace.target {
        matches.insert("ietf-mud:mud".into(), json!({ *key: value }));
    }
    if let Some(family) = ace.l3 {
        matches.insert(version(family).into(), Value::Object(ip));
    }
    let l4 = match ace.protocol {
        Some(6) => Some("tcp"),
        Some(17) => Some("udp"),
        Some(1 | 58) => Some("icmp"),
        _ => None,
    };
    if let Some(l4) = l4 {
        let mut fields = serde_json::Map::new();
        if let Some(range) = ace.remote_port {
            fields.insert(format!("{remote}-port"), port_json(range));
        }
        if let Some(range) = ace.device_port {
            fields.insert(format!("{device}-port"), port_json(range));
        }
        if let Some((kind, code)) = ace.icmp {
            fields.insert("type".into(), json!(kind));
            if let Some(code) = code {
                fields.insert("code".into(), json!(code));
            }
        }
        if let Some(by_device) = ace.initiated {
            fields.insert(
                "ietf-mud:direction-initiated".into(),
                json!(if by_device { "from-device" } else { "to-device" }),
            );
        }
        matches.insert(l4.into(), Value::Object(fields));
    }
    json!({ "name": name, "matches": matches, "actions": { "forwarding": if ace.accept { "accept" } else { "drop" } } })
}

/// The addresses an abstraction stands for in the test's world.
fn abstraction_addrs(key: &str, value: &Value) -> Vec<IpNet> {
    let hosts = |addrs: Vec<&str>| addrs.into_iter().map(|a| IpNet::from(a.parse::<IpAddr>().expect("addr"))).collect();
    let authority = |url: &str| url.split('/').nth(2).unwrap_or("").to_owned();
    match (key, value.as_str()) {
        ("local-networks", _) => LAN.iter().map(|net| net.parse().expect("net")).collect(),
        ("same-manufacturer", _) => {
            hosts(DEVICES.iter().filter(|(_, url)| authority(url) == authority(MUD_URL)).map(|(a, _)| *a).collect())
        }
        ("manufacturer", Some(host)) => {
            hosts(DEVICES.iter().filter(|(_, url)| authority(url) == host).map(|(a, _)| *a).collect())
        }
        ("model", Some(model)) => hosts(DEVICES.iter().filter(|(_, url)| url == &model).map(|(a, _)| *a).collect()),
        ("controller", Some(uri)) if uri.starts_with("urn:ietf:params:mud:") => hosts(GATEWAY.to_vec()),
        ("controller", Some(uri)) => hosts(CONTROLLERS.iter().filter(|(id, _)| *id == uri).map(|(_, a)| *a).collect()),
        ("my-controller", _) => {
            hosts(CONTROLLERS.iter().filter(|(id, _)| *id == "my-controller").map(|(_, a)| *a).collect())
        }
        _ => Vec::new(),
    }
}

fn name_addrs(name: &str) -> Vec<IpAddr> {
    NAMES
        .iter()
        .filter(|(n, _)| *n == name)
        .flat_map(|(_, addrs)| addrs.iter())
        .map(|a| a.parse().expect("addr"))
        .collect()
}

fn in_range(range: Option<(u16, u16)>, port: u16) -> bool {
    range.is_none_or(|(first, last)| first <= port && port <= last)
}

/// RFC 8519/8520: whether from-device ACE `ace` (in an ACL of `acl_family`) matches `probe`.
fn ace_matches(ace: &GenAce, acl_family: Option<Family>, probe: &Probe) -> bool {
    let family = family_of(probe.remote);
    if ace.l3.or(acl_family).is_some_and(|f| f != family) {
        return false;
    }
    let target = match &ace.target {
        GenTarget::Any => true,
        GenTarget::Net(net) => net.contains(&probe.remote),
        GenTarget::Name(name) => name_addrs(name).contains(&probe.remote),
        GenTarget::Abstraction(key, value, within) => {
            abstraction_addrs(key, value).iter().any(|net| net.contains(&probe.remote))
                && within.is_none_or(|net| net.contains(&probe.remote))
        }
    };
    let protocol = match ace.protocol {
        None => true,
        Some(1 | 58) => probe.protocol == if family == Family::V4 { 1 } else { 58 },
        Some(number) => probe.protocol == number,
    };
    let ports = !matches!(probe.protocol, 6 | 17)
        || (in_range(ace.remote_port, probe.remote_port) && in_range(ace.device_port, probe.device_port));
    let icmp = ace.icmp.is_none_or(|(kind, code)| probe.icmp.0 == kind && code.is_none_or(|c| c == probe.icmp.1));
    let initiated = probe.protocol != 6 || ace.initiated.is_none_or(|by_device| by_device == probe.opened_by_device);
    target && protocol && ports && icmp && initiated
}

/// First match wins over the from-device ACLs, in order; no match denies.
fn mud_admits(acls: &[(Option<Family>, Vec<GenAce>)], probe: &Probe) -> bool {
    acls.iter()
        .flat_map(|(family, aces)| aces.iter().map(move |ace| (family, ace)))
        .find(|(family, ace)| ace_matches(ace, **family, probe))
        .is_some_and(|(_, ace)| ace.accept)
}

/// A TOML port list (numbers or "first-last"); empty: every port.
fn toml_ports(rule: &toml::Table, key: &str, port: u16) -> bool {
    let Some(list) = rule.get(key).and_then(toml::Value::as_array) else { return true };
    list.iter().any(|entry| match entry {
        toml::Value::Integer(n) => i64::from(port) == *n,
        toml::Value::String(range) => {
            let (first, last) = range.split_once('-').expect("a range");
            first.parse::<u16>().expect("port") <= port && port <= last.parse::<u16>().expect("port")
        }
        _ => false,
    })
}

/// The contract's meaning of one imported rule, for `probe`; `controllers` stands for the
/// addresses the operator lists for the class.
fn rule_admits(rule: &toml::Table, controllers: &[IpNet], probe: &Probe) -> bool {
    let strings = |key: &str| -> Vec<String> {
        rule.get(key)
            .and_then(toml::Value::as_array)
            .map_or_else(Vec::new, |list| list.iter().map(|v| v.as_str().expect("string").to_owned()).collect())
    };
    let nets: Vec<IpNet> = strings("nets").iter().map(|n| n.parse().expect("net")).collect();
    let target = match rule.get("remote").and_then(toml::Value::as_str) {
        Some(remote) => {
            let resolved = match remote {
                "local-networks" => abstraction_addrs("local-networks", &Value::Null),
                "gateway" => abstraction_addrs("controller", &json!("urn:ietf:params:mud:dns")),
                "controller" | "my-controller" => controllers.to_vec(),
                other => match other.split_once(':') {
                    Some(("manufacturer", host)) => abstraction_addrs("manufacturer", &json!(host)),
                    Some(("controller", uri)) => abstraction_addrs("controller", &json!(uri)),
                    Some(("model", url)) => abstraction_addrs("model", &json!(url)),
                    _ => panic!("unknown remote {other}"),
                },
            };
            resolved.iter().any(|net| net.contains(&probe.remote))
                && (nets.is_empty() || nets.iter().any(|net| net.contains(&probe.remote)))
        }
        None => {
            nets.iter().any(|net| net.contains(&probe.remote))
                || strings("names").iter().any(|name| name_addrs(name).contains(&probe.remote))
        }
    };
    let family = family_of(probe.remote);
    let in_family = match rule.get("family").and_then(toml::Value::as_str) {
        None => true,
        Some("ipv4") => family == Family::V4,
        Some("ipv6") => family == Family::V6,
        Some(other) => panic!("unknown family {other}"),
    };
    let protocol = match rule.get("protocol").and_then(toml::Value::as_str).unwrap_or("any") {
        "any" => true,
        "tcp" => probe.protocol == 6,
        "udp" => probe.protocol == 17,
        "icmp" => probe.protocol == if family == Family::V4 { 1 } else { 58 },
        other => panic!("unknown protocol {other}"),
    };
    let direction = rule.get("direction").and_then(toml::Value::as_str).unwrap_or("outbound");
    let opener_ok =
        matches!((direction, probe.opened_by_device), ("outbound", true) | ("inbound", false) | ("both", _));
    // Ports of the opening packet: the device's own packets when it opened, else the remote's.
    let (destination, source) = if probe.opened_by_device {
        (probe.remote_port, probe.device_port)
    } else {
        (probe.device_port, probe.remote_port)
    };
    let ports = !matches!(probe.protocol, 6 | 17)
        || (toml_ports(rule, "ports", destination) && toml_ports(rule, "source_ports", source));
    let icmp = strings("icmp_types").is_empty()
        || (probe.opened_by_device
            && strings("icmp_types").iter().any(|entry| match entry.split_once('/') {
                Some((kind, code)) => format!("{}/{}", probe.icmp.0, probe.icmp.1) == format!("{kind}/{code}"),
                None => entry == &probe.icmp.0.to_string(),
            }));
    target && in_family && protocol && opener_ok && ports && icmp
}

#[test]
fn imported_classes_never_admit_what_the_mud_file_does_not() {
    let mut rng = StdRng::seed_from_u64(0x1077_0017);
    let (mut imported, mut probes, mut one_family) = (0, 0, 0);
    // Probes admitted, IPv4 and IPv6.
    let mut admitted = [0usize; 2];
    // The kinds of remote (`gateway`, `manufacturer`, ...) that admitted an IPv6 probe.
    let mut remotes_v6 = std::collections::BTreeSet::new();
    for iteration in 0..400 {
        let mut acls = Vec::new();
        let mut json_acls = Vec::new();
        let mut from_names = Vec::new();
        let mut to_names = Vec::new();
        for (index, from_device) in [true, true, false, false].into_iter().enumerate() {
            let family = *[Some(Family::V4), Some(Family::V6), None].choose(&mut rng).expect("non-empty");
            let aces: Vec<GenAce> = (0..rng.gen_range(0..4)).map(|_| random_ace(&mut rng, family)).collect();
            let name = format!("acl{index}");
            let mut acl = json!({
                "name": name,
                "aces": { "ace": aces.iter().enumerate().map(|(i, ace)| ace_json(ace, &format!("ace{i}"), from_device)).collect::<Vec<_>>() }
            });
            if let Some(family) = family {
                acl["type"] = json!(if family == Family::V4 { "ipv4-acl-type" } else { "ipv6-acl-type" });
            }
            json_acls.push(acl);
            if from_device {
                from_names.push(json!({ "name": name }));
                acls.push((family, aces));
            } else {
                to_names.push(json!({ "name": name }));
            }
        }
        let document = json!({
            "ietf-mud:mud": {
                "mud-version": 1,
                "mud-url": MUD_URL,
                "from-device-policy": { "access-lists": { "access-list": from_names } },
                "to-device-policy": { "access-lists": { "access-list": to_names } },
            },
            "ietf-access-control-list:acls": { "acl": json_acls },
        });
        let text = document.to_string();
        let result = match import(&text, "c", 1) {
            Ok(result) => result,
            Err(MudError::NothingRepresentable(_)) => continue,
            Err(error) => panic!("iteration {iteration}: generated files are valid: {error}\n{text}"),
        };
        imported += 1;
        // The operator lists the class's own controller when the import asks for it; other
        // controllers are the site's (`controller:<URI>`).
        let controllers: Vec<IpNet> = CONTROLLERS
            .iter()
            .filter(|(id, _)| *id == "my-controller")
            .filter(|(id, _)| result.notes.iter().any(|note| note.contains(&format!("controller {id:?}"))))
            .map(|(_, addr)| IpNet::from(addr.parse::<IpAddr>().expect("addr")))
            .collect();
        let policy: toml::Value = toml::from_str(&result.toml).expect("imported TOML");
        let rules: Vec<toml::Table> = policy["class"][0]
            .get("allow")
            .and_then(toml::Value::as_array)
            .map(|rules| rules.iter().map(|r| r.as_table().expect("table").clone()).collect())
            .unwrap_or_default();
        one_family += rules.iter().filter(|rule| rule.contains_key("family")).count();
        for remote in PROBE_ADDRS {
            let remote: IpAddr = remote.parse().expect("addr");
            for protocol in [6u8, 17, 1, 58, 47] {
                for opened_by_device in [true, false] {
                    for _ in 0..6 {
                        let probe = Probe {
                            remote,
                            protocol,
                            remote_port: *PROBE_PORTS.choose(&mut rng).expect("non-empty"),
                            device_port: *PROBE_PORTS.choose(&mut rng).expect("non-empty"),
                            icmp: (*[0u8, 8, 128, 129, 3].choose(&mut rng).expect("non-empty"), rng.gen_range(0..2)),
                            opened_by_device,
                        };
                        probes += 1;
                        let admitting: Vec<&toml::Table> =
                            rules.iter().filter(|rule| rule_admits(rule, &controllers, &probe)).collect();
                        if !admitting.is_empty() {
                            admitted[usize::from(remote.is_ipv6())] += 1;
                            if remote.is_ipv6() {
                                let kinds = admitting.iter().filter_map(|rule| rule.get("remote")?.as_str());
                                remotes_v6
                                    .extend(kinds.map(|remote| remote.split(':').next().unwrap_or(remote).to_owned()));
                            }
                            assert!(
                                mud_admits(&acls, &probe),
                                "iteration {iteration}: the class admits {probe:?} but the file does not\n{text}\n{}",
                                result.toml
                            );
                        }
                    }
                }
            }
        }
    }
    // The test can fail: most files import something, and many probes are admitted.
    assert!(imported > 200, "{imported} files imported");
    let total: usize = admitted.iter().sum();
    assert!(total > probes / 50, "{total} of {probes} probes admitted");
    // IPv6 as much as IPv4: ACLs, networks, names and every abstraction have addresses of both.
    assert!(admitted[1] > admitted[0] / 4, "admitted (IPv4, IPv6): {admitted:?}");
    let every_remote = ["controller", "gateway", "local-networks", "manufacturer", "model", "my-controller"];
    assert_eq!(remotes_v6, every_remote.map(String::from).into(), "remotes that admitted IPv6");
    // Names in typed ACLs are imported kept to their family, and probed in both.
    assert!(one_family > 20, "{one_family} rules kept to one family");
}
