//! Threat-intelligence lists: addresses, networks and domains known to serve malware or
//! command and control, loaded from files in the formats feeds are published in, for the
//! `threat_intel` detector (which needs no baseline). Reads the files named in
//! `detect.threat_intel`; writes nothing (the controller's `threat_intel` task reloads a
//! list when its file changes and hands it to the pipeline).
//!
//! Formats (`format` of a source):
//! - `ip`: one address or CIDR network a line (`203.0.113.7`, `198.51.100.0/24`);
//! - `domain`: one domain a line, or a hosts file (`0.0.0.0 evil.example`); a domain also
//!   lists its subdomains;
//! - `csv`: a CSV feed; `column` names the field by its header, or counts it from 1 when the
//!   feed has no header row (abuse.ch feeds comment theirs out). The field holds an address,
//!   a network, a domain or a URL (its host is taken).
//!
//! Everywhere, `#` starts a comment and blank lines are skipped. A line that does not hold
//! what its format promises is refused and counted, and the rest of the file still loads; a
//! file that cannot be read at all is an error, and a reload that fails keeps the list in
//! force.
use std::{collections::HashSet, net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Refused lines quoted in a load report (the count covers them all).
pub const REFUSED_EXAMPLES: usize = 3;
/// Longest DNS name (RFC 1035) and label.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// What a source file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntelFormat {
    Ip,
    Domain,
    Csv,
}

/// One `[[detect.threat_intel]]` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntelSource {
    pub path: PathBuf,
    pub format: IntelFormat,
    /// `csv` only: the header of the field to read, or its position from 1.
    #[serde(default)]
    pub column: Option<String>,
}

impl IntelSource {
    /// What is wrong with this source's settings, in words.
    pub fn problems(&self) -> Vec<String> {
        let path = self.path.display();
        match (self.format, &self.column) {
            (IntelFormat::Csv, None) => vec![format!("detect.threat_intel {path}: a csv source needs a column")],
            (IntelFormat::Csv, Some(column)) if column.trim().is_empty() || column.trim() == "0" => {
                vec![format!("detect.threat_intel {path}: column {column:?} names no field")]
            }
            (IntelFormat::Ip | IntelFormat::Domain, Some(_)) => {
                vec![format!("detect.threat_intel {path}: column is for csv sources only")]
            }
            _ => Vec::new(),
        }
    }
}

/// Why a source could not be loaded at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntelError {
    /// The file is missing or unreadable.
    #[error("cannot read the threat-intelligence list {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The CSV header row names no such column.
    #[error("the threat-intelligence feed {path} has no column {column:?}")]
    NoColumn { path: PathBuf, column: String },
    /// The CSV could not be read (a record longer than memory allows, bad quoting at its end).
    #[error("cannot read the CSV feed {path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
}

/// One loaded source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntelList {
    pub path: PathBuf,
    hosts: HashSet<IpAddr>,
    networks: Vec<IpNet>,
    domains: HashSet<String>,
    /// Lines (records) refused, and the first few of them, escaped.
    pub refused: usize,
    pub refused_examples: Vec<String>,
}

impl IntelList {
    /// Entries in force.
    pub fn entries(&self) -> usize {
        self.hosts.len() + self.networks.len() + self.domains.len()
    }

    fn refuse(&mut self, line: usize, text: &str) {
        self.refused += 1;
        if self.refused_examples.len() < REFUSED_EXAMPLES {
            self.refused_examples.push(format!("line {line}: {}", crate::untrusted::escape(text)));
        }
    }

