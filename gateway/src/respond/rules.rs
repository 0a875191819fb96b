//! The `[[response]]` rules of the policy files: on which detections, from which score, do
//! what, how often at most, and for whom never. Reads policy-file text (only its `response`
//! array; the policy engine owns the rest of the file), writes a checked `ResponsePolicy` or
//! every problem with its `file:line:column`.
//!
//! ```toml
//! [[response]]
//! name = "quarantine scanners"          # optional; shown in actions and audit records
//! detectors = ["scan", "flood"]         # detector names, or ["*"]
//! min_score = 0.7                       # 0.0 ..= 1.0 (default 0.0)
//! action = "quarantine"                 # alert | update_lane | quarantine | block
//! max_per_device = 1                    # actions per device per device_period_secs
//! device_period_secs = 3600
//! max_global = 10                       # actions over all devices per global_period_secs
//! global_period_secs = 600
//! exempt_macs = ["02:00:61:00:00:01"]
//! exempt_classes = ["medical"]         # fingerprint generic types (ip-camera, ...)
//! ```
//!
//! Of the rules that match an alert, are not exempt and are within their limits, the
//! strongest action is taken; a device already held at that strength is left alone.
use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::{
    detect::DetectorKind,
    device::Mac,
    policy::{ErrorKind, Location, Policy, PolicyError},
    toml_error,
};

/// Actions per device within `device_period_secs` when a rule does not say.
pub const DEFAULT_MAX_PER_DEVICE: u32 = 1;
pub const DEFAULT_DEVICE_PERIOD: Duration = Duration::from_secs(3_600);
/// Actions over all devices within `global_period_secs` when a rule does not say: a
/// detector gone wrong must not quarantine the whole fleet.
pub const DEFAULT_MAX_GLOBAL: u32 = 10;
pub const DEFAULT_GLOBAL_PERIOD: Duration = Duration::from_secs(600);

/// What a rule does, from mildest to strongest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    /// Notify only (an `Action` event with `action = "alert"`).
    Alert,
    /// Keep the device enrolled but switch it to the quarantine lane's allow-list (updates
    /// and DNS), dropping the rest.
    UpdateLane,
    /// `Access::Quarantined`: the quarantine allow-list, the rest redirected to the
    /// quarantine segment.
    Quarantine,
    /// `Access::Blocked`: everything dropped.
    Block,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Alert => "alert",
            ActionKind::UpdateLane => "update_lane",
            ActionKind::Quarantine => "quarantine",
            ActionKind::Block => "block",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [ActionKind::Alert, ActionKind::UpdateLane, ActionKind::Quarantine, ActionKind::Block]
            .into_iter()
            .find(|a| a.as_str() == text)
    }

    /// True when the action changes what the datapath enforces.
    pub fn enforces(self) -> bool {
        self != ActionKind::Alert
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One checked rule.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseRule {
    pub name: String,
    /// Empty means every detector (`detectors = ["*"]`).
    pub detectors: Vec<DetectorKind>,
    pub min_score: f64,
    pub action: ActionKind,
    pub max_per_device: u32,
    pub device_period: Duration,
    pub max_global: u32,
    pub global_period: Duration,
    pub exempt_macs: HashSet<Mac>,
    pub exempt_classes: HashSet<String>,
    /// `file:line` of the rule, for audit records.
    pub origin: String,
}

impl ResponseRule {
    /// True when the rule applies to this detection (exemptions aside).
    pub fn matches(&self, detector: DetectorKind, score: f64) -> bool {
        (self.detectors.is_empty() || self.detectors.contains(&detector)) && score >= self.min_score
    }

    pub fn exempts(&self, mac: Mac, class: Option<&str>) -> bool {
        self.exempt_macs.contains(&mac) || class.is_some_and(|c| self.exempt_classes.contains(c))
    }
}

/// Every rule of the policy files, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponsePolicy {
    pub rules: Vec<ResponseRule>,
}

/// Why response rules were refused (nothing of them is applied then).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not TOML, or a rule has a wrong type or an unknown key.
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    /// Well-formed rules with bad values; one `file:line:column: problem` per entry.
    #[error("{} problem(s) in response rules:\n{}", problems.len(), problems.join("\n"))]
    Invalid { problems: Vec<String> },
}

#[derive(Deserialize)]
struct PolicyFile {
    #[serde(default)]
    response: Vec<Spanned<toml::Value>>,
}

