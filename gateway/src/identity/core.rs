//! The identity core: enrollment, renewal, authentication, revocation and lifecycle, as
//! synchronous calls over the store and the CA. The async `est` server and `service` task
//! call into it; the `iotgw pki` CLI uses it directly on the store file.
//!
//! Reads and writes the `registry` tables (one transaction per call: all or nothing), signs
//! with `ca`. Publishes nothing itself: callers turn outcomes into `GatewayEvent`s.
use base64::Engine as _;
use rcgen::RevocationReason;
use rusqlite::{Connection, TransactionBehavior};
use rustls::pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use super::{
    ca::{CaError, Issued, IssuingCa},
    check::{self, CheckError, CheckedCert},
    lifecycle::{Lifecycle, TransitionError},
    names::{DeviceId, Serial, Urn},
    registry::{self, CertRecord, CertStatus, DeviceRecord, unix},
};
use crate::device::{Access, Mac};

/// Bytes of randomness in an enrollment token.
pub const TOKEN_BYTES: usize = 32;

/// Why an identity operation was refused. Nothing was stored, except for
/// `CloneSuspected`, which records the holds it announces.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A CSR or certificate failed a check.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// simpleenroll without a token or a factory certificate.
    #[error("no enrollment token (HTTP Basic or Bearer) and no factory certificate presented")]
    NoCredentials,
    /// simplereenroll or hello without a client certificate.
    #[error("no client certificate presented (mTLS with the current certificate is required)")]
    NoClientCertificate,
    #[error("unknown enrollment token")]
    TokenUnknown,
    /// The token was consumed by an earlier enrollment.
    #[error("enrollment token already used")]
    TokenUsed,
    #[error("enrollment token expired at {expires_at}")]
    TokenExpired { expires_at: i64 },
    /// The request came from another MAC than the one the credential is bound to.
    #[error("request comes from MAC {observed}, but the credential is bound to MAC {bound}")]
    MacMismatch { bound: Mac, observed: Mac },
    /// The CSR asks for a device id or MAC other than the bound ones.
    #[error("SAN mismatch: the CSR asks for {requested}, the credential is bound to {bound}")]
    SanMismatch { requested: String, bound: String },
    /// Signed by our CA but not in the registry (a foreign copy of the CA key?).
    #[error("certificate {0} is not in this gateway's registry")]
    CertUnknown(Serial),
    #[error("certificate {0} is revoked")]
    CertRevoked(Serial),
    #[error("certificate {0} was superseded by a renewal; use the newest certificate")]
    CertSuperseded(Serial),
    #[error("MAC {0} is held after suspected cloning until an operator releases it (iotgw pki release)")]
    Held(Mac),
    /// The alert case: a MAC presented another device's identity. Both MACs are now held.
    #[error("suspected cloning: MAC {seen} presented the identity of device {device} (bound to MAC {bound}); both are blocked until an operator releases them")]
    CloneSuspected { seen: Mac, device: DeviceId, bound: Mac },
    #[error("device {device}: {source}")]
    Lifecycle { device: DeviceId, source: TransitionError },
    #[error("no certificate with serial {0}")]
    UnknownSerial(Serial),
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(Serial),
    #[error("no device {0}")]
    UnknownDevice(DeviceId),
    #[error("no open hold on MAC {0}")]
    NoHold(Mac),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
}

/// How certificates are issued.
#[derive(Clone, Debug)]
pub struct Policy {
    pub cert_validity: Duration,
    pub crl_next_update: Duration,
}

