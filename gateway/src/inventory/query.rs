//! The inventory's read queries, over any connection to the store: the controller's own, or
//! one the API opens on the same file (WAL lets readers run beside the writer). Reads the
//! `inventory_*` tables; writes nothing.
use rusqlite::{Connection, OptionalExtension as _, params};
use time::OffsetDateTime;

use super::{
    AddressRecord, AuditEntry, DeviceDetail, DeviceRecord, FingerprintKind, FingerprintRecord, FlowRecord,
    InventoryError, TrafficRecord, TrafficTotals, datetime,
};
use crate::{
    datapath::DeviceAccess,
    device::{Access, Mac},
};

/// Every device, most recently seen first.
pub fn devices(conn: &Connection) -> Result<Vec<DeviceRecord>, InventoryError> {
    let mut statement = conn.prepare(&format!("{DEVICE_SELECT} ORDER BY d.last_seen DESC, d.mac"))?;
    let rows = statement.query_map([], device_row)?.collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(|row| finish_device(conn, row)).collect()
}

/// A device as it is after a change (`changed_since`).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Its place in the store's order of changes (schema migration 6).
    pub seq: i64,
    /// When it changed (unix ms); grows with every change of the device.
    pub changed_ms: i64,
    pub device: DeviceRecord,
}

/// Devices whose last change came after change `after`, in the order they changed, at most
/// `limit`: each once, as it is now, however often it changed.
pub fn changed_since(conn: &Connection, after: i64, limit: usize) -> Result<Vec<Change>, InventoryError> {
    let mut statement = conn.prepare_cached(
        "SELECT change_seq, changed_ms, mac FROM inventory_devices WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2",
    )?;
    let changed = statement
        .query_map(params![after, limit as i64], |row| {
            Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get::<_, String>(2)?))
        })?
        .collect::<Result<Vec<(i64, i64, String)>, _>>()?;
    let mut select = conn.prepare_cached(&format!("{DEVICE_SELECT} WHERE d.mac = ?1"))?;
    let mut out = Vec::with_capacity(changed.len());
    for (seq, changed_ms, mac) in changed {
        let row = select.query_row([&mac], device_row)?;
        out.push(Change { seq, changed_ms, device: finish_device(conn, row)? });
    }
    Ok(out)
}

