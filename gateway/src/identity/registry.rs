//! The identity tables in the gateway's SQLite store: devices and their lifecycle, issued
//! certificates, revocations, enrollment tokens (hashed), clone holds and the audit trail.
//!
//! Reads and writes only `identity_*` tables. Functions take a `&Connection` so callers run
//! several of them in one transaction (`core` does: an enrollment stores all or nothing).
//! Times are unix seconds (UTC).
//!
//! One submodule per table: `devices`, `tokens`, `certificates`, `revocations` (the CRL),
//! `holds`, `audit`; `access` reads across them what the datapath should enforce.
use time::OffsetDateTime;

mod access;
mod audit;
mod certificates;
mod devices;
mod holds;
mod revocations;
mod tokens;

pub use access::desired_access;
pub use audit::{AuditEntry, audit, audit_trail};
pub use certificates::{
    CertRecord, CertStatus, cert, certs, insert_cert, supersede_valid, unrevoked_certs, valid_certs,
    valid_subjects_by_mac,
};
pub use devices::{DeviceRecord, device, devices, insert_device, live_device_by_mac, set_lifecycle};
pub use holds::{add_hold, clear_holds, is_held, open_holds};
pub use revocations::{crl_number, parse_reason, reason_text, revocations, revoke};
pub use tokens::{TokenRecord, consume_token, insert_token, token, void_tokens};

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

/// A text column parsed into `T` (MAC, device id, serial, lifecycle); a value that does not
/// parse is a conversion error of that column.
fn text_column<T>(row: &rusqlite::Row, index: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let text: String = row.get(index)?;
    text.parse()
        .map_err(|e: T::Err| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into()))
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
mod tests;
