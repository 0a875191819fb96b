//! One batch of checked reports into PostgreSQL, in one transaction, so that storing the same
//! reports again changes nothing:
//!
//! - every report: its gateway's `first_seen`/`last_seen` (by `sent_ms`);
//! - event: `events` keyed on (site, gateway, seq); an alert also counts into its incident's
//!   `alerts` row, only when its event row was new, so a redelivery never counts twice (all of
//!   the batch's events at once, `events`);
//! - inventory: `gateway_devices` (a newer `changed_ms` wins), `fleet_devices` (one per MAC,
//!   at the gateway that saw it last), `device_locations` (first and last sighting per
//!   gateway), and the certificate clone check (`hub::clone`);
//! - health: the gateway's `health` (a newer `sent_ms` wins);
//! - command result: the command's outcome, once, and only from the gateway it was sent to.
use std::{collections::BTreeMap, time::Duration};

use sqlx::{PgConnection, PgPool, types::Json};
use time::OffsetDateTime;

use super::{events, report::time_of_ms};
use crate::{
    fleet::wire::{Health, Report, ReportBody},
    hub::clone::{self, Sighting},
    inventory::records::DeviceRecord,
};

/// What a stored batch changed besides plain upserts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Events that were already stored (a redelivery or a republished report).
    pub duplicate_events: u64,
    /// Certificate clone alerts raised.
    pub clone_alerts: u64,
}

/// Stores `reports` in one transaction (nothing of them when it fails).
pub async fn store(pool: &PgPool, reports: &[Report], clone_window: Duration) -> Result<Stored, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut stored = Stored::default();
    touch_gateways(&mut tx, reports).await?;
    let reported: Vec<_> = reports
        .iter()
        .filter_map(|report| match &report.body {
            ReportBody::Event { seq, event } => {
                Some(events::Reported { site: &report.site, gateway: &report.gateway, seq: *seq, event })
            }
            _ => None,
        })
        .collect();
    stored.duplicate_events = events::store(&mut tx, &reported).await?;
    for report in reports {
        let (site, gateway) = (report.site.as_str(), report.gateway.as_str());
        match &report.body {
            ReportBody::Event { .. } => {}
            ReportBody::Inventory { changed_ms, device } => {
                upsert_device(&mut tx, site, gateway, *changed_ms, device).await?;
                if let Some(cert_subject) = &device.cert_subject {
                    let sighting =
                        Sighting { cert_subject, site, gateway, mac: device.mac, last_seen: device.last_seen };
                    if clone::check(&mut tx, &sighting, clone_window).await? {
                        stored.clone_alerts += 1;
                    }
                }
            }
            ReportBody::Health { health } => update_health(&mut tx, report, health).await?,
            ReportBody::CommandResult { result } => {
                crate::hub::commands::record_result(&mut *tx, &report.site, &report.gateway, result).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(stored)
}

/// Whether `error` is the database refusing the data (SQLSTATE class 22 data exception, 23
/// integrity constraint, 54 program limit) rather than being unreachable or busy: storing the
/// same report again would fail again.
pub fn is_data_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Encode(_) => true,
        sqlx::Error::Database(error) => {
            error.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23") || code.starts_with("54"))
        }
        _ => false,
    }
}

