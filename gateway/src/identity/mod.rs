//! Device identity: only devices holding a valid certificate of the gateway's CA get past
//! the onboarding lane.
//!
//! - `ca`: the issuing CA (generated in `state_dir`, or an external intermediate);
//! - `check`: x509-parser checks of CSRs and certificates (what rustls does not check);
//! - `names`: device ids, serials, and the SAN form binding device id and MAC;
//! - `lifecycle`: provisioned → active → suspended → decommissioned;
//! - `registry`: the `identity_*` tables of the store (certificates, tokens, revocations,
//!   holds, audit);
//! - `core`: the sync core (`Identity`) over registry and CA;
//! - `pkcs7`: EST wire forms; `est`: the EST server (RFC 7030) over rustls;
//! - `resolve`: which MAC a TLS peer has; `enforce`: desired access → datapath changes;
//! - `service`: the async tasks, started by `spawn`.
//!
//! Reads the store file and the state folder; writes the `identity_*` tables, the CA files,
//! and the device table through `datapath::DeviceControl`; publishes `GatewayEvent`s.
use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;
use time::Duration;

pub mod admission;
pub mod ca;
pub mod check;
pub mod core;
pub mod enforce;
pub mod est;
pub mod lifecycle;
pub mod names;
pub mod pkcs7;
pub mod registry;
pub mod resolve;
pub mod service;

pub use self::core::{Identity, IdentityError};
pub use registry::MIGRATIONS;
pub use service::{Running, ServiceError, spawn};

/// Default folder of the generated CA.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/iotgw/identity";
/// Default EST port (RFC 7030 suggests 443; 8443 leaves 443 to other services). Without
/// `listen`, the server binds the LAN interface's address on it, never the WAN side.
pub const DEFAULT_PORT: u16 = 8443;
/// Default time a client gets to finish the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Default time a client gets, after the handshake, to send its request headers.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 5_000;
/// Default longest life of one connection (one request: keep-alive is off). Also bounds how
/// long a device quarantined mid-connection keeps its socket.
pub const DEFAULT_CONNECTION_TIMEOUT_MS: u64 = 30_000;
/// Default connections one source address may hold at once.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: u32 = 4;
/// Default new connections per second one source may open (an enrollment takes one or two).
pub const DEFAULT_CONNECTIONS_PER_SECOND_PER_SOURCE: u32 = 2;
/// Default burst of new connections one source may open at once.
pub const DEFAULT_CONNECTION_BURST_PER_SOURCE: u32 = 10;
/// Default lifetime of a device certificate: 30 days.
pub const DEFAULT_CERT_VALIDITY_SECS: u64 = 30 * 24 * 3_600;
/// Default lifetime of an enrollment token: 24 hours.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3_600;
/// Default CRL nextUpdate distance: 1 hour.
pub const DEFAULT_CRL_NEXT_UPDATE_SECS: u64 = 3_600;
/// Default period of the access check (expiry, CLI changes). Must stay well under 1 s, the
/// promised delay between a revocation or expiry and its enforcement in XDP.
pub const DEFAULT_RECONCILE_INTERVAL_MS: u64 = 200;
/// Longest accepted reconcile period.
pub const MAX_RECONCILE_INTERVAL_MS: u64 = 1_000;
/// Default names in the EST server certificate.
pub const DEFAULT_SERVER_NAMES: [&str; 3] = ["iotgw.local", "localhost", "127.0.0.1"];
/// Lifetime of the EST server certificate (re-issued at each start).
pub const SERVER_CERT_VALIDITY: Duration = Duration::days(365);

