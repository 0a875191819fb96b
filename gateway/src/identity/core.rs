//! The identity core: enrollment, renewal, authentication, revocation and lifecycle, as
//! synchronous calls over the store and the CA. The async `est` server and `service` task
//! call into it; the `iotgw pki` CLI uses it directly on the store file.
//!
//! One submodule per job, each adding its calls to `Identity`: `provisioning` (tokens, new
//! identities), `enrollment` (simpleenroll), `renewal` (simplereenroll), `authentication`
//! (mTLS hello, clone detection), `revocation` (revoke, decommission, suspend, holds).
//!
//! Reads and writes the `registry` tables (one transaction per call: all or nothing), signs
//! with `ca`. Publishes nothing itself: callers turn outcomes into `GatewayEvent`s.
use rusqlite::{Connection, Transaction, TransactionBehavior};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::{
    ca::{CaError, IssuingCa},
    check::CheckError,
    lifecycle::TransitionError,
    names::{DeviceId, Serial},
    registry::{self, CertRecord, DeviceRecord, unix},
};
use crate::device::{Access, Mac};

mod authentication;
mod enrollment;
mod provisioning;
mod renewal;
mod revocation;

pub use authentication::Authenticated;
pub use enrollment::{Bootstrap, Enrolled};
pub use provisioning::{NewToken, TOKEN_BYTES, token_hash};

/// Prepared statements kept by the identity connection (the registry uses about 30).
const STATEMENT_CACHE: usize = 64;

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

/// One write transaction. IMMEDIATE takes the store's write lock at once, so the checks a call
/// makes still hold when it commits. (A function of the connection alone, so the CA and the
/// policy stay borrowable meanwhile.)
fn write(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

impl IdentityError {
    /// The refusal of a lifecycle transition of `device`, for `map_err`.
    fn lifecycle(device: &DeviceId) -> impl FnOnce(TransitionError) -> IdentityError + '_ {
        move |source| IdentityError::Lifecycle { device: device.clone(), source }
    }
}

/// The registry record of `id`, which must exist.
fn known_device(conn: &Connection, id: &DeviceId) -> Result<DeviceRecord, IdentityError> {
    registry::device(conn, id)?.ok_or_else(|| IdentityError::UnknownDevice(id.clone()))
}

#[cfg(test)]
mod tests;
