//! The gateway's configuration file (TOML): one section per component, each section the
//! component's own `Config` type with its typed defaults. `load` reports every bad value with
//! its place in the file, and the binary exits with `cli::EXIT_CONFIG` before anything is
//! attached. This file only composes the sections: components never import it.
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub datapath: crate::datapath::DatapathConfig,
    #[serde(default)]
    pub store: crate::store::Config,
    #[serde(default)]
    pub policy: crate::policy::Config,
    #[serde(default)]
    pub inventory: crate::inventory::Config,
    #[serde(default)]
    pub baseline: crate::baseline::Config,
    #[serde(default)]
    pub detect: crate::detect::Config,
    #[serde(default)]
    pub api: crate::api::Config,
    #[serde(default)]
    pub identity: crate::identity::Config,
    #[serde(default)]
    pub integrations: crate::integrations::Config,
    #[serde(default)]
    pub ota: crate::ota::Config,
    #[serde(default)]
    pub fleet: crate::fleet::Config,
    #[serde(default)]
    pub mud: crate::mud::Config,
    #[serde(default)]
    pub source_guard: crate::source_guard::Config,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Syntax or type error; the message carries line and column.
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    /// Values that parse but cannot work together, all of them.
    #[error("{path}: {}", .problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

/// Reads and checks the configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(path, &text)
}

/// Parses configuration text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|error| {
        let (line, column) = crate::toml_error::position(text, &error).unwrap_or((0, 0));
        ConfigError::Parse { path: path.to_owned(), line, column, message: error.message().to_owned() }
    })?;
    let problems = config.problems();
    if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { path: path.to_owned(), problems }) }
}

impl Config {
    /// Every semantic problem, so the operator fixes them in one go.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(self.datapath.problems());
        problems.extend(self.api.problems());
        problems.extend(self.baseline.problems());
        problems.extend(self.detect.problems());
        problems.extend(self.integrations.problems());
        problems.extend(self.identity.problems());
        problems.extend(self.fleet.problems());
        problems.extend(self.policy.problems());
        problems.extend(self.mud.problems());
        problems.extend(self.ota.problems());
        problems.extend(self.source_guard.problems());
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(config.datapath.attach_mode, crate::datapath::AttachMode::Auto);
    }

    #[test]
    fn threat_intel_sources_parse_and_a_csv_without_column_is_refused() {
        let text = "[[detect.threat_intel]]\npath = \"/etc/iotgw/intel/c2.txt\"\nformat = \"ip\"\n\n[[detect.threat_intel]]\npath = \"/etc/iotgw/intel/feodo.csv\"\nformat = \"csv\"\ncolumn = \"2\"\n";
        let config = parse(Path::new("x.toml"), text).unwrap();
        assert_eq!(config.detect.threat_intel.len(), 2);
        assert_eq!(config.detect.threat_intel[1].column.as_deref(), Some("2"));
        let err =
            parse(Path::new("x.toml"), "[[detect.threat_intel]]\npath = \"feed.csv\"\nformat = \"csv\"\n").unwrap_err();
        assert!(err.to_string().contains("a csv source needs a column"), "{err}");
        let err = parse(Path::new("x.toml"), "[detect]\nflood_factor = -1\n").unwrap_err();
        assert!(err.to_string().contains("detect.flood_factor"), "{err}");
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let err = parse(Path::new("x.toml"), "[datapath]\nlan_interface = \"a\"\nbogus = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("x.toml:3:1:"), "{text}");
        assert!(text.contains("bogus"), "{text}");
    }

    #[test]
    fn store_synchronous_defaults_to_full_and_takes_normal() {
        let config = parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(config.store.synchronous, crate::store::Synchronous::Full);
        let config = parse(Path::new("x.toml"), "[store]\nsynchronous = \"normal\"\n").unwrap();
        assert_eq!(config.store.synchronous, crate::store::Synchronous::Normal);
    }

    #[test]
    fn bad_store_synchronous_is_refused_with_its_place_and_the_choices() {
        let err = parse(Path::new("x.toml"), "[store]\nsynchronous = \"off\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("x.toml:2:15:"), "{text}");
        assert!(text.contains("off") && text.contains("full") && text.contains("normal"), "{text}");
        let err = parse(Path::new("x.toml"), "[store]\nsynchronous = 2\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err}");
    }

    #[test]
    fn policy_dns_keys_are_read_and_checked() {
        let config =
            parse(Path::new("x.toml"), "[policy.dns]\nquery_timeout_ms = 2000\nttl_ceiling_secs = 600\n").unwrap();
        assert_eq!(config.policy.dns.query_timeout(), std::time::Duration::from_secs(2));
        assert_eq!(config.policy.dns.ttl_ceiling_secs, 600);
        assert_eq!(config.policy.dns.ttl_floor_secs, 30, "unset keys keep their defaults");
        let err = parse(Path::new("x.toml"), "[policy.dns]\nttl_floor_secs = 60\nttl_ceiling_secs = 10\n").unwrap_err();
        assert!(err.to_string().contains("policy.dns.ttl_floor_secs"), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let err = parse(
            Path::new("x.toml"),
            "[datapath]\nlan_interface = \"\"\nquarantine_interface = \"q0\"\nflows_capacity = 0\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else { panic!("{err}") };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
