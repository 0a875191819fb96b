//! Where a device connects: its retained flows grouped by destination address, port and
//! protocol, busiest first, each with the names the address was resolved from (the DNS answers
//! sent to the device, `inventory_resolutions`). Reads `inventory_flows` and
//! `inventory_resolutions` on the per-device index and primary key; writes nothing.
use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::{DestinationRecord, InventoryError, datetime};
use crate::device::Mac;

/// Names listed per destination at most (a CDN address may answer for many).
pub const MAX_NAMES_PER_DESTINATION: usize = 8;

/// The device's destinations, most flows first (then most bytes), at most `limit`.
pub fn destinations(conn: &Connection, mac: Mac, limit: usize) -> Result<Vec<DestinationRecord>, InventoryError> {
    let key = mac.to_string();
    let corrupt = |what: String| InventoryError::Corrupt { mac: key.clone(), reason: what };
    // A bare column beside MAX() takes the value of the row holding the maximum (SQLite), so
    // `verdict` is the latest flow's.
    let mut statement = conn.prepare_cached(
        "SELECT dst, dst_port, proto, COUNT(*) AS flows, SUM(frame_bytes) AS bytes, MAX(id), MAX(time), verdict
         FROM inventory_flows WHERE mac = ?1 GROUP BY dst, dst_port, proto
         ORDER BY flows DESC, bytes DESC, dst, dst_port, proto LIMIT ?2",
    )?;
    let rows = statement
        .query_map(params![key, i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u16>(1)?,
                row.get::<_, u8>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(6)?,
                row.get::<_, u8>(7)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let names = resolutions(conn, &key)?;
    rows.into_iter()
        .map(|(dst, dst_port, proto, flows, bytes, last_seen, verdict)| {
            let names = names.get(&dst).cloned().unwrap_or_default();
            Ok(DestinationRecord {
                dst: dst.parse().map_err(|_| corrupt(format!("flow destination {dst:?}")))?,
                dst_port,
                proto,
                names,
                flows: u64::try_from(flows).unwrap_or_default(),
                bytes: u64::try_from(bytes).unwrap_or_default(),
                last_seen: datetime(last_seen),
                verdict: gateway_ebpf::verdict::name(verdict).to_owned(),
            })
        })
        .collect()
}

/// The device's resolved names by address text, most recently answered first.
fn resolutions(conn: &Connection, mac: &str) -> Result<HashMap<String, Vec<String>>, InventoryError> {
    let mut statement = conn.prepare_cached(
        "SELECT ip, name FROM inventory_resolutions WHERE mac = ?1 ORDER BY ip, last_seen DESC, name",
    )?;
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    for row in statement.query_map([mac], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))? {
        let (ip, name) = row?;
        let listed = names.entry(ip).or_default();
        if listed.len() < MAX_NAMES_PER_DESTINATION {
            listed.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{
        datapath::events::{DatapathEvent, SampleKind},
        inventory::{Inventory, MAX_RESOLUTIONS_PER_DEVICE, MIGRATIONS, Vendors},
    };

    /// A DNS answer from upstream to `mac`: `name` is at `addr`.
    fn answer(mac: Mac, at: SystemTime, name: &str, addr: std::net::Ipv4Addr, kind: SampleKind) -> DatapathEvent {
        let crate::pipeline::Input::Datapath(DatapathEvent::Sample(mut sample)) =
            crate::detect::synthetic::dns_answer(mac, at, name, addr)
        else {
            unreachable!("dns_answer makes a sample")
        };
        sample.kind = kind;
        DatapathEvent::Sample(sample)
    }

    #[test]
    fn upstream_answers_name_addresses_and_the_newest_are_kept() {
        let mut inventory =
            Inventory::new(crate::store::open_in_memory(&[MIGRATIONS]).unwrap(), Vendors::empty(), None);
        let mac = Mac([2, 0, 0, 0, 0, 7]);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        // A LAN-side answer comes from the resolver, not the device: it names nothing.
        inventory.handle(&answer(mac, start, "lan.example", [10, 0, 0, 1].into(), SampleKind::Dns)).unwrap();
        assert!(resolutions(inventory.connection(), &mac.to_string()).unwrap().is_empty());
        for i in 0..=MAX_RESOLUTIONS_PER_DEVICE as u32 {
            let at = start + Duration::from_secs(u64::from(i));
            let addr = std::net::Ipv4Addr::from(0xc633_6400 + i);
            inventory.handle(&answer(mac, at, &format!("h{i}.example"), addr, SampleKind::DnsAnswer)).unwrap();
        }
        let names = resolutions(inventory.connection(), &mac.to_string()).unwrap();
        assert_eq!(names.len(), MAX_RESOLUTIONS_PER_DEVICE, "the oldest answer went");
        assert!(!names.contains_key("198.51.100.0"));
        assert_eq!(names["198.51.100.1"], ["h1.example"]);
    }
}
