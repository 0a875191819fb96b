//! The identity tables in the gateway's SQLite store: devices and their lifecycle, issued
//! certificates, revocations, enrollment tokens (hashed), clone holds and the audit trail.
//!
//! Reads and writes only `identity_*` tables. Functions take a `&Connection` so callers run
//! several of them in one transaction (`core` does: an enrollment stores all or nothing).
//! Times are unix seconds (UTC).
use rcgen::RevocationReason;
use rusqlite::{Connection, OptionalExtension as _, params};
use time::OffsetDateTime;

use super::{
    ca::Revoked,
    lifecycle::Lifecycle,
    names::{DeviceId, Serial},
};
use crate::device::{Access, Mac};

/// Schema of the identity tables. Rows are never deleted: the audit trail outlives devices.
pub const MIGRATIONS: &[crate::store::Migration] = &[crate::store::Migration {
    component: "identity",
    version: 1,
    sql: "
CREATE TABLE identity_devices (
    device_id TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    lifecycle TEXT NOT NULL CHECK (lifecycle IN ('provisioned','active','suspended','decommissioned')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
-- One live (not decommissioned) identity per MAC.
CREATE UNIQUE INDEX identity_devices_live_mac ON identity_devices(mac) WHERE lifecycle != 'decommissioned';
CREATE TABLE identity_certificates (
    serial TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES identity_devices(device_id),
    mac TEXT NOT NULL,
    subject TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('valid','superseded','revoked')),
    bootstrap TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    der BLOB NOT NULL
);
CREATE INDEX identity_certificates_device ON identity_certificates(device_id, status);
CREATE TABLE identity_revocations (
    serial TEXT PRIMARY KEY REFERENCES identity_certificates(serial),
    revoked_at INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE identity_tokens (
    hash TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    device_id TEXT NOT NULL REFERENCES identity_devices(device_id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    used_serial TEXT
);
CREATE TABLE identity_holds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mac TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    cleared_at INTEGER,
    cleared_by TEXT
);
CREATE INDEX identity_holds_open ON identity_holds(mac) WHERE cleared_at IS NULL;
CREATE TABLE identity_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    device_id TEXT,
    mac TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX identity_audit_device ON identity_audit(device_id);
",
}];

/// A device identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device: DeviceId,
    pub mac: Mac,
    pub lifecycle: Lifecycle,
    pub created_at: i64,
}

/// What became of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// The device's current certificate.
    Valid,
    /// Replaced by a renewal; listed in the CRL with reason superseded.
    Superseded,
    Revoked,
}

impl CertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::Valid => "valid",
            CertStatus::Superseded => "superseded",
            CertStatus::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "valid" => CertStatus::Valid,
            "superseded" => CertStatus::Superseded,
            // The CHECK constraint leaves only 'revoked'.
            _ => CertStatus::Revoked,
        }
    }
}

/// An issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRecord {
    pub serial: Serial,
    pub device: DeviceId,
    pub mac: Mac,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub status: CertStatus,
    /// `token`, `factory` or `renewal`.
    pub bootstrap: String,
    pub issued_at: i64,
}

/// An enrollment token, as stored (only its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub mac: Mac,
    pub device: DeviceId,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: i64,
    pub device: Option<String>,
    pub mac: Option<String>,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

fn mac_column(row: &rusqlite::Row, index: usize) -> rusqlite::Result<Mac> {
    let text: String = row.get(index)?;
    text.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e)))
}

fn device_column(row: &rusqlite::Row, index: usize) -> rusqlite::Result<DeviceId> {
    let text: String = row.get(index)?;
    text.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e)))
}

fn lifecycle_column(row: &rusqlite::Row, index: usize) -> rusqlite::Result<Lifecycle> {
    let text: String = row.get(index)?;
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into()))
}

fn device_row(row: &rusqlite::Row) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        device: device_column(row, 0)?,
        mac: mac_column(row, 1)?,
        lifecycle: lifecycle_column(row, 2)?,
        created_at: row.get(3)?,
    })
}

