//! A batch's inventory snapshots into `gateway_devices`, `fleet_devices` and `device_locations`,
//! with one statement per table (`UNNEST` of column arrays): a round trip per snapshot and table
//! would cap ingest at a few thousand snapshots a second.
//!
//! `ON CONFLICT` may touch a row only once per statement, so the batch is first folded per row,
//! by the same rules each statement then applies against the stored row: a snapshot with a newer
//! `changed_ms` wins its `gateway_devices` row; a fleet device is where it was seen last; a
//! location keeps its first and last sighting. The rules only ever move towards the newest, so
//! storing a batch again changes nothing, and an update that would change nothing is skipped
//! (no new row version, no index entries).
//!
//! A fleet device carries the access state of the gateway that saw it last (its
//! `gateway_devices` row), for the device list by state and the status' counts (migration
//! 0005): the upsert takes it with the place, and one statement then settles the batch's devices
//! whose row at that place changed state without the place changing.
//!
//! The statements are built, their values encoded, before the batch's transaction (`prepare`):
//! none of them depends on what another returns.
use std::collections::{BTreeMap, btree_map::Entry};

use sqlx::{PgConnection, Postgres, postgres::PgArguments, query::Query, types::Json};
use time::OffsetDateTime;

use crate::{device::Mac, inventory::records::DeviceRecord};

/// One inventory snapshot of a report.
pub struct Snapshot<'a> {
    pub site: &'a str,
    pub gateway: &'a str,
    pub changed_ms: i64,
    pub device: &'a DeviceRecord,
}

type Statement = Query<'static, Postgres, PgArguments>;

/// A batch's snapshots as the statements that store them, in the order they run.
pub struct Prepared([Statement; 4]);

/// The statements storing `snapshots` (in batch order), `None` when there are none.
pub fn prepare(snapshots: &[Snapshot<'_>]) -> Option<Prepared> {
    if snapshots.is_empty() {
        return None;
    }
    let devices = fleet_devices(snapshots);
    let macs: Vec<String> = devices.keys().map(Mac::to_string).collect();
    Some(Prepared([
        // First: `fleet_devices` points at the gateway's row (foreign key `fleet_devices_seen_at`).
        upsert_gateway_devices(newest_per_gateway_device(snapshots)),
        upsert_fleet_devices(&macs, devices),
        settle_access(&macs),
        upsert_locations(locations(snapshots)),
    ]))
}

/// Stores the snapshots `prepared` holds into the three tables.
pub async fn store(conn: &mut PgConnection, prepared: Prepared) -> Result<(), sqlx::Error> {
    for statement in prepared.0 {
        statement.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The snapshot each gateway's row takes: the newest `changed_ms`, the first of a tie (as the
/// statement keeps the stored row on a tie).
fn newest_per_gateway_device<'s, 'a>(snapshots: &'s [Snapshot<'a>]) -> Vec<&'s Snapshot<'a>> {
    let mut newest: BTreeMap<(&str, &str, Mac), &Snapshot<'_>> = BTreeMap::new();
    for snapshot in snapshots {
        newest
            .entry((snapshot.site, snapshot.gateway, snapshot.device.mac))
            .and_modify(|kept| {
                if snapshot.changed_ms > kept.changed_ms {
                    *kept = snapshot;
                }
            })
            .or_insert(snapshot);
    }
    newest.into_values().collect()
}

fn upsert_gateway_devices(rows: Vec<&Snapshot<'_>>) -> Statement {
    sqlx::query(
        "INSERT INTO gateway_devices (site, gateway, mac, changed_ms, last_seen, access, device_type, vendor,
                                      hostname, cert_subject, record, type_vendor, generic_type)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::timestamptz[], $6::text[],
                              $7::text[], $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::text[], $13::text[])
         ON CONFLICT (site, gateway, mac) DO UPDATE SET
           changed_ms = excluded.changed_ms, last_seen = excluded.last_seen, access = excluded.access,
           device_type = excluded.device_type, vendor = excluded.vendor, hostname = excluded.hostname,
           cert_subject = excluded.cert_subject, record = excluded.record, type_vendor = excluded.type_vendor,
           generic_type = excluded.generic_type
         WHERE excluded.changed_ms > gateway_devices.changed_ms",
    )
    .bind(rows.iter().map(|s| s.site).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.gateway).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.device.mac.to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.changed_ms).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.device.last_seen).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.device.access.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.device.device_type.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.device.vendor.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.device.hostname.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.device.cert_subject.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| Json(s.device)).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.device.type_vendor.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.device.generic_type.as_deref()).collect::<Vec<_>>())
}

