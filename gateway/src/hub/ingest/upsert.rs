//! One batch of checked reports into PostgreSQL, in one transaction, with one statement per
//! table (`UNNEST` of column arrays), so that storing the same reports again changes nothing:
//!
//! - every report: its gateway's `first_seen`/`last_seen` (by `sent_ms`, to the second: a
//!   gateway's row is written at most once a second however many reports it sends); a health
//!   report its `health` (a newer `sent_ms` wins);
//! - event: `events` keyed on (site, gateway, seq); an alert also counts into its incident's
//!   `alerts` row, only when its event row was new, so a redelivery never counts twice
//!   (`events`);
//! - inventory: `gateway_devices` (a newer `changed_ms` wins), `fleet_devices` (one per MAC,
//!   at the gateway that saw it last), `device_locations` (first and last sighting per
//!   gateway) (`inventory`), then, once committed, the certificate clone check of the batch
//!   (`hub::clone`) in a transaction of its own;
//! - command result: the command's outcome, once, and only from the gateway it was sent to
//!   (one statement each: results are rare).
//!
//! `prepare` builds the statements and encodes their values, which is this process's work,
//! before the transaction (ingest does it while the batch before is stored), so that `write`
//! holds the transaction open only for PostgreSQL's.
use std::{collections::BTreeMap, time::Duration};

use sqlx::{PgPool, Postgres, postgres::PgArguments, query::Query, types::Json};
use time::OffsetDateTime;

use super::{events, inventory, report::time_of_ms};
use crate::{
    fleet::wire::{CommandResult, Health, Report, ReportBody},
    hub::clone::{self, Sighting},
};

/// What a stored batch changed besides plain upserts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Events that were already stored (a redelivery or a republished report).
    pub duplicate_events: u64,
    /// Certificate clone alerts raised.
    pub clone_alerts: u64,
}

/// Stores `reports` in one transaction (nothing of them when it fails), then checks their
/// certificates for clones.
pub async fn store(pool: &PgPool, reports: &[Report], clone_window: Duration) -> Result<Stored, sqlx::Error> {
    let prepared = prepare(reports)?;
    write(pool, reports, prepared, clone_window).await
}

/// A batch's statements, their values encoded: all but those that depend on what another
/// returns (alerts, certificate clones) or are rare (command results).
pub struct Prepared {
    gateways: Query<'static, Postgres, PgArguments>,
    events: Option<events::Insert>,
    inventory: Option<inventory::Prepared>,
}

/// The statements storing `reports`; an error is the data's (a time out of range).
pub fn prepare(reports: &[Report]) -> Result<Prepared, sqlx::Error> {
    let parts = Parts::of(reports);
    Ok(Prepared {
        gateways: upsert_gateways(gateways(reports)?),
        events: events::insert(&parts.reported),
        inventory: inventory::prepare(&parts.snapshots),
    })
}

/// Stores `reports` in one transaction, with the statements `prepare` built from them.
pub async fn write(
    pool: &PgPool,
    reports: &[Report],
    prepared: Prepared,
    clone_window: Duration,
) -> Result<Stored, sqlx::Error> {
    let Parts { reported, snapshots, results } = Parts::of(reports);
    let sightings: Vec<_> = snapshots
        .iter()
        .filter_map(|s| {
            let device = s.device;
            let cert_subject = device.cert_subject.as_deref()?;
            Some(Sighting {
                cert_subject,
                site: s.site,
                gateway: s.gateway,
                mac: device.mac,
                last_seen: device.last_seen,
            })
        })
        .collect();

    let mut tx = pool.begin().await?;
    prepared.gateways.execute(&mut *tx).await?;
    let duplicate_events = match prepared.events {
        Some(insert) => events::store(&mut tx, insert, &reported).await?,
        None => 0,
    };
    if let Some(inventory) = prepared.inventory {
        inventory::store(&mut tx, inventory).await?;
    }
    for (site, gateway, result) in results {
        crate::hub::commands::record_result(&mut *tx, site, gateway, result).await?;
    }
    tx.commit().await?;
    // The certificate clone check, after the commit: two writers store two sites' batches at
    // once, and a check inside each transaction would see neither the other's sightings. The
    // later of two commits checks after both, and so sees the other's. A hub that dies before
    // it is unacknowledged: the batch comes again, changes nothing, and is checked again.
    let clone_alerts = if sightings.is_empty() {
        0
    } else {
        let mut tx = pool.begin().await?;
        let raised = clone::check(&mut tx, &sightings, clone_window).await?;
        tx.commit().await?;
        raised
    };
    Ok(Stored { duplicate_events, clone_alerts })
}