/// What vouches for an enrolling device.
#[derive(Clone, Copy, Debug)]
pub enum Bootstrap<'a> {
    /// A one-time enrollment token (the secret as the device sent it).
    Token(&'a str),
    /// A factory certificate (IDevID) presented over mTLS, with the intermediates sent with it.
    Factory { leaf: &'a [u8], intermediates: &'a [CertificateDer<'static>] },
}

/// A certificate issued by `enroll` or `reenroll`.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub device: DeviceId,
    pub mac: Mac,
    pub issued: Issued,
    /// The certificates this one replaced.
    pub superseded: Vec<Serial>,
}

/// A successful mTLS authentication with one of our certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub device: DeviceId,
    pub mac: Mac,
    pub serial: Serial,
    pub from: Lifecycle,
    pub to: Lifecycle,
}

/// A token just created: the secret is shown once and never stored.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub secret: String,
    pub device: DeviceId,
    pub mac: Mac,
    pub expires_at: i64,
}

/// Everything the registry holds, for `iotgw pki list`.
#[derive(Clone, Debug)]
pub struct Listing {
    pub devices: Vec<DeviceRecord>,
    pub certs: Vec<CertRecord>,
    pub holds: Vec<(Mac, String)>,
}

/// The sync core. One per store connection; the async side wraps it in a mutex.
pub struct Identity {
    conn: Connection,
    ca: IssuingCa,
    manufacturers: Vec<CertificateDer<'static>>,
    policy: Policy,
}

/// The stored form of a token: SHA-256 of the secret, hex.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

impl Identity {
    pub fn new(conn: Connection, ca: IssuingCa, manufacturers: Vec<CertificateDer<'static>>, policy: Policy) -> Self {
        Identity { conn, ca, manufacturers, policy }
    }

    pub fn ca(&self) -> &IssuingCa {
        &self.ca
    }

    pub fn manufacturers(&self) -> &[CertificateDer<'static>] {
        &self.manufacturers
    }

