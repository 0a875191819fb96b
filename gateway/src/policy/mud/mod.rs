//! Imports an RFC 8520 Manufacturer Usage Description (MUD) file as a policy class: exactly,
//! or with the ACEs it cannot represent refused, each naming its ACL, ACE and field; never
//! granting more than the file. Reads MUD JSON (serde_json); writes policy TOML text, which
//! is checked with `load` before it is returned (`iotgw policy import-mud`, and the MUD
//! manager at run time).
//!
//! The gateway judges the packets a device sends, as connections (`direction` says who
//! opened one; `ports` is its service port, `source_ports` the opener's source port).
//! Packets towards a device are not filtered by its class (gateway-ebpf `towards_device`).
//! So, per ACE:
//! - A from-device accepting ACE becomes one rule admitting exactly the device packets it
//!   matches: its destination network, `ietf-acldns:dst-dnsname` or MUD abstraction is the
//!   remote, the destination port the remote's and the source port the device's. The opener
//!   is `ietf-mud:direction-initiated` (its own, else that of the to-device ACEs it answers),
//!   else the side whose port it names (the remote's: `outbound`; only the device's:
//!   `inbound`), else either (`both`). A stateless ACE also matches the connections opened
//!   the other way; those are left out (less, never more).
//! - A to-device ACE is the far half of a from-device one: it is imported when a from-device
//!   ACE answers it (overlapping remote and ports, same protocol), and refused when none does:
//!   a rule for it would admit device answers the file does not.
//! - Family: an IPv4 or IPv6 ACL's rule names the family's networks (`0.0.0.0/0`, `::/0`,
//!   or `nets` narrowing a `remote`); a name allowed in one family's ACLs only gets that
//!   `family` (only its A, or only its AAAA, answers open addresses).
//! - ICMP type and code become `icmp_types` (`"T"` or `"T/C"`, the device's own messages).
//! - Abstractions become `remote`s resolved at the gateway (`policy::remote`):
//!   `local-networks`; `controller` with the DNS and NTP URNs (and MUDgee's `gateway`) →
//!   `gateway`; any other `controller` → `controller:<URI>` (the gateway's `[policy]
//!   controllers`); `my-controller` → the class's `controllers`; `same-manufacturer` →
//!   `manufacturer:<the file's authority>`; `manufacturer`; `model`.
//! - A non-IP ACE (an EtherType such as ARP or EAPOL, at most towards `local-networks`) needs
//!   no rule: the gateway passes every device's non-IP frames, which stay on the LAN. A note
//!   says so.
//! - `drop`/`reject` ACEs are what the class denies anyway, unless an accepting ACE after one
//!   overlaps it (first match wins): that ACE is refused.
//! - Refused: other Ethernet fields (an EtherType of IP only says the family), the device's own
//!   address, IP header fields, TCP flags, other IP protocols, two abstractions in one ACE.
//!
//! Structure, per the YANG models: `ietf-access-control-list:acls` (or the draft-era
//! `:access-lists` MUDgee writes, and the draft ACL members osMUD's examples use, `draft`,
//! with a note), ACL and ACE names unique (a duplicate
//! refuses the file), empty ACL lists valid. MUD `extensions` are refused (none is
//! represented). A file whose every ACE and extension is refused is refused.
mod ace;
mod draft;
mod render;

use std::{collections::BTreeSet, path::PathBuf};

use gateway_ebpf::PortRange;
use ipnet::IpNet;
use serde_json::Value;

pub use self::ace::Refusal;
use self::ace::{Ace, AceContext, Icmp, Side, Target};
use super::{
    load::parse_sources,
    model::{Direction, Family, Protocol},
    remote::Remote,
    values::DnsPattern,
};