/// A batch's reports by kind, in batch order.
struct Parts<'a> {
    reported: Vec<events::Reported<'a>>,
    snapshots: Vec<inventory::Snapshot<'a>>,
    results: Vec<(&'a str, &'a str, &'a CommandResult)>,
}

impl<'a> Parts<'a> {
    fn of(reports: &'a [Report]) -> Self {
        let (mut reported, mut snapshots, mut results) = (Vec::new(), Vec::new(), Vec::new());
        for report in reports {
            let (site, gateway) = (report.site.as_str(), report.gateway.as_str());
            match &report.body {
                ReportBody::Event { seq, event } => {
                    reported.push(events::Reported { site, gateway, seq: *seq, event });
                }
                ReportBody::Inventory { changed_ms, device } => {
                    snapshots.push(inventory::Snapshot { site, gateway, changed_ms: *changed_ms, device });
                }
                ReportBody::Health { .. } => {}
                ReportBody::CommandResult { result } => results.push((site, gateway, result)),
            }
        }
        Parts { reported, snapshots, results }
    }
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

/// Whether `error` is PostgreSQL giving up on the transaction for another's sake (SQLSTATE
/// 40P01 deadlock detected, 40001 serialization failure): running it again succeeds.
pub fn is_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(error) if error.code().is_some_and(|code| code == "40P01" || code == "40001"))
}

/// What a batch says of one gateway: when it sent its first and last report (to the second,
/// `to_the_second`), and its newest health report (`sent_ms`, the report).
struct Gateway<'a> {
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
    health: Option<(i64, &'a Health)>,
}

/// The batch folded per gateway; the first of two health reports sent the same millisecond
/// wins, as the statement keeps the stored one on a tie.
fn gateways(reports: &[Report]) -> Result<BTreeMap<(&str, &str), Gateway<'_>>, sqlx::Error> {
    let mut gateways = BTreeMap::new();
    for report in reports {
        let sent = to_the_second(time(report.sent_ms)?);
        let gateway = gateways.entry((report.site.as_str(), report.gateway.as_str())).or_insert(Gateway {
            first_seen: sent,
            last_seen: sent,
            health: None,
        });
        (gateway.first_seen, gateway.last_seen) = (gateway.first_seen.min(sent), gateway.last_seen.max(sent));
        if let ReportBody::Health { health } = &report.body
            && gateway.health.is_none_or(|(kept_ms, _)| report.sent_ms > kept_ms)
        {
            gateway.health = Some((report.sent_ms, health));
        }
    }
    Ok(gateways)
}

