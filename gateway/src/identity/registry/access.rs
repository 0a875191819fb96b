//! What the datapath should enforce, read across devices, certificates and holds.
use rusqlite::Connection;

use super::text_column;
use crate::device::{Access, Mac};

/// What the datapath should enforce for every MAC the identity component knows, at `now`:
/// an open hold blocks; a live active identity with a valid, unexpired certificate is
/// enrolled; any other live identity stays onboarding; a MAC whose identities are all
/// decommissioned goes back to unknown (onboarding lane, no table entry).
pub fn desired_access(conn: &Connection, now: i64) -> rusqlite::Result<Vec<(Mac, Access)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.mac,
                MAX(CASE WHEN d.lifecycle = 'decommissioned' THEN 0
                         WHEN d.lifecycle = 'active' AND EXISTS (
                              SELECT 1 FROM identity_certificates c
                              WHERE c.device_id = d.device_id AND c.status = 'valid'
                                AND c.not_before <= ?1 AND c.not_after > ?1) THEN 2
                         ELSE 1 END),
                EXISTS (SELECT 1 FROM identity_holds h WHERE h.mac = d.mac AND h.cleared_at IS NULL)
         FROM identity_devices d GROUP BY d.mac
         UNION ALL
         -- MACs known only from holds (a cloner): blocked while held, unknown once released.
         SELECT h.mac, 0, MAX(h.cleared_at IS NULL) FROM identity_holds h
         WHERE h.mac NOT IN (SELECT mac FROM identity_devices)
         GROUP BY h.mac",
    )?;
    let rows = stmt.query_map([now], |row| {
        let mac = text_column(row, 0)?;
        let level: i64 = row.get(1)?;
        let held: bool = row.get(2)?;
        let access = match (held, level) {
            (true, _) => Access::Blocked,
            (false, 2) => Access::Enrolled,
            (false, 1) => Access::Onboarding,
            _ => Access::Unknown,
        };
        Ok((mac, access))
    })?;
    rows.collect()
}