const DEVICE_COLUMNS: &str = "device_id, mac, lifecycle, created_at";

pub fn insert_device(conn: &Connection, record: &DeviceRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO identity_devices (device_id, mac, lifecycle, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![
        record.device.as_str(),
        record.mac.to_string(),
        record.lifecycle.as_str(),
        record.created_at
    ])?;
    Ok(())
}

pub fn device(conn: &Connection, id: &DeviceId) -> rusqlite::Result<Option<DeviceRecord>> {
    conn.prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM identity_devices WHERE device_id = ?1"))?
        .query_row([id.as_str()], device_row)
        .optional()
}

/// The identity a MAC holds now (decommissioned ones excluded).
pub fn live_device_by_mac(conn: &Connection, mac: Mac) -> rusqlite::Result<Option<DeviceRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {DEVICE_COLUMNS} FROM identity_devices WHERE mac = ?1 AND lifecycle != 'decommissioned'"
    ))?
    .query_row([mac.to_string()], device_row)
    .optional()
}

/// Subject of the newest valid certificate bound to `mac` (the policy files match classes on
/// it).
pub fn valid_subject_by_mac(conn: &Connection, mac: Mac) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT subject FROM identity_certificates WHERE mac = ?1 AND status = 'valid' ORDER BY not_before DESC LIMIT 1",
    )?
    .query_row([mac.to_string()], |row| row.get(0))
    .optional()
}

pub fn devices(conn: &Connection) -> rusqlite::Result<Vec<DeviceRecord>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM identity_devices ORDER BY created_at, device_id"))?;
    let rows = stmt.query_map([], device_row)?;
    rows.collect()
}

pub fn set_lifecycle(conn: &Connection, id: &DeviceId, lifecycle: Lifecycle, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE identity_devices SET lifecycle = ?2, updated_at = ?3 WHERE device_id = ?1")?
        .execute(params![id.as_str(), lifecycle.as_str(), now])?;
    Ok(())
}

pub fn insert_token(
    conn: &Connection,
    hash: &str,
    mac: Mac,
    device: &DeviceId,
    now: i64,
    expires_at: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO identity_tokens (hash, mac, device_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![hash, mac.to_string(), device.as_str(), now, expires_at])?;
    Ok(())
}

pub fn token(conn: &Connection, hash: &str) -> rusqlite::Result<Option<TokenRecord>> {
    conn.prepare_cached("SELECT mac, device_id, expires_at, used_at FROM identity_tokens WHERE hash = ?1")?
        .query_row([hash], |row| {
            Ok(TokenRecord {
                mac: mac_column(row, 0)?,
                device: device_column(row, 1)?,
                expires_at: row.get(2)?,
                used_at: row.get(3)?,
            })
        })
        .optional()
}

/// Marks a token used, only if it still is unused and unexpired. Returns whether this call
/// consumed it: of two concurrent enrollments with one token, exactly one gets `true`.
pub fn consume_token(conn: &Connection, hash: &str, now: i64, serial: &Serial) -> rusqlite::Result<bool> {
    let changed = conn.prepare_cached("UPDATE identity_tokens SET used_at = ?2, used_serial = ?3 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2")?.execute(
        params![hash, now, serial.as_str()],
    )?;
    Ok(changed == 1)
}

/// Makes a device's unused tokens unusable (decommission).
pub fn void_tokens(conn: &Connection, device: &DeviceId, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("UPDATE identity_tokens SET used_at = ?2 WHERE device_id = ?1 AND used_at IS NULL")?
        .execute(params![device.as_str(), now])
}

pub fn insert_cert(conn: &Connection, record: &CertRecord, der: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO identity_certificates (serial, device_id, mac, subject, not_before, not_after, status, bootstrap, issued_at, der)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")?.execute(
        params![
            record.serial.as_str(),
            record.device.as_str(),
            record.mac.to_string(),
            record.subject,
            record.not_before,
            record.not_after,
            record.status.as_str(),
            record.bootstrap,
            record.issued_at,
            der
        ],
    )?;
    Ok(())
}

