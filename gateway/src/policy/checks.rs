//! Semantic checks of the policy files: turns each file's `schema` into the checked `model`,
//! merging classes, lanes and defaults across files, resolving includes and refusing what
//! contradicts itself (duplicate names and ids, ambiguous matches, include cycles, lanes used
//! but not defined), every problem located. Fed by `load`; pure.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    str::FromStr,
    sync::Arc,
};

use gateway_ebpf::PortRange;
use ipnet::IpNet;
use toml::Spanned;

use super::{
    error::{ErrorKind, Location, PolicyError},
    model::{
        ALL_PORTS, Class, ClassId, Direction, Family, Lane, Lanes, Matcher, Policy, PolicyId, Protocol, ResponseSpec,
        Rule,
    },
    remote::{Remote, RemoteTarget},
    schema::{ClassSpec, DefaultsSpec, LaneSpec, MatchSpec, PolicyFile, RuleSpec},
    values::{
        DnsPattern, hex_bytes, merge_icmp, merge_ranges, normalize_subject, parse_icmp_type, parse_net, parse_oui,
        parse_port,
    },
    verdict::{Defaults, Verdict},
};
use crate::{device::Mac, fingerprint::taxonomy::Taxonomy};

/// A file as `load` parsed it, possibly after lines with TOML errors were commented out.
pub(super) struct ParsedFile {
    pub file: PolicyFile,
    /// The text it was parsed from: the original with `#` before the removed lines.
    pub text: String,
    /// (header line of the table, key) of every removed line: a rule that lost `nets` may
    /// look empty and one that lost `protocol` may look portless, which is not worth a second
    /// error.
    pub tainted_tables: Vec<(usize, String)>,
}

/// One file's name, the text spans point into and where its lines start.
#[derive(Clone, Copy)]
struct Source<'a> {
    file: &'a Arc<PathBuf>,
    text: &'a str,
    lines: &'a crate::toml_error::LineStarts,
}

impl Source<'_> {
    /// The location of byte `offset`.
    fn at(self, offset: usize) -> Location {
        Location::at_line(self.file, self.text, self.lines, offset)
    }
}

/// The three lanes, as `[lanes.*]` names them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LaneName {
    Onboarding,
    Quarantine,
    Update,
}

impl LaneName {
    fn header(self) -> &'static str {
        match self {
            LaneName::Onboarding => "[lanes.onboarding]",
            LaneName::Quarantine => "[lanes.quarantine]",
            LaneName::Update => "[lanes.update]",
        }
    }
}

/// Collects classes, lanes and defaults across files, and every error.
#[derive(Default)]
pub(super) struct Checker {
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
    /// Of the file being added: see `ParsedFile::tainted_tables`.
    tainted_tables: Vec<(usize, String)>,
}

impl Checker {
    /// Adds one file: the TOML errors `load` found in it and, when it parsed, what it says.
    pub(super) fn add_file(
        &mut self,
        file: &Arc<PathBuf>,
        syntax_errors: Vec<PolicyError>,
        parsed: Option<ParsedFile>,
    ) {
        self.files.push(Arc::clone(file));
        self.errors.extend(syntax_errors);
        let Some(ParsedFile { file: content, text, tainted_tables }) = parsed else { return };
        self.tainted_tables = tainted_tables;
        let lines = crate::toml_error::LineStarts::new(&text);
        let source = Source { file, text: &text, lines: &lines };
        for class in content.class {
            let at = source.at(class.span().start);
            self.add_class(source, class.into_inner(), at);
        }
        if let Some(lanes) = content.lanes {
            if let Some(spec) = lanes.onboarding {
                self.add_lane(source, LaneName::Onboarding, spec);
            }
            if let Some(spec) = lanes.quarantine {
                let include_update = spec.get_ref().include_update.as_ref().is_some_and(|v| *v.get_ref());
                if include_update {
                    self.update_users.push(source.at(spec.span().start));
                }
                if self.add_lane(source, LaneName::Quarantine, spec) {
                    self.quarantine_includes_update = include_update;
                }
            }
            if let Some(spec) = lanes.update {
                self.add_lane(source, LaneName::Update, spec);
            }
        }
        if let Some(defaults) = content.defaults {
            let at = source.at(defaults.span().start);
            let parsed = self.defaults(source, defaults.into_inner());
            match &self.defaults {
                Some((_, first)) => self.errors.push(PolicyError::new(
                    at,
                    ErrorKind::DuplicateSection { what: "[defaults]".into(), first: first.clone() },
                )),
                None => self.defaults = Some((parsed, at)),
            }
        }
        for response in content.response {
            let at = source.at(response.span().start);
            self.responses.push(ResponseSpec { at, value: response.into_inner() });
        }
    }

