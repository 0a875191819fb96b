//! Reads policy files into a checked `Policy`: every value parsed into its type, every
//! reference resolved, every problem collected with its `file:line:column`. Reads the files
//! it is given (or the `*.toml` files of a folder); writes nothing.
//!
//! serde stops at a file's first TOML syntax or type error; the loader then comments out the
//! offending `key = value` line and parses again, so every such error is reported with its
//! place. It gives up on a file (after reporting) when the error is on a table header or the
//! file no longer parses as TOML. Every semantic error in every file that parses is reported.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use gateway_ebpf::{PortRange, lane};
use ipnet::IpNet;
use toml::Spanned;

use super::{
    error::{ErrorKind, Location, PolicyError},
    schema::{ClassSpec, DefaultsSpec, LaneSpec, PolicyFile, RuleSpec},
};
use crate::{config::Verdict, device::Mac};

/// Every port, what a rule without `ports` allows.
pub const ALL_PORTS: PortRange = PortRange { first: 0, last: u16::MAX };
/// Verdicts used when no file has a `[defaults]` section; the same as the datapath's own
/// `GatewayConfig::default`, so a missing section changes nothing.
pub const DEFAULT_MALFORMED: Verdict = Verdict::Drop;
pub const DEFAULT_UNKNOWN_DEVICE: Verdict = Verdict::Drop;
pub const DEFAULT_POLICY_MISS: Verdict = Verdict::Drop;
pub const DEFAULT_QUARANTINE: Verdict = Verdict::Redirect;
/// DNS limits (RFC 1035 §2.3.4).
const MAX_DNS_NAME: usize = 253;
const MAX_DNS_LABEL: usize = 63;

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
    fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "any" => Protocol::Any,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            _ => return None,
        })
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

    fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
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
    fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "outbound" => Direction::Outbound,
            "inbound" => Direction::Inbound,
            "both" => Direction::Both,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Both => "both",
        }
    }
}

/// A DNS name in a rule: exact (`api.example.com`) or wildcard (`*.example.com`, every name
/// strictly below `example.com`). Stored lower-case without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsPattern {
    pub name: String,
    pub wildcard: bool,
}

impl DnsPattern {
    /// Parses and checks a rule's name.
    pub fn parse(input: &str) -> Result<Self, String> {
        let lowered = input.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lowered.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, lowered),
        };
        if name.is_empty() {
            return Err("empty name".into());
        }
        if name.len() > MAX_DNS_NAME {
            return Err(format!("longer than {MAX_DNS_NAME} characters"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err("empty label (two dots in a row?)".into());
            }
            if label.len() > MAX_DNS_LABEL {
                return Err(format!("label {label:?} longer than {MAX_DNS_LABEL} characters"));
            }
            if label == "*" {
                return Err("a wildcard is only allowed as the whole first label (*.example.com)".into());
            }
            if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("label {label:?} has characters other than a-z, 0-9, '-', '_'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!("label {label:?} starts or ends with '-'"));
            }
        }
        Ok(Self { name, wildcard })
    }

    /// Whether `name` (any case, trailing dot or not) is covered by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        // Bytes, not `str` slices: names from the wire may hold non-ASCII bytes, and a `str`
        // slice at a byte offset inside a character would panic.
        let name = name.trim_end_matches('.').as_bytes();
        let suffix = self.name.as_bytes();
        if self.wildcard {
            name.len() > suffix.len() + 1
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && name[name.len() - suffix.len() - 1] == b'.'
        } else {
            name.eq_ignore_ascii_case(suffix)
        }
    }
}

impl std::fmt::Display for DnsPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// One checked allow rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub description: Option<String>,
    pub nets: Vec<IpNet>,
    pub names: Vec<DnsPattern>,
    pub protocol: Protocol,
    /// Sorted, merged; never empty (`ALL_PORTS` when the file gave none).
    pub ports: Vec<PortRange>,
    pub direction: Direction,
    pub at: Location,
}

/// How devices are matched to a class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matcher {
    pub macs: Vec<Mac>,
    /// 3 to 5 bytes each.
    pub ouis: Vec<Vec<u8>>,
    /// Lower-case.
    pub fingerprint_types: Vec<String>,
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

/// Default verdicts, in the datapath's `GatewayConfig` terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub malformed: Verdict,
    pub unknown_device: Verdict,
    pub policy_miss: Verdict,
    /// `Redirect` or `Drop`.
    pub quarantine: Verdict,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            malformed: DEFAULT_MALFORMED,
            unknown_device: DEFAULT_UNKNOWN_DEVICE,
            policy_miss: DEFAULT_POLICY_MISS,
            quarantine: DEFAULT_QUARANTINE,
        }
    }
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

