//! Certificate clones: one device certificate (its subject) active at two sites at once means
//! its key was copied. A device's certificate is issued for one device; a device can travel
//! between sites, but it cannot be seen at two of them within a few minutes.
//!
//! Checked by ingest for every inventory snapshot that carries a certificate subject, against
//! the latest snapshots of other sites (`gateway_devices`). A clone raises one hub alert in
//! `alerts` (at the site and gateway of the newer sighting, detector `certificate_clone`,
//! severity high) and a `hub_audit` row; its incident id names the subject and the two
//! gateways, so seeing the pair again (or storing the same reports again) raises nothing new.
use std::time::Duration;

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

/// Checks `sighting` against the other sites' latest sightings of its certificate; returns
/// whether a new clone alert was raised.
pub async fn check(conn: &mut PgConnection, sighting: &Sighting<'_>, window: Duration) -> Result<bool, sqlx::Error> {
    let window_secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    let other: Option<(String, String, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT site, gateway, mac, last_seen FROM gateway_devices
         WHERE cert_subject = $1 AND site <> $2
           AND last_seen BETWEEN $3 - make_interval(secs => $4) AND $3 + make_interval(secs => $4)
         ORDER BY last_seen DESC, site, gateway LIMIT 1",
    )
    .bind(sighting.cert_subject)
    .bind(sighting.site)
    .bind(sighting.last_seen)
    .bind(window_secs as f64)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((site, gateway, mac, last_seen)) = other else { return Ok(false) };
    let other = Sighting {
        cert_subject: sighting.cert_subject,
        site: &site,
        gateway: &gateway,
        // Written by ingest from a `Mac`: it parses.
        mac: mac.parse().unwrap_or(sighting.mac),
        last_seen,
    };
    let (older, newer) = if other.last_seen > sighting.last_seen { (sighting, &other) } else { (&other, sighting) };
    let incident_id = incident_id(sighting.cert_subject, [sighting, &other]);
    let evidence =
        Evidence { cert_subject: sighting.cert_subject, window_secs: window.as_secs(), sightings: [older, newer] };
    // One alert per incident, wherever it was first raised: seeing the pair again with the
    // newer sighting at the other gateway updates that row rather than opening a second.
    let raised = sqlx::query(
        "INSERT INTO alerts (site, gateway, incident_id, mac, detector, severity, first_seen, last_seen, count,
                             ended, latest)
         SELECT $1, $2, $3, $4, $5, $6, $7, $7, 1, FALSE, $8
         WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE detector = $5 AND incident_id = $3)
         ON CONFLICT (site, gateway, incident_id) DO NOTHING",
    )
    .bind(newer.site)
    .bind(newer.gateway)
    .bind(&incident_id)
    .bind(newer.mac.to_string())
    .bind(DETECTOR)
    .bind(Severity::High.rank() as i16)
    .bind(newer.last_seen)
    .bind(Json(&evidence))
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !raised {
        sqlx::query("UPDATE alerts SET last_seen = GREATEST(last_seen, $3) WHERE detector = $1 AND incident_id = $2")
            .bind(DETECTOR)
            .bind(&incident_id)
            .bind(newer.last_seen)
            .execute(&mut *conn)
            .await?;
        return Ok(false);
    }
    let detail = format!(
        "certificate {:?} active at {}/{} ({}) and {}/{} ({}) within {}s",
        sighting.cert_subject,
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
        cert_subject = %untrusted::escape(sighting.cert_subject),
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
