//! Rule remotes resolved at the gateway (`remote = "..."` in an allow rule): the MUD
//! abstractions of RFC 8520 §8, whose addresses only the gateway knows. Reads the checked
//! `Policy`, the gateway's `Site` (its LAN prefixes and own addresses, from `[policy]`) and
//! the devices whose MUD URL is known; writes datapath entries for
//! `CompiledPolicy::rules_with`, the way DNS-derived addresses reach the datapath.
//!
//! - `local-networks`: the gateway's LAN prefixes (`[policy] lan_prefixes`);
//! - `gateway`: the gateway's own addresses (`[policy] gateway_addresses`), which is where
//!   the standard MUD controllers for DNS and NTP are;
//! - `controller`, `my-controller`: the class's `controllers` (one list per class);
//! - `controller:<URI>`: the controller that URI names (RFC 8520 §8: controllers register with
//!   the MUD manager, so the site knows them), `[policy] controllers` of the gateway;
//! - `manufacturer:<authority>`: devices whose MUD URL has that authority (host);
//! - `model:<MUD URL>`: devices announcing exactly that MUD URL.
//!
//! A remote that resolves to no address allows nothing (an empty inventory, no LAN prefix
//! configured): never more than it names.
use std::{collections::BTreeMap, fmt, net::IpAddr};

use ipnet::IpNet;

use super::{
    compile::compile,
    entries::CompiledRule,
    model::{Class, Policy},
};

/// A remote resolved at the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Remote {
    LocalNetworks,
    Gateway,
    /// RFC 8520 `controller` (a controller class other than the standard DNS/NTP ones).
    Controller,
    /// RFC 8520 `my-controller`.
    MyController,
    /// RFC 8520 `controller` with its URI: the site's controller of that URI.
    ControllerUri(String),
    /// Lower-case authority (host) of the MUD URLs that match.
    Manufacturer(String),
    /// The exact MUD URL that matches.
    Model(String),
}

impl Remote {
    /// Parses `local-networks`, `gateway`, `controller`, `my-controller`, `controller:<URI>`,
    /// `manufacturer:<authority>` or `model:<https MUD URL>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "local-networks" => return Ok(Remote::LocalNetworks),
            "gateway" => return Ok(Remote::Gateway),
            "controller" => return Ok(Remote::Controller),
            "my-controller" => return Ok(Remote::MyController),
            _ => {}
        }
        if let Some(uri) = text.strip_prefix("controller:") {
            let valid = !uri.is_empty() && !uri.chars().any(|c| c.is_control() || c.is_whitespace());
            return if valid { Ok(Remote::ControllerUri(uri.to_owned())) } else { Err("not a URI".into()) };
        }
        if let Some(authority) = text.strip_prefix("manufacturer:") {
            let lowered = authority.to_ascii_lowercase();
            let valid = !lowered.is_empty()
                && lowered.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
            return if valid { Ok(Remote::Manufacturer(lowered)) } else { Err("not a host name".into()) };
        }
        if let Some(url) = text.strip_prefix("model:") {
            return match authority_of(url) {
                Some(_) => Ok(Remote::Model(url.to_owned())),
                None => Err("not an https URL with a host".into()),
            };
        }
        Err("expected local-networks, gateway, controller, my-controller, controller:<URI>, manufacturer:<host> or \
             model:<MUD URL>"
            .into())
    }

    /// Whether its addresses come from the devices the gateway sees (they change at run time).
    pub fn is_inventory(&self) -> bool {
        matches!(self, Remote::Manufacturer(_) | Remote::Model(_))
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::LocalNetworks => f.write_str("local-networks"),
            Remote::Gateway => f.write_str("gateway"),
            Remote::Controller => f.write_str("controller"),
            Remote::MyController => f.write_str("my-controller"),
            Remote::ControllerUri(uri) => write!(f, "controller:{uri}"),
            Remote::Manufacturer(authority) => write!(f, "manufacturer:{authority}"),
            Remote::Model(url) => write!(f, "model:{url}"),
        }
    }
}

/// The lower-case authority (host, and port when given) of an https MUD URL.
pub fn authority_of(mud_url: &str) -> Option<String> {
    let url = url::Url::parse(mud_url).ok()?;
    if url.scheme() != "https" {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// A rule's remote and the networks that narrow it (`nets` beside `remote`; empty: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteTarget {
    pub remote: Remote,
    pub within: Vec<IpNet>,
}

/// The parts of `nets` inside some network of `within` (each the smaller of an overlapping
/// pair: prefixes either nest or are disjoint).
pub fn narrowed(nets: &[IpNet], within: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for net in nets {
        for bound in within {
            let inner = if bound.contains(net) {
                *net
            } else if net.contains(bound) {
                *bound
            } else {
                continue;
            };
            if !out.contains(&inner) {
                out.push(inner);
            }
        }
    }
    out.sort();
    out
}

/// What the gateway knows about where it stands, from `[policy]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Site {
    /// The LAN prefixes (`local-networks`).
    pub lan_prefixes: Vec<IpNet>,
    /// The gateway's own addresses on the LAN (`gateway`, the DNS and NTP controllers).
    pub gateway: Vec<IpAddr>,
    /// The controllers by URI (`controller:<URI>`).
    pub controllers: BTreeMap<String, Vec<IpNet>>,
}