/// This component's section of the gateway config file (`[identity]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run the EST server and enforce certificate-gated access.
    pub enabled: bool,
    /// Folder of the generated CA (`ca.cert.pem`, `ca.key.pem` mode 0600).
    pub state_dir: PathBuf,
    /// EST listener address. Unset: the LAN interface's first address on `DEFAULT_PORT`
    /// (devices enroll from the LAN; binding 0.0.0.0 would offer enrollment to the WAN).
    pub listen: Option<SocketAddr>,
    /// Time a client gets to finish the TLS handshake, milliseconds.
    pub handshake_timeout_ms: u64,
    /// Time a client gets to send its request headers after the handshake, milliseconds.
    pub header_timeout_ms: u64,
    /// Longest life of one connection, milliseconds (one request per connection).
    pub connection_timeout_ms: u64,
    /// Connections one source address may hold at once.
    pub max_connections_per_source: u32,
    /// New connections per second one source address may open on average.
    pub connections_per_second_per_source: u32,
    /// New connections one source address may open in a burst.
    pub connection_burst_per_source: u32,
    /// DNS names and IP addresses in the EST server certificate.
    pub server_names: Vec<String>,
    /// Lifetime of issued device certificates, seconds.
    pub cert_validity_secs: u64,
    /// Default lifetime of enrollment tokens, seconds.
    pub token_ttl_secs: u64,
    /// CRL nextUpdate distance, seconds.
    pub crl_next_update_secs: u64,
    /// Period of the access check, milliseconds (at most 1000).
    pub reconcile_interval_ms: u64,
    /// Policy id given to an enrolled device with no class policy yet.
    pub enrolled_policy_id: u32,
    /// External intermediate CA instead of a generated one: certificate (PEM).
    pub ca_cert: Option<PathBuf>,
    /// Its PKCS#8 private key (PEM).
    pub ca_key: Option<PathBuf>,
    /// The chain above it (PEM), served by /cacerts.
    pub ca_chain: Option<PathBuf>,
    /// Manufacturer CA certificates (PEM) whose factory certificates (IDevID) may enroll
    /// without a token.
    pub manufacturer_cas: Vec<PathBuf>,
    /// Read the kernel neighbour table to bind requests to the MAC on the wire (and detect
    /// cloning). Without it the certificate's MAC is trusted.
    pub resolve_macs: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            state_dir: DEFAULT_STATE_DIR.into(),
            listen: None,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            connection_timeout_ms: DEFAULT_CONNECTION_TIMEOUT_MS,
            max_connections_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            connections_per_second_per_source: DEFAULT_CONNECTIONS_PER_SECOND_PER_SOURCE,
            connection_burst_per_source: DEFAULT_CONNECTION_BURST_PER_SOURCE,
            server_names: DEFAULT_SERVER_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            cert_validity_secs: DEFAULT_CERT_VALIDITY_SECS,
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            crl_next_update_secs: DEFAULT_CRL_NEXT_UPDATE_SECS,
            reconcile_interval_ms: DEFAULT_RECONCILE_INTERVAL_MS,
            enrolled_policy_id: gateway_ebpf::lane::FIRST_CLASS_POLICY,
            ca_cert: None,
            ca_key: None,
            ca_chain: None,
            manufacturer_cas: Vec::new(),
            resolve_macs: true,
        }
    }
}

