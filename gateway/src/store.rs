//! The gateway's one SQLite file (WAL mode). Each component owns its tables and declares its
//! schema as versioned `Migration`s; `open` is handed the lists of the components a connection
//! uses (the controller passes every component's), applies what is missing, in order,
//! each in its own transaction, and records it in `schema_migrations`. The store knows no
//! component: it depends on nothing above it.
//!
//! Durability is `[store] synchronous` (`Synchronous`), FULL unless the operator chooses
//! otherwise: the store holds the audit trail and the integrations outbox, and with FULL a
//! transaction that returned is on disk (the WAL is fsynced at every commit). NORMAL skips
//! that fsync: still safe against a process crash, but a power loss or kernel panic may take
//! back the last transactions, acknowledged audit records and outbox events included.
//! `bench/outbox/RESULTS.md` has what FULL costs the outbox writer. The level is one setting
//! for the process (`set_synchronous`, called by the controller before anything opens the
//! store): every connection that commits must sync alike, or its own commits get the weaker
//! promise, and a dozen components open their own connections.
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU8, Ordering},
};

use rusqlite::{Connection, OptionalExtension as _};
use serde::Deserialize;

/// One schema step of one component. Versions start at 1 and only grow; a released
/// migration is never edited, a new one is appended.
pub struct Migration {
    pub component: &'static str,
    pub version: u32,
    pub sql: &'static str,
}

/// The migrations a connection needs: one list per component, each in version order.
pub type Schema<'a> = &'a [&'static [Migration]];

fn migrations<'a>(schema: Schema<'a>) -> impl Iterator<Item = &'static Migration> + 'a {
    schema.iter().flat_map(|list| list.iter())
}

/// Default location of the store file.
pub const DEFAULT_PATH: &str = "/var/lib/iotgw/iotgw.db";

/// `[store]`: the SQLite file and how durable its commits are.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The SQLite file (WAL mode; `-wal` and `-shm` files sit beside it).
    pub path: PathBuf,
    /// Durability of every commit: `"full"` (default) fsyncs the WAL at each commit, so an
    /// acknowledged audit record or outbox event survives a power loss; `"normal"` skips that
    /// fsync and survives a process crash only (a power loss may lose the last commits). Keep
    /// `"full"` for the audit trail unless the storage is battery-backed. See `store`.
    pub synchronous: Synchronous,
}

impl Default for Config {
    fn default() -> Self {
        Self { path: DEFAULT_PATH.into(), synchronous: Synchronous::default() }
    }
}

/// SQLite's `synchronous` pragma in WAL mode, as `[store] synchronous` spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// fsync of the WAL at every commit: a committed transaction survives a power loss. The
    /// default, and what an audit trail needs.
    #[default]
    Full,
    /// No fsync at commit (only at checkpoints): survives a process crash, but a power loss
    /// may lose the last committed transactions. Faster on slow storage.
    Normal,
}

impl Synchronous {
    /// The pragma's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }

    /// The pragma's numeric value as `PRAGMA synchronous` reads it back.
    pub fn pragma_value(self) -> i64 {
        match self {
            Synchronous::Full => 2,
            Synchronous::Normal => 1,
        }
    }

    fn from_pragma_value(value: u8) -> Self {
        if value == 1 { Synchronous::Normal } else { Synchronous::Full }
    }
}

/// The level every `open` uses (see the module doc); FULL until `set_synchronous`.
static SYNCHRONOUS: AtomicU8 = AtomicU8::new(2);

/// Sets the durability of every connection opened from now on (`[store] synchronous`). Call
/// it once at start, before the store is opened.
pub fn set_synchronous(level: Synchronous) {
    SYNCHRONOUS.store(level.pragma_value() as u8, Ordering::Relaxed);
}

