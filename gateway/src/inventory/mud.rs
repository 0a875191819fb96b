//! A device's MUD record: the URL it announced, what the last check said, and the MUD file
//! whose class it is on (`crate::mud` checks; this keeps and audits the result). Reads and
//! writes `inventory_mud`; audits through `ledger`.
use std::{collections::BTreeMap, net::IpAddr, time::SystemTime};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{InventoryError, datetime, ledger, millis, sanitize};
use crate::{device::Mac, policy::remote::MudDevice};

/// What a check of a device's MUD URL came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MudOutcome {
    /// The file passed every check and its class is the device's.
    Applied(MudFile),
    /// Why not (escaped where it quotes the device or the file); nothing else changed.
    Refused(String),
}

/// The MUD file a device's class comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MudFile {
    pub url: String,
    /// The class imported from it (`mud-<id>`) and its id.
    pub class: String,
    pub class_id: u16,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// Until when the cached file is used without fetching it again (its `cache-validity`
    /// within `[mud]` bounds).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub valid_until: OffsetDateTime,
    /// Subject of the certificate that signed it.
    pub signer: String,
}

/// `GET /api/v1/devices/{mac}`'s `mud`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MudRecord {
    /// The URL last announced, escaped.
    pub announced_url: String,
    /// `dhcpv4`, `dhcpv6` or `lldp`.
    pub channel: String,
    /// `applied` or `refused`.
    pub outcome: String,
    /// What was done, or exactly why not.
    pub detail: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub checked: OffsetDateTime,
    /// The file in force, if one ever passed.
    pub applied: Option<MudFile>,
}

/// Actor of the audit records MUD checks write.
pub const ACTOR_MUD: &str = "mud";

/// Records a check of `url` (as announced: escaped here) on `channel`, and audits it when
/// the outcome or the file in force changed. A refusal keeps the file in force.
pub fn record(
    conn: &Connection,
    mac: Mac,
    url: &str,
    channel: &str,
    outcome: &MudOutcome,
    detail: &str,
) -> Result<(), InventoryError> {
    let now = millis(SystemTime::now());
    let (url, detail) = (sanitize(url), sanitize(detail));
    ledger::in_transaction(conn, || {
        ledger::touch(conn, None, mac, now, ACTOR_MUD)?;
        let before = device(conn, mac)?;
        let kind = match outcome {
            MudOutcome::Applied(_) => "applied",
            MudOutcome::Refused(_) => "refused",
        };
        conn.execute(
            "INSERT INTO inventory_mud (mac, announced_url, channel, outcome, detail, checked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (mac) DO UPDATE SET announced_url = ?2, channel = ?3, outcome = ?4, detail = ?5, checked = ?6",
            params![mac.to_string(), url, channel, kind, detail, now],
        )?;
        if let MudOutcome::Applied(file) = outcome {
            conn.execute(
                "UPDATE inventory_mud SET applied_url = ?2, class = ?3, class_id = ?4, file_sha256 = ?5,
                 valid_until = ?6, signer = ?7 WHERE mac = ?1",
                params![
                    mac.to_string(),
                    sanitize(&file.url),
                    file.class,
                    file.class_id,
                    file.sha256,
                    file.valid_until.unix_timestamp() * 1_000,
                    sanitize(&file.signer)
                ],
            )?;
        }
        let after = device(conn, mac)?;
        let unchanged = before.as_ref().is_some_and(|before| {
            let same_file = before.applied.as_ref().map(|f| (&f.url, &f.sha256, &f.class))
                == after.as_ref().and_then(|a| a.applied.as_ref()).map(|f| (&f.url, &f.sha256, &f.class));
            (&before.announced_url, &before.outcome, &before.detail) == (&url, &kind.to_owned(), &detail) && same_file
        });
        if !unchanged {
            ledger::append(conn, ACTOR_MUD, Some(mac), &format!("mud_{kind}"), &format!("{url}: {detail}"))?;
        }
        Ok(())
    })
}

