//! Certificate clones: one device certificate (its subject) active at two sites at once means
//! its key was copied. A device's certificate is issued for one device; a device can travel
//! between sites, but it cannot be seen at two of them within a few minutes.
//!
//! Checked by ingest for every inventory snapshot that carries a certificate subject, against
//! the latest snapshots of other sites (`gateway_devices`, the snapshot's own batch stored
//! already), a whole batch in one statement. A clone raises one hub alert in
//! `alerts` (at the site and gateway of the newer sighting, detector `certificate_clone`,
//! severity high) and a `hub_audit` row; its incident id names the subject and the two
//! gateways, so seeing the pair again (or storing the same reports again) raises nothing new.
use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;
use sqlx::{PgConnection, types::Json};
use time::OffsetDateTime;

use crate::{device::Mac, event::Severity, untrusted};

/// The alerts' `detector` and the audit's `action`.
pub const DETECTOR: &str = "certificate_clone";
/// Who the audit names for what the hub found itself.
pub const ACTOR: &str = "hub:ingest";

/// A device with a certificate, as one gateway saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sighting<'a> {
    pub cert_subject: &'a str,
    pub site: &'a str,
    pub gateway: &'a str,
    pub mac: Mac,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

/// What `alerts.latest` holds for a clone.
#[derive(Serialize)]
struct Evidence<'a> {
    cert_subject: &'a str,
    window_secs: u64,
    sightings: [&'a Sighting<'a>; 2],
}

/// Checks every one of `sightings` (a batch's, once its snapshots are stored) against the latest
/// snapshots of other sites, with one statement; returns how many new clone alerts were raised.
pub async fn check(conn: &mut PgConnection, sightings: &[Sighting<'_>], window: Duration) -> Result<u64, sqlx::Error> {
    if sightings.is_empty() {
        return Ok(0);
    }
    let window_secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    // For each sighting (its 1-based position `i`), the newest other-site sighting in the window.
    let matches: Vec<(i64, String, String, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT s.i, o.site, o.gateway, o.mac, o.last_seen
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS s(cert_subject, site, last_seen, i)
         CROSS JOIN LATERAL (
           SELECT g.site, g.gateway, g.mac, g.last_seen FROM gateway_devices g
           WHERE g.cert_subject = s.cert_subject AND g.site <> s.site
             AND g.last_seen BETWEEN s.last_seen - make_interval(secs => $4)
                                 AND s.last_seen + make_interval(secs => $4)
           ORDER BY g.last_seen DESC, g.site, g.gateway LIMIT 1) o
         ORDER BY s.i",
    )
    .bind(sightings.iter().map(|s| s.cert_subject).collect::<Vec<_>>())
    .bind(sightings.iter().map(|s| s.site).collect::<Vec<_>>())
    .bind(sightings.iter().map(|s| s.last_seen).collect::<Vec<_>>())
    .bind(window_secs as f64)
    .fetch_all(&mut *conn)
    .await?;
    // One statement may touch each incident's row once: the batch's pairs per incident.
    let mut incidents: BTreeMap<String, Incident<'_>> = BTreeMap::new();
    for (i, site, gateway, mac, last_seen) in &matches {
        let Some(sighting) = usize::try_from(*i - 1).ok().and_then(|i| sightings.get(i)) else { continue };
        let other = Sighting {
            cert_subject: sighting.cert_subject,
            site,
            gateway,
            // Written by ingest from a `Mac`: it parses.
            mac: mac.parse().unwrap_or(sighting.mac),
            last_seen: *last_seen,
        };
        let incident_id = incident_id(sighting.cert_subject, [sighting, &other]);
        let (older, newer) =
            if other.last_seen > sighting.last_seen { (sighting.clone(), other) } else { (other, sighting.clone()) };
        incidents
            .entry(incident_id)
            .and_modify(|incident| incident.latest = incident.latest.max(newer.last_seen))
            .or_insert(Incident { latest: newer.last_seen, older, newer });
    }
    let mut raised = 0;
    for (incident_id, incident) in &incidents {
        if raise(conn, incident_id, incident, window).await? {
            raised += 1;
        }
    }
    Ok(raised)
}

/// One clone incident as a batch found it: its first pair of sightings, and the newest
/// sighting of any of its pairs.
struct Incident<'a> {
    older: Sighting<'a>,
    newer: Sighting<'a>,
    latest: OffsetDateTime,
}

