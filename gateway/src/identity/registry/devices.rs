//! `identity_devices`: device identities and their lifecycle (one live identity per MAC).
use rusqlite::{Connection, OptionalExtension as _, params};

use super::text_column;
use crate::{
    device::Mac,
    identity::{lifecycle::Lifecycle, names::DeviceId},
};

/// A device identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device: DeviceId,
    pub mac: Mac,
    pub lifecycle: Lifecycle,
    pub created_at: i64,
}

fn device_row(row: &rusqlite::Row) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        device: text_column(row, 0)?,
        mac: text_column(row, 1)?,
        lifecycle: text_column(row, 2)?,
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
