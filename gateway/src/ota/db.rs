//! The ota tables in the gateway's SQLite store (component `ota`): accepted metadata versions,
//! published targets, signing generations, device firmware versions and reports, campaigns.
//!
//! Reads and writes only `ota_*` tables. Times are unix seconds (UTC) unless named `*_at` text.
use rusqlite::{Connection, OptionalExtension as _, params};
use time::OffsetDateTime;

use crate::device::Mac;

/// Schema of the ota tables.
pub const MIGRATIONS: &[crate::store::Migration] = &[crate::store::Migration {
    component: "ota",
    version: 1,
    sql: "
        -- The accepted version of each role ('root', 'targets', or a vendor role name).
        -- released_version: for vendor roles, the version every device is offered.
        CREATE TABLE ota_metadata (
            role TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            expires TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            released_version INTEGER NOT NULL DEFAULT 0,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE ota_targets (
            path TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            role_version INTEGER NOT NULL,
            firmware_version TEXT NOT NULL,
            device_classes TEXT NOT NULL,
            length INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            added_at INTEGER NOT NULL
        );
        -- Each generation is one version number of every snapshot/timestamp view.
        CREATE TABLE ota_generations (
            generation INTEGER PRIMARY KEY,
            issued_at INTEGER NOT NULL
        );
        CREATE TABLE ota_devices (
            mac TEXT PRIMARY KEY,
            device_class TEXT NOT NULL,
            firmware_version TEXT,
            last_status TEXT NOT NULL,
            last_detail TEXT NOT NULL DEFAULT '',
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE ota_reports (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            mac TEXT NOT NULL,
            campaign_id TEXT,
            target TEXT,
            firmware_version TEXT,
            status TEXT NOT NULL,
            detail TEXT NOT NULL,
            at INTEGER NOT NULL
        );
        CREATE INDEX ota_reports_campaign ON ota_reports (campaign_id, mac);
        CREATE TABLE ota_campaigns (
            id TEXT PRIMARY KEY,
            spec TEXT NOT NULL,
            state TEXT NOT NULL,
            stage_started_at INTEGER NOT NULL,
            resumed_at INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE ota_campaign_alerts (
            campaign_id TEXT NOT NULL,
            mac TEXT NOT NULL,
            incident_id TEXT NOT NULL,
            at INTEGER NOT NULL,
            PRIMARY KEY (campaign_id, mac, incident_id)
        );
    ",
}];

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// One accepted role version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRow {
    pub role: String,
    pub version: u64,
    pub expires: String,
    pub sha256: String,
    pub released_version: u64,
}

const ROLE_COLUMNS: &str = "role, version, expires, sha256, released_version";

fn role_row(r: &rusqlite::Row) -> rusqlite::Result<RoleRow> {
    Ok(RoleRow {
        role: r.get(0)?,
        version: r.get(1)?,
        expires: r.get(2)?,
        sha256: r.get(3)?,
        released_version: r.get(4)?,
    })
}

pub fn role(conn: &Connection, role: &str) -> rusqlite::Result<Option<RoleRow>> {
    conn.query_row(&format!("SELECT {ROLE_COLUMNS} FROM ota_metadata WHERE role = ?1"), [role], role_row).optional()
}

pub fn roles(conn: &Connection) -> rusqlite::Result<Vec<RoleRow>> {
    let mut stmt = conn.prepare(&format!("SELECT {ROLE_COLUMNS} FROM ota_metadata ORDER BY role"))?;
    let rows = stmt.query_map([], role_row)?;
    rows.collect()
}

pub fn set_role(conn: &Connection, role: &str, version: u64, expires: &str, sha256: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO ota_metadata (role, version, expires, sha256, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (role) DO UPDATE SET version = ?2, expires = ?3, sha256 = ?4, updated_at = ?5",
        params![role, version, expires, sha256, now_unix()],
    )?;
    Ok(())
}

/// Raises (never lowers) the version of a vendor role offered to every device.
pub fn release_role(conn: &Connection, role: &str, version: u64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE ota_metadata SET released_version = MAX(released_version, ?2) WHERE role = ?1",
        params![role, version],
    )?;
    Ok(())
}

/// One published firmware image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetRow {
    pub path: String,
    pub role: String,
    pub role_version: u64,
    pub firmware_version: String,
    pub device_classes: Vec<String>,
    pub length: u64,
    pub sha256: String,
}

pub fn insert_target(conn: &Connection, t: &TargetRow) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO ota_targets (path, role, role_version, firmware_version, device_classes, length, sha256, added_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            t.path,
            t.role,
            t.role_version,
            t.firmware_version,
            t.device_classes.join(","),
            t.length,
            t.sha256,
            now_unix()
        ],
    )?;
    Ok(())
}

pub fn targets(conn: &Connection) -> rusqlite::Result<Vec<TargetRow>> {
    let mut stmt = conn.prepare(
        "SELECT path, role, role_version, firmware_version, device_classes, length, sha256 FROM ota_targets ORDER BY role, role_version, path",
    )?;
    let rows = stmt.query_map([], |r| {
        let classes: String = r.get(4)?;
        Ok(TargetRow {
            path: r.get(0)?,
            role: r.get(1)?,
            role_version: r.get(2)?,
            firmware_version: r.get(3)?,
            device_classes: classes.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect(),
            length: r.get(5)?,
            sha256: r.get(6)?,
        })
    })?;
    rows.collect()
}