/// A device and the MUD URL it announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MudDevice {
    pub addr: IpAddr,
    pub mud_url: String,
}

/// The networks `remote` stands for, for a rule of `class` (`None` for a lane).
pub fn resolve(remote: &Remote, class: Option<&Class>, site: &Site, devices: &[MudDevice]) -> Vec<IpNet> {
    let hosts = |addrs: &mut dyn Iterator<Item = IpAddr>| -> Vec<IpNet> { addrs.map(IpNet::from).collect() };
    let mut nets = match remote {
        Remote::LocalNetworks => site.lan_prefixes.clone(),
        Remote::Gateway => hosts(&mut site.gateway.iter().copied()),
        Remote::Controller | Remote::MyController => class.map(|class| class.controllers.clone()).unwrap_or_default(),
        Remote::ControllerUri(uri) => site.controllers.get(uri).cloned().unwrap_or_default(),
        Remote::Manufacturer(authority) => hosts(
            &mut devices
                .iter()
                .filter(|device| authority_of(&device.mud_url).as_deref() == Some(authority))
                .map(|device| device.addr),
        ),
        Remote::Model(url) => hosts(&mut devices.iter().filter(|device| device.mud_url == *url).map(|d| d.addr)),
    };
    nets.sort();
    nets.dedup();
    nets
}

/// `policy` with only its rules that name a `remote`, each given the networks it resolves to
/// (a rule resolving to nothing is left out). Lanes and classes keep everything else, so
/// includes and the update lane fold exactly as `compile` folds them.
pub fn resolved(policy: &Policy, site: &Site, devices: &[MudDevice]) -> Policy {
    let mut resolved = policy.clone();
    let keep = |rules: &mut Vec<super::model::Rule>, class: Option<&Class>| {
        rules.retain(|rule| rule.remote.is_some());
        for rule in rules.iter_mut() {
            if let Some(target) = &rule.remote {
                let nets = resolve(&target.remote, class, site, devices);
                rule.nets = if target.within.is_empty() { nets } else { narrowed(&nets, &target.within) };
            }
        }
        rules.retain(|rule| !rule.nets.is_empty());
    };
    for lane in [&mut resolved.lanes.onboarding, &mut resolved.lanes.quarantine, &mut resolved.lanes.update] {
        keep(&mut lane.rules, None);
    }
    for (index, class) in resolved.classes.iter_mut().enumerate() {
        keep(&mut class.rules, Some(&policy.classes[index]));
    }
    resolved
}

/// The datapath entries of every `remote` rule of `policy`, to merge with
/// `CompiledPolicy::rules_with`. Entries past the datapath's limits (too many port ranges
/// for one destination, a full map) are refused whole: the second value says why.
pub fn remote_entries(policy: &Policy, site: &Site, devices: &[MudDevice]) -> (Vec<CompiledRule>, Vec<String>) {
    match compile(&resolved(policy, site, devices)) {
        Ok(compiled) => (compiled.rules, Vec::new()),
        Err(errors) => (Vec::new(), errors.iter().map(ToString::to_string).collect()),
    }
}

#[cfg(test)]
mod tests {
    use gateway_ebpf::proto;

    use super::*;
    use crate::policy::{PolicyId, entries::tests::outbound, load::parse_sources};