/// The device's MUD record, or `None` if it never announced a URL.
pub fn device(conn: &Connection, mac: Mac) -> Result<Option<MudRecord>, InventoryError> {
    let row = conn
        .query_row(
            "SELECT announced_url, channel, outcome, detail, checked, applied_url, class, class_id, file_sha256,
                    valid_until, signer
             FROM inventory_mud WHERE mac = ?1",
            [mac.to_string()],
            |row| {
                let applied = match (row.get::<_, Option<String>>(5)?, row.get::<_, Option<String>>(6)?) {
                    (Some(url), Some(class)) => Some(MudFile {
                        url,
                        class,
                        class_id: row.get::<_, Option<u16>>(7)?.unwrap_or_default(),
                        sha256: row.get::<_, Option<String>>(8)?.unwrap_or_default(),
                        valid_until: datetime(row.get::<_, Option<i64>>(9)?.unwrap_or_default()),
                        signer: row.get::<_, Option<String>>(10)?.unwrap_or_default(),
                    }),
                    _ => None,
                };
                Ok(MudRecord {
                    announced_url: row.get(0)?,
                    channel: row.get(1)?,
                    outcome: row.get(2)?,
                    detail: row.get(3)?,
                    checked: datetime(row.get(4)?),
                    applied,
                })
            },
        )
        .optional()?;
    Ok(row)
}

/// The id of the MUD class each device on one is on (the class step's input), in one query.
pub fn class_ids(conn: &Connection) -> Result<std::collections::HashMap<Mac, u16>, InventoryError> {
    let mut ids = std::collections::HashMap::new();
    let mut statement = conn.prepare("SELECT mac, class_id FROM inventory_mud WHERE class_id IS NOT NULL")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        if let Ok(mac) = row.get::<_, String>(0)?.parse::<Mac>() {
            ids.insert(mac, row.get(1)?);
        }
    }
    Ok(ids)
}