/// Loads `paths`: files are read as given, folders contribute their `*.toml` files (not
/// recursive, sorted by name so messages come out in a stable order).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Policy, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut sources = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let files = if path.is_dir() {
            match toml_files(path) {
                Ok(files) => files,
                Err(error) => {
                    let at = Location::file(&Arc::new(path.to_owned()));
                    errors.push(PolicyError::new(at, ErrorKind::Read(error.to_string())));
                    continue;
                }
            }
        } else {
            vec![path.to_owned()]
        };
        for file in files {
            // The same file named twice (`policy check dir/ dir/a.toml`) is read once, or it
            // would collide with itself.
            let identity = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if seen.contains(&identity) {
                continue;
            }
            seen.push(identity);
            match std::fs::read_to_string(&file) {
                Ok(text) => sources.push((file, text)),
                Err(error) => {
                    let at = Location::file(&Arc::new(file));
                    errors.push(PolicyError::new(at, ErrorKind::Read(error.to_string())));
                }
            }
        }
    }
    match parse_sources(&sources) {
        Ok(policy) if errors.is_empty() => Ok(policy),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// The `*.toml` files of `dir`, sorted.
pub fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Checks policy texts (`(path, text)`; the path is only used in messages).
pub fn parse_sources(sources: &[(PathBuf, String)]) -> Result<Policy, Vec<PolicyError>> {
    let mut loader = Loader::default();
    if sources.is_empty() {
        let at = Location::file(&Arc::new(PathBuf::from(".")));
        return Err(vec![PolicyError::new(at, ErrorKind::NoFiles)]);
    }
    for (path, text) in sources {
        let file = Arc::new(path.clone());
        loader.files.push(Arc::clone(&file));
        let (parsed, errors) = parse_file(&file, text);
        loader.errors.extend(errors);
        if let Some(parsed) = parsed {
            loader.tainted_tables = parsed.tainted_tables;
            loader.add_file(&file, &parsed.text, parsed.file);
        }
    }
    loader.finish()
}

/// A file that parsed, possibly after lines with errors were commented out.
struct Parsed {
    file: PolicyFile,
    /// The text it was parsed from: the original with `#` before the removed lines.
    text: String,
    /// (header line of the table, key) of every removed line: a rule that lost `nets` may
    /// look empty and one that lost `protocol` may look portless, which is not worth a second
    /// error.
    tainted_tables: Vec<(usize, String)>,
}

/// The 1-based line of the table header above 1-based `line` (0 for the root table).
fn table_line(text: &str, line: usize) -> usize {
    text.lines()
        .take(line)
        .enumerate()
        .filter(|(_, content)| content.trim_start().starts_with('['))
        .map(|(index, _)| index + 1)
        .last()
        .unwrap_or(0)
}

/// Most TOML errors reported for one file before giving up on it.
const MAX_SYNTAX_ERRORS_PER_FILE: usize = 32;

/// Parses one file, reporting as many TOML errors as can be found: serde stops at the first
/// one, so the line it points at is commented out and the file parsed again, as long as the
/// result is still valid TOML and the line is a `key = value` (not a table header, whose
/// removal would move keys into another table). Returns the parsed file with the text it was
/// parsed from (same lines as the original, so locations hold) when parsing finally succeeds.
/// Errors found after a line was commented out may be consequences of that line's removal.
fn parse_file(file: &Arc<PathBuf>, text: &str) -> (Option<Parsed>, Vec<PolicyError>) {
    let mut errors = Vec::new();
    let mut current = text.to_owned();
    let mut removed_keys: Vec<String> = Vec::new();
    let mut removed_lines: Vec<usize> = Vec::new();
    for _ in 0..MAX_SYNTAX_ERRORS_PER_FILE {
        let error = match toml::from_str::<PolicyFile>(&current) {
            Ok(file) => {
                let tainted_tables = removed_lines
                    .iter()
                    .zip(&removed_keys)
                    .map(|(line, key)| (table_line(&current, *line), key.clone()))
                    .collect();
                return (Some(Parsed { file, text: current, tainted_tables }), errors);
            }
            Err(error) => error,
        };
        let message = syntax_message(&error);
        // A required key we commented out ourselves: already reported, and nothing further
        // can be learnt from this table.
        if removed_keys.iter().any(|key| message.contains(&format!("missing field `{key}`"))) {
            break;
        }
        let offset = error.span().map_or(0, |span| span.start);
        errors.push(PolicyError::new(Location::at(file, &current, offset), ErrorKind::Syntax(message)));
        match comment_out_line(&current, offset) {
            Some((next, key)) if toml::from_str::<toml::Table>(&next).is_ok() => {
                removed_lines.push(Location::at(file, &current, offset).line);
                current = next;
                removed_keys.push(key);
            }
            _ => break,
        }
    }
    (None, errors)
}

/// `text` with the line holding byte `offset` turned into a comment, and the key that line
/// set; `None` for table headers, comments and blank lines.
fn comment_out_line(text: &str, offset: usize) -> Option<(String, String)> {
    let offset = offset.min(text.len());
    let start = text.get(..offset)?.rfind('\n').map_or(0, |index| index + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('[') || trimmed.starts_with('#') {
        return None;
    }
    let mut next = String::with_capacity(text.len() + 1);
    next.push_str(&text[..start]);
    next.push('#');
    next.push_str(&text[start..]);
    let key = trimmed.split('=').next().unwrap_or("").trim().trim_matches('"').to_owned();
    Some((next, key))
}

/// toml's message without its own rendering of the location (we print `file:line:column`).
fn syntax_message(error: &toml::de::Error) -> String {
    error.message().trim().replace('\n', " ")
}

/// Collects classes, lanes and defaults across files, and every error.
#[derive(Default)]
struct Loader {
    files: Vec<Arc<PathBuf>>,
    errors: Vec<PolicyError>,
    classes: Vec<Class>,
    /// Include references, checked once every class is known.
    includes: Vec<(String, Spanned<String>, Location)>,
    onboarding: Option<Lane>,
    quarantine: Option<Lane>,
    /// `include_update` of the stored quarantine lane.
    quarantine_includes_update: bool,
    update: Option<Lane>,
    update_users: Vec<Location>,
    defaults: Option<(Defaults, Location)>,
    responses: Vec<ResponseSpec>,
    /// Of the file being added: see `Parsed::tainted_tables`.
    tainted_tables: Vec<(usize, String)>,
}

impl Loader {
    fn add_file(&mut self, file: &Arc<PathBuf>, text: &str, parsed: PolicyFile) {
        let here = |offset: usize| Location::at(file, text, offset);
        for class in parsed.class {
            let at = here(class.span().start);
            self.add_class(file, text, class.into_inner(), at);
        }
        if let Some(lanes) = parsed.lanes {
            if let Some(spec) = lanes.onboarding {
                let at = here(spec.span().start);
                let lane = self.lane(file, text, spec, false);
                self.set_lane(at, "[lanes.onboarding]", lane, |loader| &mut loader.onboarding);
            }
            if let Some(spec) = lanes.quarantine {
                let at = here(spec.span().start);
                let include_update = spec.get_ref().include_update.as_ref().is_some_and(|v| *v.get_ref());
                if include_update {
                    self.update_users.push(at.clone());
                }
                let lane = self.lane(file, text, spec, true);
                if self.set_lane(at, "[lanes.quarantine]", lane, |loader| &mut loader.quarantine) {
                    self.quarantine_includes_update = include_update;
                }
            }
            if let Some(spec) = lanes.update {
                let at = here(spec.span().start);
                let lane = self.lane(file, text, spec, false);
                self.set_lane(at, "[lanes.update]", lane, |loader| &mut loader.update);
            }
        }
        if let Some(defaults) = parsed.defaults {
            let at = here(defaults.span().start);
            let parsed = self.defaults(file, text, defaults.into_inner());
            match &self.defaults {
                Some((_, first)) => self.errors.push(PolicyError::new(
                    at,
                    ErrorKind::DuplicateSection { what: "[defaults]".into(), first: first.clone() },
                )),
                None => self.defaults = Some((parsed, at)),
            }
        }
        for response in parsed.response {
            let at = here(response.span().start);
            self.responses.push(ResponseSpec { at, value: response.into_inner() });
        }
    }

    /// Stores a lane unless another file already defined it; true when stored.
    fn set_lane(
        &mut self,
        at: Location,
        what: &str,
        lane: Lane,
        slot: impl Fn(&mut Self) -> &mut Option<Lane>,
    ) -> bool {
        if let Some(first) = slot(self).as_ref().and_then(|existing| existing.at.clone()) {
            let kind = ErrorKind::DuplicateSection { what: what.into(), first };
            self.errors.push(PolicyError::new(at, kind));
            return false;
        }
        *slot(self) = Some(lane);
        true
    }

    fn lane(&mut self, file: &Arc<PathBuf>, text: &str, spec: Spanned<LaneSpec>, is_quarantine: bool) -> Lane {
        let at = Location::at(file, text, spec.span().start);
        let spec = spec.into_inner();
        if let Some(flag) = &spec.include_update
            && !is_quarantine
        {
            let at = Location::at(file, text, flag.span().start);
            self.errors.push(PolicyError::new(at, ErrorKind::IncludeUpdateOutsideQuarantine));
        }
        let rules = spec.allow.into_iter().filter_map(|rule| self.rule(file, text, rule)).collect();
        Lane { description: spec.description, rules, at: Some(at) }
    }

    fn add_class(&mut self, file: &Arc<PathBuf>, text: &str, spec: ClassSpec, at: Location) {
        let here = |offset: usize| Location::at(file, text, offset);
        let name = spec.name.get_ref().clone();
        let name_at = here(spec.name.span().start);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            self.errors.push(PolicyError::new(name_at.clone(), ErrorKind::BadClassName(name.clone())));
        }
        if let Some(first) = self.classes.iter().find(|class| class.name == name) {
            let kind = ErrorKind::DuplicateClass { name: name.clone(), first: first.at.clone() };
            self.errors.push(PolicyError::new(name_at, kind));
        }
        let raw_id = *spec.id.get_ref();
        let id_at = here(spec.id.span().start);
        let id = match u16::try_from(raw_id) {
            Ok(id) if id != 0 => ClassId(id),
            _ => {
                self.errors.push(PolicyError::new(id_at.clone(), ErrorKind::ClassIdOutOfRange(raw_id)));
                ClassId(0)
            }
        };
        if id.0 != 0
            && let Some(other) = self.classes.iter().find(|class| class.id == id)
        {
            let kind = ErrorKind::DuplicateClassId {
                id: raw_id,
                name: name.clone(),
                other: other.name.clone(),
                first: other.at.clone(),
            };
            self.errors.push(PolicyError::new(id_at, kind));
        }
        for include in spec.include {
            let include_at = here(include.span().start);
            self.includes.push((name.clone(), include, include_at));
        }
        if spec.update_lane {
            self.update_users.push(at.clone());
        }
        let matcher = self.matcher(file, text, &name, spec.matches);
        let rules = spec.allow.into_iter().filter_map(|rule| self.rule(file, text, rule)).collect();
        self.classes.push(Class {
            name,
            id,
            policy_id: PolicyId::for_class(id),
            description: spec.description,
            include: Vec::new(),
            update_lane: spec.update_lane,
            matcher,
            rules,
            at,
        });
    }

    fn matcher(&mut self, file: &Arc<PathBuf>, text: &str, class: &str, spec: super::schema::MatchSpec) -> Matcher {
        let here = |offset: usize| Location::at(file, text, offset);
        let mut matcher = Matcher::default();
        for mac in spec.macs {
            let at = here(mac.span().start);
            match Mac::from_str(mac.get_ref()) {
                Ok(parsed) => {
                    self.check_unique(class, "MAC", &parsed.to_string(), &at, |m| m.macs.contains(&parsed));
                    if !matcher.macs.contains(&parsed) {
                        matcher.macs.push(parsed);
                    }
                }
                Err(_) => self.errors.push(PolicyError::new(at, ErrorKind::BadMac(mac.into_inner()))),
            }
        }
        for oui in spec.ouis {
            let at = here(oui.span().start);
            match parse_oui(oui.get_ref()) {
                Some(bytes) => {
                    let shown = hex_bytes(&bytes);
                    self.check_unique(class, "OUI prefix", &shown, &at, |m| m.ouis.contains(&bytes));
                    if !matcher.ouis.contains(&bytes) {
                        matcher.ouis.push(bytes);
                    }
                }
                None => self.errors.push(PolicyError::new(at, ErrorKind::BadOui(oui.into_inner()))),
            }
        }
        for kind in spec.fingerprint_types {
            let at = here(kind.span().start);
            let lowered = kind.get_ref().trim().to_ascii_lowercase();
            if lowered.is_empty() {
                self.errors.push(PolicyError::new(at, ErrorKind::EmptyPattern("fingerprint type")));
                continue;
            }
            self.check_unique(class, "fingerprint type", &lowered, &at, |m| m.fingerprint_types.contains(&lowered));
            if !matcher.fingerprint_types.contains(&lowered) {
                matcher.fingerprint_types.push(lowered);
            }
        }
        for subject in spec.cert_subjects {
            let at = here(subject.span().start);
            let normalized = normalize_subject(subject.get_ref());
            if normalized.is_empty() {
                let kind = ErrorKind::EmptyPattern("certificate subject");
                self.errors.push(PolicyError::new(at, kind));
                continue;
            }
            matcher.cert_subjects.push(normalized);
        }
        matcher
    }

    /// Refuses a match criterion another class already uses.
    fn check_unique(
        &mut self,
        class: &str,
        what: &'static str,
        value: &str,
        at: &Location,
        used_by: impl Fn(&Matcher) -> bool,
    ) {
        if let Some(other) = self.classes.iter().find(|c| c.name != class && used_by(&c.matcher)) {
            let kind = ErrorKind::AmbiguousMatch {
                what,
                value: value.to_owned(),
                other: other.name.clone(),
                first: other.at.clone(),
            };
            self.errors.push(PolicyError::new(at.clone(), kind));
        }
    }

    fn rule(&mut self, file: &Arc<PathBuf>, text: &str, spec: Spanned<RuleSpec>) -> Option<Rule> {
        let here = |offset: usize| Location::at(file, text, offset);
        let at = here(spec.span().start);
        let spec = spec.into_inner();
        let before = self.errors.len();
        let mut nets = Vec::new();
        for net in &spec.nets {
            match parse_net(net.get_ref()) {
                Ok(parsed) => nets.push(parsed),
                Err(kind) => self.errors.push(PolicyError::new(here(net.span().start), kind)),
            }
        }
        let mut names = Vec::new();
        for name in &spec.names {
            match DnsPattern::parse(name.get_ref()) {
                Ok(parsed) => names.push(parsed),
                Err(reason) => {
                    let kind = ErrorKind::BadDnsName { input: name.get_ref().clone(), reason };
                    self.errors.push(PolicyError::new(here(name.span().start), kind));
                }
            }
        }
        // A rule whose table lost a line to an earlier error is not also reported as empty or
        // as missing its protocol; it is refused all the same (the file has errors).
        let lost = |key: &str| self.tainted_tables.iter().any(|(line, lost)| *line == at.line && lost == key);
        let tainted = self.tainted_tables.iter().any(|(line, _)| *line == at.line);
        let lost_targets = lost("nets") || lost("names");
        let lost_protocol = lost("protocol");
        if spec.nets.is_empty() && spec.names.is_empty() && !lost_targets {
            self.errors.push(PolicyError::new(at.clone(), ErrorKind::EmptyRule));
        }
        let protocol = match &spec.protocol {
            None => Protocol::Any,
            Some(text) => Protocol::parse(text.get_ref()).unwrap_or_else(|| {
                let kind = ErrorKind::BadProtocol(text.get_ref().clone());
                self.errors.push(PolicyError::new(here(text.span().start), kind));
                Protocol::Any
            }),
        };
        let direction = match &spec.direction {
            None => Direction::Outbound,
            Some(text) => Direction::parse(text.get_ref()).unwrap_or_else(|| {
                let kind = ErrorKind::BadDirection(text.get_ref().clone());
                self.errors.push(PolicyError::new(here(text.span().start), kind));
                Direction::Outbound
            }),
        };
        let mut ports = Vec::new();
        for port in &spec.ports {
            match parse_port(port.get_ref()) {
                Ok(range) => ports.push(range),
                Err(kind) => self.errors.push(PolicyError::new(here(port.span().start), kind)),
            }
        }
        if !spec.ports.is_empty() && !protocol.has_ports() && !lost_protocol {
            let kind = ErrorKind::PortsWithoutPortProtocol(protocol.as_str().into());
            let at = here(spec.ports[0].span().start);
            self.errors.push(PolicyError::new(at, kind));
        }
        if self.errors.len() != before || tainted {
            return None;
        }
        let ports = if ports.is_empty() { vec![ALL_PORTS] } else { merge_ranges(ports) };
        Some(Rule { description: spec.description, nets, names, protocol, ports, direction, at })
    }

    fn defaults(&mut self, file: &Arc<PathBuf>, text: &str, spec: DefaultsSpec) -> Defaults {
        const ANY: &[Verdict] = &[Verdict::Pass, Verdict::Drop, Verdict::Redirect];
        const QUARANTINE: &[Verdict] = &[Verdict::Redirect, Verdict::Drop];
        let mut defaults = Defaults::default();
        let mut verdict = |value: Option<Spanned<String>>,
                           what: &'static str,
                           allowed: &[Verdict],
                           expected: &'static str,
                           slot: &mut Verdict| {
            let Some(value) = value else { return };
            let parsed = match value.get_ref().to_ascii_lowercase().as_str() {
                "pass" => Some(Verdict::Pass),
                "drop" => Some(Verdict::Drop),
                "redirect" => Some(Verdict::Redirect),
                _ => None,
            };
            match parsed {
                Some(parsed) if allowed.contains(&parsed) => *slot = parsed,
                _ => {
                    let at = Location::at(file, text, value.span().start);
                    let kind = ErrorKind::BadVerdict { input: value.into_inner(), what, expected };
                    self.errors.push(PolicyError::new(at, kind));
                }
            }
        };
        let expected_any = "pass, drop or redirect";
        verdict(spec.malformed, "malformed", ANY, expected_any, &mut defaults.malformed);
        verdict(spec.unknown_device, "unknown_device", ANY, expected_any, &mut defaults.unknown_device);
        verdict(spec.policy_miss, "policy_miss", ANY, expected_any, &mut defaults.policy_miss);
        verdict(spec.quarantine, "quarantine", QUARANTINE, "redirect or drop", &mut defaults.quarantine);
        defaults
    }

    /// Resolves includes, checks the update lane is defined where used, and builds `Policy`.
    fn finish(mut self) -> Result<Policy, Vec<PolicyError>> {
        let known: HashMap<String, usize> =
            self.classes.iter().enumerate().map(|(index, c)| (c.name.clone(), index)).collect();
        for (class, include, at) in std::mem::take(&mut self.includes) {
            let target = include.get_ref();
            match known.get(target.as_str()) {
                Some(_) => {
                    if let Some(index) = known.get(class.as_str())
                        && !self.classes[*index].include.contains(target)
                    {
                        self.classes[*index].include.push(target.clone());
                    }
                }
                None => self.errors.push(PolicyError::new(at, ErrorKind::UnknownClass(target.clone()))),
            }
        }
        self.check_cycles();
        if self.update.is_none() {
            for at in std::mem::take(&mut self.update_users) {
                self.errors.push(PolicyError::new(at, ErrorKind::MissingUpdateLane));
            }
        }
        if !self.errors.is_empty() {
            let mut errors = self.errors;
            errors.sort_by(|a, b| a.at.cmp(&b.at));
            return Err(errors);
        }
        self.classes.sort_by_key(|class| class.id);
        let quarantine = self.quarantine.unwrap_or_default();
        let quarantine_includes_update = self.quarantine_includes_update;
        Ok(Policy {
            classes: self.classes,
            lanes: Lanes {
                onboarding: self.onboarding.unwrap_or_default(),
                quarantine,
                update: self.update.unwrap_or_default(),
                quarantine_includes_update,
            },
            defaults: self.defaults.map(|(defaults, _)| defaults).unwrap_or_default(),
            responses: self.responses,
            files: self.files,
        })
    }

    /// Reports each class that reaches itself through `include`.
    fn check_cycles(&mut self) {
        let by_name: BTreeMap<&str, &Class> = self.classes.iter().map(|class| (class.name.as_str(), class)).collect();
        let mut cycles = Vec::new();
        for class in &self.classes {
            // Depth-first over includes; bounded by the number of classes on each path.
            let mut stack: Vec<(String, Vec<String>)> = vec![(class.name.clone(), Vec::new())];
            let mut seen = std::collections::HashSet::new();
            while let Some((name, path)) = stack.pop() {
                let Some(current) = by_name.get(name.as_str()) else {
                    continue;
                };
                for next in &current.include {
                    let mut next_path = path.clone();
                    next_path.push(next.clone());
                    if *next == class.name {
                        cycles.push((class.at.clone(), class.name.clone(), next_path.join(" -> ")));
                        stack.clear();
                        break;
                    }
                    if seen.insert(next.clone()) {
                        stack.push((next.clone(), next_path));
                    }
                }
            }
        }
        for (at, name, path) in cycles {
            self.errors.push(PolicyError::new(at, ErrorKind::IncludeCycle(name, path)));
        }
    }
}

/// A CIDR or a bare address (a host route), refusing host bits after the prefix.
pub fn parse_net(input: &str) -> Result<IpNet, ErrorKind> {
    let trimmed = input.trim();
    if let Ok(net) = IpNet::from_str(trimmed) {
        if net.trunc() != net {
            return Err(ErrorKind::HostBitsSet { input: input.to_owned(), suggestion: net.trunc().to_string() });
        }
        return Ok(net);
    }
    match IpAddr::from_str(trimmed) {
        Ok(addr) => Ok(IpNet::from(addr)),
        Err(_) => Err(ErrorKind::BadNetwork {
            input: input.to_owned(),
            reason: "expected a CIDR like 10.77.0.0/16 or 2001:db8::/32, or an address".into(),
        }),
    }
}

/// A port: `443`, `"443"` or `"8000-8100"`.
pub fn parse_port(value: &toml::Value) -> Result<PortRange, ErrorKind> {
    let in_range = |number: i64| u16::try_from(number).map_err(|_| ErrorKind::PortOutOfRange(number));
    match value {
        toml::Value::Integer(number) => {
            let port = in_range(*number)?;
            Ok(PortRange { first: port, last: port })
        }
        toml::Value::String(text) => {
            let bad = || ErrorKind::BadPort { input: text.clone() };
            let number = |part: &str| -> Result<u16, ErrorKind> {
                let parsed: i64 = part.trim().parse().map_err(|_| bad())?;
                in_range(parsed)
            };
            let (first, last) = match text.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None => {
                    let port = number(text)?;
                    (port, port)
                }
            };
            if first > last {
                return Err(ErrorKind::ReversedPortRange { first, last });
            }
            Ok(PortRange { first, last })
        }
        other => Err(ErrorKind::BadPort { input: other.to_string() }),
    }
}

