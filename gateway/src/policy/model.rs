//! The checked policy: what the files say once every value is parsed into its type and every
//! reference resolved (`Policy` and its classes, lanes, rules and defaults). `checks` builds
//! it from the `schema`; `compile` turns it into datapath entries. Pure types.
use std::{path::PathBuf, sync::Arc};

use gateway_ebpf::{PortRange, lane};
use ipnet::IpNet;

use super::{
    error::Location,
    remote::RemoteTarget,
    values::{DnsPattern, parse_keyword},
    verdict::Defaults,
};
use crate::device::Mac;

/// Every port, what a rule without `ports` allows.
pub const ALL_PORTS: PortRange = PortRange { first: 0, last: u16::MAX };

/// A device class id as stored in the datapath's device table (`DeviceEntry::class_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassId(pub u16);

/// A policy id as used in `PolicyKey` and `DeviceEntry::policy_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId(pub u32);

impl PolicyId {
    pub const ONBOARDING: PolicyId = PolicyId(lane::ONBOARDING);
    pub const QUARANTINE: PolicyId = PolicyId(lane::QUARANTINE);

    /// A class's policy id: derived from its stable class id so it survives reloads and file
    /// reordering (devices in the table keep pointing at the right rules).
    pub fn for_class(id: ClassId) -> Self {
        PolicyId(lane::FIRST_CLASS_POLICY + u32::from(id.0))
    }
}

/// A rule's IP protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    /// ICMP towards IPv4 networks, ICMPv6 towards IPv6 networks.
    Icmp,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Protocol::Any, Protocol::Tcp, Protocol::Udp, Protocol::Icmp];

    /// The protocol named `text` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        parse_keyword(&Self::ALL, Self::as_str, text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Any => "any",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }

    /// The datapath's protocol number for a destination in `net`'s family.
    pub fn number_for(self, net: &IpNet) -> u8 {
        use gateway_ebpf::proto;
        match (self, net) {
            (Protocol::Any, _) => proto::ANY,
            (Protocol::Tcp, _) => proto::TCP,
            (Protocol::Udp, _) => proto::UDP,
            (Protocol::Icmp, IpNet::V4(_)) => proto::ICMP,
            (Protocol::Icmp, IpNet::V6(_)) => proto::ICMPV6,
        }
    }

    /// Whether rules of this protocol may name ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

/// The address family a rule is kept to (`family = "ipv4"` or `"ipv6"`): its networks, the
/// networks its remote resolves to and the answers of its names count only in that family
/// (RFC 8520's typed ACLs, `ipv4-acl-type` and `ipv6-acl-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The family named `text` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        parse_keyword(&Self::ALL, Self::as_str, text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    pub fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        }
    }

    /// Every address of the family.
    pub fn everything(self) -> IpNet {
        match self {
            Family::Ipv4 => IpNet::V4(Default::default()),
            Family::Ipv6 => IpNet::V6(Default::default()),
        }
    }
}

/// Who opens the connections a rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The device connects to the remote (the default).
    Outbound,
    /// The remote connects to the device.
    Inbound,
    Both,
}

impl Direction {
    pub const ALL: [Direction; 3] = [Direction::Outbound, Direction::Inbound, Direction::Both];

    /// The direction named `text` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        parse_keyword(&Self::ALL, Self::as_str, text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Both => "both",
        }
    }
}

/// An ICMP (or ICMPv6, by the rule's family) type, with one code or any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IcmpMatch {
    pub kind: u8,
    /// `None`: every code of the type.
    pub code: Option<u8>,
}

impl std::fmt::Display for IcmpMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{}/{code}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// One checked allow rule. The opener is the side `direction` names; `ports` and
/// `source_ports` are the destination and source ports of the packet that opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub description: Option<String>,
    pub nets: Vec<IpNet>,
    pub names: Vec<DnsPattern>,
    /// A remote resolved at the gateway (`policy::remote`); then `nets` and `names` are empty
    /// in the checked policy and `remote::resolved` fills `nets`.
    pub remote: Option<RemoteTarget>,
    pub protocol: Protocol,
    /// The service port (the remote's for `outbound`, the device's for `inbound`). Sorted,
    /// merged; never empty (`ALL_PORTS` when the file gave none).
    pub ports: Vec<PortRange>,
    /// The opener's source port, like `ports`: `ALL_PORTS` when the file gave none.
    pub source_ports: Vec<PortRange>,
    /// ICMP types and codes (`protocol = icmp` only). Sorted, without a code that a whole
    /// type also in the list covers; empty = every type.
    pub icmp: Vec<IcmpMatch>,
    pub direction: Direction,
    /// The one family the rule reaches (`None`: both).
    pub family: Option<Family>,
    pub at: Location,
}

impl Rule {
    /// Whether the rule reaches addresses in `net`'s family.
    pub fn reaches_family_of(&self, net: &IpNet) -> bool {
        self.family.is_none_or(|family| family == Family::of(net))
    }
}

/// How devices are matched to a class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matcher {
    pub macs: Vec<Mac>,
    /// 3 to 5 bytes each.
    pub ouis: Vec<Vec<u8>>,
    /// Lower-case; each one the shipped model can produce.
    pub fingerprint_types: Vec<String>,
    /// Least confidence of the level that matched, in percent (kept whole so the policy
    /// stays comparable with `Eq`).
    pub fingerprint_confidence_percent: u8,
    /// Normalised with `normalize_subject`.
    pub cert_subjects: Vec<String>,
}

/// One checked device class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    pub name: String,
    pub id: ClassId,
    pub policy_id: PolicyId,
    pub description: Option<String>,
    /// Names of included classes (all defined, no cycles).
    pub include: Vec<String>,
    pub update_lane: bool,
    pub matcher: Matcher,
    /// Where `remote = "controller"` and `"my-controller"` rules reach.
    pub controllers: Vec<IpNet>,
    pub rules: Vec<Rule>,
    pub at: Location,
}

/// A lane: rules that are not a class's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lane {
    pub description: Option<String>,
    pub rules: Vec<Rule>,
    /// Where the lane was defined; `None` when no file defines it (the lane allows nothing).
    pub at: Option<Location>,
}

/// The three lanes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lanes {
    pub onboarding: Lane,
    pub quarantine: Lane,
    pub update: Lane,
    /// Quarantined devices also get the update lane (policy id `QUARANTINE`).
    pub quarantine_includes_update: bool,
}

/// A `[[response]]` table, raw, for `crate::respond` to parse.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseSpec {
    pub at: Location,
    pub value: toml::Value,
}

/// Every policy file, checked and merged.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Sorted by class id.
    pub classes: Vec<Class>,
    pub lanes: Lanes,
    pub defaults: Defaults,
    pub responses: Vec<ResponseSpec>,
    pub files: Vec<Arc<PathBuf>>,
}

impl Policy {
    pub fn class(&self, name: &str) -> Option<&Class> {
        self.classes.iter().find(|class| class.name == name)
    }
}