/// One device with its addresses and fingerprints, or `None` if never seen.
pub fn device(conn: &Connection, mac: Mac) -> Result<Option<DeviceDetail>, InventoryError> {
    let row = conn.query_row(&format!("{DEVICE_SELECT} WHERE d.mac = ?1"), [mac.to_string()], device_row).optional()?;
    let Some(row) = row else { return Ok(None) };
    let device = finish_device(conn, row)?;
    let mut statement = conn.prepare(
        "SELECT ip, first_seen, last_seen FROM inventory_addresses WHERE mac = ?1 ORDER BY last_seen DESC, ip",
    )?;
    let addresses = statement
        .query_map([mac.to_string()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(ip, first, last)| {
            let ip = ip
                .parse()
                .map_err(|_| InventoryError::Corrupt { mac: mac.to_string(), reason: format!("address {ip:?}") })?;
            Ok(AddressRecord { ip, first_seen: datetime(first), last_seen: datetime(last) })
        })
        .collect::<Result<Vec<_>, InventoryError>>()?;
    let mut statement = conn.prepare(
        "SELECT kind, value, detail, first_seen, last_seen, count FROM inventory_fingerprints
         WHERE mac = ?1 ORDER BY kind, first_seen, value",
    )?;
    let fingerprints = statement
        .query_map([mac.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(kind, value, detail, first, last, count)| {
            let kind = FingerprintKind::parse(&kind).ok_or_else(|| InventoryError::Corrupt {
                mac: mac.to_string(),
                reason: format!("fingerprint kind {kind:?}"),
            })?;
            Ok(FingerprintRecord {
                kind,
                value,
                detail,
                first_seen: datetime(first),
                last_seen: datetime(last),
                count: u64::try_from(count).unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, InventoryError>>()?;
    Ok(Some(DeviceDetail { device, addresses, fingerprints }))
}

/// The device's most recent flows, newest first, at most `limit`.
pub fn flows(conn: &Connection, mac: Mac, limit: usize) -> Result<Vec<FlowRecord>, InventoryError> {
    let mut statement = conn.prepare(
        "SELECT time, src, dst, src_port, dst_port, proto, frame_bytes, verdict, reason FROM inventory_flows
         WHERE mac = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = statement
        .query_map(params![mac.to_string(), i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, u16>(3)?,
                row.get::<_, u16>(4)?,
                row.get::<_, u8>(5)?,
                row.get::<_, u32>(6)?,
                row.get::<_, u8>(7)?,
                row.get::<_, u32>(8)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(time, src, dst, src_port, dst_port, proto, frame_bytes, verdict, reason)| {
            let corrupt = |what: &str| InventoryError::Corrupt { mac: mac.to_string(), reason: format!("flow {what}") };
            Ok(FlowRecord {
                time: datetime(time),
                src: src.parse().map_err(|_| corrupt("source"))?,
                dst: dst.parse().map_err(|_| corrupt("destination"))?,
                src_port,
                dst_port,
                proto,
                frame_bytes,
                verdict: gateway_ebpf::verdict::name(verdict).to_owned(),
                reason: gateway_ebpf::reason::name(reason).to_owned(),
            })
        })
        .collect()
}

/// The device's traffic buckets, newest first, at most `limit`.
pub fn traffic(conn: &Connection, mac: Mac, limit: usize) -> Result<Vec<TrafficRecord>, InventoryError> {
    let mut statement = conn.prepare(
        "SELECT start, seconds, tx_bytes, tx_packets, rx_bytes, rx_packets FROM inventory_traffic
         WHERE mac = ?1 ORDER BY start DESC LIMIT ?2",
    )?;
    let rows = statement
        .query_map(params![mac.to_string(), i64::try_from(limit).unwrap_or(i64::MAX)], traffic_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The device's traffic buckets starting in `[since, until)`, oldest first: the newest
/// `limit` of them when there are more.
pub fn traffic_between(
    conn: &Connection,
    mac: Mac,
    since: OffsetDateTime,
    until: OffsetDateTime,
    limit: usize,
) -> Result<Vec<TrafficRecord>, InventoryError> {
    let mut statement = conn.prepare_cached(
        "SELECT start, seconds, tx_bytes, tx_packets, rx_bytes, rx_packets FROM (
            SELECT * FROM inventory_traffic WHERE mac = ?1 AND start >= ?2 AND start < ?3
            ORDER BY start DESC LIMIT ?4) ORDER BY start",
    )?;
    let (since, until) = (super::millis(since.into()), super::millis(until.into()));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map(params![mac.to_string(), since, until, limit], traffic_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn traffic_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TrafficRecord> {
    let unsigned = |i: usize| row.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or_default());
    Ok(TrafficRecord {
        start: datetime(row.get(0)?),
        seconds: row.get(1)?,
        tx_bytes: unsigned(2)?,
        tx_packets: unsigned(3)?,
        rx_bytes: unsigned(4)?,
        rx_packets: unsigned(5)?,
    })
}

/// Audit entries, newest first, at most `limit`: of one device, or all (`None`).
pub fn audit_log(conn: &Connection, mac: Option<Mac>, limit: usize) -> Result<Vec<AuditEntry>, InventoryError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match mac {
        Some(mac) => conn
            .prepare("SELECT id, time, actor, mac, action, detail FROM inventory_audit WHERE mac = ?1 ORDER BY id DESC LIMIT ?2")?
            .query_map(params![mac.to_string(), limit], audit_row)?
            .collect::<Result<Vec<_>, _>>()?,
        None => conn
            .prepare("SELECT id, time, actor, mac, action, detail FROM inventory_audit ORDER BY id DESC LIMIT ?1")?
            .query_map([limit], audit_row)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    rows.into_iter().map(finish_audit).collect()
}

/// An audit row as stored: `SELECT id, time, actor, mac, action, detail`.
pub(super) type AuditRow = (i64, i64, String, Option<String>, String, String);

pub(super) fn audit_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
}

pub(super) fn finish_audit((id, time, actor, mac, action, detail): AuditRow) -> Result<AuditEntry, InventoryError> {
    let mac = mac
        .map(|text| text.parse().map_err(|_| InventoryError::Corrupt { mac: text.clone(), reason: "audit MAC".into() }))
        .transpose()?;
    Ok(AuditEntry { id, time: datetime(time), actor, mac, action, detail })
}

/// The classifier's guess for every device that has one, as (name, confidence) per level
/// present: product, vendor, generic type (what policy classes match by), in one query.
pub fn type_levels(conn: &Connection) -> Result<std::collections::HashMap<Mac, Vec<(String, f64)>>, InventoryError> {
    let mut statement = conn.prepare(
        "SELECT mac, device_type, type_confidence, type_vendor, type_vendor_confidence, generic_type,
         generic_confidence FROM inventory_devices
         WHERE device_type IS NOT NULL OR type_vendor IS NOT NULL OR generic_type IS NOT NULL",
    )?;
    let mut levels = std::collections::HashMap::new();
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let Ok(mac) = row.get::<_, String>(0)?.parse::<Mac>() else { continue };
        let named = [(row.get(1)?, row.get(2)?), (row.get(3)?, row.get(4)?), (row.get(5)?, row.get(6)?)]
            .into_iter()
            .filter_map(|(name, confidence): (Option<String>, Option<f64>)| Some((name?, confidence.unwrap_or(0.0))))
            .collect();
        levels.insert(mac, named);
    }
    Ok(levels)
}

/// What the datapath must enforce, as recorded by `Inventory::record_access`: every device
/// whose access is not `unknown`, in MAC order, with its policy and class.
pub fn enforced(conn: &Connection) -> Result<Vec<(Mac, DeviceAccess)>, InventoryError> {
    let rows = conn
        .prepare(
            "SELECT mac, access, policy_id, class_id FROM inventory_devices WHERE access != 'unknown' ORDER BY mac",
        )?
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, i64>(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(mac_text, access, policy_id, class_id)| {
            let corrupt = |reason: String| InventoryError::Corrupt { mac: mac_text.clone(), reason };
            let mac: Mac = mac_text.parse().map_err(|e: crate::device::ParseMacError| corrupt(e.to_string()))?;
            let access: Access = access.parse().map_err(corrupt)?;
            let policy_id = u32::try_from(policy_id).map_err(|_| corrupt(format!("policy id {policy_id}")))?;
            let class_id = u16::try_from(class_id).map_err(|_| corrupt(format!("class id {class_id}")))?;
            Ok((mac, DeviceAccess { access, policy_id, class_id }))
        })
        .collect()
}

pub(super) fn finish_device(conn: &Connection, row: DeviceRow) -> Result<DeviceRecord, InventoryError> {
    let corrupt = |reason: String| InventoryError::Corrupt { mac: row.mac.clone(), reason };
    let mac: Mac = row.mac.parse().map_err(|e: crate::device::ParseMacError| corrupt(e.to_string()))?;
    let access: Access = row.access.parse().map_err(corrupt)?;
    let mut statement =
        conn.prepare_cached("SELECT ip FROM inventory_addresses WHERE mac = ?1 ORDER BY last_seen DESC, ip")?;
    let ips = statement
        .query_map([&row.mac], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let unsigned = |v: i64| u64::try_from(v).unwrap_or_default();
    Ok(DeviceRecord {
        mac,
        first_seen: datetime(row.first_seen),
        last_seen: datetime(row.last_seen),
        vendor: row.vendor,
        locally_administered: row.locally_administered,
        hostname: row.hostname,
        device_type: row.device_type,
        type_confidence: row.type_confidence,
        type_vendor: row.type_vendor,
        type_vendor_confidence: row.type_vendor_confidence,
        generic_type: row.generic_type,
        generic_confidence: row.generic_confidence,
        access,
        lifecycle: row.lifecycle,
        class: row.class,
        firmware_version: row.firmware_version,
        cert_subject: row.cert_subject,
        device_id: row.device_id,
        ips,
        flows_total: unsigned(row.flows_total),
        traffic: TrafficTotals {
            tx_bytes: unsigned(row.traffic[0]),
            tx_packets: unsigned(row.traffic[1]),
            rx_bytes: unsigned(row.traffic[2]),
            rx_packets: unsigned(row.traffic[3]),
        },
    })
}

pub(super) const DEVICE_SELECT: &str =
    "SELECT d.mac, d.first_seen, d.last_seen, d.vendor, d.locally_administered, d.hostname,
    d.device_type, d.type_confidence, d.access, d.lifecycle, d.class, d.firmware_version, d.cert_subject,
    d.device_id, d.flows_total,
    COALESCE((SELECT SUM(tx_bytes) FROM inventory_traffic t WHERE t.mac = d.mac), 0),
    COALESCE((SELECT SUM(tx_packets) FROM inventory_traffic t WHERE t.mac = d.mac), 0),
    COALESCE((SELECT SUM(rx_bytes) FROM inventory_traffic t WHERE t.mac = d.mac), 0),
    COALESCE((SELECT SUM(rx_packets) FROM inventory_traffic t WHERE t.mac = d.mac), 0),
    d.type_vendor, d.type_vendor_confidence, d.generic_type, d.generic_confidence
    FROM inventory_devices d";

pub(super) struct DeviceRow {
    mac: String,
    first_seen: i64,
    last_seen: i64,
    vendor: Option<String>,
    locally_administered: bool,
    hostname: Option<String>,
    device_type: Option<String>,
    type_confidence: Option<f64>,
    access: String,
    lifecycle: Option<String>,
    class: Option<String>,
    firmware_version: Option<String>,
    cert_subject: Option<String>,
    device_id: Option<String>,
    flows_total: i64,
    traffic: [i64; 4],
    type_vendor: Option<String>,
    type_vendor_confidence: Option<f64>,
    generic_type: Option<String>,
    generic_confidence: Option<f64>,
}

pub(super) fn device_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        mac: row.get(0)?,
        first_seen: row.get(1)?,
        last_seen: row.get(2)?,
        vendor: row.get(3)?,
        locally_administered: row.get(4)?,
        hostname: row.get(5)?,
        device_type: row.get(6)?,
        type_confidence: row.get(7)?,
        access: row.get(8)?,
        lifecycle: row.get(9)?,
        class: row.get(10)?,
        firmware_version: row.get(11)?,
        cert_subject: row.get(12)?,
        device_id: row.get(13)?,
        flows_total: row.get(14)?,
        traffic: [row.get(15)?, row.get(16)?, row.get(17)?, row.get(18)?],
        type_vendor: row.get(19)?,
        type_vendor_confidence: row.get(20)?,
        generic_type: row.get(21)?,
        generic_confidence: row.get(22)?,
    })
}