    /// Checks a lane and stores it unless another file already defined it; true when stored.
    fn add_lane(&mut self, source: Source, name: LaneName, spec: Spanned<LaneSpec>) -> bool {
        let at = source.at(spec.span().start);
        let spec = spec.into_inner();
        if let Some(flag) = &spec.include_update
            && name != LaneName::Quarantine
        {
            let at = source.at(flag.span().start);
            self.errors.push(PolicyError::new(at, ErrorKind::IncludeUpdateOutsideQuarantine));
        }
        let rules = spec.allow.into_iter().filter_map(|rule| self.rule(source, rule)).collect();
        let lane = Lane { description: spec.description, rules, at: Some(at.clone()) };
        let slot = match name {
            LaneName::Onboarding => &mut self.onboarding,
            LaneName::Quarantine => &mut self.quarantine,
            LaneName::Update => &mut self.update,
        };
        if let Some(first) = slot.as_ref().and_then(|existing| existing.at.clone()) {
            let kind = ErrorKind::DuplicateSection { what: name.header().into(), first };
            self.errors.push(PolicyError::new(at, kind));
            return false;
        }
        *slot = Some(lane);
        true
    }

    fn add_class(&mut self, source: Source, spec: ClassSpec, at: Location) {
        let name = spec.name.get_ref().clone();
        let name_at = source.at(spec.name.span().start);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            self.errors.push(PolicyError::new(name_at.clone(), ErrorKind::BadClassName(name.clone())));
        }
        if let Some(first) = self.classes.iter().find(|class| class.name == name) {
            let kind = ErrorKind::DuplicateClass { name: name.clone(), first: first.at.clone() };
            self.errors.push(PolicyError::new(name_at, kind));
        }
        let raw_id = *spec.id.get_ref();
        let id_at = source.at(spec.id.span().start);
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
            let include_at = source.at(include.span().start);
            self.includes.push((name.clone(), include, include_at));
        }
        if spec.update_lane {
            self.update_users.push(at.clone());
        }
        let matcher = self.matcher(source, &name, spec.matches);
        let mut controllers = Vec::new();
        for controller in spec.controllers {
            match parse_net(controller.get_ref()) {
                Ok(net) if !controllers.contains(&net) => controllers.push(net),
                Ok(_) => {}
                Err(kind) => self.errors.push(PolicyError::new(source.at(controller.span().start), kind)),
            }
        }
        let rules = spec.allow.into_iter().filter_map(|rule| self.rule(source, rule)).collect();
        self.classes.push(Class {
            name,
            id,
            policy_id: PolicyId::for_class(id),
            description: spec.description,
            include: Vec::new(),
            update_lane: spec.update_lane,
            matcher,
            controllers,
            rules,
            at,
        });
    }

    fn matcher(&mut self, source: Source, class: &str, spec: MatchSpec) -> Matcher {
        let mut matcher = Matcher::default();
        for mac in spec.macs {
            let at = source.at(mac.span().start);
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
            let at = source.at(oui.span().start);
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
            let at = source.at(kind.span().start);
            let lowered = kind.get_ref().trim().to_ascii_lowercase();
            if lowered.is_empty() {
                self.errors.push(PolicyError::new(at, ErrorKind::EmptyPattern("fingerprint type")));
                continue;
            }
            if !Taxonomy::shipped_producible().contains(&lowered) {
                let generic = Taxonomy::shipped_producible()
                    .iter()
                    .filter(|name| Taxonomy::shipped().generic_types.contains(*name))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                self.errors.push(PolicyError::new(at, ErrorKind::UnknownFingerprintType(lowered, generic)));
                continue;
            }
            self.check_unique(class, "fingerprint type", &lowered, &at, |m| m.fingerprint_types.contains(&lowered));
            if !matcher.fingerprint_types.contains(&lowered) {
                matcher.fingerprint_types.push(lowered);
            }
        }
        if let Some(confidence) = spec.fingerprint_confidence {
            let at = source.at(confidence.span().start);
            match confidence.into_inner() {
                value if (0.0..=1.0).contains(&value) => {
                    matcher.fingerprint_confidence_percent = (value * 100.0).round() as u8;
                }
                value => self.errors.push(PolicyError::new(at, ErrorKind::BadConfidence(value.to_string()))),
            }
        }
        for subject in spec.cert_subjects {
            let at = source.at(subject.span().start);
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

    /// Checks one allow rule: `None` when it has errors (all of them reported).
    fn rule(&mut self, source: Source, spec: Spanned<RuleSpec>) -> Option<Rule> {
        let at = source.at(spec.span().start);
        let spec = spec.into_inner();
        let before = self.errors.len();
        // Each network with where it is written (the family check points at it).
        let mut located_nets = Vec::new();
        for net in &spec.nets {
            match parse_net(net.get_ref()) {
                Ok(parsed) => located_nets.push((net.span().start, parsed)),
                Err(kind) => self.errors.push(PolicyError::new(source.at(net.span().start), kind)),
            }
        }
        let mut names = Vec::new();
        for name in &spec.names {
            match DnsPattern::parse(name.get_ref()) {
                Ok(parsed) => names.push(parsed),
                Err(reason) => {
                    let kind = ErrorKind::BadDnsName { input: name.get_ref().clone(), reason };
                    self.errors.push(PolicyError::new(source.at(name.span().start), kind));
                }
            }
        }
        let remote = spec.remote.as_ref().and_then(|text| match Remote::parse(text.get_ref()) {
            Ok(remote) => Some(remote),
            Err(reason) => {
                let kind = ErrorKind::BadRemote { input: text.get_ref().clone(), reason };
                self.errors.push(PolicyError::new(source.at(text.span().start), kind));
                None
            }
        });
        if let Some(text) = &spec.remote
            && !spec.names.is_empty()
        {
            self.errors.push(PolicyError::new(source.at(text.span().start), ErrorKind::RemoteWithNames));
        }
        // A rule whose table lost a line to an earlier error is not also reported as empty or
        // as missing its protocol; it is refused all the same (the file has errors).
        let lost = |key: &str| self.tainted_tables.iter().any(|(line, lost)| *line == at.line && lost == key);
        let tainted = self.tainted_tables.iter().any(|(line, _)| *line == at.line);
        let lost_targets = lost("nets") || lost("names");
        let lost_protocol = lost("protocol");
        let lost_targets = lost_targets || lost("remote");
        if spec.nets.is_empty() && spec.names.is_empty() && spec.remote.is_none() && !lost_targets {
            self.errors.push(PolicyError::new(at.clone(), ErrorKind::EmptyRule));
        }
        let protocol = match &spec.protocol {
            None => Protocol::Any,
            Some(text) => Protocol::parse(text.get_ref()).unwrap_or_else(|| {
                let kind = ErrorKind::BadProtocol(text.get_ref().clone());
                self.errors.push(PolicyError::new(source.at(text.span().start), kind));
                Protocol::Any
            }),
        };
        let direction = match &spec.direction {
            None => Direction::Outbound,
            Some(text) => Direction::parse(text.get_ref()).unwrap_or_else(|| {
                let kind = ErrorKind::BadDirection(text.get_ref().clone());
                self.errors.push(PolicyError::new(source.at(text.span().start), kind));
                Direction::Outbound
            }),
        };
        let family = spec.family.as_ref().and_then(|text| {
            let family = Family::parse(text.get_ref());
            if family.is_none() {
                let kind = ErrorKind::BadFamily(text.get_ref().clone());
                self.errors.push(PolicyError::new(source.at(text.span().start), kind));
            }
            family
        });
        if let Some(family) = family {
            for (offset, net) in located_nets.iter().filter(|(_, net)| Family::of(net) != family) {
                let kind = ErrorKind::NetOutsideFamily { net: net.to_string(), family: family.as_str() };
                self.errors.push(PolicyError::new(source.at(*offset), kind));
            }
        }
        let nets: Vec<IpNet> = located_nets.into_iter().map(|(_, net)| net).collect();
        let ports = self.port_list(source, &spec.ports, protocol, lost_protocol, ErrorKind::PortsWithoutPortProtocol);
        let source_ports = self.port_list(
            source,
            &spec.source_ports,
            protocol,
            lost_protocol,
            ErrorKind::SourcePortsWithoutPortProtocol,
        );
        let mut icmp = Vec::new();
        for kind in &spec.icmp_types {
            match parse_icmp_type(kind.get_ref()) {
                Ok(parsed) => icmp.push(parsed),
                Err(error) => self.errors.push(PolicyError::new(source.at(kind.span().start), error)),
            }
        }
        if let Some(first) = spec.icmp_types.first()
            && protocol != Protocol::Icmp
            && !lost_protocol
        {
            let kind = ErrorKind::IcmpTypesWithoutIcmp(protocol.as_str().into());
            self.errors.push(PolicyError::new(source.at(first.span().start), kind));
        }
        if self.errors.len() != before || tainted {
            return None;
        }
        // With a remote, `nets` narrows it (both must match) instead of adding destinations.
        let (nets, remote) = match remote {
            Some(remote) => (Vec::new(), Some(RemoteTarget { remote, within: nets })),
            None => (nets, None),
        };
        Some(Rule {
            description: spec.description,
            nets,
            names,
            remote,
            protocol,
            ports,
            source_ports,
            icmp: merge_icmp(icmp),
            direction,
            family,
            at,
        })
    }

    /// Checks `ports` or `source_ports`: merged ranges, `ALL_PORTS` when none are given; a
    /// protocol without ports gets `refusal` at the first entry.
    fn port_list(
        &mut self,
        source: Source,
        entries: &[Spanned<toml::Value>],
        protocol: Protocol,
        lost_protocol: bool,
        refusal: fn(String) -> ErrorKind,
    ) -> Vec<PortRange> {
        let mut ranges = Vec::new();
        for port in entries {
            match parse_port(port.get_ref()) {
                Ok(range) => ranges.push(range),
                Err(kind) => self.errors.push(PolicyError::new(source.at(port.span().start), kind)),
            }
        }
        if let Some(first) = entries.first()
            && !protocol.has_ports()
            && !lost_protocol
        {
            self.errors.push(PolicyError::new(source.at(first.span().start), refusal(protocol.as_str().into())));
        }
        if ranges.is_empty() { vec![ALL_PORTS] } else { merge_ranges(ranges) }
    }

    fn defaults(&mut self, source: Source, spec: DefaultsSpec) -> Defaults {
        const ANY: &[Verdict] = &Verdict::ALL;
        const QUARANTINE: &[Verdict] = &[Verdict::Redirect, Verdict::Drop];
        let mut defaults = Defaults::default();
        let mut verdict = |value: Option<Spanned<String>>,
                           what: &'static str,
                           allowed: &[Verdict],
                           expected: &'static str,
                           slot: &mut Verdict| {
            let Some(value) = value else { return };
            match Verdict::parse(value.get_ref()) {
                Some(parsed) if allowed.contains(&parsed) => *slot = parsed,
                _ => {
                    let at = source.at(value.span().start);
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
    pub(super) fn finish(mut self) -> Result<Policy, Vec<PolicyError>> {
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
            let mut seen = HashSet::new();
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

#[cfg(test)]
mod tests;
