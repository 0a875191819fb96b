//! Baselines in the gateway's SQLite file: one row per device (its lifecycle state and
//! profile as JSON) and one per device class; `learned` keeps its own table here too. Reads and
//! writes only the `baseline_*` tables.
use rusqlite::{Connection, OptionalExtension as _};

use super::{ClassBaseline, DeviceBaseline};
use crate::device::Mac;

/// Schema of the baseline tables.
pub const MIGRATIONS: &[crate::store::Migration] = &[
    crate::store::Migration {
        component: "baseline",
        version: 1,
        sql: "CREATE TABLE baseline_devices (
            mac TEXT PRIMARY KEY,
            class TEXT,
            state TEXT NOT NULL,
            baseline TEXT NOT NULL,
            updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));
          CREATE TABLE baseline_classes (
            class TEXT PRIMARY KEY,
            devices INTEGER NOT NULL,
            baseline TEXT NOT NULL,
            updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));",
    },
    // What analysts learnt as normal (`learned`): one row per observation of an alert. No
    // foreign key to `alerts`: that table is the alert store's, and the pipeline opens the
    // store without it.
    crate::store::Migration {
        component: "baseline",
        version: 2,
        sql: "CREATE TABLE baseline_learned (
            alert_id INTEGER NOT NULL,
            mac TEXT NOT NULL,
            observation TEXT NOT NULL,
            actor TEXT NOT NULL,
            learned_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
            PRIMARY KEY (alert_id, observation));
          CREATE INDEX baseline_learned_mac ON baseline_learned (mac);",
    },
];

/// Why stored baselines could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("baseline store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A row holds JSON this build cannot read (written by another version, or edited).
    #[error("stored baseline of {key} is unreadable: {source}")]
    Decode { key: String, source: serde_json::Error },
    #[error("cannot encode the baseline of {key}: {source}")]
    Encode { key: String, source: serde_json::Error },
}

/// One device's stored baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRecord {
    pub mac: Mac,
    pub class: Option<String>,
    pub baseline: DeviceBaseline,
}

/// Writes device and class records in one transaction (all or nothing).
pub fn save(
    conn: &mut Connection,
    devices: &[DeviceRecord],
    classes: &[(String, ClassBaseline)],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for record in devices {
        let key = record.mac.to_string();
        let json = serde_json::to_string(&record.baseline)
            .map_err(|source| StoreError::Encode { key: key.clone(), source })?;
        tx.execute(
            "INSERT INTO baseline_devices (mac, class, state, baseline) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (mac) DO UPDATE SET class = ?2, state = ?3, baseline = ?4,
               updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')",
            (&key, &record.class, record.baseline.state_name(), &json),
        )?;
    }
    for (class, baseline) in classes {
        let json = serde_json::to_string(&baseline.profile)
            .map_err(|source| StoreError::Encode { key: class.clone(), source })?;
        tx.execute(
            "INSERT INTO baseline_classes (class, devices, baseline) VALUES (?1, ?2, ?3)
             ON CONFLICT (class) DO UPDATE SET devices = ?2, baseline = ?3,
               updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')",
            (class, baseline.devices as i64, &json),
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Stored device records and class baselines.
pub type Stored = (Vec<DeviceRecord>, Vec<(String, ClassBaseline)>);

/// Every stored device and class baseline.
pub fn load(conn: &Connection) -> Result<Stored, StoreError> {
    let mut devices = Vec::new();
    let mut statement = conn.prepare("SELECT mac, class, baseline FROM baseline_devices ORDER BY mac")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?, row.get::<_, String>(2)?))
    })?;
    for row in rows {
        let (mac, class, json) = row?;
        let decode = |source| StoreError::Decode { key: mac.clone(), source };
        let parsed: Mac = mac.parse().map_err(|e: crate::device::ParseMacError| decode(serde::de::Error::custom(e)))?;
        let baseline = serde_json::from_str(&json).map_err(decode)?;
        devices.push(DeviceRecord { mac: parsed, class, baseline });
    }
    let mut classes = Vec::new();
    let mut statement = conn.prepare("SELECT class, devices, baseline FROM baseline_classes ORDER BY class")?;
    let rows = statement
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?)))?;
    for row in rows {
        let (class, count, json) = row?;
        let profile =
            serde_json::from_str(&json).map_err(|source| StoreError::Decode { key: class.clone(), source })?;
        classes.push((class, ClassBaseline { devices: u64::try_from(count).unwrap_or_default(), profile }));
    }
    Ok((devices, classes))
}

/// One device's stored baseline and class.
pub fn load_device(conn: &Connection, mac: Mac) -> Result<Option<DeviceRecord>, StoreError> {
    Ok(load_device_stamped(conn, mac)?.map(|(record, _)| record))
}

/// One device's stored baseline and class, with when it was last written (RFC 3339, UTC).
pub fn load_device_stamped(conn: &Connection, mac: Mac) -> Result<Option<(DeviceRecord, String)>, StoreError> {
    let key = mac.to_string();
    let row: Option<(Option<String>, String, String)> = conn
        .query_row("SELECT class, baseline, updated_at FROM baseline_devices WHERE mac = ?1", [&key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((class, json, updated_at)) = row else { return Ok(None) };
    let baseline = serde_json::from_str(&json).map_err(|source| StoreError::Decode { key, source })?;
    Ok(Some((DeviceRecord { mac, class, baseline }, updated_at)))
}
