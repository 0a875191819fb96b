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

/// Prepared statements kept by the identity connection (the registry uses about 30).
const STATEMENT_CACHE: usize = 64;
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
    TokenExpired { expires_at: String },
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
    #[error(
        "suspected cloning: MAC {seen} presented the identity of device {device} (bound to MAC {bound}); both are blocked until an operator releases them"
    )]
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
        // Every registry statement stays prepared: re-preparing costs more than running them.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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
    pub fn create_token(
        &mut self,
        mac: Mac,
        ttl: Duration,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<NewToken, IdentityError> {
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let device = match registry::live_device_by_mac(&tx, mac)? {
            Some(existing) => {
                existing
                    .lifecycle
                    .may_enroll()
                    .map_err(|source| IdentityError::Lifecycle { device: existing.device.clone(), source })?;
                existing.device
            }
            None => {
                let record = DeviceRecord {
                    device: DeviceId::generate(),
                    mac,
                    lifecycle: Lifecycle::Provisioned,
                    created_at: t,
                };
                registry::insert_device(&tx, &record)?;
                registry::audit(
                    &tx,
                    t,
                    Some(&record.device),
                    Some(mac),
                    actor,
                    "provision",
                    "identity created for an enrollment token",
                )?;
                record.device
            }
        };
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; TOKEN_BYTES]>());
        let expires_at = t + ttl.whole_seconds();
        registry::insert_token(&tx, &token_hash(&secret), mac, &device, t, expires_at)?;
        registry::audit(
            &tx,
            t,
            Some(&device),
            Some(mac),
            actor,
            "token",
            &format!("enrollment token created, expires at {}", registry::rfc3339(expires_at)),
        )?;
        tx.commit()?;
        Ok(NewToken { secret, device, mac, expires_at })
    }

    /// simpleenroll: checks the CSR and the bootstrap credential, issues, and stores the
    /// certificate (consuming the token) in one transaction. `observed` is the MAC the request
    /// came from, when the gateway can tell.
    pub fn enroll(
        &mut self,
        csr_der: &[u8],
        bootstrap: Bootstrap,
        observed: Option<Mac>,
        now: OffsetDateTime,
    ) -> Result<Enrolled, IdentityError> {
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
                    return Err(IdentityError::TokenExpired { expires_at: registry::rfc3339(record.expires_at) });
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
                        let record = DeviceRecord {
                            device: DeviceId::generate(),
                            mac,
                            lifecycle: Lifecycle::Provisioned,
                            created_at: t,
                        };
                        registry::insert_device(&tx, &record)?;
                        registry::audit(
                            &tx,
                            t,
                            Some(&record.device),
                            Some(mac),
                            "enrollment",
                            "provision",
                            "identity created for a factory certificate",
                        )?;
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
        device
            .lifecycle
            .may_enroll()
            .map_err(|source| IdentityError::Lifecycle { device: device.device.clone(), source })?;
        if registry::is_held(&tx, device.mac)? {
            return Err(IdentityError::Held(device.mac));
        }
        let issued = self.ca.issue_device(
            csr.key,
            &csr.public_key,
            &device.device,
            device.mac,
            now,
            self.policy.cert_validity,
        )?;
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
    pub fn reenroll(
        &mut self,
        csr_der: &[u8],
        leaf: Option<&[u8]>,
        observed: Option<Mac>,
        now: OffsetDateTime,
    ) -> Result<Enrolled, IdentityError> {
        let leaf = leaf.ok_or(IdentityError::NoClientCertificate)?;
        let presented = self.verify_presented(leaf, observed, now)?;
        let csr = check::csr(csr_der)?;
        check_binding(&csr.requested, &presented.device, presented.mac)?;
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let device = registry::device(&tx, &presented.device)?
            .ok_or_else(|| IdentityError::UnknownDevice(presented.device.clone()))?;
        let active = device
            .lifecycle
            .activate()
            .map_err(|source| IdentityError::Lifecycle { device: device.device.clone(), source })?;
        if active != device.lifecycle {
            registry::set_lifecycle(&tx, &device.device, active, t)?;
        }
        let issued = self.ca.issue_device(
            csr.key,
            &csr.public_key,
            &device.device,
            device.mac,
            now,
            self.policy.cert_validity,
        )?;
        let enrolled = store_issued(&tx, &device, issued, "renewal", t)?;
        tx.commit()?;
        Ok(enrolled)
    }

    /// A device proved, over mTLS, that it holds `leaf`: it becomes active.
    pub fn authenticate(
        &mut self,
        leaf: Option<&[u8]>,
        observed: Option<Mac>,
        now: OffsetDateTime,
    ) -> Result<Authenticated, IdentityError> {
        let leaf = leaf.ok_or(IdentityError::NoClientCertificate)?;
        let presented = self.verify_presented(leaf, observed, now)?;
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let device = registry::device(&tx, &presented.device)?
            .ok_or_else(|| IdentityError::UnknownDevice(presented.device.clone()))?;
        let to = device
            .lifecycle
            .activate()
            .map_err(|source| IdentityError::Lifecycle { device: device.device.clone(), source })?;
        if to != device.lifecycle {
            registry::set_lifecycle(&tx, &device.device, to, t)?;
            registry::audit(
                &tx,
                t,
                Some(&device.device),
                Some(device.mac),
                "mtls",
                "activate",
                &format!("first authentication with certificate {}", presented.serial),
            )?;
        }
        tx.commit()?;
        Ok(Authenticated {
            device: device.device,
            mac: device.mac,
            serial: presented.serial,
            from: device.lifecycle,
            to,
        })
    }

    /// Checks a presented client certificate against the CA, the registry and the MAC it
    /// came from. A MAC presenting another MAC's identity holds both (committed) and fails.
    fn verify_presented(
        &mut self,
        leaf: &[u8],
        observed: Option<Mac>,
        now: OffsetDateTime,
    ) -> Result<CheckedCert, IdentityError> {
        let t = unix(now);
        let ca = check::parse_cert(self.ca.cert_der())?;
        let presented = check::device_cert(leaf, &ca, t)?;
        let record = registry::cert(&self.conn, &presented.serial)?
            .ok_or_else(|| IdentityError::CertUnknown(presented.serial.clone()))?;
        match record.status {
            CertStatus::Valid => {}
            CertStatus::Revoked => return Err(IdentityError::CertRevoked(presented.serial)),
            CertStatus::Superseded => return Err(IdentityError::CertSuperseded(presented.serial)),
        }
        if let Some(seen) = observed.filter(|seen| *seen != presented.mac) {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let reason = format!(
                "MAC {seen} presented certificate {} of device {} (bound to {})",
                presented.serial, presented.device, presented.mac
            );
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
    pub fn revoke(
        &mut self,
        serial: &Serial,
        reason: RevocationReason,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CertRecord, IdentityError> {
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = registry::cert(&tx, serial)?.ok_or_else(|| IdentityError::UnknownSerial(serial.clone()))?;
        if record.status == CertStatus::Revoked {
            return Err(IdentityError::AlreadyRevoked(serial.clone()));
        }
        registry::revoke(&tx, serial, reason, t)?;
        registry::audit(
            &tx,
            t,
            Some(&record.device),
            Some(record.mac),
            actor,
            "revoke",
            &format!("certificate {serial} revoked ({})", registry::reason_text(reason)),
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// Retires a device: lifecycle decommissioned, certificates revoked, tokens void.
    pub fn decommission(
        &mut self,
        device: &DeviceId,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<DeviceRecord, IdentityError> {
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = registry::device(&tx, device)?.ok_or_else(|| IdentityError::UnknownDevice(device.clone()))?;
        let next = record
            .lifecycle
            .decommission()
            .map_err(|source| IdentityError::Lifecycle { device: device.clone(), source })?;
        registry::set_lifecycle(&tx, device, next, t)?;
        for serial in registry::unrevoked_certs(&tx, device)? {
            registry::revoke(&tx, &serial, RevocationReason::CessationOfOperation, t)?;
        }
        registry::void_tokens(&tx, device, t)?;
        registry::audit(
            &tx,
            t,
            Some(device),
            Some(record.mac),
            actor,
            "decommission",
            &format!("{} -> {next}", record.lifecycle),
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// Suspends (`suspend = true`) or resumes a device.
    pub fn suspend(
        &mut self,
        device: &DeviceId,
        suspend: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(Lifecycle, Lifecycle), IdentityError> {
        let t = unix(now);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = registry::device(&tx, device)?.ok_or_else(|| IdentityError::UnknownDevice(device.clone()))?;
        let from = record.lifecycle;
        let to = if suspend { from.suspend() } else { from.resume() }
            .map_err(|source| IdentityError::Lifecycle { device: device.clone(), source })?;
        registry::set_lifecycle(&tx, device, to, t)?;
        registry::audit(
            &tx,
            t,
            Some(device),
            Some(record.mac),
            actor,
            if suspend { "suspend" } else { "resume" },
            &format!("{from} -> {to}"),
        )?;
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
        Ok(Listing {
            devices: registry::devices(&self.conn)?,
            certs: registry::certs(&self.conn)?,
            holds: registry::open_holds(&self.conn)?,
        })
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
                return Err(IdentityError::SanMismatch {
                    requested: super::names::mac_urn(*m),
                    bound: super::names::mac_urn(mac),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn store_issued(
    tx: &Connection,
    device: &DeviceRecord,
    issued: Issued,
    bootstrap: &str,
    t: i64,
) -> Result<Enrolled, IdentityError> {
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
    registry::audit(
        tx,
        t,
        Some(&device.device),
        Some(device.mac),
        bootstrap,
        "issue",
        &format!("certificate {} issued, valid until {}", issued.serial, registry::rfc3339(record.not_after)),
    )?;
    Ok(Enrolled { device: device.device.clone(), mac: device.mac, issued, superseded })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;
    use crate::identity::ca::CaSource;

    struct Fixture {
        identity: Identity,
        dir: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(name: &str, manufacturers: Vec<CertificateDer<'static>>) -> Fixture {
        let dir = std::env::temp_dir().join(format!("iotgw-core-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = IssuingCa::open(&CaSource::Generated { state_dir: dir.clone() }).unwrap();
        let conn = crate::store::open_in_memory(&[crate::identity::MIGRATIONS]).unwrap();
        let policy = Policy { cert_validity: Duration::hours(1), crl_next_update: Duration::hours(1) };
        Fixture { identity: Identity::new(conn, ca, manufacturers, policy), dir }
    }

    fn mac(last: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, last])
    }

    fn csr(key: &KeyPair, sans: &[String]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "device");
        params.subject_alt_names = sans.iter().map(|s| SanType::URI(s.as_str().try_into().unwrap())).collect();
        params.serialize_request(key).unwrap().der().to_vec()
    }

    fn count(identity: &Identity, table: &str) -> i64 {
        identity.connection().query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn token_enrollment_then_authentication_enrolls_the_mac() {
        let mut f = fixture("token", vec![]);
        let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let enrolled =
            f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), Some(mac(1)), now()).unwrap();
        assert_eq!(enrolled.mac, mac(1));
        // Issued but not yet used: still onboarding.
        assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Onboarding)]);
        let auth = f.identity.authenticate(Some(&enrolled.issued.der), Some(mac(1)), now()).unwrap();
        assert_eq!((auth.from, auth.to), (Lifecycle::Provisioned, Lifecycle::Active));
        assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Enrolled)]);
    }

    #[test]
    fn reused_token_is_refused_and_stores_nothing() {
        let mut f = fixture("reuse", vec![]);
        let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap();
        let certs = count(&f.identity, "identity_certificates");
        let err = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap_err();
        assert!(matches!(err, IdentityError::TokenUsed), "{err}");
        assert_eq!(count(&f.identity, "identity_certificates"), certs);
    }

    #[test]
    fn expired_and_unknown_tokens_are_refused() {
        let mut f = fixture("expired", vec![]);
        let token = f.identity.create_token(mac(1), Duration::seconds(10), "test", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let later = now() + Duration::seconds(11);
        let err = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, later).unwrap_err();
        assert!(matches!(err, IdentityError::TokenExpired { .. }), "{err}");
        let err = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token("no-such-token"), None, now()).unwrap_err();
        assert!(matches!(err, IdentityError::TokenUnknown), "{err}");
        assert_eq!(count(&f.identity, "identity_certificates"), 0);
    }

    #[test]
    fn bad_csrs_leave_the_token_usable() {
        let mut f = fixture("badcsr", vec![]);
        let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let bad: Vec<(Vec<u8>, &str)> = vec![
            (b"garbage".to_vec(), "malformed"),
            (csr(&key, &["urn:iotgw:mac:02:00:00:00:00:02".into()]), "SAN MAC mismatch"),
            (csr(&key, &["urn:iotgw:device:someone-else".into()]), "SAN device mismatch"),
        ];
        for (der, what) in bad {
            let err = f.identity.enroll(&der, Bootstrap::Token(&token.secret), None, now());
            assert!(err.is_err(), "{what} accepted");
        }
        let err = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), Some(mac(7)), now()).unwrap_err();
        assert!(matches!(err, IdentityError::MacMismatch { .. }), "{err}");
        assert_eq!(count(&f.identity, "identity_certificates"), 0);
        // The token survived every refusal.
        let ok = csr(&key, &["urn:iotgw:mac:02:00:00:00:00:01".into()]);
        f.identity.enroll(&ok, Bootstrap::Token(&token.secret), Some(mac(1)), now()).unwrap();
    }

    #[test]
    fn renewal_supersedes_and_revocation_drops_to_onboarding() {
        let mut f = fixture("renew", vec![]);
        let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let first = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap();
        let second = f.identity.reenroll(&csr(&key, &[]), Some(&first.issued.der), None, now()).unwrap();
        assert_eq!(second.superseded, vec![first.issued.serial.clone()]);
        assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Enrolled)]);
        let err = f.identity.authenticate(Some(&first.issued.der), None, now()).unwrap_err();
        assert!(matches!(err, IdentityError::CertSuperseded(_)), "{err}");
        f.identity.revoke(&second.issued.serial, RevocationReason::KeyCompromise, "test", now()).unwrap();
        assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Onboarding)]);
        let err = f.identity.reenroll(&csr(&key, &[]), Some(&second.issued.der), None, now()).unwrap_err();
        assert!(matches!(err, IdentityError::CertRevoked(_)), "{err}");
        assert!(matches!(
            f.identity.revoke(&second.issued.serial, RevocationReason::Unspecified, "t", now()),
            Err(IdentityError::AlreadyRevoked(_))
        ));
    }

    #[test]
    fn expiry_drops_to_onboarding_and_expired_cert_cannot_renew() {
        let mut f = fixture("expiry", vec![]);
        let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let enrolled = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap();
        f.identity.authenticate(Some(&enrolled.issued.der), None, now()).unwrap();
        let after = now() + Duration::hours(2);
        assert_eq!(f.identity.desired_access(after).unwrap(), vec![(mac(1), Access::Onboarding)]);
        let err = f.identity.reenroll(&csr(&key, &[]), Some(&enrolled.issued.der), None, after).unwrap_err();
        assert!(matches!(err, IdentityError::Check(CheckError::Expired { .. })), "{err}");
        let before = now() - Duration::hours(1);
        let err = f.identity.authenticate(Some(&enrolled.issued.der), None, before).unwrap_err();
        assert!(matches!(err, IdentityError::Check(CheckError::NotYetValid { .. })), "{err}");
    }

    #[test]
    fn certificate_from_another_ca_is_refused() {
        let mut f = fixture("wrongca", vec![]);
        let other = fixture("wrongca-other", vec![]);
        let key = KeyPair::generate().unwrap();
        let foreign = other
            .identity
            .ca()
            .issue_device(
                check::KeyKind::EcP256,
                key.public_key_raw(),
                &"d-x".parse().unwrap(),
                mac(1),
                now(),
                Duration::hours(1),
            )
            .unwrap();
        let err = f.identity.authenticate(Some(&foreign.der), None, now()).unwrap_err();
        assert!(matches!(err, IdentityError::Check(CheckError::WrongIssuer { .. })), "{err}");
        // Signed by our CA but never recorded: refused too.
        let unrecorded = f
            .identity
            .ca()
            .issue_device(
                check::KeyKind::EcP256,
                key.public_key_raw(),
                &"d-x".parse().unwrap(),
                mac(1),
                now(),
                Duration::hours(1),
            )
            .unwrap();
        assert!(matches!(
            f.identity.authenticate(Some(&unrecorded.der), None, now()),
            Err(IdentityError::CertUnknown(_))
        ));
    }

    #[test]
    fn clone_blocks_both_macs_until_released() {
        let mut f = fixture("clone", vec![]);
        let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let enrolled = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap();
        f.identity.authenticate(Some(&enrolled.issued.der), Some(mac(1)), now()).unwrap();
        let err = f.identity.authenticate(Some(&enrolled.issued.der), Some(mac(2)), now()).unwrap_err();
        assert!(matches!(err, IdentityError::CloneSuspected { .. }), "{err}");
        let desired: std::collections::HashMap<_, _> = f.identity.desired_access(now()).unwrap().into_iter().collect();
        assert_eq!(desired[&mac(1)], Access::Blocked);
        assert_eq!(desired[&mac(2)], Access::Blocked);
        assert!(matches!(
            f.identity.authenticate(Some(&enrolled.issued.der), Some(mac(1)), now()),
            Err(IdentityError::Held(_))
        ));
        f.identity.release_hold(mac(1), "alice", now()).unwrap();
        f.identity.release_hold(mac(2), "alice", now()).unwrap();
        assert!(matches!(f.identity.release_hold(mac(2), "alice", now()), Err(IdentityError::NoHold(_))));
        let desired: std::collections::HashMap<_, _> = f.identity.desired_access(now()).unwrap().into_iter().collect();
        assert_eq!(desired[&mac(1)], Access::Enrolled);
        assert_eq!(desired[&mac(2)], Access::Unknown);
    }

    #[test]
    fn decommission_revokes_voids_tokens_and_keeps_audit() {
        let mut f = fixture("decom", vec![]);
        let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let enrolled = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap();
        let spare = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        f.identity.decommission(&enrolled.device, "alice", now()).unwrap();
        assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Unknown)]);
        assert!(matches!(
            f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&spare.secret), None, now()),
            Err(IdentityError::TokenUsed)
        ));
        let crl = f.identity.crl(now()).unwrap();
        let (_, parsed) = <x509_parser::revocation_list::CertificateRevocationList as x509_parser::prelude::FromDer<
            _,
        >>::from_der(&crl)
        .unwrap();
        assert_eq!(parsed.iter_revoked_certificates().count(), 1);
        let trail = registry::audit_trail(f.identity.connection(), Some(&enrolled.device)).unwrap();
        let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["provision", "token", "issue", "token", "decommission"]);
        assert!(matches!(
            f.identity.decommission(&enrolled.device, "alice", now()),
            Err(IdentityError::Lifecycle { .. })
        ));
        // A new token for the MAC makes a new identity.
        let again = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        assert_ne!(again.device, enrolled.device);
    }

    #[test]
    fn suspended_device_stays_onboarding_and_cannot_renew() {
        let mut f = fixture("suspend", vec![]);
        let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let enrolled = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap();
        f.identity.authenticate(Some(&enrolled.issued.der), None, now()).unwrap();
        f.identity.suspend(&enrolled.device, true, "alice", now()).unwrap();
        assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Onboarding)]);
        assert!(matches!(
            f.identity.reenroll(&csr(&key, &[]), Some(&enrolled.issued.der), None, now()),
            Err(IdentityError::Lifecycle { .. })
        ));
        f.identity.suspend(&enrolled.device, false, "alice", now()).unwrap();
        assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Enrolled)]);
    }

    #[test]
    fn factory_certificate_bootstraps_without_token() {
        let maker_key = KeyPair::generate().unwrap();
        let mut maker = CertificateParams::default();
        maker.distinguished_name.push(DnType::CommonName, "maker CA");
        maker.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let maker = maker.self_signed(&maker_key).unwrap();
        let device_key = KeyPair::generate().unwrap();
        let mut idevid = CertificateParams::default();
        idevid.subject_alt_names = vec![SanType::URI("urn:iotgw:mac:02:00:00:00:00:05".try_into().unwrap())];
        let idevid = idevid.signed_by(&device_key, &maker, &maker_key).unwrap();
        let mut f = fixture("factory", vec![maker.der().clone()]);
        let enrolled = f
            .identity
            .enroll(
                &csr(&device_key, &[]),
                Bootstrap::Factory { leaf: idevid.der(), intermediates: &[] },
                Some(mac(5)),
                now(),
            )
            .unwrap();
        assert_eq!(enrolled.mac, mac(5));
        let mut stranger = fixture("factory-stranger", vec![]);
        let err = stranger
            .identity
            .enroll(&csr(&device_key, &[]), Bootstrap::Factory { leaf: idevid.der(), intermediates: &[] }, None, now())
            .unwrap_err();
        assert!(matches!(err, IdentityError::Check(CheckError::WrongIssuer { .. })), "{err}");
        assert_eq!(count(&stranger.identity, "identity_devices"), 0, "nothing stored on refusal");
    }
}
