//! `identity_audit`: who did what to which identity, kept after the device is gone.
use rusqlite::{Connection, params};

use crate::{device::Mac, identity::names::DeviceId};

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
