//! `identity_revocations`: the CRL's entries (revoked and superseded certificates).
use rcgen::RevocationReason;
use rusqlite::{Connection, params};
use time::OffsetDateTime;

use crate::identity::{ca::Revoked, names::Serial};

/// Revokes a certificate (a superseded one keeps its row but takes the new reason).
pub fn revoke(conn: &Connection, serial: &Serial, reason: RevocationReason, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE identity_certificates SET status = 'revoked' WHERE serial = ?1")?
        .execute([serial.as_str()])?;
    conn.prepare_cached(
        "INSERT INTO identity_revocations (serial, revoked_at, reason) VALUES (?1, ?2, ?3)
         ON CONFLICT(serial) DO UPDATE SET revoked_at = excluded.revoked_at, reason = excluded.reason",
    )?
    .execute(params![serial.as_str(), now, reason_text(reason)])?;
    Ok(())
}

/// Every CRL entry, oldest first.
pub fn revocations(conn: &Connection) -> rusqlite::Result<Vec<Revoked>> {
    let mut stmt =
        conn.prepare_cached("SELECT serial, revoked_at, reason FROM identity_revocations ORDER BY revoked_at, serial")?;
    let rows = stmt.query_map([], |row| {
        let serial: String = row.get(0)?;
        let at: i64 = row.get(1)?;
        let reason: String = row.get(2)?;
        Ok((serial, at, reason))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (serial, at, reason) = row?;
        let Ok(serial) = serial.parse() else { continue };
        out.push(Revoked {
            serial,
            revoked_at: OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH),
            reason: parse_reason(&reason),
        });
    }
    Ok(out)
}

/// A number that grows whenever the CRL's content changes: revocation rows are never
/// deleted, and a superseded entry turning revoked bumps `revoked_at`.
pub fn crl_number(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) + COALESCE(SUM(reason != 'superseded'), 0) FROM identity_revocations")?
        .query_row([], |row| row.get(0))
}

pub fn reason_text(reason: RevocationReason) -> &'static str {
    match reason {
        RevocationReason::KeyCompromise => "key_compromise",
        RevocationReason::CaCompromise => "ca_compromise",
        RevocationReason::AffiliationChanged => "affiliation_changed",
        RevocationReason::Superseded => "superseded",
        RevocationReason::CessationOfOperation => "cessation_of_operation",
        RevocationReason::CertificateHold => "certificate_hold",
        RevocationReason::RemoveFromCrl => "remove_from_crl",
        RevocationReason::PrivilegeWithdrawn => "privilege_withdrawn",
        RevocationReason::AaCompromise => "aa_compromise",
        RevocationReason::Unspecified => "unspecified",
    }
}

/// Parses a reason written by `reason_text` (or typed on the command line).
pub fn parse_reason(text: &str) -> RevocationReason {
    match text {
        "key_compromise" => RevocationReason::KeyCompromise,
        "ca_compromise" => RevocationReason::CaCompromise,
        "affiliation_changed" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessation_of_operation" => RevocationReason::CessationOfOperation,
        "certificate_hold" => RevocationReason::CertificateHold,
        "privilege_withdrawn" => RevocationReason::PrivilegeWithdrawn,
        "aa_compromise" => RevocationReason::AaCompromise,
        _ => RevocationReason::Unspecified,
    }
}