/// `gateways.first_seen`/`last_seen` from the reports' send times, one statement per gateway.
async fn touch_gateways(conn: &mut PgConnection, reports: &[Report]) -> Result<(), sqlx::Error> {
    // Owned keys: borrowed ones held across the awaits below would make the future not `Send`.
    let mut seen: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for report in reports {
        let key = (report.site.clone(), report.gateway.clone());
        let span = seen.entry(key).or_insert((report.sent_ms, report.sent_ms));
        *span = (span.0.min(report.sent_ms), span.1.max(report.sent_ms));
    }
    for ((site, gateway), (first_ms, last_ms)) in seen {
        sqlx::query(
            "INSERT INTO gateways (site, gateway, first_seen, last_seen) VALUES ($1, $2, $3, $4)
             ON CONFLICT (site, gateway) DO UPDATE SET
               first_seen = LEAST(gateways.first_seen, excluded.first_seen),
               last_seen = GREATEST(gateways.last_seen, excluded.last_seen)",
        )
        .bind(site)
        .bind(gateway)
        .bind(time(first_ms)?)
        .bind(time(last_ms)?)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The device as this gateway sees it (newer `changed_ms` wins), the fleet device, and this
/// gateway in its location history.
async fn upsert_device(
    conn: &mut PgConnection,
    site: &str,
    gateway: &str,
    changed_ms: i64,
    device: &DeviceRecord,
) -> Result<(), sqlx::Error> {
    let mac = device.mac.to_string();
    sqlx::query(
        "INSERT INTO gateway_devices (site, gateway, mac, changed_ms, last_seen, access, device_type, vendor,
                                      hostname, cert_subject, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (site, gateway, mac) DO UPDATE SET
           changed_ms = excluded.changed_ms, last_seen = excluded.last_seen, access = excluded.access,
           device_type = excluded.device_type, vendor = excluded.vendor, hostname = excluded.hostname,
           cert_subject = excluded.cert_subject, record = excluded.record
         WHERE excluded.changed_ms > gateway_devices.changed_ms",
    )
    .bind(site)
    .bind(gateway)
    .bind(&mac)
    .bind(changed_ms)
    .bind(device.last_seen)
    .bind(device.access.as_str())
    .bind(&device.device_type)
    .bind(&device.vendor)
    .bind(&device.hostname)
    .bind(&device.cert_subject)
    .bind(Json(device))
    .execute(&mut *conn)
    .await?;
    // Where the device is now: the gateway that saw it last (a tie keeps the first).
    sqlx::query(
        "INSERT INTO fleet_devices (mac, first_seen, last_seen, site, gateway, cert_subject)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (mac) DO UPDATE SET
           first_seen = LEAST(fleet_devices.first_seen, excluded.first_seen),
           site = CASE WHEN excluded.last_seen > fleet_devices.last_seen THEN excluded.site ELSE fleet_devices.site END,
           gateway = CASE WHEN excluded.last_seen > fleet_devices.last_seen
                          THEN excluded.gateway ELSE fleet_devices.gateway END,
           cert_subject = CASE WHEN excluded.last_seen >= fleet_devices.last_seen
                               THEN COALESCE(excluded.cert_subject, fleet_devices.cert_subject)
                               ELSE fleet_devices.cert_subject END,
           last_seen = GREATEST(fleet_devices.last_seen, excluded.last_seen)",
    )
    .bind(&mac)
    .bind(device.first_seen)
    .bind(device.last_seen)
    .bind(site)
    .bind(gateway)
    .bind(&device.cert_subject)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO device_locations (mac, site, gateway, first_seen, last_seen) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (mac, site, gateway) DO UPDATE SET
           first_seen = LEAST(device_locations.first_seen, excluded.first_seen),
           last_seen = GREATEST(device_locations.last_seen, excluded.last_seen)",
    )
    .bind(&mac)
    .bind(site)
    .bind(gateway)
    .bind(device.first_seen)
    .bind(device.last_seen)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The gateway's health, unless a newer report is stored already.
async fn update_health(conn: &mut PgConnection, report: &Report, health: &Health) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE gateways SET health = $3, health_ms = $4
         WHERE site = $1 AND gateway = $2 AND (health_ms IS NULL OR health_ms < $4)",
    )
    .bind(&report.site)
    .bind(&report.gateway)
    .bind(Json(health))
    .bind(report.sent_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Unix milliseconds as a time; out of range is the data's fault.
fn time(ms: i64) -> Result<OffsetDateTime, sqlx::Error> {
    time_of_ms(ms).ok_or_else(|| sqlx::Error::Encode(format!("time out of range: {ms} ms").into()))
}