/// The batch's gateways: a new one inserted; a known one updated only when the batch moves
/// one of its times or brings a newer health report. Under events spread over a thousand
/// gateways nearly every batch has a report of nearly every gateway: `INSERT .. ON CONFLICT DO
/// UPDATE` would lock (write) each of those rows even when its `WHERE` then keeps it, and
/// `last_seen` to the millisecond would move it every time (a `gateways` row per event: 9 % of
/// PostgreSQL's statement time, bench/fleet/RESULTS.md). The `UPDATE` touches only the rows
/// that change, and to the second a gateway's row changes once a second at most. The `INSERT`
/// takes the gateways not there when the statement started (one inserted meanwhile by another
/// writer meets the conflict clause).
fn upsert_gateways(gateways: BTreeMap<(&str, &str), Gateway<'_>>) -> Query<'static, Postgres, PgArguments> {
    let (keys, gateways): (Vec<_>, Vec<_>) = gateways.into_iter().unzip();
    sqlx::query(
        "WITH batch (site, gateway, first_seen, last_seen, health_ms, health) AS (
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::int8[], $6::jsonb[])
         ), moved AS (
           UPDATE gateways SET
             first_seen = LEAST(gateways.first_seen, b.first_seen),
             last_seen = GREATEST(gateways.last_seen, b.last_seen),
             health = CASE WHEN b.health_ms > gateways.health_ms OR gateways.health_ms IS NULL
                           THEN COALESCE(b.health, gateways.health) ELSE gateways.health END,
             health_ms = GREATEST(gateways.health_ms, b.health_ms)
           FROM batch b
           WHERE gateways.site = b.site AND gateways.gateway = b.gateway
             AND (b.first_seen < gateways.first_seen OR b.last_seen > gateways.last_seen
                  OR b.health_ms > gateways.health_ms
                  OR (gateways.health_ms IS NULL AND b.health_ms IS NOT NULL))
         )
         INSERT INTO gateways (site, gateway, first_seen, last_seen, health_ms, health)
         SELECT * FROM batch b
         WHERE NOT EXISTS (SELECT 1 FROM gateways g WHERE g.site = b.site AND g.gateway = b.gateway)
         ON CONFLICT (site, gateway) DO UPDATE SET
           first_seen = LEAST(gateways.first_seen, excluded.first_seen),
           last_seen = GREATEST(gateways.last_seen, excluded.last_seen),
           health = CASE WHEN excluded.health_ms > gateways.health_ms OR gateways.health_ms IS NULL
                         THEN COALESCE(excluded.health, gateways.health) ELSE gateways.health END,
           health_ms = GREATEST(gateways.health_ms, excluded.health_ms)
         WHERE excluded.first_seen < gateways.first_seen OR excluded.last_seen > gateways.last_seen
            OR excluded.health_ms > gateways.health_ms
            OR (gateways.health_ms IS NULL AND excluded.health_ms IS NOT NULL)",
    )
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(gateways.iter().map(|g| g.first_seen).collect::<Vec<_>>())
    .bind(gateways.iter().map(|g| g.last_seen).collect::<Vec<_>>())
    .bind(gateways.iter().map(|g| g.health.map(|(ms, _)| ms)).collect::<Vec<_>>())
    .bind(gateways.iter().map(|g| g.health.map(|(_, health)| Json(health))).collect::<Vec<_>>())
}

/// `time` without its fraction of a second (earlier times round down too: the fraction is
/// kept positive). A gateway's `first_seen` and `last_seen` are kept to the second, so that
/// they are the same whichever batches its reports came in.
fn to_the_second(time: OffsetDateTime) -> OffsetDateTime {
    time.replace_nanosecond(0).unwrap_or(time)
}

/// Unix milliseconds as a time; out of range is the data's fault.
fn time(ms: i64) -> Result<OffsetDateTime, sqlx::Error> {
    time_of_ms(ms).ok_or_else(|| sqlx::Error::Encode(format!("time out of range: {ms} ms").into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_times_are_kept_to_the_second_rounding_down() {
        let at = |ms| to_the_second(time(ms).unwrap());
        assert_eq!(at(1_780_000_000_999), time(1_780_000_000_000).unwrap());
        assert_eq!(at(1_780_000_000_000), time(1_780_000_000_000).unwrap());
        assert_eq!(at(-1_500), time(-2_000).unwrap(), "before 1970 too");
    }

    #[test]
    fn a_batch_folds_each_gateways_reports_to_the_second() {
        let health = |sent_ms| Report::new("s1", "gw-1", sent_ms, ReportBody::Health { health: Health::default() });
        let reports = [health(10_700), health(12_300), health(11_999)];
        let folded = gateways(&reports).unwrap();
        let gateway = &folded[&("s1", "gw-1")];
        assert_eq!((gateway.first_seen, gateway.last_seen), (time(10_000).unwrap(), time(12_000).unwrap()));
        assert_eq!(gateway.health.map(|(ms, _)| ms), Some(12_300), "the newest health report, to the ms");
    }
}
