//! A batch's events into `events`, and its alerts into their incidents' `alerts` rows, with one
//! statement each (`UNNEST` of column arrays): events are most of what gateways send, and a
//! round trip per event would cap ingest at a few thousand a second.
//!
//! An event already stored (same site, gateway and seq) is left alone, and only the alerts
//! whose event row is new count into their incident, so storing a batch again changes nothing.
//! The insert is built, its values encoded, before the batch's transaction (`insert`); which
//! alerts count is known only from what it returns.
use std::collections::{BTreeMap, HashSet};

use sqlx::{PgConnection, Postgres, Row as _, postgres::PgArguments, query::Query, types::Json};
use time::OffsetDateTime;

use crate::event::{EventKind, GatewayEvent};

/// One event of a report.
pub struct Reported<'a> {
    pub site: &'a str,
    pub gateway: &'a str,
    pub seq: i64,
    pub event: &'a GatewayEvent,
}

/// The insert of a batch's events, its values encoded; it returns the keys of the new rows.
pub struct Insert(Query<'static, Postgres, PgArguments>);

/// The insert of `events`, `None` when there are none.
pub fn insert(events: &[Reported<'_>]) -> Option<Insert> {
    if events.is_empty() {
        return None;
    }
    let insert = sqlx::query(
        "INSERT INTO events (site, gateway, seq, event_id, kind, severity, time, mac, actor, body)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int2[],
                              $7::timestamptz[], $8::text[], $9::text[], $10::jsonb[])
         ON CONFLICT (site, gateway, seq) DO NOTHING
         RETURNING site, gateway, seq",
    )
    .bind(events.iter().map(|e| e.site).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.gateway).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event.id.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event.kind_name()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| severity(e.event)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event.time).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event.device.map(|mac| mac.to_string())).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event.actor.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| Json(e.event)).collect::<Vec<_>>());
    Some(Insert(insert))
}

/// Runs `insert` (of `events`) and counts its new alerts into their incidents; returns how many
/// events were stored already (or twice in the batch).
pub async fn store(conn: &mut PgConnection, insert: Insert, events: &[Reported<'_>]) -> Result<u64, sqlx::Error> {
    let mut new = HashSet::new();
    for row in insert.0.fetch_all(&mut *conn).await? {
        new.insert((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?, row.try_get::<i64, _>(2)?));
    }
    let duplicates = (events.len() - new.len()) as u64;
    // An event twice in the batch was inserted once: it counts into its incident once.
    let new_alerts = events.iter().filter(|e| new.remove(&(e.site.to_owned(), e.gateway.to_owned(), e.seq)));
    upsert_alerts(conn, incidents(new_alerts)).await?;
    Ok(duplicates)
}

/// What a batch adds to one incident's `alerts` row.
struct Incident<'a> {
    mac: Option<String>,
    detector: &'a str,
    severity: i16,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
    count: i64,
    /// Of the incident's latest alert in the batch.
    ended: bool,
    latest: &'a GatewayEvent,
}

type IncidentKey<'a> = (&'a str, &'a str, &'a str);

/// The batch's new alerts folded per (site, gateway, incident): one statement may touch each
/// `alerts` row only once.
fn incidents<'a>(events: impl Iterator<Item = &'a Reported<'a>>) -> BTreeMap<IncidentKey<'a>, Incident<'a>> {
    let mut incidents = BTreeMap::new();
    for reported in events {
        let event = reported.event;
        let EventKind::Alert { incident_id, detector, resolved, .. } = &event.kind else { continue };
        let (first_seen, last_seen) = event.repeat.map_or((event.time, event.time), |r| (r.first_seen, r.last_seen));
        let alert = Incident {
            mac: event.device.map(|mac| mac.to_string()),
            detector,
            severity: severity(event),
            first_seen,
            last_seen,
            count: i64::try_from(event.count()).unwrap_or(i64::MAX),
            ended: *resolved,
            latest: event,
        };
        let key = (reported.site, reported.gateway, incident_id.as_str());
        incidents
            .entry(key)
            .and_modify(|incident: &mut Incident<'a>| {
                incident.mac = incident.mac.take().or(alert.mac.clone());
                incident.severity = incident.severity.max(alert.severity);
                incident.first_seen = incident.first_seen.min(alert.first_seen);
                incident.count = incident.count.saturating_add(alert.count);
                if alert.last_seen >= incident.last_seen {
                    (incident.last_seen, incident.ended, incident.latest) =
                        (alert.last_seen, alert.ended, alert.latest);
                }
            })
            .or_insert(alert);
    }
    incidents
}

/// Adds the batch's alerts to their incidents: counts add up, the worst severity stays, the
/// latest alert says whether the incident ended.
async fn upsert_alerts(
    conn: &mut PgConnection,
    incidents: BTreeMap<IncidentKey<'_>, Incident<'_>>,
) -> Result<(), sqlx::Error> {
    if incidents.is_empty() {
        return Ok(());
    }
    let (keys, incidents): (Vec<_>, Vec<_>) = incidents.into_iter().unzip();
    sqlx::query(
        "INSERT INTO alerts (site, gateway, incident_id, mac, detector, severity, first_seen, last_seen, count,
                             ended, latest)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[],
                              $7::timestamptz[], $8::timestamptz[], $9::int8[], $10::bool[], $11::jsonb[])
         ON CONFLICT (site, gateway, incident_id) DO UPDATE SET
           mac = COALESCE(alerts.mac, excluded.mac),
           severity = GREATEST(alerts.severity, excluded.severity),
           first_seen = LEAST(alerts.first_seen, excluded.first_seen),
           count = alerts.count + excluded.count,
           ended = CASE WHEN excluded.last_seen >= alerts.last_seen THEN excluded.ended ELSE alerts.ended END,
           latest = CASE WHEN excluded.last_seen >= alerts.last_seen THEN excluded.latest ELSE alerts.latest END,
           last_seen = GREATEST(alerts.last_seen, excluded.last_seen)",
    )
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .bind(incidents.iter().map(|i| i.mac.clone()).collect::<Vec<_>>())
    .bind(incidents.iter().map(|i| i.detector).collect::<Vec<_>>())
    .bind(incidents.iter().map(|i| i.severity).collect::<Vec<_>>())
    .bind(incidents.iter().map(|i| i.first_seen).collect::<Vec<_>>())
    .bind(incidents.iter().map(|i| i.last_seen).collect::<Vec<_>>())
    .bind(incidents.iter().map(|i| i.count).collect::<Vec<_>>())
    .bind(incidents.iter().map(|i| i.ended).collect::<Vec<_>>())
    .bind(incidents.iter().map(|i| Json(i.latest)).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

fn severity(event: &GatewayEvent) -> i16 {
    // 0..=4: fits.
    event.severity.rank() as i16
}