pub fn target(conn: &Connection, path: &str) -> rusqlite::Result<Option<TargetRow>> {
    Ok(targets(conn)?.into_iter().find(|t| t.path == path))
}

/// A signing generation: the version and issue time of every snapshot/timestamp view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Generation {
    pub number: u64,
    pub issued_at: i64,
}

pub fn generation(conn: &Connection, number: u64) -> rusqlite::Result<Option<Generation>> {
    conn.query_row("SELECT generation, issued_at FROM ota_generations WHERE generation = ?1", [number], |r| {
        Ok(Generation { number: r.get(0)?, issued_at: r.get(1)? })
    })
    .optional()
}

pub fn current_generation(conn: &Connection) -> rusqlite::Result<Option<Generation>> {
    conn.query_row("SELECT generation, issued_at FROM ota_generations ORDER BY generation DESC LIMIT 1", [], |r| {
        Ok(Generation { number: r.get(0)?, issued_at: r.get(1)? })
    })
    .optional()
}

/// Starts a new generation: anything that changes what a device may see calls this, so every
/// device's next snapshot/timestamp carries a higher version than any it saw before.
pub fn bump_generation(conn: &Connection) -> rusqlite::Result<Generation> {
    let issued_at = now_unix();
    conn.execute(
        "INSERT INTO ota_generations (generation, issued_at)
         SELECT COALESCE(MAX(generation), 0) + 1, ?1 FROM ota_generations",
        [issued_at],
    )?;
    // The INSERT above succeeded on this connection, so at least one row exists.
    Ok(current_generation(conn)?.expect("a generation was just inserted"))
}

/// A device as the update service knows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceRow {
    pub mac: Mac,
    pub device_class: String,
    pub firmware_version: Option<String>,
    pub last_status: String,
    pub last_detail: String,
    pub updated_at: i64,
}

pub fn devices(conn: &Connection) -> rusqlite::Result<Vec<DeviceRow>> {
    let mut stmt = conn.prepare(
        "SELECT mac, device_class, firmware_version, last_status, last_detail, updated_at FROM ota_devices ORDER BY mac",
    )?;
    let rows = stmt.query_map([], device_row)?;
    rows.filter_map(|r| r.transpose()).collect()
}

pub fn device(conn: &Connection, mac: Mac) -> rusqlite::Result<Option<DeviceRow>> {
    conn.query_row(
        "SELECT mac, device_class, firmware_version, last_status, last_detail, updated_at FROM ota_devices WHERE mac = ?1",
        [mac.to_string()],
        device_row,
    )
    .optional()
    .map(Option::flatten)
}

/// Rows with an unparsable MAC are skipped (None) rather than failing the whole listing.
fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<DeviceRow>> {
    let mac: String = r.get(0)?;
    let Ok(mac) = mac.parse() else { return Ok(None) };
    Ok(Some(DeviceRow {
        mac,
        device_class: r.get(1)?,
        firmware_version: r.get(2)?,
        last_status: r.get(3)?,
        last_detail: r.get(4)?,
        updated_at: r.get(5)?,
    }))
}

/// Records a device report; `firmware_version` replaces the stored one only on success or
/// check-in (a failed install leaves the old firmware running).
pub fn upsert_device(
    conn: &Connection,
    mac: Mac,
    class: &str,
    firmware_version: Option<&str>,
    status: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO ota_devices (mac, device_class, firmware_version, last_status, last_detail, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (mac) DO UPDATE SET device_class = ?2,
             firmware_version = COALESCE(?3, firmware_version), last_status = ?4, last_detail = ?5, updated_at = ?6",
        params![mac.to_string(), class, firmware_version, status, detail, now_unix()],
    )?;
    Ok(())
}

pub fn insert_report(
    conn: &Connection,
    mac: Mac,
    campaign: Option<&str>,
    target: Option<&str>,
    version: Option<&str>,
    status: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO ota_reports (mac, campaign_id, target, firmware_version, status, detail, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![mac.to_string(), campaign, target, version, status, detail, now_unix()],
    )?;
    Ok(())
}

/// Latest campaign report per device: (device, `success` / `failure`, unix time).
pub fn campaign_outcomes(conn: &Connection, campaign: &str) -> rusqlite::Result<Vec<(Mac, String, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT mac, status, at FROM ota_reports r WHERE campaign_id = ?1
           AND id = (SELECT MAX(id) FROM ota_reports WHERE campaign_id = ?1 AND mac = r.mac)",
    )?;
    let rows = stmt
        .query_map(params![campaign], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (mac, status, at) = row?;
        if let Ok(mac) = mac.parse() {
            out.push((mac, status, at));
        }
    }
    Ok(out)
}

pub fn insert_campaign_alert(conn: &Connection, campaign: &str, mac: Mac, incident: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO ota_campaign_alerts (campaign_id, mac, incident_id, at) VALUES (?1, ?2, ?3, ?4)",
        params![campaign, mac.to_string(), incident, now_unix()],
    )?;
    Ok(())
}

/// Devices with an alert recorded for the campaign since `since`.
pub fn campaign_alerted(conn: &Connection, campaign: &str, since: i64) -> rusqlite::Result<Vec<Mac>> {
    let mut stmt = conn.prepare("SELECT DISTINCT mac FROM ota_campaign_alerts WHERE campaign_id = ?1 AND at >= ?2")?;
    let rows = stmt.query_map(params![campaign, since], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(mac) = row?.parse() {
            out.push(mac);
        }
    }
    Ok(out)
}
