//! `docs/config.md` against the configuration structs, so the reference cannot drift: every
//! key the gateway's and the hub's files accept is documented (and no other), each with a type,
//! a default and a meaning, and every default written as a TOML value is what leaving the key
//! out gives. The structs say which keys they accept through `deny_unknown_fields`: a probe key
//! in a table is refused with the list of the table's keys.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
/// A key no table accepts.
const PROBE: &str = "iotgw_reference_probe";
/// The tables the hub's file shares with the gateway's, documented once, under the gateway's.
const SHARED_WITH_HUB: &str = "api";
/// The keys the hub's file cannot do without (no default), given in every hub sample.
const HUB_REQUIRED: &str = "nats_url = \"nats://127.0.0.1:4222\"\ndatabase_url = \"postgres://localhost/iotgw\"\n";

/// Which file a section belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum File {
    Gateway,
    Hub,
}

/// One table of the reference: its TOML header (`[datapath]`, `[[integrations.sinks]]`, or
/// empty for the top level) and its rows.
#[derive(Debug, Default)]
struct Section {
    header: String,
    rows: Vec<Row>,
}

#[derive(Debug)]
struct Row {
    key: String,
    kind: String,
    /// A TOML value when the default cell is one in backticks, else `None` (unset, required).
    default: Option<String>,
    default_cell: String,
    meaning: String,
}

impl Section {
    /// `datapath` for `[datapath]`, `integrations.sinks` for `[[integrations.sinks]]`.
    fn path(&self) -> String {
        self.header.trim_matches(|c| c == '[' || c == ']').to_owned()
    }

    fn is_array(&self) -> bool {
        self.header.starts_with("[[")
    }
}

/// The reference's sections by file and path, read from its `##` (file), `###` (table) and
/// table rows (`| key | type | default | meaning |`).
fn reference() -> Reference {
    let text = std::fs::read_to_string(REFERENCE).expect("docs/config.md");
    let mut sections = BTreeMap::new();
    let mut file = None;
    let mut current: Option<(File, Section)> = None;
    let mut finish = |current: &mut Option<(File, Section)>| {
        if let Some((file, section)) = current.take() {
            let previous = sections.insert((file, section.path()), section);
            assert!(previous.is_none(), "a table is documented twice");
        }
    };
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            finish(&mut current);
            file = match heading {
                h if h.contains("iotgw.toml") => Some(File::Gateway),
                h if h.contains("hub.toml") => Some(File::Hub),
                _ => None,
            };
        } else if let Some(heading) = line.strip_prefix("### ") {
            finish(&mut current);
            let Some(file) = file else { continue };
            let header = match heading.split('`').nth(1) {
                Some(header) if header.starts_with('[') => header.to_owned(),
                _ if heading.contains("top level") => String::new(),
                _ => panic!("docs/config.md: heading {heading:?} names no table"),
            };
            current = Some((file, Section { header, rows: Vec::new() }));
        } else if let Some((_, section)) = current.as_mut()
            && line.starts_with("| `")
        {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "docs/config.md: a row has key, type, default and meaning: {line}");
            let default = cells[2].strip_prefix('`').and_then(|d| d.strip_suffix('`')).map(str::to_owned);
            section.rows.push(Row {
                key: cells[0].trim_matches('`').to_owned(),
                kind: cells[1].to_owned(),
                default,
                default_cell: cells[2].to_owned(),
                meaning: cells[3].to_owned(),
            });
        }
    }
    finish(&mut current);
    sections
}

type Reference = BTreeMap<(File, String), Section>;

/// The section documenting table `path` of `file` (the hub's `[api]` is the gateway's).
fn find<'r>(sections: &'r Reference, file: File, path: &str) -> Option<&'r Section> {
    let shared = path == SHARED_WITH_HUB || path.starts_with(&format!("{SHARED_WITH_HUB}."));
    let file = if file == File::Hub && shared { File::Gateway } else { file };
    sections.get(&(file, path.to_owned()))
}

/// The headers to write before table `path` of `file`: those of the arrays it sits in
/// (`[[integrations.sinks]]` before `[integrations.sinks.itsm]`), then its own.
fn headers(sections: &Reference, file: File, path: &str) -> Option<String> {
    let mut text = String::new();
    let parts: Vec<&str> = path.split('.').collect();
    for end in 1..parts.len() {
        if let Some(outer) = find(sections, file, &parts[..end].join(".")).filter(|s| s.is_array()) {
            text.push_str(&format!("{}\n", outer.header));
        }
    }
    let section = find(sections, file, path)?;
    if !section.header.is_empty() {
        text.push_str(&format!("{}\n", section.header));
    }
    Some(text)
}