    /// Adds an address, network, domain or URL host; false when `text` is none of them.
    fn add_any(&mut self, text: &str) -> bool {
        let text = text.trim();
        if let Some(entry) = address_entry(text) {
            self.add_address(entry);
            return true;
        }
        let host = match url::Url::parse(text) {
            Ok(url) if url.has_host() => url.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()),
            _ => None,
        };
        match host {
            Some(host) => match address_entry(&host) {
                Some(entry) => {
                    self.add_address(entry);
                    true
                }
                None => self.add_domain(&host),
            },
            None => self.add_domain(text),
        }
    }

    fn add_address(&mut self, net: IpNet) {
        if net.prefix_len() == net.max_prefix_len() {
            self.hosts.insert(net.addr());
        } else {
            self.networks.push(net.trunc());
        }
    }

    fn add_domain(&mut self, text: &str) -> bool {
        match domain_entry(text) {
            Some(domain) => {
                self.domains.insert(domain);
                true
            }
            None => false,
        }
    }

    fn match_address(&self, addr: IpAddr) -> Option<String> {
        if self.hosts.contains(&addr) {
            return Some(addr.to_string());
        }
        self.networks.iter().find(|net| net.contains(&addr)).map(ToString::to_string)
    }

    /// The listed domain `name` is, or lies under.
    fn match_name(&self, name: &str) -> Option<String> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = name.as_str();
        loop {
            if self.domains.contains(rest) {
                return Some(rest.to_owned());
            }
            rest = rest.split_once('.')?.1;
        }
    }
}

/// `text` as an address or network, if it is one.
fn address_entry(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>().ok().or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// `text` as a listed domain: two labels or more of letters, digits, `-` and `_`, in the
/// lengths DNS allows; lower case, without the root's dot.
fn domain_entry(text: &str) -> Option<String> {
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let valid_label = |label: &&str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (name.len() <= MAX_NAME && labels.len() >= 2 && labels.iter().all(valid_label)).then_some(name)
}

/// The text of a line before its comment, trimmed.
fn uncommented(line: &str) -> &str {
    line.split_once('#').map_or(line, |(before, _)| before).trim()
}

/// Loads one source.
pub fn load(source: &IntelSource) -> Result<IntelList, IntelError> {
    let path = &source.path;
    let bytes = std::fs::read(path).map_err(|e| IntelError::Read { path: path.clone(), source: e })?;
    let mut list = IntelList { path: path.clone(), ..Default::default() };
    match source.format {
        IntelFormat::Ip | IntelFormat::Domain => {
            let text = String::from_utf8_lossy(&bytes);
            for (index, line) in text.lines().enumerate() {
                let entry = uncommented(line);
                if entry.is_empty() {
                    continue;
                }
                let fields: Vec<&str> = entry.split_whitespace().collect();
                let added = match (source.format, fields.as_slice()) {
                    (IntelFormat::Ip, [one]) => address_entry(one).map(|net| list.add_address(net)).is_some(),
                    // A hosts file maps each listed name to a sink address.
                    (IntelFormat::Domain, [sink, name]) if sink.parse::<IpAddr>().is_ok() => list.add_domain(name),
                    (IntelFormat::Domain, [one]) => list.add_domain(one),
                    _ => false,
                };
                if !added {
                    list.refuse(index + 1, line);
                }
            }
        }
        IntelFormat::Csv => load_csv(source, &bytes, &mut list)?,
    }
    Ok(list)
}

fn load_csv(source: &IntelSource, bytes: &[u8], list: &mut IntelList) -> Result<(), IntelError> {
    let path = &source.path;
    let column = source.column.as_deref().unwrap_or_default().trim();
    let csv_error = |e| IntelError::Csv { path: path.clone(), source: e };
    let mut reader = csv::ReaderBuilder::new().has_headers(false).comment(Some(b'#')).flexible(true).from_reader(bytes);
    let mut records = reader.records();
    // A numeric column counts from 1 over a feed without header; a name finds its header.
    let index = match column.parse::<usize>() {
        Ok(position) if position > 0 => position - 1,
        _ => {
            let header = records.next().transpose().map_err(csv_error)?.unwrap_or_default();
            let found = header.iter().position(|field| field.trim() == column);
            found.ok_or_else(|| IntelError::NoColumn { path: path.clone(), column: column.to_owned() })?
        }
    };
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(error) if error.is_io_error() => return Err(csv_error(error)),
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                list.refuse(line as usize, &error.to_string());
                continue;
            }
        };
        if !record.get(index).is_some_and(|field| list.add_any(field)) {
            let line = record.position().map_or(0, |p| p.line());
            list.refuse(line as usize, &record.iter().collect::<Vec<_>>().join(","));
        }
    }
    Ok(())
}