/// A fleet device as the batch saw it.
#[derive(Debug, PartialEq)]
struct FleetDevice<'a> {
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
    site: &'a str,
    gateway: &'a str,
    cert_subject: Option<&'a str>,
    access: &'static str,
}

impl<'a> FleetDevice<'a> {
    fn of(snapshot: &Snapshot<'a>) -> Self {
        let device = snapshot.device;
        FleetDevice {
            first_seen: device.first_seen,
            last_seen: device.last_seen,
            site: snapshot.site,
            gateway: snapshot.gateway,
            cert_subject: device.cert_subject.as_deref(),
            access: device.access.as_str(),
        }
    }

    /// `upsert_fleet_devices`'s rules: where it was seen last (a tie keeps the first), its
    /// certificate from a sighting at least as new.
    fn merge(&mut self, later: Self) {
        self.first_seen = self.first_seen.min(later.first_seen);
        if later.last_seen >= self.last_seen {
            self.cert_subject = later.cert_subject.or(self.cert_subject);
        }
        if later.last_seen > self.last_seen {
            (self.site, self.gateway, self.last_seen, self.access) =
                (later.site, later.gateway, later.last_seen, later.access);
        }
    }
}

fn fleet_devices<'a>(snapshots: &[Snapshot<'a>]) -> BTreeMap<Mac, FleetDevice<'a>> {
    let mut devices: BTreeMap<Mac, FleetDevice<'a>> = BTreeMap::new();
    for snapshot in snapshots {
        let seen = FleetDevice::of(snapshot);
        match devices.entry(snapshot.device.mac) {
            Entry::Occupied(mut entry) => entry.get_mut().merge(seen),
            Entry::Vacant(entry) => {
                entry.insert(seen);
            }
        }
    }
    devices
}

/// `macs`: the keys of `devices`, in order.
fn upsert_fleet_devices(macs: &[String], devices: BTreeMap<Mac, FleetDevice<'_>>) -> Statement {
    let devices: Vec<_> = devices.into_values().collect();
    sqlx::query(
        "INSERT INTO fleet_devices (mac, first_seen, last_seen, site, gateway, cert_subject, access)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                              $7::text[])
         ON CONFLICT (mac) DO UPDATE SET
           first_seen = LEAST(fleet_devices.first_seen, excluded.first_seen),
           site = CASE WHEN excluded.last_seen > fleet_devices.last_seen THEN excluded.site ELSE fleet_devices.site END,
           gateway = CASE WHEN excluded.last_seen > fleet_devices.last_seen
                          THEN excluded.gateway ELSE fleet_devices.gateway END,
           access = CASE WHEN excluded.last_seen > fleet_devices.last_seen
                         THEN excluded.access ELSE fleet_devices.access END,
           cert_subject = CASE WHEN excluded.last_seen >= fleet_devices.last_seen
                               THEN COALESCE(excluded.cert_subject, fleet_devices.cert_subject)
                               ELSE fleet_devices.cert_subject END,
           last_seen = GREATEST(fleet_devices.last_seen, excluded.last_seen)
         WHERE excluded.first_seen < fleet_devices.first_seen OR excluded.last_seen > fleet_devices.last_seen
            OR (excluded.last_seen = fleet_devices.last_seen
                AND excluded.cert_subject IS DISTINCT FROM fleet_devices.cert_subject
                AND excluded.cert_subject IS NOT NULL)",
    )
    .bind(macs)
    .bind(devices.iter().map(|d| d.first_seen).collect::<Vec<_>>())
    .bind(devices.iter().map(|d| d.last_seen).collect::<Vec<_>>())
    .bind(devices.iter().map(|d| d.site).collect::<Vec<_>>())
    .bind(devices.iter().map(|d| d.gateway).collect::<Vec<_>>())
    .bind(devices.iter().map(|d| d.cert_subject).collect::<Vec<_>>())
    .bind(devices.iter().map(|d| d.access).collect::<Vec<_>>())
}

