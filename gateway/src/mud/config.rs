//! `[mud]` of the gateway configuration: which MUD servers the gateway fetches from, which
//! anchors may sign MUD files, and the bounds on what it fetches and how long it keeps it.
use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// Default total time for one fetch (connect, TLS, headers and body).
pub const DEFAULT_FETCH_TIMEOUT_MS: u64 = 10_000;
/// Default time to open the TCP connection and finish the TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default largest MUD file taken. Real files (MUDgee, NIST, mudmaker) are a few KiB.
pub const DEFAULT_MAX_FILE_BYTES: usize = 256 * 1024;
/// Default largest signature file taken: a CMS SignedData with a short certificate chain.
pub const DEFAULT_MAX_SIGNATURE_BYTES: usize = 64 * 1024;
/// Shortest URL taken (`https://a.b/c` is 13 bytes).
pub const MIN_URL_BYTES: usize = 13;
/// Default longest URL taken: DHCPv4 option 161 and the LLDP TLV hold at most 255 bytes.
pub const DEFAULT_MAX_URL_BYTES: usize = 255;
/// RFC 8520 §3.5: `cache-validity` is 1 to 168 hours, 48 when the file says nothing.
pub const DEFAULT_FILE_CACHE_VALIDITY_HOURS: u32 = 48;
/// Default bounds on how long a file is kept before it is fetched again, whatever it says.
pub const DEFAULT_MIN_CACHE_VALIDITY_HOURS: u32 = 1;
pub const DEFAULT_MAX_CACHE_VALIDITY_HOURS: u32 = 168;
/// Default redirects followed (each must itself pass the URL checks).
pub const DEFAULT_MAX_REDIRECTS: usize = 2;
/// Announcements waiting for the MUD step; beyond this they are skipped (devices repeat them
/// at every DHCP renewal).
pub const ANNOUNCEMENT_QUEUE: usize = 256;

/// This component's section of the gateway config file (`[mud]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// URL authorities (`host` or `host:port`, lower case) the gateway fetches MUD files and
    /// signatures from. Empty: MUD is off (announcements are recorded as refused).
    pub authorities: Vec<String>,
    /// PEM file of the CA certificates a MUD file's signer must chain to.
    pub trust_anchors: Option<PathBuf>,
    /// PEM file of the roots the MUD servers' TLS certificates must chain to; absent: the
    /// Mozilla roots built in (webpki-roots).
    pub tls_roots: Option<PathBuf>,
    pub fetch_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub max_file_bytes: usize,
    pub max_signature_bytes: usize,
    pub max_url_bytes: usize,
    pub max_redirects: usize,
    /// A file's `cache-validity` is raised to this...
    pub min_cache_validity_hours: u32,
    /// ...and lowered to this.
    pub max_cache_validity_hours: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            authorities: Vec::new(),
            trust_anchors: None,
            tls_roots: None,
            fetch_timeout_ms: DEFAULT_FETCH_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_signature_bytes: DEFAULT_MAX_SIGNATURE_BYTES,
            max_url_bytes: DEFAULT_MAX_URL_BYTES,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            min_cache_validity_hours: DEFAULT_MIN_CACHE_VALIDITY_HOURS,
            max_cache_validity_hours: DEFAULT_MAX_CACHE_VALIDITY_HOURS,
        }
    }
}

impl Config {
    /// Whether the gateway fetches MUD files at all.
    pub fn enabled(&self) -> bool {
        !self.authorities.is_empty()
    }

    pub fn fetch_timeout(&self) -> Duration {
        Duration::from_millis(self.fetch_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Every value that cannot work.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.enabled() && self.trust_anchors.is_none() {
            problems.push("mud.authorities needs mud.trust_anchors (MUD files are only taken signed)".to_owned());
        }
        for authority in &self.authorities {
            let valid = !authority.is_empty()
                && authority.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:[]".contains(&b));
            if !valid {
                problems.push(format!("mud.authorities: {authority:?} is not a lower-case host or host:port"));
            }
        }
        for (name, value) in
            [("fetch_timeout_ms", self.fetch_timeout_ms), ("connect_timeout_ms", self.connect_timeout_ms)]
        {
            if value == 0 {
                problems.push(format!("mud.{name} must be at least 1"));
            }
        }
        for (name, value) in
            [("max_file_bytes", self.max_file_bytes), ("max_signature_bytes", self.max_signature_bytes)]
        {
            if value == 0 {
                problems.push(format!("mud.{name} must be at least 1"));
            }
        }
        if self.max_url_bytes < MIN_URL_BYTES {
            problems.push(format!("mud.max_url_bytes must be at least {MIN_URL_BYTES}"));
        }
        if self.min_cache_validity_hours == 0 || self.min_cache_validity_hours > self.max_cache_validity_hours {
            problems.push(
                "mud.min_cache_validity_hours must be at least 1 and at most mud.max_cache_validity_hours".to_owned(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid() {
        let config = Config::default();
        assert!(!config.enabled());
        assert!(config.problems().is_empty());
    }

    #[test]
    fn authorities_need_anchors_and_lower_case_hosts() {
        let config =
            Config { authorities: vec!["MUD.example.com".into(), "mud.example.com:8443".into()], ..Config::default() };
        let problems = config.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("trust_anchors"));
        assert!(problems[1].contains("MUD.example.com"));
    }
}