impl Config {
    /// Every semantic problem of this section (for `config::Config::problems`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.ca_cert.is_some() != self.ca_key.is_some() {
            problems.push("identity.ca_cert and identity.ca_key go together".to_owned());
        }
        if self.ca_chain.is_some() && self.ca_cert.is_none() {
            problems.push("identity.ca_chain needs identity.ca_cert".to_owned());
        }
        for (name, value) in [
            ("cert_validity_secs", self.cert_validity_secs),
            ("token_ttl_secs", self.token_ttl_secs),
            ("crl_next_update_secs", self.crl_next_update_secs),
        ] {
            if value == 0 || i64::try_from(value).is_err() {
                problems.push(format!("identity.{name} must be between 1 and {}", i64::MAX));
            }
        }
        if self.reconcile_interval_ms == 0 || self.reconcile_interval_ms > MAX_RECONCILE_INTERVAL_MS {
            problems.push(format!("identity.reconcile_interval_ms must be between 1 and {MAX_RECONCILE_INTERVAL_MS}"));
        }
        if self.enrolled_policy_id < gateway_ebpf::lane::FIRST_CLASS_POLICY {
            problems.push(format!(
                "identity.enrolled_policy_id must be a class policy (>= {})",
                gateway_ebpf::lane::FIRST_CLASS_POLICY
            ));
        }
        if self.server_names.is_empty() {
            problems.push("identity.server_names must name at least one host".to_owned());
        }
        for (name, value) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("header_timeout_ms", self.header_timeout_ms),
            ("connection_timeout_ms", self.connection_timeout_ms),
            ("max_connections_per_source", u64::from(self.max_connections_per_source)),
            ("connections_per_second_per_source", u64::from(self.connections_per_second_per_source)),
            ("connection_burst_per_source", u64::from(self.connection_burst_per_source)),
        ] {
            if value == 0 {
                problems.push(format!("identity.{name} must be at least 1"));
            }
        }
        problems
    }

    /// The per-source limits of the EST listener.
    pub fn admission_limits(&self) -> admission::Limits {
        admission::Limits {
            concurrent: self.max_connections_per_source,
            per_second: self.connections_per_second_per_source,
            burst: self.connection_burst_per_source,
        }
    }

    /// Where the CA comes from.
    pub fn ca_source(&self) -> ca::CaSource {
        match (&self.ca_cert, &self.ca_key) {
            (Some(cert), Some(key)) => {
                ca::CaSource::External { cert: cert.clone(), key: key.clone(), chain: self.ca_chain.clone() }
            }
            _ => ca::CaSource::Generated { state_dir: self.state_dir.clone() },
        }
    }

    /// Issuing policy.
    pub fn policy(&self) -> self::core::Policy {
        self::core::Policy {
            cert_validity: secs(self.cert_validity_secs),
            crl_next_update: secs(self.crl_next_update_secs),
        }
    }

    pub fn token_ttl(&self) -> Duration {
        secs(self.token_ttl_secs)
    }
}

/// Seconds as a `time::Duration`, saturating (`problems` reports out-of-range values).
pub fn secs(value: u64) -> Duration {
    Duration::seconds(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Reads the manufacturer CA files (PEM, several certificates per file allowed).
pub fn load_manufacturers(paths: &[PathBuf]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ca::CaError> {
    let mut out = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| ca::CaError::Io { path: path.clone(), source })?;
        let certs = rustls_pemfile::certs(&mut bytes.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca::CaError::BadFile { path: path.clone(), reason: format!("bad PEM: {e}") })?;
        if certs.is_empty() {
            return Err(ca::CaError::BadFile { path: path.clone(), reason: "no CERTIFICATE block".into() });
        }
        for cert in &certs {
            check::parse_cert(cert).map_err(|e| ca::CaError::BadFile { path: path.clone(), reason: e.to_string() })?;
        }
        out.extend(certs);
    }
    Ok(out)
}

/// Opens the sync core on the store file: schema, CA (generated if absent), manufacturers.
pub fn open(config: &Config, store_path: &std::path::Path) -> Result<Identity, ServiceError> {
    let conn = crate::store::open(store_path, &[MIGRATIONS])?;
    let ca = ca::IssuingCa::open(&config.ca_source())?;
    let manufacturers = load_manufacturers(&config.manufacturer_cas)?;
    Ok(Identity::new(conn, ca, manufacturers, config.policy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_no_problems() {
        assert!(Config::default().problems().is_empty());
        assert_eq!(Config::default().listen, None);
        assert_eq!(DEFAULT_PORT, 8443);
    }

    #[test]
    fn section_parses_and_reports_problems() {
        let config: Config = toml::from_str("ca_cert = \"/x.pem\"\nreconcile_interval_ms = 5000\n").unwrap();
        assert_eq!(config.problems().len(), 2, "{:?}", config.problems());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}