/// Gives each of `macs` the access state of its row at the gateway that saw it last, where the
/// upsert did not: that row took a newer snapshot (a quarantine, a release) while the fleet
/// device stayed where it was, or the batch's newest sighting was not its newest snapshot.
fn settle_access(macs: &[String]) -> Statement {
    sqlx::query(
        "UPDATE fleet_devices f SET access = g.access FROM gateway_devices g
         WHERE f.mac = ANY($1) AND g.site = f.site AND g.gateway = f.gateway AND g.mac = f.mac
           AND f.access <> g.access",
    )
    .bind(macs)
}

type LocationKey<'a> = (Mac, &'a str, &'a str);

/// Each gateway in a device's history: its first and last sighting in the batch.
fn locations<'a>(snapshots: &[Snapshot<'a>]) -> BTreeMap<LocationKey<'a>, (OffsetDateTime, OffsetDateTime)> {
    let mut locations = BTreeMap::new();
    for snapshot in snapshots {
        let device = snapshot.device;
        let span = locations
            .entry((device.mac, snapshot.site, snapshot.gateway))
            .or_insert((device.first_seen, device.last_seen));
        *span = (span.0.min(device.first_seen), span.1.max(device.last_seen));
    }
    locations
}

fn upsert_locations(locations: BTreeMap<LocationKey<'_>, (OffsetDateTime, OffsetDateTime)>) -> Statement {
    let (keys, spans): (Vec<_>, Vec<_>) = locations.into_iter().unzip();
    sqlx::query(
        "INSERT INTO device_locations (mac, site, gateway, first_seen, last_seen)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
         ON CONFLICT (mac, site, gateway) DO UPDATE SET
           first_seen = LEAST(device_locations.first_seen, excluded.first_seen),
           last_seen = GREATEST(device_locations.last_seen, excluded.last_seen)
         WHERE excluded.first_seen < device_locations.first_seen OR excluded.last_seen > device_locations.last_seen",
    )
    .bind(keys.iter().map(|k| k.0.to_string()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .bind(spans.iter().map(|s| s.0).collect::<Vec<_>>())
    .bind(spans.iter().map(|s| s.1).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minutes)
    }

    fn seen<'a>(site: &'a str, first: i64, last: i64, cert: Option<&'a str>) -> FleetDevice<'a> {
        FleetDevice {
            first_seen: at(first),
            last_seen: at(last),
            site,
            gateway: "gw",
            cert_subject: cert,
            access: "enrolled",
        }
    }

    #[test]
    fn a_fleet_device_is_where_it_was_seen_last_whatever_the_order() {
        let mut device = seen("b", 5, 60, None);
        device.merge(seen("a", 0, 10, Some("CN=old")));
        assert_eq!(device, seen("b", 0, 60, None), "an older sighting moves nothing but first_seen");
        device.merge(seen("c", 20, 60, Some("CN=x")));
        assert_eq!(device, seen("b", 0, 60, Some("CN=x")), "a tie keeps the place, takes the certificate");
        device.merge(seen("c", 20, 61, None));
        assert_eq!(device, seen("c", 0, 61, Some("CN=x")), "a newer sighting without one keeps it");
        device.merge(FleetDevice { access: "quarantined", ..seen("d", 30, 61, None) });
        assert_eq!(device.access, "enrolled", "a tie keeps the state of the place");
        device.merge(FleetDevice { access: "quarantined", ..seen("d", 30, 62, None) });
        assert_eq!((device.site, device.access), ("d", "quarantined"), "the state moves with the place");
    }
}