const CERT_COLUMNS: &str = "serial, device_id, mac, subject, not_before, not_after, status, bootstrap, issued_at";

fn cert_row(row: &rusqlite::Row) -> rusqlite::Result<CertRecord> {
    let serial: String = row.get(0)?;
    let status: String = row.get(6)?;
    Ok(CertRecord {
        serial: serial
            .parse()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?,
        device: device_column(row, 1)?,
        mac: mac_column(row, 2)?,
        subject: row.get(3)?,
        not_before: row.get(4)?,
        not_after: row.get(5)?,
        status: CertStatus::parse(&status),
        bootstrap: row.get(7)?,
        issued_at: row.get(8)?,
    })
}

pub fn cert(conn: &Connection, serial: &Serial) -> rusqlite::Result<Option<CertRecord>> {
    conn.prepare_cached(&format!("SELECT {CERT_COLUMNS} FROM identity_certificates WHERE serial = ?1"))?
        .query_row([serial.as_str()], cert_row)
        .optional()
}

pub fn certs(conn: &Connection) -> rusqlite::Result<Vec<CertRecord>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {CERT_COLUMNS} FROM identity_certificates ORDER BY issued_at, serial"))?;
    let rows = stmt.query_map([], cert_row)?;
    rows.collect()
}

/// The device's certificates that are not revoked yet (valid or superseded).
pub fn unrevoked_certs(conn: &Connection, device: &DeviceId) -> rusqlite::Result<Vec<Serial>> {
    serials(conn, "SELECT serial FROM identity_certificates WHERE device_id = ?1 AND status != 'revoked'", device)
}

/// The device's current certificates (normally one).
pub fn valid_certs(conn: &Connection, device: &DeviceId) -> rusqlite::Result<Vec<Serial>> {
    serials(conn, "SELECT serial FROM identity_certificates WHERE device_id = ?1 AND status = 'valid'", device)
}

fn serials(conn: &Connection, sql: &str, device: &DeviceId) -> rusqlite::Result<Vec<Serial>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([device.as_str()], |row| {
        let text: String = row.get(0)?;
        text.parse::<Serial>()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
    })?;
    rows.collect()
}

/// Marks the device's valid certificates superseded and lists them in the CRL as such.
pub fn supersede_valid(conn: &Connection, device: &DeviceId, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO identity_revocations (serial, revoked_at, reason)
         SELECT serial, ?2, 'superseded' FROM identity_certificates WHERE device_id = ?1 AND status = 'valid'",
    )?
    .execute(params![device.as_str(), now])?;
    conn.prepare_cached(
        "UPDATE identity_certificates SET status = 'superseded' WHERE device_id = ?1 AND status = 'valid'",
    )?
    .execute([device.as_str()])?;
    Ok(())
}

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

pub fn add_hold(conn: &Connection, mac: Mac, reason: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO identity_holds (mac, reason, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![mac.to_string(), reason, now])?;
    Ok(())
}

/// Clears every open hold on `mac`; returns how many there were.
pub fn clear_holds(conn: &Connection, mac: Mac, actor: &str, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE identity_holds SET cleared_at = ?2, cleared_by = ?3 WHERE mac = ?1 AND cleared_at IS NULL",
    )?
    .execute(params![mac.to_string(), now, actor])
}

pub fn is_held(conn: &Connection, mac: Mac) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM identity_holds WHERE mac = ?1 AND cleared_at IS NULL)")?
        .query_row([mac.to_string()], |row| row.get(0))
}

/// Open holds: MAC and reason.
pub fn open_holds(conn: &Connection) -> rusqlite::Result<Vec<(Mac, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT mac, reason FROM identity_holds WHERE cleared_at IS NULL ORDER BY id")?;
    let rows = stmt.query_map([], |row| Ok((mac_column(row, 0)?, row.get(1)?)))?;
    rows.collect()
}