/// Every source in force; what the `threat_intel` detector matches against.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreatIntel {
    lists: Vec<IntelList>,
}

/// A listed entry a flow matched.
#[derive(Clone, Debug, PartialEq)]
pub struct IntelMatch {
    pub list: PathBuf,
    pub entry: String,
    /// True for an address or network, false for a domain.
    pub by_address: bool,
}

impl ThreatIntel {
    pub fn new(lists: Vec<IntelList>) -> Self {
        Self { lists }
    }

    pub fn lists(&self) -> &[IntelList] {
        &self.lists
    }

    /// Replaces the list loaded from the same file (or adds it).
    pub fn replace(&mut self, list: IntelList) {
        match self.lists.iter_mut().find(|l| l.path == list.path) {
            Some(old) => *old = list,
            None => self.lists.push(list),
        }
    }

    /// The entry `addr` (or the DNS `name` it was resolved from) is listed under, if any.
    pub fn lookup(&self, addr: IpAddr, name: Option<&str>) -> Option<IntelMatch> {
        self.lists.iter().find_map(|list| {
            let by_address = list.match_address(addr).map(|entry| (entry, true));
            let by_name = || name.and_then(|n| list.match_name(n)).map(|entry| (entry, false));
            by_address.or_else(by_name).map(|(entry, by_address)| IntelMatch {
                list: list.path.clone(),
                entry,
                by_address,
            })
        })
    }
}

/// Loads every source; the first that cannot be read is the error.
pub fn load_all(sources: &[IntelSource]) -> Result<ThreatIntel, IntelError> {
    sources.iter().map(load).collect::<Result<Vec<_>, _>>().map(ThreatIntel::new)
}

/// The `threat_intel` detector: an upstream flow to a listed address or network, or to an
/// address a DNS answer gave for a listed domain.
pub(super) fn listed(
    intel: &ThreatIntel,
    baselines: &crate::baseline::Baselines,
    flow: &crate::datapath::events::FlowObservation,
    text: &str,
) -> Option<super::Trigger> {
    let name = baselines.name_of(flow.dst);
    let hit = intel.lookup(flow.dst, name)?;
    // An address on a list is the server itself; a domain may share its address with
    // others (a CDN, a parking page).
    let score = if hit.by_address { LISTED_ADDRESS_SCORE } else { LISTED_DOMAIN_SCORE };
    let what = match (hit.by_address, name) {
        (true, _) => format!("{} is listed as {}", flow.dst, hit.entry),
        (false, Some(name)) => format!("{} was resolved from {name}, listed as {}", flow.dst, hit.entry),
        (false, None) => format!("{} is listed as {}", flow.dst, hit.entry),
    };
    Some(super::Trigger {
        detector: super::DetectorKind::ThreatIntel,
        score,
        expected: format!("no destination on the {} threat-intelligence lists in force", intel.lists.len()),
        observed: format!("{what} in {}; score = {score:.1}", hit.list.display()),
        flows: vec![text.to_owned()],
        // A listed destination is never learnt as normal: a wrong entry is fixed in its list.
        observation: None,
    })
}

/// Score of a flow to a listed address or network.
pub const LISTED_ADDRESS_SCORE: f64 = 1.0;
/// Score of a flow to an address resolved from a listed domain.
pub const LISTED_DOMAIN_SCORE: f64 = 0.9;

#[cfg(test)]
mod tests;