/// Why a MUD file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MudError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A member is absent, of the wrong type or not what the YANG model allows; `path` is a
    /// JSON pointer.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// Every accepting ACE (and extension) was refused: the class would allow nothing the
    /// file allows.
    #[error("nothing to import: everything the file allows is refused ({} refusals)", .0.len())]
    NothingRepresentable(Vec<Refusal>),
    /// The generated TOML did not pass the policy checks (a bug, or a bad class name/id).
    #[error("the imported class does not pass `policy check`: {0}")]
    Check(String),
}

pub(crate) fn invalid(path: &str, reason: impl Into<String>) -> MudError {
    MudError::Invalid { path: path.to_owned(), reason: reason.into() }
}

/// What `import` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MudImport {
    /// Policy TOML holding one `[[class]]`.
    pub toml: String,
    /// Number of allow rules written.
    pub rules: usize,
    /// The ACEs not imported, each with its field and reason (also comments in `toml`).
    pub refused: Vec<Refusal>,
    /// What else the operator should know (draft spelling, controllers to fill in...).
    pub notes: Vec<String>,
}

/// The members of RFC 8520's `mud` container.
const MUD_MEMBERS: &[&str] = &[
    "mud-version",
    "mud-url",
    "last-update",
    "mud-signature",
    "cache-validity",
    "is-supported",
    "systeminfo",
    "mfg-name",
    "model-name",
    "firmware-rev",
    "software-rev",
    "documentation",
    "extensions",
    "from-device-policy",
    "to-device-policy",
];

/// The containers of the ACLs, final and draft-era (MUDgee) spellings.
const ACL_CONTAINERS: &[&str] = &["ietf-access-control-list:acls", "ietf-access-control-list:access-lists"];

/// One rule before it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ImportedRule {
    /// `ACL/ACE` of every ACE it comes from.
    aces: Vec<String>,
    target: RuleTarget,
    protocol: Protocol,
    ports: Vec<PortRange>,
    source_ports: Vec<PortRange>,
    icmp: Option<Icmp>,
    direction: Direction,
}

/// Where a rule reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RuleTarget {
    Nets(Vec<IpNet>),
    /// A name, with the families whose ACLs allow it.
    Name(DnsPattern, BTreeSet<Family>),
    /// A remote narrowed to `within` (empty: not narrowed).
    Remote(Remote, Vec<IpNet>),
}

impl ImportedRule {
    /// Folds `other` in when it differs only in networks, families or ACEs.
    fn absorb(&mut self, other: &ImportedRule) -> bool {
        let same_rest = (self.protocol, &self.ports, &self.source_ports, self.icmp, self.direction)
            == (other.protocol, &other.ports, &other.source_ports, other.icmp, other.direction);
        if !same_rest {
            return false;
        }
        match (&mut self.target, &other.target) {
            (RuleTarget::Nets(nets), RuleTarget::Nets(more)) => extend_unique(nets, more),
            (RuleTarget::Name(name, families), RuleTarget::Name(other_name, more)) if name == other_name => {
                families.extend(more);
            }
            (RuleTarget::Remote(remote, within), RuleTarget::Remote(other_remote, more))
                if remote == other_remote && within.is_empty() == more.is_empty() =>
            {
                extend_unique(within, more);
            }
            _ => return false,
        }
        extend_unique(&mut self.aces, &other.aces);
        true
    }
}