    /// Creates a one-time enrollment token for `mac`, valid for `ttl`. The MAC's live identity
    /// is reused (re-enrollment after a revocation); otherwise a provisioned one is created.
    pub fn create_token(&mut self, mac: Mac, ttl: Duration, actor: &str, now: OffsetDateTime) -> Result<NewToken, IdentityError> {
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let device = match registry::live_device_by_mac(&tx, mac)? {
            Some(existing) => {
                existing.lifecycle.may_enroll().map_err(|source| IdentityError::Lifecycle { device: existing.device.clone(), source })?;
                existing.device
            }
            None => {
                let record = DeviceRecord { device: DeviceId::generate(), mac, lifecycle: Lifecycle::Provisioned, created_at: t };
                registry::insert_device(&tx, &record)?;
                registry::audit(&tx, t, Some(&record.device), Some(mac), actor, "provision", "identity created for an enrollment token")?;
                record.device
            }
        };
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; TOKEN_BYTES]>());
        let expires_at = t + ttl.whole_seconds();
        registry::insert_token(&tx, &token_hash(&secret), mac, &device, t, expires_at)?;
        registry::audit(&tx, t, Some(&device), Some(mac), actor, "token", &format!("enrollment token created, expires at {expires_at}"))?;
        tx.commit()?;
        Ok(NewToken { secret, device, mac, expires_at })
    }

    /// simpleenroll: checks the CSR and the bootstrap credential, issues, and stores the
    /// certificate (consuming the token) in one transaction. `observed` is the MAC the request
    /// came from, when the gateway can tell.
    pub fn enroll(&mut self, csr_der: &[u8], bootstrap: Bootstrap, observed: Option<Mac>, now: OffsetDateTime) -> Result<Enrolled, IdentityError> {
        let csr = check::csr(csr_der)?;
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (device, token, source) = match bootstrap {
            Bootstrap::Token(secret) => {
                let hash = token_hash(secret);
                let record = registry::token(&tx, &hash)?.ok_or(IdentityError::TokenUnknown)?;
                if record.used_at.is_some() {
                    return Err(IdentityError::TokenUsed);
                }
                if record.expires_at <= t {
                    return Err(IdentityError::TokenExpired { expires_at: record.expires_at });
                }
                let device = registry::device(&tx, &record.device)?.ok_or(IdentityError::TokenUnknown)?;
                (device, Some(hash), "token")
            }
            Bootstrap::Factory { leaf, intermediates } => {
                let makers = self.manufacturers.iter().map(|d| check::parse_cert(d)).collect::<Result<Vec<_>, _>>()?;
                let chain: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
                let mac = check::factory_cert(leaf, &chain, &makers, t)?;
                let device = match registry::live_device_by_mac(&tx, mac)? {
                    Some(existing) => existing,
                    None => {
                        let record = DeviceRecord { device: DeviceId::generate(), mac, lifecycle: Lifecycle::Provisioned, created_at: t };
                        registry::insert_device(&tx, &record)?;
                        registry::audit(&tx, t, Some(&record.device), Some(mac), "enrollment", "provision", "identity created for a factory certificate")?;
                        record
                    }
                };
                (device, None, "factory")
            }
        };
        if let Some(seen) = observed.filter(|seen| *seen != device.mac) {
            return Err(IdentityError::MacMismatch { bound: device.mac, observed: seen });
        }
        check_binding(&csr.requested, &device.device, device.mac)?;
        device.lifecycle.may_enroll().map_err(|source| IdentityError::Lifecycle { device: device.device.clone(), source })?;
        if registry::is_held(&tx, device.mac)? {
            return Err(IdentityError::Held(device.mac));
        }
        let issued = self.ca.issue_device(csr.key, &csr.public_key, &device.device, device.mac, now, self.policy.cert_validity)?;
        if let Some(hash) = token {
            // The check above ran in this same IMMEDIATE transaction, so this only fails if
            // the clock moved past expiry meanwhile; it is the atomic guard either way.
            if !registry::consume_token(&tx, &hash, t, &issued.serial)? {
                return Err(IdentityError::TokenUsed);
            }
        }
        let enrolled = store_issued(&tx, &device, issued, source, t)?;
        tx.commit()?;
        Ok(enrolled)
    }

    /// simplereenroll: the device authenticates with its current certificate (`leaf`, from
    /// mTLS) and gets a new one for the same identity; the old one is superseded.
    pub fn reenroll(&mut self, csr_der: &[u8], leaf: Option<&[u8]>, observed: Option<Mac>, now: OffsetDateTime) -> Result<Enrolled, IdentityError> {
        let leaf = leaf.ok_or(IdentityError::NoClientCertificate)?;
        let presented = self.verify_presented(leaf, observed, now)?;
        let csr = check::csr(csr_der)?;
        check_binding(&csr.requested, &presented.device, presented.mac)?;
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let device = registry::device(&tx, &presented.device)?.ok_or_else(|| IdentityError::UnknownDevice(presented.device.clone()))?;
        let active = device.lifecycle.activate().map_err(|source| IdentityError::Lifecycle { device: device.device.clone(), source })?;
        if active != device.lifecycle {
            registry::set_lifecycle(&tx, &device.device, active, t)?;
        }
        let issued = self.ca.issue_device(csr.key, &csr.public_key, &device.device, device.mac, now, self.policy.cert_validity)?;
        let enrolled = store_issued(&tx, &device, issued, "renewal", t)?;
        tx.commit()?;
        Ok(enrolled)
    }

    /// A device proved, over mTLS, that it holds `leaf`: it becomes active.
    pub fn authenticate(&mut self, leaf: Option<&[u8]>, observed: Option<Mac>, now: OffsetDateTime) -> Result<Authenticated, IdentityError> {
        let leaf = leaf.ok_or(IdentityError::NoClientCertificate)?;
        let presented = self.verify_presented(leaf, observed, now)?;
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let device = registry::device(&tx, &presented.device)?.ok_or_else(|| IdentityError::UnknownDevice(presented.device.clone()))?;
        let to = device.lifecycle.activate().map_err(|source| IdentityError::Lifecycle { device: device.device.clone(), source })?;
        if to != device.lifecycle {
            registry::set_lifecycle(&tx, &device.device, to, t)?;
            registry::audit(&tx, t, Some(&device.device), Some(device.mac), "mtls", "activate", &format!("first authentication with certificate {}", presented.serial))?;
        }
        tx.commit()?;
        Ok(Authenticated { device: device.device, mac: device.mac, serial: presented.serial, from: device.lifecycle, to })
    }

    /// Checks a presented client certificate against the CA, the registry and the MAC it
    /// came from. A MAC presenting another MAC's identity holds both (committed) and fails.
    fn verify_presented(&mut self, leaf: &[u8], observed: Option<Mac>, now: OffsetDateTime) -> Result<CheckedCert, IdentityError> {
        let t = unix(now);
        let ca = check::parse_cert(self.ca.cert_der())?;
        let presented = check::device_cert(leaf, &ca, t)?;
        let record = registry::cert(&self.conn, &presented.serial)?.ok_or_else(|| IdentityError::CertUnknown(presented.serial.clone()))?;
        match record.status {
            CertStatus::Valid => {}
            CertStatus::Revoked => return Err(IdentityError::CertRevoked(presented.serial)),
            CertStatus::Superseded => return Err(IdentityError::CertSuperseded(presented.serial)),
        }
        if let Some(seen) = observed.filter(|seen| *seen != presented.mac) {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let reason = format!("MAC {seen} presented certificate {} of device {} (bound to {})", presented.serial, presented.device, presented.mac);
            for mac in [seen, presented.mac] {
                registry::add_hold(&tx, mac, &reason, t)?;
            }
            registry::audit(&tx, t, Some(&presented.device), Some(seen), "mtls", "clone_suspected", &reason)?;
            tx.commit()?;
            return Err(IdentityError::CloneSuspected { seen, device: presented.device, bound: presented.mac });
        }
        if registry::is_held(&self.conn, presented.mac)? {
            return Err(IdentityError::Held(presented.mac));
        }
        Ok(presented)
    }

    /// Revokes one certificate; its device drops to onboarding unless it holds another valid one.
    pub fn revoke(&mut self, serial: &Serial, reason: RevocationReason, actor: &str, now: OffsetDateTime) -> Result<CertRecord, IdentityError> {
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = registry::cert(&tx, serial)?.ok_or_else(|| IdentityError::UnknownSerial(serial.clone()))?;
        if record.status == CertStatus::Revoked {
            return Err(IdentityError::AlreadyRevoked(serial.clone()));
        }
        registry::revoke(&tx, serial, reason, t)?;
        registry::audit(&tx, t, Some(&record.device), Some(record.mac), actor, "revoke", &format!("certificate {serial} revoked ({})", registry::reason_text(reason)))?;
        tx.commit()?;
        Ok(record)
    }

    /// Retires a device: lifecycle decommissioned, certificates revoked, tokens void.
    pub fn decommission(&mut self, device: &DeviceId, actor: &str, now: OffsetDateTime) -> Result<DeviceRecord, IdentityError> {
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = registry::device(&tx, device)?.ok_or_else(|| IdentityError::UnknownDevice(device.clone()))?;
        let next = record.lifecycle.decommission().map_err(|source| IdentityError::Lifecycle { device: device.clone(), source })?;
        registry::set_lifecycle(&tx, device, next, t)?;
        for serial in registry::unrevoked_certs(&tx, device)? {
            registry::revoke(&tx, &serial, RevocationReason::CessationOfOperation, t)?;
        }
        registry::void_tokens(&tx, device, t)?;
        registry::audit(&tx, t, Some(device), Some(record.mac), actor, "decommission", &format!("{} -> {next}", record.lifecycle))?;
        tx.commit()?;
        Ok(record)
    }

    /// Suspends (`suspend = true`) or resumes a device.
    pub fn suspend(&mut self, device: &DeviceId, suspend: bool, actor: &str, now: OffsetDateTime) -> Result<(Lifecycle, Lifecycle), IdentityError> {
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = registry::device(&tx, device)?.ok_or_else(|| IdentityError::UnknownDevice(device.clone()))?;
        let from = record.lifecycle;
        let to = if suspend { from.suspend() } else { from.resume() }.map_err(|source| IdentityError::Lifecycle { device: device.clone(), source })?;
        registry::set_lifecycle(&tx, device, to, t)?;
        registry::audit(&tx, t, Some(device), Some(record.mac), actor, if suspend { "suspend" } else { "resume" }, &format!("{from} -> {to}"))?;
        tx.commit()?;
        Ok((from, to))
    }

    /// A human decided about a suspected clone: the MAC's holds are cleared.
    pub fn release_hold(&mut self, mac: Mac, actor: &str, now: OffsetDateTime) -> Result<(), IdentityError> {
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if registry::clear_holds(&tx, mac, actor, t)? == 0 {
            return Err(IdentityError::NoHold(mac));
        }
        registry::audit(&tx, t, None, Some(mac), actor, "release_hold", "clone hold cleared by an operator")?;
        tx.commit()?;
        Ok(())
    }

    /// The current CRL (DER), signed now.
    pub fn crl(&self, now: OffsetDateTime) -> Result<Vec<u8>, IdentityError> {
        let revoked = registry::revocations(&self.conn)?;
        let number = registry::crl_number(&self.conn)?;
        Ok(self.ca.crl(&revoked, number, now, self.policy.crl_next_update)?)
    }

    /// What the datapath should enforce now, for every MAC the identity component knows.
    pub fn desired_access(&self, now: OffsetDateTime) -> Result<Vec<(Mac, Access)>, IdentityError> {
        Ok(registry::desired_access(&self.conn, unix(now))?)
    }

    pub fn list(&self) -> Result<Listing, IdentityError> {
        Ok(Listing { devices: registry::devices(&self.conn)?, certs: registry::certs(&self.conn)?, holds: registry::open_holds(&self.conn)? })
    }

    /// Counter SQLite bumps whenever another connection (the CLI) commits to the file.
    pub fn data_version(&self) -> Result<i64, IdentityError> {
        Ok(self.conn.query_row("PRAGMA data_version", [], |row| row.get(0))?)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// The CSR may repeat the bound device id and MAC, nothing else.
fn check_binding(requested: &[Urn], device: &DeviceId, mac: Mac) -> Result<(), IdentityError> {
    for urn in requested {
        match urn {
            Urn::Device(id) if id != device => {
                return Err(IdentityError::SanMismatch { requested: id.urn(), bound: device.urn() });
            }
            Urn::Mac(m) if *m != mac => {
                return Err(IdentityError::SanMismatch { requested: super::names::mac_urn(*m), bound: super::names::mac_urn(mac) });
            }
            _ => {}
        }
    }
    Ok(())
}

fn store_issued(tx: &Connection, device: &DeviceRecord, issued: Issued, bootstrap: &str, t: i64) -> Result<Enrolled, IdentityError> {
    let superseded = registry::valid_certs(tx, &device.device)?;
    registry::supersede_valid(tx, &device.device, t)?;
    let record = CertRecord {
        serial: issued.serial.clone(),
        device: device.device.clone(),
        mac: device.mac,
        subject: issued.subject.clone(),
        not_before: unix(issued.not_before),
        not_after: unix(issued.not_after),
        status: CertStatus::Valid,
        bootstrap: bootstrap.to_owned(),
        issued_at: t,
    };
    registry::insert_cert(tx, &record, &issued.der)?;
    registry::audit(tx, t, Some(&device.device), Some(device.mac), bootstrap, "issue", &format!("certificate {} issued, valid until {}", issued.serial, record.not_after))?;
    Ok(Enrolled { device: device.device.clone(), mac: device.mac, issued, superseded })
}
