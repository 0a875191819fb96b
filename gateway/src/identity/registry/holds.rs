//! `identity_holds`: MACs blocked after suspected cloning, until an operator releases them.
use rusqlite::{Connection, params};

use super::text_column;
use crate::device::Mac;

pub fn add_hold(conn: &Connection, mac: Mac, reason: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO identity_holds (mac, reason, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![mac.to_string(), reason, now])?;
    Ok(())
}

/// Clears every open hold on `mac`; returns how many there were.
pub fn clear_holds(conn: &Connection, mac: Mac, actor: &str, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE identity_holds SET cleared_at = ?2, cleared_by = ?3 WHERE mac = ?1 AND cleared_at IS NULL",
    )?
    .execute(params![mac.to_string(), now, actor])
}

pub fn is_held(conn: &Connection, mac: Mac) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM identity_holds WHERE mac = ?1 AND cleared_at IS NULL)")?
        .query_row([mac.to_string()], |row| row.get(0))
}

/// Open holds: MAC and reason.
pub fn open_holds(conn: &Connection) -> rusqlite::Result<Vec<(Mac, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT mac, reason FROM identity_holds WHERE cleared_at IS NULL ORDER BY id")?;
    let rows = stmt.query_map([], |row| Ok((text_column(row, 0)?, row.get(1)?)))?;
    rows.collect()
}
