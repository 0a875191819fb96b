//! Policy errors: every problem found in the policy files, with the file, line and column it
//! points at. Reads nothing, writes nothing; `load`, `checks` and `compile` produce these.
use std::{fmt, path::PathBuf, sync::Arc};

/// A place in a policy file, 1-based like editors show it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to the text's end).
    pub fn at(file: &Arc<PathBuf>, text: &str, offset: usize) -> Self {
        let (line, column) = crate::toml_error::line_column(text, offset);
        Self { file: Arc::clone(file), line, column }
    }

    /// `at`, with `text`'s line starts found once for many offsets.
    pub fn at_line(file: &Arc<PathBuf>, text: &str, lines: &crate::toml_error::LineStarts, offset: usize) -> Self {
        let (line, column) = lines.line_column(text, offset);
        Self { file: Arc::clone(file), line, column }
    }

    /// For problems that concern a whole file (unreadable, no files at all).
    pub fn file(file: &Arc<PathBuf>) -> Self {
        Self { file: Arc::clone(file), line: 1, column: 1 }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem in the policy files. Displays as `file:line:column: reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {kind}")]
pub struct PolicyError {
    pub at: Location,
    pub kind: ErrorKind,
}

impl PolicyError {
    pub fn new(at: Location, kind: ErrorKind) -> Self {
        Self { at, kind }
    }
}

/// What is wrong. Each variant names the rule the files broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file or folder cannot be read.
    #[error("cannot read: {0}")]
    Read(String),
    /// No `*.toml` file was given or found.
    #[error("no policy files (*.toml) found")]
    NoFiles,
    /// A staged set of files (a fleet policy bundle) could not be swapped into the folder;
    /// the folder keeps the files it had, or finishes the swap at the next load.
    #[error("cannot swap the staged policy files in: {0}")]
    Swap(String),
    /// TOML syntax, a wrong type or an unknown key. After one, the offending line is commented
    /// out and the file parsed again, so several are reported per file (see `load`).
    #[error("{0}")]
    Syntax(String),
    /// Two classes share a name.
    #[error("duplicate class {name:?} (first defined at {first})")]
    DuplicateClass { name: String, first: Location },
    /// Two classes share an id: ids must be unique because devices keep them across reloads.
    #[error("class id {id} of {name:?} is already used by class {other:?} at {first}")]
    DuplicateClassId { id: i64, name: String, other: String, first: Location },
    /// A class id outside 1..=65535 (0 means "unclassified" in the datapath).
    #[error("class id {0} out of range: must be 1..={max}", max = u16::MAX)]
    ClassIdOutOfRange(i64),
    /// A policy file's class uses an id the gateway allocates to the classes it generates
    /// (MUD files, `store::GENERATED_CLASS_IDS`), or a generated class one outside it.
    #[error("class {name:?} has id {id}: ids {first}..={last} are only for classes the gateway generates from MUD files", first = super::store::GENERATED_CLASS_IDS.start(), last = super::store::GENERATED_CLASS_IDS.end())]
    ReservedClassId { name: String, id: u16 },
    /// A class name that is empty or holds characters other than `[A-Za-z0-9_-]`.
    #[error("class name {0:?} must be non-empty and use only letters, digits, '-' and '_'")]
    BadClassName(String),
    /// `include` names a class that no file defines.
    #[error("unknown class {0:?} referenced")]
    UnknownClass(String),
    /// Classes include each other in a loop.
    #[error("class {0:?} includes itself (through {1})")]
    IncludeCycle(String, String),
    /// Not a CIDR (`10.77.0.0/16`, `2001:db8::/32`) or a bare address.
    #[error("bad network {input:?}: {reason}")]
    BadNetwork { input: String, reason: String },
    /// A CIDR with bits set after its prefix, which usually hides a typo.
    #[error("network {input:?} has host bits set; did you mean {suggestion}?")]
    HostBitsSet { input: String, suggestion: String },
    /// Not a DNS name or `*.`-wildcard name.
    #[error("bad DNS name {input:?}: {reason}")]
    BadDnsName { input: String, reason: String },
    /// A port outside 0..=65535.
    #[error("port {0} out of range 0..=65535")]
    PortOutOfRange(i64),
    /// A port entry that is neither a number nor `"first-last"`.
    #[error("bad port {input:?}: expected a number or a range like \"8000-8100\"")]
    BadPort { input: String },
    /// A range whose first port is above its last.
    #[error("port range {first}-{last} is reversed")]
    ReversedPortRange { first: u16, last: u16 },
    /// Ports given for a protocol that has none.
    #[error("protocol {0} has no ports; remove `ports` or use tcp/udp")]
    PortsWithoutPortProtocol(String),
    /// Source ports given for a protocol that has none.
    #[error("protocol {0} has no ports; remove `source_ports` or use tcp/udp")]
    SourcePortsWithoutPortProtocol(String),
    /// `icmp_types` on a rule whose protocol is not icmp.
    #[error("`icmp_types` needs protocol = \"icmp\" (this rule's protocol is {0})")]
    IcmpTypesWithoutIcmp(String),
    /// An `icmp_types` entry that is not `"T"` or `"T/C"` with T and C in 0..=255.
    #[error("bad ICMP type {input:?}: {reason}")]
    BadIcmpType { input: String, reason: String },
    /// Protocol other than tcp, udp, icmp, any.
    #[error("unknown protocol {0:?}: expected tcp, udp, icmp or any")]
    BadProtocol(String),
    /// Direction other than outbound, inbound, both.
    #[error("unknown direction {0:?}: expected outbound, inbound or both")]
    BadDirection(String),
    /// Family other than ipv4, ipv6.
    #[error("unknown family {0:?}: expected ipv4 or ipv6")]
    BadFamily(String),
    /// A network outside the rule's `family` (it would allow nothing).
    #[error("network {net} is not {family}, the rule's family")]
    NetOutsideFamily { net: String, family: &'static str },
    /// A rule with neither `nets`, `names` nor `remote`.
    #[error("rule allows nothing: give `nets` and/or `names`, or a `remote`")]
    EmptyRule,
    /// A `remote` that `policy::remote` does not know.
    #[error("bad remote {input:?}: {reason}")]
    BadRemote { input: String, reason: String },
    /// `remote` together with `names` (a remote's addresses cannot also be a name's).
    #[error("`remote` and `names` cannot be combined: write two rules")]
    RemoteWithNames,
    /// Not a MAC address.
    #[error("bad MAC {0:?}: expected six hex bytes like 02:00:00:00:00:01")]
    BadMac(String),
    /// Not an OUI prefix of 3 to 5 bytes.
    #[error("bad OUI prefix {0:?}: expected 3 to 5 hex bytes like 00:1a:2b")]
    BadOui(String),
    /// An empty fingerprint type or certificate-subject pattern.
    #[error("empty {0} pattern")]
    EmptyPattern(&'static str),
    /// A fingerprint type the device-type model never answers: the class could never match
    /// by type.
    #[error(
        "fingerprint type {0:?} is not a name the device-type model produces; use a generic type ({1}), or a product, vendor or `unknown` of gateway/models/taxonomy.toml"
    )]
    UnknownFingerprintType(String, String),
    /// A minimum confidence outside 0..=1.
    #[error("fingerprint_confidence {0} is not between 0 and 1")]
    BadConfidence(String),
    /// The same MAC, OUI or fingerprint type matches two classes, so the class a device
    /// gets would depend on file order.
    #[error("{what} {value:?} already matches class {other:?} at {first}")]
    AmbiguousMatch { what: &'static str, value: String, other: String, first: Location },
    /// A lane or the defaults defined in two places.
    #[error("{what} defined twice (first at {first})")]
    DuplicateSection { what: String, first: Location },
    /// A verdict that does not exist or is not allowed here.
    #[error("bad verdict {input:?} for {what}: expected {expected}")]
    BadVerdict { input: String, what: &'static str, expected: &'static str },
    /// `include_update` outside `[lanes.quarantine]`.
    #[error("`include_update` is only meaningful in [lanes.quarantine]")]
    IncludeUpdateOutsideQuarantine,
    /// `update_lane = true` on a class, or `include_update`, with no `[lanes.update]`.
    #[error("the update lane is used but no file defines [lanes.update]")]
    MissingUpdateLane,
    /// More port combinations (remote port × device port × opener) for one (policy,
    /// protocol, prefix) than the datapath holds.
    #[error(
        "{policy}: {proto} to {net} needs {count} port combinations but the datapath holds {max} per \
         destination; merge ports into ranges (e.g. \"8000-8100\"), list fewer source ports, or allow all ports"
    )]
    TooManyPortRanges { policy: String, proto: String, net: String, count: usize, max: usize },
    /// A `[[response]]` rule `crate::respond::rules` refuses (unknown detector or action,
    /// score out of range, bad MAC, unknown key...).
    #[error("{0}")]
    Response(String),
    /// More policy entries than the datapath's LPM map holds.
    #[error("{count} IPv{family} policy entries exceed the datapath capacity of {capacity}")]
    CapacityExceeded { family: u8, count: usize, capacity: u32 },
}