fn extend_unique<T: Clone + PartialEq>(into: &mut Vec<T>, more: &[T]) {
    for item in more {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

/// Converts the MUD document `json` into a class named `class` with id `id`.
pub fn import(json: &str, class: &str, id: u16) -> Result<MudImport, MudError> {
    let mut root: Value = serde_json::from_str(json)?;
    let present: Vec<&str> = ACL_CONTAINERS.iter().copied().filter(|key| root.get(*key).is_some()).collect();
    // Without a container there are no ACLs: valid, and any reference to one is refused below.
    let container = match present.as_slice() {
        [] => ACL_CONTAINERS[0],
        [one] => *one,
        _ => return Err(invalid("/ietf-access-control-list:acls", "given twice, as :acls and as :access-lists")),
    };
    let mut notes = Vec::new();
    if container != ACL_CONTAINERS[0] {
        notes.push(format!("read the draft-era container {container:?} as {:?} (RFC 8519)", ACL_CONTAINERS[0]));
    }
    if let Some(list) = root.get_mut(container).and_then(|acls| acls.get_mut("acl")).and_then(Value::as_array_mut) {
        let spellings = draft::normalize(list);
        if !spellings.is_empty() {
            notes.push(format!("read the draft-era ACL members {} as RFC 8519's", spellings.join(", ")));
        }
    }
    let mud = root
        .get("ietf-mud:mud")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("/ietf-mud:mud", "missing: not a MUD file (RFC 8520 §2.1)"))?;
    match mud.get("mud-version").and_then(Value::as_u64) {
        Some(1) => {}
        Some(other) => {
            return Err(invalid("/ietf-mud:mud/mud-version", format!("version {other}, only 1 is known")));
        }
        None => return Err(invalid("/ietf-mud:mud/mud-version", "missing or not a number")),
    }
    let mud_url = mud
        .get("mud-url")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("/ietf-mud:mud/mud-url", "missing or not a string"))?;
    let systeminfo = mud.get("systeminfo").and_then(Value::as_str).unwrap_or("");
    // Other modules' augmentations grant nothing here; say they were not read.
    let unread: Vec<&str> = mud.keys().map(String::as_str).filter(|key| !MUD_MEMBERS.contains(key)).collect();
    if !unread.is_empty() {
        notes.push(format!("ietf-mud:mud members not represented (nothing granted from them): {}", unread.join(", ")));
    }
    let acls = match root.get(container).and_then(|acls| acls.get("acl")) {
        None => &Vec::new(),
        Some(list) => list.as_array().ok_or_else(|| invalid(&format!("/{container}/acl"), "not a list"))?,
    };
    let mut names = BTreeSet::new();
    for (index, acl) in acls.iter().enumerate() {
        let name = acl
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&format!("/{container}/acl/{index}/name"), "missing or not a string"))?;
        if !names.insert(name) {
            return Err(invalid(&format!("/{container}/acl/{index}/name"), format!("duplicate ACL name {name:?}")));
        }
    }

    let mut aces: Vec<Ace> = Vec::new();
    let mut refused: Vec<Refusal> = Vec::new();
    // RFC 8520 §3.9: extensions change what the file allows; none is represented here.
    if let Some(extensions) = mud.get("extensions") {
        let names = extensions.as_array().ok_or_else(|| invalid("/ietf-mud:mud/extensions", "not a list"))?;
        for name in names {
            let name = name.as_str().ok_or_else(|| invalid("/ietf-mud:mud/extensions", "not a list of strings"))?;
            refused.push(Refusal {
                acl: String::new(),
                ace: String::new(),
                field: format!("extensions/{name}"),
                reason: "MUD extension not represented (what it allows is not granted)".into(),
            });
        }
    }
    let mut referenced = BTreeSet::new();
    for side in [Side::FromDevice, Side::ToDevice] {
        let policy_key = format!("{}-policy", side.as_str());
        let Some(policy) = mud.get(&policy_key) else { continue };
        let pointer = format!("/ietf-mud:mud/{policy_key}/access-lists/access-list");
        let list = match policy.pointer("/access-lists/access-list") {
            None => continue,
            Some(list) => list.as_array().ok_or_else(|| invalid(&pointer, "not a list"))?,
        };
        // ACLs of one side are evaluated in order, first match wins: a drop ACE shadows the
        // accepting ACEs after it, whichever ACL they are in.
        let mut denies: Vec<Result<Ace, Refusal>> = Vec::new();
        for (index, reference) in list.iter().enumerate() {
            let name = reference
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{pointer}/{index}/name"), "missing or not a string"))?;
            if !referenced.insert((side.as_str(), name)) {
                continue;
            }
            let (acl_index, acl) = acls
                .iter()
                .enumerate()
                .find(|(_, acl)| acl.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| {
                    invalid(&format!("{pointer}/{index}/name"), format!("ACL {name:?} is referenced but not defined"))
                })?;
            let acl_pointer = format!("/{container}/acl/{acl_index}");
            let family = match acl.get("type").and_then(Value::as_str).map(ace::identity) {
                Some("ipv4-acl-type") => Some(Family::Ipv4),
                Some("ipv6-acl-type") => Some(Family::Ipv6),
                _ => None,
            };
            let entries = match acl.pointer("/aces/ace") {
                None => &Vec::new(),
                Some(list) => {
                    list.as_array().ok_or_else(|| invalid(&format!("{acl_pointer}/aces/ace"), "not a list"))?
                }
            };
            let mut ace_names = BTreeSet::new();
            for (ace_index, entry) in entries.iter().enumerate() {
                let ace_pointer = format!("{acl_pointer}/aces/ace/{ace_index}");
                let cx = AceContext { acl: name, side, family, pointer: &ace_pointer, mud_url };
                let read = ace::read(entry, &cx)?;
                let ace_name = match &read {
                    Ok(ace) => ace.name.clone(),
                    Err(refusal) => refusal.ace.clone(),
                };
                if !ace_names.insert(ace_name.clone()) {
                    return Err(invalid(&format!("{ace_pointer}/name"), format!("duplicate ACE name {ace_name:?}")));
                }
                let denying =
                    entry.pointer("/actions/forwarding").and_then(Value::as_str).map(ace::identity) != Some("accept");
                if denying {
                    denies.push(read);
                    continue;
                }
                match read {
                    Ok(accepting) => match shadowing(&denies, &accepting) {
                        Some(reason) => refused.push(refusal(&accepting, "actions/forwarding", reason)),
                        None => aces.push(accepting),
                    },
                    Err(refusal) => refused.push(refusal),
                }
            }
        }
        if !denies.is_empty() {
            let names: Vec<String> = denies
                .iter()
                .map(|read| match read {
                    Ok(ace) => format!("{}/{}", ace.acl, ace.name),
                    Err(refusal) => format!("{}/{}", refusal.acl, refusal.ace),
                })
                .collect();
            notes.push(format!(
                "{} drop/reject ACEs are what the class denies anyway: {}",
                side.as_str(),
                names.join(", ")
            ));
        }
    }
    let unreferenced: Vec<&str> =
        names.iter().copied().filter(|name| !referenced.iter().any(|(_, used)| used == name)).collect();
    if !unreferenced.is_empty() {
        notes.push(format!("ACLs no policy references (not imported): {}", unreferenced.join(", ")));
    }

    let (link_layer, aces): (Vec<&Ace>, Vec<&Ace>) =
        aces.iter().partition(|ace| matches!(ace.target, Target::LinkLayer(_)));
    if !link_layer.is_empty() {
        let names: Vec<String> = link_layer
            .iter()
            .map(|ace| match ace.target {
                Target::LinkLayer(ethertype) => format!("{}/{} (EtherType 0x{ethertype:04x})", ace.acl, ace.name),
                _ => format!("{}/{}", ace.acl, ace.name),
            })
            .collect();
        notes.push(format!(
            "non-IP ACEs need no rule: the gateway passes every device's non-IP frames, which stay on the LAN: {}",
            names.join(", ")
        ));
    }
    let (from_device, to_device): (Vec<&Ace>, Vec<&Ace>) =
        aces.into_iter().partition(|ace| ace.side == Side::FromDevice);
    let controllers: BTreeSet<&str> = from_device.iter().filter_map(|ace| ace.controller.as_deref()).collect();
    let mut rules: Vec<ImportedRule> = Vec::new();
    for from in &from_device {
        let twins: Vec<&&Ace> = to_device.iter().filter(|to| answers(from, to)).collect();
        let rule = rule_for(from, &twins);
        if !rules.iter_mut().any(|known| known.absorb(&rule)) {
            rules.push(rule);
        }
    }
    // A to-device ACE is imported as the far half of an imported from-device ACE.
    let imported: BTreeSet<&str> = rules.iter().flat_map(|rule| rule.aces.iter().map(String::as_str)).collect();
    for answered in &to_device {
        let twins: Vec<&&Ace> = from_device.iter().filter(|from| answers(from, answered)).collect();
        if twins.iter().any(|from| imported.contains(format!("{}/{}", from.acl, from.name).as_str())) {
            continue;
        }
        let reason = match twins.first() {
            Some(twin) => format!("its from-device twin {}/{} is refused", twin.acl, twin.name),
            None => "no from-device ACE admits the device's side of these packets; a rule would admit device \
                     answers the file does not"
                .to_owned(),
        };
        refused.push(refusal(answered, "(from-device twin)", reason));
    }
    for name in controllers {
        let listed = if name == "my-controller" {
            "the class's `controllers`"
        } else {
            "`[policy] controllers` of the gateway configuration"
        };
        notes.push(format!(
            "list the addresses of controller {name:?} in {listed} (until then its rules allow nothing)"
        ));
    }
    if rules.is_empty() && !refused.is_empty() {
        return Err(MudError::NothingRepresentable(refused));
    }
    let text = render::class(&render::Header { class, id, mud_url, systeminfo }, &rules, &refused, &notes);
    // The output must be a valid policy on its own: never hand ops a file `check` refuses.
    parse_sources(&[(PathBuf::from(format!("{class}.toml")), text.clone())])
        .map_err(|errors| MudError::Check(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
    Ok(MudImport { toml: text, rules: rules.len(), refused, notes })
}

fn refusal(ace: &Ace, field: &str, reason: impl Into<String>) -> Refusal {
    Refusal { acl: ace.acl.clone(), ace: ace.name.clone(), field: field.to_owned(), reason: reason.into() }
}

/// Why `accepting` cannot be imported after `denies` (first match wins), if it cannot.
fn shadowing(denies: &[Result<Ace, Refusal>], accepting: &Ace) -> Option<String> {
    denies.iter().find_map(|deny| match deny {
        Ok(deny) if overlaps(deny, accepting, true) => {
            Some(format!("follows drop ACE {}/{}, which it overlaps (first match wins)", deny.acl, deny.name))
        }
        Ok(_) => None,
        Err(unread) => {
            Some(format!("follows drop ACE {}/{}, whose matches are not represented", unread.acl, unread.ace))
        }
    })
}

/// ICMP messages and their answers (RFC 792, RFC 4443): echo, timestamp, information,
/// address mask; ICMPv6 echo.
const ICMP_ANSWERS: &[(u8, u8)] = &[(8, 0), (13, 14), (15, 16), (17, 18), (128, 129)];

/// Whether from-device ACE `from` is known to admit the device's side of what to-device ACE
/// `to` admits.
fn answers(from: &Ace, to: &Ace) -> bool {
    let icmp_pair = match (from.icmp, to.icmp) {
        (Some(x), Some(y)) => ICMP_ANSWERS
            .iter()
            .any(|(ask, answer)| (x.kind, y.kind) == (*ask, *answer) || (x.kind, y.kind) == (*answer, *ask)),
        _ => false,
    };
    if icmp_pair {
        let unquestioned = Ace { icmp: None, ..to.clone() };
        return overlaps(&Ace { icmp: None, ..from.clone() }, &unquestioned, false);
    }
    overlaps(from, to, false)
}

/// Whether some packet (in device terms: the remote, its port, the device's port) could match
/// both ACEs; `unknown` where the file alone cannot tell (a name against a network, an
/// abstraction against either).
fn overlaps(a: &Ace, b: &Ace, unknown: bool) -> bool {
    let family = a.family.is_none() || b.family.is_none() || a.family == b.family;
    let protocol = a.protocol == Protocol::Any || b.protocol == Protocol::Any || a.protocol == b.protocol;
    let ports = |x: &[PortRange], y: &[PortRange]| {
        x.is_empty() || y.is_empty() || x.iter().any(|p| y.iter().any(|q| p.first <= q.last && q.first <= p.last))
    };
    let icmp = match (a.icmp, b.icmp) {
        (Some(x), Some(y)) => x.kind == y.kind && (x.code.is_none() || y.code.is_none() || x.code == y.code),
        _ => true,
    };
    let initiated = a.initiated.is_none() || b.initiated.is_none() || a.initiated == b.initiated;
    let target = match (&a.target, &b.target) {
        (Target::Net(x), Target::Net(y)) => x.contains(y) || y.contains(x),
        (Target::Name(x), Target::Name(y)) => x == y || x.matches(&y.to_string()) || y.matches(&x.to_string()),
        // Distinct abstractions may share addresses (a same-manufacturer device on the LAN).
        (Target::Remote { remote: x, .. }, Target::Remote { remote: y, .. }) => x == y || unknown,
        (Target::Any, _) | (_, Target::Any) => true,
        (Target::LinkLayer(x), Target::LinkLayer(y)) => x == y,
        (Target::LinkLayer(_), _) | (_, Target::LinkLayer(_)) => false,
        _ => unknown,
    };
    family
        && protocol
        && ports(&a.remote_ports, &b.remote_ports)
        && ports(&a.device_ports, &b.device_ports)
        && icmp
        && initiated
        && target
}

/// The rule admitting exactly the device packets of from-device ACE `from`, opened by the
/// side the file says (`twins`: the to-device ACEs it answers).
fn rule_for(from: &Ace, twins: &[&&Ace]) -> ImportedRule {
    let twin_initiated: BTreeSet<&'static str> = twins.iter().filter_map(|to| to.initiated.map(Side::as_str)).collect();
    let initiated = from.initiated.map(Side::as_str).or_else(|| match twin_initiated.len() {
        1 => twin_initiated.iter().next().copied(),
        _ => None,
    });
    let direction = match initiated {
        Some("from-device") => Direction::Outbound,
        Some(_) => Direction::Inbound,
        None if from.icmp.is_some() || !from.remote_ports.is_empty() => Direction::Outbound,
        None if !from.device_ports.is_empty() => Direction::Inbound,
        None => Direction::Both,
    };
    let (ports, source_ports) = match direction {
        Direction::Inbound => (from.device_ports.clone(), from.remote_ports.clone()),
        Direction::Outbound | Direction::Both => (from.remote_ports.clone(), from.device_ports.clone()),
    };
    let families: BTreeSet<Family> = match from.family {
        Some(family) => [family].into(),
        None => [Family::Ipv4, Family::Ipv6].into(),
    };
    let target = match &from.target {
        Target::Any => RuleTarget::Nets(families.iter().map(|family| family.everything()).collect()),
        Target::Net(net) => RuleTarget::Nets(vec![*net]),
        Target::Name(name) => RuleTarget::Name(name.clone(), families),
        Target::LinkLayer(_) => unreachable!("non-IP ACEs are set apart before rules are made"),
        Target::Remote { remote, within: Some(net) } => RuleTarget::Remote(remote.clone(), vec![*net]),
        Target::Remote { remote, within: None } => RuleTarget::Remote(
            remote.clone(),
            match from.family {
                Some(family) => vec![family.everything()],
                None => Vec::new(),
            },
        ),
    };
    ImportedRule {
        aces: vec![format!("{}/{}", from.acl, from.name)],
        target,
        protocol: from.protocol,
        ports,
        source_ports,
        icmp: from.icmp,
        direction,
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