/// Raises the alert of `incident` unless it was raised before, in which case its `last_seen`
/// moves on; returns whether it was raised now.
async fn raise(
    conn: &mut PgConnection,
    incident_id: &str,
    incident: &Incident<'_>,
    window: Duration,
) -> Result<bool, sqlx::Error> {
    let Incident { older, newer, latest } = incident;
    let cert_subject = newer.cert_subject;
    let evidence = Evidence { cert_subject, window_secs: window.as_secs(), sightings: [older, newer] };
    // One alert per incident, wherever it was first raised: seeing the pair again with the
    // newer sighting at the other gateway updates that row rather than opening a second.
    let raised = sqlx::query(
        "INSERT INTO alerts (site, gateway, incident_id, mac, detector, severity, first_seen, last_seen, count,
                             ended, latest)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, 1, FALSE, $9
         WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE detector = $5 AND incident_id = $3)
         ON CONFLICT (site, gateway, incident_id) DO NOTHING",
    )
    .bind(newer.site)
    .bind(newer.gateway)
    .bind(incident_id)
    .bind(newer.mac.to_string())
    .bind(DETECTOR)
    .bind(Severity::High.rank() as i16)
    .bind(newer.last_seen)
    .bind(latest)
    .bind(Json(&evidence))
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !raised {
        sqlx::query("UPDATE alerts SET last_seen = GREATEST(last_seen, $3) WHERE detector = $1 AND incident_id = $2")
            .bind(DETECTOR)
            .bind(incident_id)
            .bind(latest)
            .execute(&mut *conn)
            .await?;
        return Ok(false);
    }
    let detail = format!(
        "certificate {:?} active at {}/{} ({}) and {}/{} ({}) within {}s",
        cert_subject,
        older.site,
        older.gateway,
        older.mac,
        newer.site,
        newer.gateway,
        newer.mac,
        window.as_secs()
    );
    sqlx::query(
        "INSERT INTO hub_audit (time, actor, action, site, gateway, mac, detail)
         VALUES (now(), $1, $2, $3, $4, $5, $6)",
    )
    .bind(ACTOR)
    .bind(DETECTOR)
    .bind(newer.site)
    .bind(newer.gateway)
    .bind(newer.mac.to_string())
    .bind(&detail)
    .execute(&mut *conn)
    .await?;
    tracing::warn!(
        cert_subject = %untrusted::escape(cert_subject),
        sites = %format!("{}/{} {}/{}", older.site, older.gateway, newer.site, newer.gateway),
        "certificate clone: one certificate active at two sites"
    );
    Ok(true)
}

/// `certificate_clone:<subject>:<site/gateway>+<site/gateway>`, the pair in sorted order, so
/// either sighting coming second names the same incident.
fn incident_id(cert_subject: &str, sightings: [&Sighting<'_>; 2]) -> String {
    let mut pair = sightings.map(|s| format!("{}/{}", s.site, s.gateway));
    pair.sort();
    format!("{DETECTOR}:{cert_subject}:{}+{}", pair[0], pair[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_incident_id_is_the_same_whichever_sighting_came_second() {
        let at = |site| Sighting {
            cert_subject: "CN=dev-1",
            site,
            gateway: "gw-1",
            mac: Mac([2, 0, 0, 0, 0, 1]),
            last_seen: OffsetDateTime::UNIX_EPOCH,
        };
        let (a, b) = (at("a"), at("b"));
        assert_eq!(incident_id("CN=dev-1", [&a, &b]), incident_id("CN=dev-1", [&b, &a]));
        assert_eq!(incident_id("CN=dev-1", [&a, &b]), "certificate_clone:CN=dev-1:a/gw-1+b/gw-1");
    }
}
