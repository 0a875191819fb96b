//! Request signatures shared by outgoing webhooks and incoming SOAR actions:
//! `X-Iotgw-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>` with
//! `X-Iotgw-Timestamp: <unix seconds>`. Signing the timestamp with the body and refusing
//! timestamps outside a tolerance window (default 300 s) bounds replays to that window;
//! receivers that must refuse every replay also remember the event id / idempotency key.
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-iotgw-signature";
/// Header carrying the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-iotgw-timestamp";
/// Header naming the SOAR caller whose secret signed the request.
pub const CALLER_HEADER: &str = "x-iotgw-caller";
/// Version prefix of the signature value, so the scheme can change without ambiguity.
const SCHEME: &str = "v1=";

/// Why a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("timestamp {0:?} is not unix seconds")]
    BadTimestamp(String),
    /// Older or newer than the tolerance: a replay or a wrong clock.
    #[error("timestamp {timestamp} is {skew} s away from now, beyond the {tolerance} s tolerance")]
    Stale { timestamp: i64, skew: i64, tolerance: u64 },
    #[error("signature does not match")]
    Mismatch,
}

/// The header value for `body` signed at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("{SCHEME}{}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks `signature` (the header value) and `timestamp` (its header value) against `body`,
/// in constant time, with `now` in unix seconds.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp(timestamp.to_owned()))?;
    // Saturating: a timestamp near i64::MIN overflowed the subtraction (a panic with overflow
    // checks, a wrapped skew without); any such timestamp is far outside the window anyway.
    let skew = now.saturating_sub(timestamp);
    if skew.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::Stale { timestamp, skew, tolerance: tolerance_secs });
    }
    let given =
        signature.trim().strip_prefix(SCHEME).and_then(|h| hex::decode(h).ok()).ok_or(SignatureError::Mismatch)?;
    mac(secret, timestamp, body).verify_slice(&given).map_err(|_| SignatureError::Mismatch)
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_body_verifies() {
        let sig = sign(b"k", 1_000, b"{}");
        assert_eq!(verify(b"k", Some("1000"), Some(&sig), b"{}", 1_010, 300), Ok(()));
    }

    #[test]
    fn tampered_body_or_wrong_key_is_refused() {
        let sig = sign(b"k", 1_000, b"{}");
        assert_eq!(verify(b"k", Some("1000"), Some(&sig), b"{ }", 1_000, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"x", Some("1000"), Some(&sig), b"{}", 1_000, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn replay_after_tolerance_is_refused() {
        let sig = sign(b"k", 1_000, b"{}");
        assert!(matches!(verify(b"k", Some("1000"), Some(&sig), b"{}", 1_301, 300), Err(SignatureError::Stale { .. })));
    }

    #[test]
    fn timestamps_at_the_ends_of_i64_are_stale_not_an_overflow() {
        let sig = sign(b"k", i64::MIN, b"{}");
        for timestamp in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let given = timestamp.to_string();
            let refused = verify(b"k", Some(&given), Some(&sig), b"{}", 1_800_000_000, 300);
            assert!(matches!(refused, Err(SignatureError::Stale { .. })), "{timestamp}: {refused:?}");
        }
        let refused = verify(b"k", Some(&i64::MAX.to_string()), Some(&sig), b"{}", -1_000, 300);
        assert!(matches!(refused, Err(SignatureError::Stale { .. })), "{refused:?}");
    }

    #[test]
    fn moving_the_timestamp_breaks_the_signature() {
        let sig = sign(b"k", 1_000, b"{}");
        assert_eq!(verify(b"k", Some("1001"), Some(&sig), b"{}", 1_000, 300), Err(SignatureError::Mismatch));
    }
}