pub fn audit(
    conn: &Connection,
    now: i64,
    device: Option<&DeviceId>,
    mac: Option<Mac>,
    actor: &str,
    action: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO identity_audit (at, device_id, mac, actor, action, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![now, device.map(DeviceId::as_str), mac.map(|m| m.to_string()), actor, action, detail])?;
    Ok(())
}

/// The audit trail of one device (or of everything with `None`), oldest first.
pub fn audit_trail(conn: &Connection, device: Option<&DeviceId>) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, device_id, mac, actor, action, detail FROM identity_audit WHERE ?1 IS NULL OR device_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([device.map(DeviceId::as_str)], |row| {
        Ok(AuditEntry {
            at: row.get(0)?,
            device: row.get(1)?,
            mac: row.get(2)?,
            actor: row.get(3)?,
            action: row.get(4)?,
            detail: row.get(5)?,
        })
    })?;
    rows.collect()
}

/// What the datapath should enforce for every MAC the identity component knows, at `now`:
/// an open hold blocks; a live active identity with a valid, unexpired certificate is
/// enrolled; any other live identity stays onboarding; a MAC whose identities are all
/// decommissioned goes back to unknown (onboarding lane, no table entry).
pub fn desired_access(conn: &Connection, now: i64) -> rusqlite::Result<Vec<(Mac, Access)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.mac,
                MAX(CASE WHEN d.lifecycle = 'decommissioned' THEN 0
                         WHEN d.lifecycle = 'active' AND EXISTS (
                              SELECT 1 FROM identity_certificates c
                              WHERE c.device_id = d.device_id AND c.status = 'valid'
                                AND c.not_before <= ?1 AND c.not_after > ?1) THEN 2
                         ELSE 1 END),
                EXISTS (SELECT 1 FROM identity_holds h WHERE h.mac = d.mac AND h.cleared_at IS NULL)
         FROM identity_devices d GROUP BY d.mac
         UNION ALL
         -- MACs known only from holds (a cloner): blocked while held, unknown once released.
         SELECT h.mac, 0, MAX(h.cleared_at IS NULL) FROM identity_holds h
         WHERE h.mac NOT IN (SELECT mac FROM identity_devices)
         GROUP BY h.mac",
    )?;
    let rows = stmt.query_map([now], |row| {
        let mac = mac_column(row, 0)?;
        let level: i64 = row.get(1)?;
        let held: bool = row.get(2)?;
        let access = match (held, level) {
            (true, _) => Access::Blocked,
            (false, 2) => Access::Enrolled,
            (false, 1) => Access::Onboarding,
            _ => Access::Unknown,
        };
        Ok((mac, access))
    })?;
    rows.collect()
}