/// The level `open` uses.
pub fn synchronous() -> Synchronous {
    Synchronous::from_pragma_value(SYNCHRONOUS.load(Ordering::Relaxed))
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file cannot be opened or is not a SQLite database.
    #[error("cannot open the store {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    /// A migration failed; the store is left at the previous version of that component.
    #[error("migration {component} v{version} failed: {source}")]
    Migrate { component: &'static str, version: u32, source: rusqlite::Error },
    /// The file was written by a newer iotgw.
    #[error("the store has {component} at v{found}, newer than this build knows (v{known})")]
    TooNew { component: &'static str, found: u32, known: u32 },
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// Opens (creating if needed) the store at `path` and brings the tables of `schema` up to
/// date, with the process's durability level (`set_synchronous`).
pub fn open(path: &Path, schema: Schema) -> Result<Connection, StoreError> {
    open_with(path, synchronous(), schema)
}

/// `open` with an explicit durability level.
pub fn open_with(path: &Path, level: Synchronous, schema: Schema) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open { path: path.to_owned(), source };
    let mut conn = Connection::open(path).map_err(open_error)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open_error)?;
    configure(&conn, level)?;
    migrate(&mut conn, schema)?;
    Ok(conn)
}

/// An in-memory store with the tables of `schema`, for tests and offline analysis.
pub fn open_in_memory(schema: Schema) -> Result<Connection, StoreError> {
    let mut conn = Connection::open_in_memory()?;
    configure(&conn, synchronous())?;
    migrate(&mut conn, schema)?;
    Ok(conn)
}

fn configure(conn: &Connection, level: Synchronous) -> Result<(), StoreError> {
    conn.pragma_update(None, "synchronous", level.as_str())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn migrate(conn: &mut Connection, schema: Schema) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            component TEXT NOT NULL,
            version INTEGER NOT NULL,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
            PRIMARY KEY (component, version))",
    )?;
    for migration in migrations(schema) {
        let current: Option<u32> = conn
            .query_row(
                "SELECT MAX(version) FROM schema_migrations WHERE component = ?1",
                [migration.component],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        if current.is_some_and(|v| v >= migration.version) {
            continue;
        }
        let fail = |source| StoreError::Migrate { component: migration.component, version: migration.version, source };
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(migration.sql).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_migrations (component, version) VALUES (?1, ?2)",
            (migration.component, migration.version),
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    // Refuse a file from the future rather than corrupting it.
    let mut known = std::collections::HashMap::<&'static str, u32>::new();
    for m in migrations(schema) {
        let v = known.entry(m.component).or_default();
        *v = (*v).max(m.version);
    }
    for (component, known) in known {
        let found: Option<u32> =
            conn.query_row("SELECT MAX(version) FROM schema_migrations WHERE component = ?1", [component], |row| {
                row.get(0)
            })?;
        if let Some(found) = found.filter(|found| *found > known) {
            return Err(StoreError::TooNew { component, found, known });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDGETS: &[Migration] = &[
        Migration { component: "widgets", version: 1, sql: "CREATE TABLE widgets (id INTEGER PRIMARY KEY);" },
        Migration { component: "widgets", version: 2, sql: "ALTER TABLE widgets ADD COLUMN name TEXT;" },
    ];

    #[test]
    fn open_twice_applies_migrations_once() {
        let dir = iotgw_test_support::services::scratch("store");
        let path = dir.join("store.db");
        let first: u32 = open(&path, &[WIDGETS])
            .unwrap()
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        let second: u32 = open(&path, &[WIDGETS])
            .unwrap()
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(first as usize, WIDGETS.len());
    }

    #[test]
    fn synchronous_level_reaches_the_connection_and_full_is_the_default() {
        assert_eq!(Synchronous::default(), Synchronous::Full);
        assert_eq!(synchronous(), Synchronous::Full, "nothing in the tests lowers it");
        let dir = iotgw_test_support::services::scratch("store-sync");
        for level in [Synchronous::Full, Synchronous::Normal] {
            let conn = open_with(&dir.join("store.db"), level, &[WIDGETS]).unwrap();
            let value: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
            assert_eq!(value, level.pragma_value(), "{level:?}");
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, "wal");
        }
    }
}