fn default_max_per_device() -> u32 {
    DEFAULT_MAX_PER_DEVICE
}
fn default_device_period() -> u64 {
    DEFAULT_DEVICE_PERIOD.as_secs()
}
fn default_max_global() -> u32 {
    DEFAULT_MAX_GLOBAL
}
fn default_global_period() -> u64 {
    DEFAULT_GLOBAL_PERIOD.as_secs()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    detectors: Vec<String>,
    #[serde(default)]
    min_score: f64,
    action: String,
    #[serde(default = "default_max_per_device")]
    max_per_device: u32,
    #[serde(default = "default_device_period")]
    device_period_secs: u64,
    #[serde(default = "default_max_global")]
    max_global: u32,
    #[serde(default = "default_global_period")]
    global_period_secs: u64,
    #[serde(default)]
    exempt_macs: Vec<String>,
    #[serde(default)]
    exempt_classes: Vec<String>,
}

/// Reads the response rules of one policy file.
pub fn load(path: &Path) -> Result<ResponsePolicy, RuleError> {
    let text = std::fs::read_to_string(path).map_err(|source| RuleError::Read { path: path.to_owned(), source })?;
    parse(path, &text)
}

/// Parses the response rules of one policy file's text; every problem is reported at once.
pub fn parse(path: &Path, text: &str) -> Result<ResponsePolicy, RuleError> {
    let file: PolicyFile = toml::from_str(text).map_err(|error| {
        let (line, column) = toml_error::position(text, &error).unwrap_or((1, 1));
        RuleError::Parse { path: path.to_owned(), line, column, message: toml_error::message(&error) }
    })?;
    let path = Arc::new(path.to_owned());
    let tables = file
        .response
        .into_iter()
        .map(|spanned| (Location::at(&path, text, spanned.span().start).to_string(), spanned.into_inner()));
    check_all(tables)
}

/// Checks the raw `[[response]]` tables the policy loader kept (`Policy::responses`), each
/// reported at its table's `file:line:column`.
pub fn from_policy(policy: &Policy) -> Result<ResponsePolicy, RuleError> {
    check_all(policy.responses.iter().map(|spec| (spec.at.to_string(), spec.value.clone())))
}

/// Every problem of the `[[response]]` tables the policy loader kept, as policy errors at
/// each table's `file:line:column`: what `iotgw policy check`, `iotgw run` before attaching
/// and every reload report, so bad rules are refused with the rest of the policy.
pub fn policy_errors(policy: &Policy) -> Vec<PolicyError> {
    policy
        .responses
        .iter()
        .enumerate()
        .flat_map(|(index, spec)| {
            let problems = check(index, spec.at.to_string(), spec.value.clone()).err().unwrap_or_default();
            problems.into_iter().map(|problem| PolicyError::new(spec.at.clone(), ErrorKind::Response(problem)))
        })
        .collect()
}

fn check_all(tables: impl Iterator<Item = (String, toml::Value)>) -> Result<ResponsePolicy, RuleError> {
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    for (index, (origin, value)) in tables.enumerate() {
        match check(index, origin.clone(), value) {
            Ok(rule) => rules.push(rule),
            Err(found) => problems.extend(found.into_iter().map(|problem| format!("{origin}: {problem}"))),
        }
    }
    if problems.is_empty() { Ok(ResponsePolicy { rules }) } else { Err(RuleError::Invalid { problems }) }
}