    fn policy(text: &str) -> Policy {
        parse_sources(&[("t.toml".into(), text.to_owned())]).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    const CLASS: &str = r#"
[[class]]
name = "bulb"
id = 4
controllers = ["10.77.0.9"]
[[class.allow]]
remote = "local-networks"
protocol = "tcp"
ports = [9999]
direction = "inbound"
[[class.allow]]
remote = "gateway"
protocol = "udp"
ports = [53]
[[class.allow]]
remote = "my-controller"
protocol = "tcp"
ports = [8443]
[[class.allow]]
remote = "manufacturer:lighting.example.com"
protocol = "udp"
ports = [5683]
[[class.allow]]
remote = "model:https://lighting.example.com/switch2000"
protocol = "tcp"
ports = [80]
[[class.allow]]
remote = "local-networks"
nets = ["0.0.0.0/0", "10.77.200.0/24", "192.0.2.0/24"]
protocol = "udp"
ports = [5353]
[[class.allow]]
nets = ["10.78.0.1"]
protocol = "tcp"
ports = [443]
[[class.allow]]
remote = "controller:https://lighting.example.com/hub"
protocol = "tcp"
ports = [8883]
"#;

    fn site() -> Site {
        Site {
            // Beside the gateway, controllers and devices, so each entry answers for one rule.
            lan_prefixes: vec!["10.77.128.0/17".parse().expect("net"), "2001:db8:77::/64".parse().expect("net")],
            gateway: vec!["10.77.0.1".parse().expect("addr")],
            controllers: [("https://lighting.example.com/hub".to_owned(), vec!["10.77.0.8/32".parse().expect("net")])]
                .into(),
        }
    }

    fn entry<'a>(rules: &'a [CompiledRule], proto_number: u8, net: &str) -> Option<&'a CompiledRule> {
        rules.iter().find(|rule| rule.proto == proto_number && rule.net.to_string() == net)
    }

    #[test]
    fn abstractions_resolve_to_the_site_the_class_and_the_inventory() {
        let policy = policy(CLASS);
        let devices = [
            MudDevice {
                addr: "10.77.0.40".parse().expect("addr"),
                mud_url: "https://Lighting.example.com/bulb".into(),
            },
            MudDevice {
                addr: "10.77.0.41".parse().expect("addr"),
                mud_url: "https://lighting.example.com/switch2000".into(),
            },
            MudDevice { addr: "10.77.0.42".parse().expect("addr"), mud_url: "https://other.example.net/x".into() },
        ];
        let (rules, refused) = remote_entries(&policy, &site(), &devices);
        assert!(refused.is_empty(), "{refused:?}");
        let id = PolicyId::for_class(crate::policy::ClassId(4));
        assert!(rules.iter().all(|rule| rule.policy_id == id));
        let one = |first, last| outbound(&[(first, last)]);
        assert!(entry(&rules, proto::TCP, "10.77.128.0/17").is_some());
        assert!(entry(&rules, proto::TCP, "2001:db8:77::/64").is_some());
        assert_eq!(entry(&rules, proto::UDP, "10.77.0.1/32").expect("gateway").matches, one(53, 53));
        assert_eq!(entry(&rules, proto::TCP, "10.77.0.9/32").expect("controller").matches, one(8443, 8443));
        // A controller by URI: the site's.
        assert_eq!(entry(&rules, proto::TCP, "10.77.0.8/32").expect("site controller").matches, one(8883, 8883));
        // Same authority (case-insensitive): both lighting devices; not the other vendor's.
        assert_eq!(entry(&rules, proto::UDP, "10.77.0.40/32").expect("manufacturer").matches, one(5683, 5683));
        assert!(entry(&rules, proto::UDP, "10.77.0.41/32").is_some());
        assert!(entry(&rules, proto::UDP, "10.77.0.42/32").is_none());
        // Model: the exact URL only.
        assert!(entry(&rules, proto::TCP, "10.77.0.41/32").is_some());
        assert!(entry(&rules, proto::TCP, "10.77.0.40/32").is_none());
        // `nets` beside a remote narrows it: the IPv4 LAN prefix (and the /24 inside it), never
        // the IPv6 one nor a network outside the LAN.
        let mdns: Vec<String> = rules
            .iter()
            .filter(|rule| rule.proto == proto::UDP && rule.matches == one(5353, 5353))
            .map(|r| r.net.to_string())
            .collect();
        assert_eq!(mdns, ["10.77.128.0/17", "10.77.200.0/24"]);
        // Static rules are the compiler's, not repeated here.
        assert!(entry(&rules, proto::TCP, "10.78.0.1/32").is_none());
        assert_eq!(rules.len(), 10, "{rules:#?}");
    }

    #[test]
    fn a_remote_kept_to_one_family_resolves_to_that_family_only() {
        let text = "[[class]]\nname = \"c\"\nid = 4\n[[class.allow]]\nremote = \"local-networks\"\nfamily = \"ipv6\"\n";
        let (rules, refused) = remote_entries(&policy(text), &site(), &[]);
        assert!(refused.is_empty(), "{refused:?}");
        let nets: std::collections::BTreeSet<String> = rules.iter().map(|rule| rule.net.to_string()).collect();
        assert_eq!(nets, ["2001:db8:77::/64".to_owned()].into());
    }

    #[test]
    fn abstractions_with_nothing_known_allow_nothing() {
        let policy = policy(&CLASS.replace("controllers = [\"10.77.0.9\"]\n", ""));
        let (rules, refused) = remote_entries(&policy, &Site::default(), &[]);
        assert!(rules.is_empty() && refused.is_empty(), "{rules:#?}");
        // And the static compile never turns a remote rule into "anywhere".
        let compiled = crate::policy::compile(&policy).expect("compiles");
        assert_eq!(compiled.rules.len(), 1, "{:#?}", compiled.rules);
    }

    #[test]
    fn remotes_parse_and_print_back() {
        for text in [
            "local-networks",
            "gateway",
            "controller",
            "my-controller",
            "controller:https://lighting.example.com/hub",
            "manufacturer:lighting.example.com",
            "model:https://lighting.example.com/bulb",
        ] {
            assert_eq!(Remote::parse(text).expect(text).to_string(), text);
        }
        assert_eq!(
            Remote::parse("manufacturer:Lighting.Example.COM"),
            Ok(Remote::Manufacturer("lighting.example.com".into()))
        );
        for bad in [
            "",
            "lan",
            "manufacturer:",
            "manufacturer:a b",
            "model:http://x.example/y",
            "model:nope",
            "controller:",
            "controller:a b",
        ] {
            assert!(Remote::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(authority_of("https://Example.com:8443/a"), Some("example.com:8443".into()));
    }
}