/// The devices on a MUD file's class, each with the URL of that file and its address last
/// seen in each family (older addresses may be another device's by now): what
/// `manufacturer:` and `model:` remotes reach (`policy::remote`). Sorted.
pub fn devices(conn: &Connection) -> Result<Vec<MudDevice>, InventoryError> {
    let mut statement = conn.prepare(
        "SELECT m.mac, m.applied_url, a.ip, a.last_seen FROM inventory_mud m JOIN inventory_addresses a USING (mac)
         WHERE m.applied_url IS NOT NULL",
    )?;
    // (mac, IPv6?) → (last seen, device): the latest address of each family.
    let mut latest: BTreeMap<(String, bool), (i64, MudDevice)> = BTreeMap::new();
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get::<_, i64>(3)?))
    })?;
    for row in rows {
        let (mac, mud_url, ip, last_seen) = row?;
        // The inventory writes addresses it parsed; anything else is not an address to open.
        let Ok(addr) = ip.parse::<IpAddr>() else { continue };
        let key = (mac, addr.is_ipv6());
        if latest.get(&key).is_none_or(|(seen, _)| *seen < last_seen) {
            latest.insert(key, (last_seen, MudDevice { addr, mud_url }));
        }
    }
    let mut devices: Vec<MudDevice> = latest.into_values().map(|(_, device)| device).collect();
    devices.sort_by(|a, b| (a.addr, &a.mud_url).cmp(&(b.addr, &b.mud_url)));
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        crate::store::open_in_memory(&[super::super::MIGRATIONS]).unwrap()
    }

    fn file(sha: &str) -> MudFile {
        MudFile {
            url: "https://mud.example.com/bulb.json".into(),
            class: "mud-49152".into(),
            class_id: 49152,
            sha256: sha.into(),
            valid_until: OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(),
            signer: "CN=MUD signer".into(),
        }
    }

    fn audit_actions(conn: &Connection) -> Vec<String> {
        let mut statement = conn.prepare("SELECT action FROM inventory_audit WHERE actor = 'mud' ORDER BY id").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_refusal_keeps_the_file_in_force_and_both_are_audited_once() {
        let conn = store();
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        let url = "https://mud.example.com/bulb.json";
        record(&conn, mac, url, "dhcpv4", &MudOutcome::Applied(file("aa")), "applied").unwrap();
        record(&conn, mac, url, "dhcpv4", &MudOutcome::Applied(file("aa")), "applied").unwrap();
        assert_eq!(class_ids(&conn).unwrap().get(&mac), Some(&49152));
        let evil = "https://evil.example/\n\u{202e}x";
        record(&conn, mac, evil, "dhcpv4", &MudOutcome::Refused("not allowed".into()), "not allowed").unwrap();
        let stored = device(&conn, mac).unwrap().unwrap();
        assert_eq!(stored.outcome, "refused");
        assert!(crate::untrusted::is_safe(&stored.announced_url), "{}", stored.announced_url);
        assert_eq!(stored.applied, Some(file("aa")), "a refusal changes nothing");
        assert_eq!(class_ids(&conn).unwrap().get(&mac), Some(&49152));
        assert_eq!(audit_actions(&conn), ["device_added", "mud_applied", "mud_refused"]);
        record(&conn, mac, url, "dhcpv4", &MudOutcome::Applied(file("bb")), "applied").unwrap();
        assert_eq!(device(&conn, mac).unwrap().unwrap().applied.unwrap().sha256, "bb");
        assert_eq!(audit_actions(&conn).len(), 4, "a new file is audited");
    }

    fn seen(conn: &Connection, mac: Mac, ip: &str, at: i64) {
        conn.execute(
            "INSERT INTO inventory_addresses (mac, ip, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (mac, ip) DO UPDATE SET last_seen = ?3",
            params![mac.to_string(), ip, at],
        )
        .unwrap();
    }

    fn listed(conn: &Connection) -> Vec<(String, String)> {
        devices(conn).unwrap().into_iter().map(|d| (d.addr.to_string(), d.mud_url)).collect()
    }

    #[test]
    fn devices_on_a_mud_class_are_listed_at_their_latest_address_per_family() {
        let conn = store();
        let (bulb, refused, plain) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]), Mac([2, 0, 0, 0, 0, 3]));
        let url = "https://mud.example.com/bulb.json";
        record(&conn, bulb, url, "dhcpv4", &MudOutcome::Applied(file("aa")), "applied").unwrap();
        record(&conn, refused, url, "dhcpv4", &MudOutcome::Refused("bad signature".into()), "bad").unwrap();
        crate::inventory::ledger::touch(&conn, None, plain, 1, "test").unwrap();
        for (mac, ip, at) in [
            (bulb, "10.77.0.40", 10),
            (bulb, "10.77.0.41", 20),
            (bulb, "2001:db8:77::40", 5),
            (refused, "10.77.0.50", 10),
            (plain, "10.77.0.60", 10),
        ] {
            seen(&conn, mac, ip, at);
        }
        // Only the device whose file is in force, at its newest address of each family.
        let one = |ip: &str| (ip.to_owned(), url.to_owned());
        assert_eq!(listed(&conn), [one("10.77.0.41"), one("2001:db8:77::40")]);
        // It moves: the entries follow.
        seen(&conn, bulb, "10.77.0.40", 30);
        assert_eq!(listed(&conn), [one("10.77.0.40"), one("2001:db8:77::40")]);
        // A new file at another URL: the device is listed under that one.
        let moved = MudFile { url: "https://mud.example.com/bulb2.json".into(), ..file("bb") };
        record(&conn, bulb, &moved.url.clone(), "dhcpv4", &MudOutcome::Applied(moved), "applied").unwrap();
        assert!(listed(&conn).iter().all(|(_, listed_url)| listed_url.ends_with("bulb2.json")));
        // It leaves the inventory: gone.
        conn.execute("DELETE FROM inventory_devices WHERE mac = ?1", [bulb.to_string()]).unwrap();
        assert!(listed(&conn).is_empty());
    }
}
