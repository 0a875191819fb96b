//! `identity_certificates`: every certificate issued, and what became of it.
use rusqlite::{Connection, OptionalExtension as _, params};

use super::text_column;
use crate::{
    device::Mac,
    identity::names::{DeviceId, Serial},
};

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
    let status: String = row.get(6)?;
    Ok(CertRecord {
        serial: text_column(row, 0)?,
        device: text_column(row, 1)?,
        mac: text_column(row, 2)?,
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
    let rows = stmt.query_map([device.as_str()], |row| text_column(row, 0))?;
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

/// Each device's subject of its newest valid certificate (the policy files match classes on
/// it), every device in one query.
pub fn valid_subjects_by_mac(conn: &Connection) -> rusqlite::Result<std::collections::HashMap<Mac, String>> {
    let mut subjects = std::collections::HashMap::new();
    // Newest first, so the first subject seen per device is the one kept.
    let mut statement =
        conn.prepare("SELECT mac, subject FROM identity_certificates WHERE status = 'valid' ORDER BY not_before DESC")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        if let Ok(mac) = row.get::<_, String>(0)?.parse::<Mac>() {
            subjects.entry(mac).or_insert(row.get(1)?);
        }
    }
    Ok(subjects)
}