/// One `[[response]]` table (at `origin`) to a rule, or every problem in it (each without
/// the origin, which the callers add).
fn check(index: usize, origin: String, value: toml::Value) -> Result<ResponseRule, Vec<String>> {
    let raw: RawRule =
        value.try_into().map_err(|e: toml::de::Error| vec![format!("[[response]]: {}", e.message().trim())])?;
    let name = raw.name.unwrap_or_else(|| format!("response #{}", index + 1));
    let at = format!("[[response]] {name:?}");
    let mut problems = Vec::new();
    let mut detectors = Vec::new();
    for detector in &raw.detectors {
        match (detector.as_str(), DetectorKind::parse(detector)) {
            ("*", _) => {}
            (_, Some(kind)) => detectors.push(kind),
            (other, None) => problems.push(format!(
                "{at}: unknown detector {other:?} (known: {}, or \"*\")",
                DetectorKind::ALL.map(DetectorKind::as_str).join(", ")
            )),
        }
    }
    if raw.detectors.iter().any(|d| d == "*") {
        detectors.clear();
    } else if raw.detectors.is_empty() {
        problems.push(format!("{at}: detectors is empty (use [\"*\"] for every detector)"));
    }
    if !(0.0..=1.0).contains(&raw.min_score) {
        problems.push(format!("{at}: min_score = {} is outside 0.0 ..= 1.0", raw.min_score));
    }
    let action = ActionKind::parse(&raw.action);
    if action.is_none() {
        problems.push(format!("{at}: unknown action {:?} (alert, update_lane, quarantine or block)", raw.action));
    }
    if raw.device_period_secs == 0 || raw.global_period_secs == 0 {
        problems.push(format!("{at}: device_period_secs and global_period_secs must be at least 1"));
    }
    let mut exempt_macs = HashSet::new();
    for mac in &raw.exempt_macs {
        match mac.parse::<Mac>() {
            Ok(parsed) => {
                exempt_macs.insert(parsed);
            }
            Err(error) => problems.push(format!("{at}: exempt_macs: {error}")),
        }
    }
    match action {
        Some(action) if problems.is_empty() => Ok(ResponseRule {
            name,
            detectors,
            min_score: raw.min_score,
            action,
            max_per_device: raw.max_per_device,
            device_period: Duration::from_secs(raw.device_period_secs),
            max_global: raw.max_global,
            global_period: Duration::from_secs(raw.global_period_secs),
            exempt_macs,
            exempt_classes: raw.exempt_classes.into_iter().collect(),
            origin,
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[class]]
name = "meter"

[[response]]
name = "quarantine scanners"
detectors = ["scan", "flood"]
min_score = 0.7
action = "quarantine"
exempt_macs = ["02:00:00:00:00:99"]

[[response]]
detectors = ["*"]
action = "alert"
max_global = 100
"#;

    #[test]
    fn rules_parse_with_defaults_and_ignore_other_tables() {
        let policy = parse(Path::new("p.toml"), POLICY).unwrap();
        assert_eq!(policy.rules.len(), 2);
        let first = &policy.rules[0];
        assert_eq!(first.name, "quarantine scanners");
        assert_eq!(first.detectors, vec![DetectorKind::Scan, DetectorKind::Flood]);
        assert_eq!(first.action, ActionKind::Quarantine);
        assert_eq!(first.max_per_device, DEFAULT_MAX_PER_DEVICE);
        assert!(first.exempt_macs.contains(&"02:00:00:00:00:99".parse().unwrap()));
        assert_eq!(first.origin, "p.toml:5:1");
        assert!(policy.rules[1].detectors.is_empty());
        assert!(policy.rules[1].matches(DetectorKind::ArpSpoof, 0.0));
        assert!(!first.matches(DetectorKind::Scan, 0.5));
    }

    #[test]
    fn bad_rules_report_every_problem_with_file_line_column() {
        let text = "[[class]]\nname = \"x\"\n\n[[response]]\nname = \"bad\"\ndetectors = [\"scna\"]\nmin_score = 1.5\naction = \"nuke\"\nexempt_macs = [\"nope\"]\n";
        let RuleError::Invalid { problems } = parse(Path::new("p.toml"), text).unwrap_err() else { panic!() };
        assert_eq!(problems.len(), 4, "{problems:#?}");
        for problem in &problems {
            assert!(problem.starts_with("p.toml:4:1: [[response]] \"bad\": "), "{problem}");
        }
        assert!(problems[0].contains("unknown detector \"scna\""), "{}", problems[0]);
        assert!(problems[1].contains("min_score = 1.5"), "{}", problems[1]);
        assert!(problems[2].contains("unknown action \"nuke\""), "{}", problems[2]);
        assert!(problems[3].contains("\"nope\" is not a MAC"), "{}", problems[3]);
    }

    #[test]
    fn shipped_policy_files_load_through_the_policy_loader() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let files = crate::policy::load::toml_files(&dir).unwrap();
        let policy = crate::policy::load::load_paths(&files).unwrap();
        let rules = from_policy(&policy).unwrap();
        // Every rule of the shipped files is checked; none may be silently dropped.
        assert_eq!(rules.rules.len(), policy.responses.len());
    }

    #[test]
    fn unknown_rule_key_is_a_parse_error_with_its_line() {
        let text = "[[response]]\ndetectors = [\"scan\"]\naction = \"block\"\nmax_per_devise = 3\n";
        let error = parse(Path::new("p.toml"), text).unwrap_err();
        let RuleError::Invalid { problems } = &error else { panic!("{error}") };
        assert!(problems[0].starts_with("p.toml:1:1: [[response]]: unknown field `max_per_devise`"), "{error}");
    }

    #[test]
    fn random_policy_text_never_panics() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pieces = [
            "[[response]]\n",
            "detectors = [\"scan\"]\n",
            "action = \"block\"\n",
            "min_score = ",
            "0.5\n",
            "\"",
            "[",
            "]",
            "=",
            "\n",
            "exempt_macs = [\"",
            "zz",
            "x = 1\n",
        ];
        for _ in 0..5_000 {
            let text: String = (0..rng.gen_range(0..12)).map(|_| pieces[rng.gen_range(0..pieces.len())]).collect();
            // Either rules or an error naming the file; never a panic.
            if let Err(error) = parse(Path::new("fuzz.toml"), &text) {
                assert!(error.to_string().contains("fuzz.toml") || error.to_string().contains("problem"), "{error}");
            }
        }
    }
}