/// Sorts ranges and merges overlapping or adjacent ones.
pub fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_by_key(|range| (range.first, range.last));
    let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(range.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(range.last);
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// `00:1a:2b`, `00-1A-2B`, `001a2b` (3 to 5 bytes).
fn parse_oui(input: &str) -> Option<Vec<u8>> {
    let digits: String = input.chars().filter(|c| !matches!(c, ':' | '-' | '.')).collect();
    if !digits.len().is_multiple_of(2) || !(6..=10).contains(&digits.len()) {
        return None;
    }
    hex::decode(digits).ok()
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A certificate subject (or pattern) in one canonical RFC 4514 spelling: no spaces around
/// `,` and `=`, attribute types upper-case. `CN = cam-1, o=Lab` → `CN=cam-1,O=Lab`.
pub fn normalize_subject(subject: &str) -> String {
    subject
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((kind, value)) => format!("{}={}", kind.trim().to_ascii_uppercase(), value.trim()),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors of `text` as `(line, column, message)`, file name `t.toml`.
    fn errors(text: &str) -> Vec<(usize, usize, ErrorKind)> {
        errors_of(&[("t.toml", text)])
    }

    fn errors_of(files: &[(&str, &str)]) -> Vec<(usize, usize, ErrorKind)> {
        let sources: Vec<(PathBuf, String)> =
            files.iter().map(|(name, text)| (PathBuf::from(name), (*text).to_owned())).collect();
        match parse_sources(&sources) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| (e.at.line, e.at.column, e.kind)).collect(),
        }
    }

    const CAMERA: &str = r#"
[[class]]
name = "camera"
id = 10

[[class.allow]]
nets = ["10.78.0.10/32"]
protocol = "tcp"
ports = [443]
"#;

    #[test]
    fn valid_class_loads_with_its_rule() {
        let policy = parse_sources(&[("t.toml".into(), CAMERA.into())]).expect("valid");
        let class = policy.class("camera").expect("camera");
        assert_eq!(class.policy_id, PolicyId(lane::FIRST_CLASS_POLICY + 10));
        assert_eq!(class.rules[0].protocol, Protocol::Tcp);
        assert_eq!(class.rules[0].ports, vec![PortRange { first: 443, last: 443 }]);
        assert_eq!(class.rules[0].at.line, 6);
    }

    #[test]
    fn duplicate_class_points_at_second_name_and_first_definition() {
        let found = errors(&format!("{CAMERA}\n[[class]]\nname = \"camera\"\nid = 11\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        let (line, column, kind) = &found[0];
        assert_eq!((*line, *column), (12, 8));
        match kind {
            ErrorKind::DuplicateClass { name, first } => {
                assert_eq!(name, "camera");
                assert_eq!(first.line, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn duplicate_class_id_across_files_is_refused() {
        let found = errors_of(&[("a.toml", CAMERA), ("b.toml", "[[class]]\nname = \"plug\"\nid = 10\n")]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (3, 6));
        assert!(matches!(&found[0].2, ErrorKind::DuplicateClassId { id: 10, other, .. } if other == "camera"));
    }

    #[test]
    fn class_id_zero_and_too_large_are_out_of_range() {
        let found = errors("[[class]]\nname = \"a\"\nid = 0\n[[class]]\nname = \"b\"\nid = 70000\n");
        assert_eq!(found, vec![(3, 6, ErrorKind::ClassIdOutOfRange(0)), (6, 6, ErrorKind::ClassIdOutOfRange(70_000)),]);
    }

    #[test]
    fn unknown_included_class_is_located_at_the_reference() {
        let found = errors(
            "[[class]]\nname = \"cam\"\nid = 1\ninclude = [\"base\", \"nope\"]\n[[class]]\nname = \"base\"\nid = 2\n",
        );
        assert_eq!(found, vec![(4, 20, ErrorKind::UnknownClass("nope".into()))]);
    }

    #[test]
    fn include_cycle_is_refused() {
        let found = errors(
            "[[class]]\nname = \"a\"\nid = 1\ninclude = [\"b\"]\n[[class]]\nname = \"b\"\nid = 2\ninclude = [\"a\"]\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|(_, _, kind)| matches!(kind, ErrorKind::IncludeCycle(..))));
    }

    #[test]
    fn every_bad_value_in_a_rule_is_reported_with_its_column() {
        let text = r#"[[class]]
name = "cam"
id = 1
[[class.allow]]
nets = ["10.0.0.0/33", "10.1.2.3/8", "not-a-net", "2001:db8::/32"]
names = ["ok.example.com", "bad..example.com", "a.*.example.com"]
protocol = "tcp"
ports = [443, 70000, "90-80", "x", -1, true]
direction = "sideways"
[[class.allow]]
protocol = "icmp"
ports = [1]
nets = ["10.0.0.1"]
[[class.allow]]
protocol = "gre"
[[class.allow]]
description = "nothing"
"#;
        let found = errors(text);
        let at: Vec<(usize, usize)> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
        assert_eq!(
            at,
            vec![
                (5, 9),
                (5, 24),
                (5, 38),
                (6, 28),
                (6, 48),
                (8, 15),
                (8, 22),
                (8, 31),
                (8, 36),
                (8, 40),
                (9, 13),
                (12, 10),
                (14, 1),
                (15, 12),
                (16, 1),
            ],
            "{found:#?}"
        );
        let kinds: Vec<&ErrorKind> = found.iter().map(|(_, _, kind)| kind).collect();
        assert!(matches!(kinds[0], ErrorKind::BadNetwork { .. }));
        assert!(matches!(kinds[1], ErrorKind::HostBitsSet { suggestion, .. } if suggestion == "10.0.0.0/8"));
        assert!(matches!(kinds[2], ErrorKind::BadNetwork { .. }));
        assert!(matches!(kinds[3], ErrorKind::BadDnsName { .. }));
        assert!(matches!(kinds[4], ErrorKind::BadDnsName { .. }));
        assert_eq!(kinds[5], &ErrorKind::PortOutOfRange(70_000));
        assert_eq!(kinds[6], &ErrorKind::ReversedPortRange { first: 90, last: 80 });
        assert!(matches!(kinds[7], ErrorKind::BadPort { .. }));
        assert_eq!(kinds[8], &ErrorKind::PortOutOfRange(-1));
        assert!(matches!(kinds[9], ErrorKind::BadPort { .. }));
        assert_eq!(kinds[10], &ErrorKind::BadDirection("sideways".into()));
        assert_eq!(kinds[11], &ErrorKind::PortsWithoutPortProtocol("icmp".into()));
        assert_eq!(kinds[12], &ErrorKind::EmptyRule);
        assert_eq!(kinds[13], &ErrorKind::BadProtocol("gre".into()));
        assert_eq!(kinds[14], &ErrorKind::EmptyRule);
    }

    #[test]
    fn bad_and_ambiguous_matches_are_refused() {
        let text = r#"[[class]]
name = "a"
id = 1
[class.match]
macs = ["02:00:00:00:00:01", "zz"]
ouis = ["00:1a:2b", "00:1a"]
fingerprint_types = ["camera", " "]
cert_subjects = [""]
[[class]]
name = "b"
id = 2
[class.match]
macs = ["02-00-00-00-00-01"]
ouis = ["001A2B"]
fingerprint_types = ["Camera"]
"#;
        let found = errors(text);
        let summary: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|(l, c, kind)| {
                let name = match kind {
                    ErrorKind::BadMac(_) => "mac",
                    ErrorKind::BadOui(_) => "oui",
                    ErrorKind::EmptyPattern(_) => "empty",
                    ErrorKind::AmbiguousMatch { .. } => "ambiguous",
                    _ => "other",
                };
                (*l, *c, name)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (5, 30, "mac"),
                (6, 21, "oui"),
                (7, 32, "empty"),
                (8, 18, "empty"),
                (13, 9, "ambiguous"),
                (14, 9, "ambiguous"),
                (15, 22, "ambiguous"),
            ]
        );
    }

    #[test]
    fn lanes_and_defaults_defined_twice_are_refused() {
        let lanes = "[lanes.onboarding]\n[[lanes.onboarding.allow]]\nnets = [\"10.77.0.1\"]\n[defaults]\nmalformed = \"drop\"\n";
        let found = errors_of(&[("a.toml", lanes), ("b.toml", lanes)]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|(_, _, kind)| matches!(kind, ErrorKind::DuplicateSection { .. })));
    }

    #[test]
    fn bad_verdicts_are_refused_and_quarantine_cannot_pass() {
        let found = errors("[defaults]\nmalformed = \"maybe\"\nquarantine = \"pass\"\npolicy_miss = \"redirect\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (2, 13));
        assert_eq!((found[1].0, found[1].1), (3, 14));
        assert!(matches!(&found[1].2, ErrorKind::BadVerdict { what: "quarantine", .. }));
    }

    #[test]
    fn update_lane_must_exist_when_used() {
        let found =
            errors("[[class]]\nname = \"a\"\nid = 1\nupdate_lane = true\n[lanes.quarantine]\ninclude_update = true\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|(_, _, kind)| *kind == ErrorKind::MissingUpdateLane));
        let misplaced = errors("[lanes.update]\ninclude_update = true\n");
        assert_eq!(misplaced, vec![(2, 18, ErrorKind::IncludeUpdateOutsideQuarantine)]);
    }

    #[test]
    fn syntax_and_unknown_keys_are_located_and_other_files_still_checked() {
        let found = errors_of(&[
            ("a.toml", "[[class]]\nname = \"a\"\nid = 1\n[bogus]\nx = 1\n"),
            ("b.toml", "[[class]]\nname = \"b\"\nid = 2\ncolour = \"red\"\n"),
            ("c.toml", "[[class]\n"),
            ("d.toml", "[[class]]\nname = \"d\"\nid = \"ten\"\n"),
            ("e.toml", "[[class]]\nname = \"e\"\nid = 0\n"),
            (
                "f.toml",
                "[[class]]\nname = \"f\"\nid = 7\nupdate_lane = \"yes\"\n[[class.allow]]\n\
                 nets = \"10.0.0.0/8\"\ncolour = 1\nports = [\"99999\"]\n",
            ),
        ]);
        assert_eq!(found.len(), 10, "{found:#?}");
        assert!(matches!(&found[0].2, ErrorKind::Syntax(message) if message.contains("bogus")));
        assert_eq!((found[0].0, found[0].1), (4, 2));
        assert!(matches!(&found[1].2, ErrorKind::Syntax(message) if message.contains("colour")));
        assert_eq!(found[1].0, 4);
        assert!(matches!(&found[2].2, ErrorKind::Syntax(_)));
        assert_eq!(found[2].0, 1);
        assert!(matches!(&found[3].2, ErrorKind::Syntax(_)));
        assert_eq!((found[3].0, found[3].1), (3, 6));
        assert_eq!(found[4].2, ErrorKind::ClassIdOutOfRange(0));
        // One file, three independent errors: two type errors and an unknown key, each at its
        // place (serde alone stops at the first), then the semantic error after them.
        // The rule that lost `nets` is not also reported empty; its bad port and its ports
        // without a port protocol are real and reported.
        let f: Vec<(usize, usize)> = found[5..].iter().map(|(l, c, _)| (*l, *c)).collect();
        assert_eq!(f, vec![(4, 15), (6, 8), (7, 1), (8, 10), (8, 10)], "{:#?}", &found[5..]);
        assert!(matches!(&found[7].2, ErrorKind::Syntax(message) if message.contains("colour")));
        assert_eq!(found[8].2, ErrorKind::PortOutOfRange(99_999));
        assert_eq!(found[9].2, ErrorKind::PortsWithoutPortProtocol("any".into()));
        // A rule that lost its protocol to a type error is not also told its ports need one.
        let lost = errors(
            "[[class]]\nname = \"g\"\nid = 8\n[[class.allow]]\nnets = [\"10.0.0.1\"]\nprotocol = 6\nports = [22]\n",
        );
        assert_eq!(lost.len(), 1, "{lost:#?}");
        assert_eq!((lost[0].0, lost[0].1), (6, 12));
    }

    #[test]
    fn response_tables_are_kept_raw_for_the_response_engine() {
        let policy =
            parse_sources(&[("r.toml".into(), "[[response]]\nwhen = \"scan\"\naction = \"quarantine\"\n".into())])
                .expect("response tables are not checked here");
        assert_eq!(policy.responses.len(), 1);
        assert_eq!(policy.responses[0].value.get("action").and_then(|v| v.as_str()), Some("quarantine"));
    }

    #[test]
    fn no_files_is_an_error() {
        assert_eq!(parse_sources(&[]).unwrap_err()[0].kind, ErrorKind::NoFiles);
    }

    #[test]
    fn dns_patterns_match_exact_and_strictly_below_wildcards() {
        let exact = DnsPattern::parse("API.Example.com.").expect("valid");
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));
        let wildcard = DnsPattern::parse("*.example.com").expect("valid");
        assert!(wildcard.matches("a.b.EXAMPLE.com."));
        assert!(!wildcard.matches("example.com"));
        assert!(!wildcard.matches("badexample.com"));
        // Multi-byte characters right before the suffix must not panic (hostile wire names).
        assert!(!wildcard.matches("\u{e9}xample.com"));
        assert!(!wildcard.matches("\u{1F600}example.com"));
        assert!(wildcard.matches("\u{e9}.example.com"));
    }

    #[test]
    fn ranges_merge_when_overlapping_or_adjacent() {
        let merged = merge_ranges(vec![
            PortRange { first: 80, last: 80 },
            PortRange { first: 10, last: 20 },
            PortRange { first: 21, last: 30 },
            PortRange { first: 25, last: 40 },
            PortRange { first: 65_535, last: 65_535 },
        ]);
        assert_eq!(
            merged,
            vec![
                PortRange { first: 10, last: 40 },
                PortRange { first: 80, last: 80 },
                PortRange { first: 65_535, last: 65_535 },
            ]
        );
    }
}