/// Unix seconds as RFC 3339 text, for messages and listings.
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// Unix seconds of `OffsetDateTime`.
pub fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, last])
    }

    fn setup() -> Connection {
        crate::store::open_in_memory(&[MIGRATIONS]).unwrap()
    }

    fn add_device(conn: &Connection, id: &str, m: Mac, lifecycle: Lifecycle) -> DeviceId {
        let id: DeviceId = id.parse().unwrap();
        insert_device(conn, &DeviceRecord { device: id.clone(), mac: m, lifecycle, created_at: 0 }).unwrap();
        id
    }

    fn add_cert(conn: &Connection, serial: &str, id: &DeviceId, m: Mac, not_after: i64) -> Serial {
        let serial: Serial = serial.parse().unwrap();
        let record = CertRecord {
            serial: serial.clone(),
            device: id.clone(),
            mac: m,
            subject: "CN=x".into(),
            not_before: 0,
            not_after,
            status: CertStatus::Valid,
            bootstrap: "token".into(),
            issued_at: 0,
        };
        insert_cert(conn, &record, b"der").unwrap();
        serial
    }

    #[test]
    fn token_is_consumed_exactly_once() {
        let conn = setup();
        let id = add_device(&conn, "d-1", mac(1), Lifecycle::Provisioned);
        insert_token(&conn, "h", mac(1), &id, 0, 100).unwrap();
        let serial: Serial = "01".parse().unwrap();
        assert!(consume_token(&conn, "h", 10, &serial).unwrap());
        assert!(!consume_token(&conn, "h", 11, &serial).unwrap());
    }

    #[test]
    fn expired_token_is_not_consumed() {
        let conn = setup();
        let id = add_device(&conn, "d-1", mac(1), Lifecycle::Provisioned);
        insert_token(&conn, "h", mac(1), &id, 0, 100).unwrap();
        assert!(!consume_token(&conn, "h", 100, &"01".parse().unwrap()).unwrap());
        assert_eq!(token(&conn, "h").unwrap().unwrap().used_at, None);
    }

    #[test]
    fn one_live_identity_per_mac() {
        let conn = setup();
        add_device(&conn, "d-1", mac(1), Lifecycle::Active);
        let again = DeviceRecord {
            device: "d-2".parse().unwrap(),
            mac: mac(1),
            lifecycle: Lifecycle::Provisioned,
            created_at: 0,
        };
        assert!(insert_device(&conn, &again).is_err());
    }

    #[test]
    fn desired_access_follows_certificate_lifecycle_and_holds() {
        let conn = setup();
        let active = add_device(&conn, "d-1", mac(1), Lifecycle::Active);
        add_cert(&conn, "01", &active, mac(1), 1_000);
        let provisioned = add_device(&conn, "d-2", mac(2), Lifecycle::Provisioned);
        add_cert(&conn, "02", &provisioned, mac(2), 1_000);
        let gone = add_device(&conn, "d-3", mac(3), Lifecycle::Decommissioned);
        let revoked = add_device(&conn, "d-4", mac(4), Lifecycle::Active);
        let serial = add_cert(&conn, "04", &revoked, mac(4), 1_000);
        revoke(&conn, &serial, RevocationReason::KeyCompromise, 5).unwrap();
        add_hold(&conn, mac(9), "clone", 5).unwrap();
        let _ = gone;
        let desired: std::collections::HashMap<_, _> = desired_access(&conn, 10).unwrap().into_iter().collect();
        assert_eq!(desired[&mac(1)], Access::Enrolled);
        assert_eq!(desired[&mac(2)], Access::Onboarding);
        assert_eq!(desired[&mac(3)], Access::Unknown);
        assert_eq!(desired[&mac(4)], Access::Onboarding);
        assert_eq!(desired[&mac(9)], Access::Blocked);
        // At not_after the certificate no longer counts.
        let later: std::collections::HashMap<_, _> = desired_access(&conn, 1_000).unwrap().into_iter().collect();
        assert_eq!(later[&mac(1)], Access::Onboarding);
    }

    #[test]
    fn superseded_certs_enter_the_crl_and_number_grows() {
        let conn = setup();
        let id = add_device(&conn, "d-1", mac(1), Lifecycle::Active);
        add_cert(&conn, "01", &id, mac(1), 1_000);
        let before = crl_number(&conn).unwrap();
        supersede_valid(&conn, &id, 5).unwrap();
        let after_supersede = crl_number(&conn).unwrap();
        revoke(&conn, &"01".parse().unwrap(), RevocationReason::KeyCompromise, 6).unwrap();
        let after_revoke = crl_number(&conn).unwrap();
        assert!(before < after_supersede && after_supersede < after_revoke);
        let list = revocations(&conn).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].reason, RevocationReason::KeyCompromise);
    }

    #[test]
    fn audit_trail_is_per_device() {
        let conn = setup();
        let id = add_device(&conn, "d-1", mac(1), Lifecycle::Active);
        audit(&conn, 1, Some(&id), Some(mac(1)), "test", "enroll", "x").unwrap();
        audit(&conn, 2, None, None, "test", "other", "y").unwrap();
        assert_eq!(audit_trail(&conn, Some(&id)).unwrap().len(), 1);
        assert_eq!(audit_trail(&conn, None).unwrap().len(), 2);
    }
}
