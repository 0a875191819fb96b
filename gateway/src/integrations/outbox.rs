//! The durable outbox in the SQLite store: every event bound for a sink is written here before
//! any delivery, each sink keeps its own cursor (the last sequence number it has delivered),
//! and delivered events are pruned once every sink is past them.
//!
//! Writes go through one dedicated thread (`writer`), which batches what is queued into one
//! transaction, so producers never wait on SQLite; sink tasks read with their own connection
//! (`reader`), off the async runtime; `pruning` keeps the outbox under its cap. Reads and
//! writes `integration_outbox`, `integration_cursors`, `integration_dead_letters` and
//! `integration_stats`.
use crate::event::{GatewayEvent, Severity};

mod pruning;
mod reader;
mod writer;

pub use pruning::{prune_now, stat};
pub use reader::Reader;
pub use writer::{PRUNE_INTERVAL, WRITE_BATCH_MAX, WRITE_QUEUE_CAPACITY, Writer};

/// Position of an event in the outbox; grows with every write, never reused
/// (`AUTOINCREMENT`), so cursors stay meaningful across pruning and restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Seq(pub i64);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("outbox: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored event no longer parses (written by an incompatible build).
    #[error("outbox event {seq}: {source}")]
    Decode { seq: i64, source: serde_json::Error },
    /// The writer thread is gone (shutdown, or it failed to open the store).
    #[error("the outbox writer has stopped")]
    WriterGone,
    #[error("cannot start the outbox writer thread: {0}")]
    Thread(std::io::Error),
    /// The writer's transaction failed (disk full, I/O error); the events were not stored.
    #[error("outbox write failed: {0}")]
    Write(String),
}

/// The integrations tables.
pub const MIGRATIONS: &[crate::store::Migration] = &[
    crate::store::Migration {
        component: "integrations",
        version: 1,
        sql: "
    CREATE TABLE integration_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE integration_cursors (
        sink TEXT PRIMARY KEY,
        delivered_seq INTEGER NOT NULL,
        delivered_total INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE integration_dead_letters (
        id INTEGER PRIMARY KEY,
        sink TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        body TEXT NOT NULL,
        error TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE TABLE integration_stats (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE TABLE integration_tickets (
        sink TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        sys_id TEXT,
        state TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (sink, incident_id)
    );
    CREATE TABLE integration_actions (
        idempotency_key TEXT PRIMARY KEY,
        caller TEXT NOT NULL,
        request_sha256 TEXT NOT NULL,
        status INTEGER NOT NULL,
        response TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE TABLE integration_audit (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        caller TEXT NOT NULL,
        action TEXT NOT NULL,
        device TEXT,
        idempotency_key TEXT,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE TABLE integration_device_tags (
        mac TEXT NOT NULL,
        tag TEXT NOT NULL,
        caller TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (mac, tag)
    );
    ",
    },
    // What a full outbox drops first: everything but alerts and actions, lowest severity and
    // oldest first. The partial index keeps that query cheap at a million rows.
    crate::store::Migration {
        component: "integrations",
        version: 2,
        sql: "CREATE INDEX integration_outbox_droppable ON integration_outbox (severity, seq)
              WHERE kind NOT IN ('alert', 'action');",
    },
];

/// Key in `integration_stats` counting events dropped by the size cap.
pub const STAT_DROPPED: &str = "dropped_over_cap";
/// Key in `integration_stats`: the most alerts and actions ever kept beyond the cap (nothing
/// else was left to drop).
pub const STAT_PROTECTED_OVER_CAP: &str = "protected_over_cap_max";
/// Event kinds a full outbox never drops (the SQL below spells the same list).
pub const PROTECTED_KINDS: &[&str] = &["alert", "action"];

/// The severity as stored (ordered like the enum) so filters run in SQL.
pub fn severity_rank(severity: Severity) -> i64 {
    severity.rank()
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// One stored event.
#[derive(Clone, Debug)]
pub struct Record {
    pub seq: Seq,
    pub event: GatewayEvent,
}

#[cfg(test)]
mod tests;
