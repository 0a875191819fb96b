//! Provisioning: enrollment tokens, and the identity a MAC gets before its first certificate.
//!
//! Writes `identity_devices`, `identity_tokens` and the audit trail.
use base64::Engine as _;
use rusqlite::Connection;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use super::{Identity, IdentityError, write};
use crate::{
    device::Mac,
    identity::{
        lifecycle::Lifecycle,
        names::DeviceId,
        registry::{self, DeviceRecord, unix},
    },
};

/// Bytes of randomness in an enrollment token.
pub const TOKEN_BYTES: usize = 32;

/// A token just created: the secret is shown once and never stored.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub secret: String,
    pub device: DeviceId,
    pub mac: Mac,
    pub expires_at: i64,
}

/// The stored form of a token: SHA-256 of the secret, hex.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

impl Identity {
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
        let tx = write(&mut self.conn)?;
        let device = live_or_provisioned(&tx, mac, actor, "identity created for an enrollment token", t)?;
        device.lifecycle.may_enroll().map_err(IdentityError::lifecycle(&device.device))?;
        let device = device.device;
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
}

/// The identity `mac` holds now, or a new provisioned one, audited as `provision` by `actor`
/// with `why`. Runs inside the caller's transaction.
pub(super) fn live_or_provisioned(
    tx: &Connection,
    mac: Mac,
    actor: &str,
    why: &str,
    t: i64,
) -> Result<DeviceRecord, IdentityError> {
    if let Some(existing) = registry::live_device_by_mac(tx, mac)? {
        return Ok(existing);
    }
    let record = DeviceRecord { device: DeviceId::generate(), mac, lifecycle: Lifecycle::Provisioned, created_at: t };
    registry::insert_device(tx, &record)?;
    registry::audit(tx, t, Some(&record.device), Some(mac), actor, "provision", why)?;
    Ok(record)
}
