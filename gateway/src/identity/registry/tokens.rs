//! `identity_tokens`: one-time enrollment tokens, stored as hashes.
use rusqlite::{Connection, OptionalExtension as _, params};

use super::text_column;
use crate::{
    device::Mac,
    identity::names::{DeviceId, Serial},
};

/// An enrollment token, as stored (only its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub mac: Mac,
    pub device: DeviceId,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

pub fn insert_token(
    conn: &Connection,
    hash: &str,
    mac: Mac,
    device: &DeviceId,
    now: i64,
    expires_at: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO identity_tokens (hash, mac, device_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![hash, mac.to_string(), device.as_str(), now, expires_at])?;
    Ok(())
}

pub fn token(conn: &Connection, hash: &str) -> rusqlite::Result<Option<TokenRecord>> {
    conn.prepare_cached("SELECT mac, device_id, expires_at, used_at FROM identity_tokens WHERE hash = ?1")?
        .query_row([hash], |row| {
            Ok(TokenRecord {
                mac: text_column(row, 0)?,
                device: text_column(row, 1)?,
                expires_at: row.get(2)?,
                used_at: row.get(3)?,
            })
        })
        .optional()
}

/// Marks a token used, only if it still is unused and unexpired. Returns whether this call
/// consumed it: of two concurrent enrollments with one token, exactly one gets `true`.
pub fn consume_token(conn: &Connection, hash: &str, now: i64, serial: &Serial) -> rusqlite::Result<bool> {
    let changed = conn.prepare_cached("UPDATE identity_tokens SET used_at = ?2, used_serial = ?3 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2")?.execute(
        params![hash, now, serial.as_str()],
    )?;
    Ok(changed == 1)
}

/// Makes a device's unused tokens unusable (decommission).
pub fn void_tokens(conn: &Connection, device: &DeviceId, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("UPDATE identity_tokens SET used_at = ?2 WHERE device_id = ?1 AND used_at IS NULL")?
        .execute(params![device.as_str(), now])
}