/// Whether table `path` is, or sits in, an array of tables (its entries have no defaults of
/// their own to compare with).
fn in_array(sections: &Reference, file: File, path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    (1..=parts.len()).any(|end| find(sections, file, &parts[..end].join(".")).is_some_and(Section::is_array))
}

/// A scratch file for the loaders, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    /// A name of its own: the tests run on several threads.
    fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!("iotgw-config-reference-{name}-{}-{n}.toml", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Parses `text` as `file`'s configuration: the `Debug` of what it gives, or the error.
fn parse(file: File, text: &str) -> Result<String, String> {
    match file {
        File::Gateway => iotgw::config::parse(Path::new("x.toml"), text)
            .map(|config| format!("{config:?}"))
            .map_err(|e| e.to_string()),
        File::Hub => {
            let scratch = Scratch::new("hub");
            std::fs::write(&scratch.0, format!("{HUB_REQUIRED}{text}")).expect("scratch file");
            iotgw::hub::Config::load(&scratch.0).map(|config| format!("{config:?}")).map_err(|e| e.to_string())
        }
    }
}

/// The keys the table `header` accepts, from the refusal of a probe key in it (serde refuses
/// an unknown key before it misses a required one, so array entries need no other key).
fn accepted_keys(file: File, headers: &str) -> BTreeSet<String> {
    let text = format!("{headers}{PROBE} = 0\n");
    let error = parse(file, &text).expect_err("the probe key is refused");
    let list = error
        .split_once("expected one of ")
        .or_else(|| error.split_once("expected "))
        .unwrap_or_else(|| panic!("{file:?} {headers}: the refusal lists no keys: {error}"))
        .1;
    // serde says "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`, `c`".
    list.replace(" or ", ", ").split(", ").map(|key| key.trim().trim_matches('`').to_owned()).collect()
}

#[test]
fn the_reference_documents_every_key_and_only_keys_that_exist() {
    let sections = reference();
    assert!(!sections.is_empty(), "docs/config.md has no tables");
    let mut problems = Vec::new();
    for file in [File::Gateway, File::Hub] {
        // From the top level down through every table a key names.
        let mut to_probe = vec![String::new()];
        let mut seen = BTreeSet::new();
        while let Some(path) = to_probe.pop() {
            if !seen.insert(path.clone()) {
                continue;
            }
            let section = find(&sections, file, &path);
            let headers = headers(&sections, file, &path).unwrap_or_default();
            let accepted = accepted_keys(file, &headers);
            let documented: BTreeSet<String> =
                section.map(|s| s.rows.iter().map(|r| r.key.clone()).collect()).unwrap_or_default();
            for key in &accepted {
                let sub = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if find(&sections, file, &sub).is_some() {
                    to_probe.push(sub);
                } else if !documented.contains(key) {
                    problems.push(format!("{file:?} [{path}]: `{key}` is not documented"));
                }
            }
            for key in documented.difference(&accepted) {
                problems.push(format!("{file:?} [{path}]: `{key}` is documented but not accepted"));
            }
        }
        for (_, path) in sections.keys().filter(|(f, _)| *f == file) {
            if !seen.contains(path) {
                problems.push(format!("{file:?} [{path}] is documented but no table has it"));
            }
        }
    }
    assert!(problems.is_empty(), "docs/config.md is out of date:\n{}", problems.join("\n"));
}

#[test]
fn every_documented_default_is_the_default() {
    let sections = reference();
    let mut problems = Vec::new();
    for ((file, path), section) in &sections {
        for row in &section.rows {
            let place = format!("{file:?} [{path}] `{}`", row.key);
            if row.kind.is_empty() || row.meaning.is_empty() || row.default_cell.is_empty() {
                problems.push(format!("{place}: type, default and meaning are all needed"));
            }
            let Some(default) = row.default.as_ref().filter(|_| !in_array(&sections, *file, path)) else { continue };
            let headers = headers(&sections, *file, path).expect("documented");
            let baseline = parse(*file, &headers).expect("the table alone parses");
            match parse(*file, &format!("{headers}{} = {default}\n", row.key)) {
                Ok(given) if given == baseline => {}
                Ok(_) => problems.push(format!("{place}: the default is not {default}")),
                Err(error) => problems.push(format!("{place} = {default}: {error}")),
            }
        }
    }
    assert!(problems.is_empty(), "docs/config.md has wrong defaults:\n{}", problems.join("\n"));
}

#[test]
fn the_packaged_configurations_pass_the_checks_of_their_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/deb");
    iotgw::config::load(&root.join("iotgw.toml")).expect("packaging/deb/iotgw.toml parses");
    iotgw::hub::Config::load(&root.join("hub.toml")).expect("packaging/deb/hub.toml parses");
}
