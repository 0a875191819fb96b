//! The durable outbox in the SQLite store: every event bound for a sink is written here before
//! any delivery, each sink keeps its own cursor (the last sequence number it has delivered),
//! and delivered events are pruned once every sink is past them.
//!
//! Writes go through one dedicated thread (`Writer`), which batches what is queued into one
//! transaction, so producers never wait on SQLite; sink tasks read with their own connection
//! (`Reader`), off the async runtime. Reads and writes `integration_outbox`,
//! `integration_cursors`, `integration_dead_letters` and `integration_stats`.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::{mpsc, oneshot, watch};

use crate::event::{GatewayEvent, Severity};

use super::config::Filter;

/// Events the writer takes in one transaction at most.
pub const WRITE_BATCH_MAX: usize = 2_048;
/// Events queued for the writer thread before the intake task waits (producers never do:
/// they publish on the broadcast bus).
pub const WRITE_QUEUE_CAPACITY: usize = 16_384;
/// How often delivered events are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

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
    match severity {
        Severity::Info => 0,
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

enum Command {
    Append(Vec<GatewayEvent>, Option<oneshot::Sender<Result<Seq, String>>>),
}

/// Handle to the writer thread. Cloneable; the thread ends when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Command>,
    written: watch::Receiver<Seq>,
}

impl Writer {
    /// Opens the store at `path`, creates the cursors of `sinks` that have none (at the
    /// current end: a new sink starts with new events), forgets cursors of sinks no longer
    /// configured, and starts the writer thread.
    pub fn start(path: &Path, sinks: Vec<String>, max_events: u64) -> Result<Self, OutboxError> {
        let conn = crate::store::open(path, &[MIGRATIONS])?;
        let last = last_seq(&conn)?;
        {
            let mut stale = conn.prepare("SELECT sink FROM integration_cursors")?;
            let known: Vec<String> = stale.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            for name in known.iter().filter(|k| !sinks.contains(k)) {
                tracing::warn!(sink = %name, "sink no longer configured; its delivery cursor is dropped");
                conn.execute("DELETE FROM integration_cursors WHERE sink = ?1", [name])?;
            }
        }
        for sink in &sinks {
            conn.execute(
                "INSERT OR IGNORE INTO integration_cursors (sink, delivered_seq, updated_ms) VALUES (?1, ?2, ?3)",
                params![sink, last.0, now_ms()],
            )?;
        }
        let (queue, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let (written_tx, written) = watch::channel(last);
        let mut core = WriterCore { conn, sinks, max_events, last_prune: Instant::now() };
        std::thread::Builder::new()
            .name("iotgw-outbox".into())
            .spawn(move || core.run(rx, written_tx))
            .map_err(OutboxError::Thread)?;
        Ok(Self { queue, written })
    }

    /// Queues `event`; it is durable once the writer commits (milliseconds later). Waits only
    /// when the writer's queue is full.
    pub async fn append(&self, event: GatewayEvent) -> Result<(), OutboxError> {
        self.queue.send(Command::Append(vec![event], None)).await.map_err(|_| OutboxError::WriterGone)
    }

    /// Writes `events` and returns once they are committed, with the last one's sequence.
    pub async fn append_durable(&self, events: Vec<GatewayEvent>) -> Result<Seq, OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.queue.send(Command::Append(events, Some(tx))).await.map_err(|_| OutboxError::WriterGone)?;
        match rx.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(message)) => Err(OutboxError::Write(message)),
            Err(_) => Err(OutboxError::WriterGone),
        }
    }

    /// Returns once everything queued before this call is committed.
    pub async fn flush(&self) -> Result<Seq, OutboxError> {
        self.append_durable(Vec::new()).await
    }

    /// Changes whenever events are committed; sink tasks wait on it instead of polling.
    pub fn written(&self) -> watch::Receiver<Seq> {
        self.written.clone()
    }
}

/// The writer thread's state.
struct WriterCore {
    conn: Connection,
    sinks: Vec<String>,
    max_events: u64,
    last_prune: Instant,
}

impl WriterCore {
    fn run(&mut self, mut rx: mpsc::Receiver<Command>, written: watch::Sender<Seq>) {
        while let Some(first) = rx.blocking_recv() {
            let mut commands = vec![first];
            let mut count = 0;
            while count < WRITE_BATCH_MAX {
                match rx.try_recv() {
                    Ok(command) => {
                        let Command::Append(events, _) = &command;
                        count += events.len();
                        commands.push(command);
                    }
                    Err(_) => break,
                }
            }
            match self.write(&commands) {
                Ok(last) => {
                    written.send_replace(last);
                    for Command::Append(_, ack) in commands {
                        if let Some(ack) = ack {
                            let _ = ack.send(Ok(last));
                        }
                    }
                }
                Err(error) => {
                    // Events in the failed transaction are lost; say so loudly. A disk-full
                    // store is the usual cause.
                    tracing::error!(%error, "outbox write failed; events of this batch are not stored");
                    for Command::Append(_, ack) in commands {
                        if let Some(ack) = ack {
                            let _ = ack.send(Err(error.to_string()));
                        }
                    }
                }
            }
            if self.last_prune.elapsed() >= PRUNE_INTERVAL {
                self.last_prune = Instant::now();
                if let Err(error) = prune(&self.conn, &self.sinks, self.max_events) {
                    tracing::warn!(%error, "outbox prune failed");
                }
            }
        }
        let _ = prune(&self.conn, &self.sinks, self.max_events);
    }

    fn write(&mut self, commands: &[Command]) -> Result<Seq, OutboxError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO integration_outbox (event_id, kind, severity, created_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let now = now_ms();
            for Command::Append(events, _) in commands {
                for event in events {
                    // A GatewayEvent always serializes (strings, numbers, enums only).
                    let body = serde_json::to_string(event).unwrap_or_default();
                    insert.execute(params![event.id, event.kind_name(), severity_rank(event.severity), now, body])?;
                }
            }
        }
        let last = last_seq(&tx)?;
        tx.commit()?;
        Ok(last)
    }
}

fn last_seq(conn: &Connection) -> Result<Seq, rusqlite::Error> {
    // sqlite_sequence keeps the AUTOINCREMENT high-water mark even when the table is empty.
    let seq: Option<i64> = conn
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'integration_outbox'", [], |r| r.get(0))
        .optional()?;
    Ok(Seq(seq.unwrap_or(0)))
}

/// Deletes events every configured sink has delivered, then, beyond `max_events`, the
/// droppable ones: audit, lifecycle and policy events, lowest severity first, oldest first
/// within a severity.
///
/// Alerts and actions are never dropped. When only they are left over the cap they stay
/// beyond it (spill in place) rather than push back: back-pressure would reach the producers
/// through the broadcast bus, whose only answer is to lose arbitrary events, or stall the
/// response pipeline, i.e. enforcement, because a SIEM is down. Alerts and actions come at an
/// alerting gateway's rate (floods are aggregated, with one alert per window), a few hundred
/// bytes each on disk (`bench/outbox/RESULTS.md`: 353 B per row), so even one a second for a
/// day spills about 30 MB; the disk filling is a write error the writer reports loudly. The
/// excess is logged at each prune and its high-water mark kept in `integration_stats`
/// (`protected_over_cap_max`).
fn prune(conn: &Connection, sinks: &[String], max_events: u64) -> Result<(), OutboxError> {
    let min_cursor: Option<i64> = if sinks.is_empty() {
        Some(i64::MAX)
    } else {
        conn.query_row("SELECT MIN(delivered_seq) FROM integration_cursors", [], |r| r.get(0))?
    };
    if let Some(min) = min_cursor {
        conn.execute("DELETE FROM integration_outbox WHERE seq <= ?1", [min])?;
    }
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM integration_outbox", [], |r| r.get(0))?;
    let over = count - max_events as i64;
    if over <= 0 {
        return Ok(());
    }
    let dropped = conn.execute(
        "DELETE FROM integration_outbox WHERE seq IN (SELECT seq FROM integration_outbox
         WHERE kind NOT IN ('alert', 'action') ORDER BY severity, seq LIMIT ?1)",
        [over],
    )? as i64;
    if dropped > 0 {
        tracing::error!(
            dropped,
            cap = max_events,
            "outbox over its cap; lowest-severity undelivered audit events dropped (alerts and actions kept)"
        );
        add_stat(conn, STAT_DROPPED, dropped)?;
    }
    let kept_over = over - dropped;
    if kept_over > 0 {
        tracing::error!(
            kept_over,
            cap = max_events,
            "outbox over its cap with only alerts and actions left: they are kept beyond it"
        );
        conn.execute(
            "INSERT INTO integration_stats (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
            params![STAT_PROTECTED_OVER_CAP, kept_over],
        )?;
    }
    Ok(())
}

fn add_stat(conn: &Connection, key: &str, value: i64) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO integration_stats (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// A stored counter of `integration_stats` (0 when never set).
pub fn stat(conn: &Connection, key: &str) -> Result<i64, rusqlite::Error> {
    Ok(conn
        .query_row("SELECT value FROM integration_stats WHERE key = ?1", [key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Runs one prune now (tests and benchmarks; the writer thread prunes every `PRUNE_INTERVAL`).
pub fn prune_now(path: &Path, sinks: &[String], max_events: u64) -> Result<(), OutboxError> {
    prune(&crate::store::open(path, &[MIGRATIONS])?, sinks, max_events)
}

/// One stored event.
#[derive(Clone, Debug)]
pub struct Record {
    pub seq: Seq,
    pub event: GatewayEvent,
}

/// A sink's view of the outbox (its own connection; use from a blocking thread).
pub struct Reader {
    conn: Connection,
    sink: String,
    min_severity: i64,
    kinds: String,
}

impl Reader {
    pub fn open(path: &Path, sink: &str, filter: &Filter) -> Result<Self, OutboxError> {
        Ok(Self {
            conn: crate::store::open(path, &[MIGRATIONS])?,
            sink: sink.to_owned(),
            min_severity: severity_rank(filter.min_severity),
            kinds: filter.kinds_pattern(),
        })
    }

    /// The connection, for sinks that keep their own state in the store (ITSM tickets).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn cursor(&self) -> Result<Seq, OutboxError> {
        Ok(Seq(self.conn.query_row(
            "SELECT delivered_seq FROM integration_cursors WHERE sink = ?1",
            [&self.sink],
            |r| r.get(0),
        )?))
    }

    /// Up to `limit` events after `after` that pass the sink's filter, in order.
    pub fn next_batch(&self, after: Seq, limit: usize) -> Result<Vec<Record>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, body FROM integration_outbox
             WHERE seq > ?1 AND severity >= ?2 AND (?3 = '' OR instr(?3, ',' || kind || ',') > 0)
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![after.0, self.min_severity, self.kinds, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut batch = Vec::new();
        for row in rows {
            let (seq, body) = row?;
            let event = serde_json::from_str(&body).map_err(|source| OutboxError::Decode { seq, source })?;
            batch.push(Record { seq: Seq(seq), event });
        }
        Ok(batch)
    }

    /// Records that everything up to `seq` is delivered (`count` events of this sink).
    pub fn advance(&self, seq: Seq, count: usize) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE integration_cursors SET delivered_seq = MAX(delivered_seq, ?2),
             delivered_total = delivered_total + ?3, updated_ms = ?4 WHERE sink = ?1",
            params![self.sink, seq.0, count as i64, now_ms()],
        )?;
        Ok(())
    }

    /// Sets an event aside that the sink refused for good (it would block the sink forever).
    pub fn dead_letter(&self, record: &Record, error: &str) -> Result<(), OutboxError> {
        self.conn.execute(
            "INSERT INTO integration_dead_letters (sink, seq, event_id, body, error, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                self.sink,
                record.seq.0,
                record.event.id,
                serde_json::to_string(&record.event).unwrap_or_default(),
                error,
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// Undelivered events for this sink, and when the oldest was written.
    pub fn pending(&self) -> Result<(u64, Option<i64>, u64), OutboxError> {
        let cursor = self.cursor()?;
        let (count, oldest): (i64, Option<i64>) = self.conn.query_row(
            "SELECT COUNT(*), MIN(created_ms) FROM integration_outbox
             WHERE seq > ?1 AND severity >= ?2 AND (?3 = '' OR instr(?3, ',' || kind || ',') > 0)",
            params![cursor.0, self.min_severity, self.kinds],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let delivered: i64 = self.conn.query_row(
            "SELECT delivered_total FROM integration_cursors WHERE sink = ?1",
            [&self.sink],
            |r| r.get(0),
        )?;
        Ok((count as u64, oldest, delivered as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{event::EventKind, integrations::config::Filter};

    /// A store in its own temp folder, removed when the test ends (even by a panic).
    struct TempStore(PathBuf);

    impl TempStore {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("iotgw-outbox-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl std::ops::Deref for TempStore {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_store(name: &str) -> (TempStore, PathBuf) {
        let dir = TempStore::new(name);
        let path = dir.join("store.db");
        (dir, path)
    }

    fn event(severity: Severity, n: usize) -> GatewayEvent {
        GatewayEvent::new(severity, None, "test", EventKind::Audit { action: "n".into(), detail: n.to_string() })
    }

    #[tokio::test]
    async fn events_written_are_read_in_order_after_the_cursor() {
        let (_dir, path) = temp_store("order");
        let writer = Writer::start(&path, vec!["a".into()], 1_000).unwrap();
        let last = writer.append_durable((0..10).map(|n| event(Severity::Info, n)).collect()).await.unwrap();
        let reader = Reader::open(&path, "a", &Filter::default()).unwrap();
        let batch = reader.next_batch(reader.cursor().unwrap(), 4).unwrap();
        assert_eq!(batch.len(), 4);
        assert!(batch.windows(2).all(|w| w[0].seq < w[1].seq));
        reader.advance(batch[3].seq, 4).unwrap();
        let rest = reader.next_batch(reader.cursor().unwrap(), 100).unwrap();
        assert_eq!(rest.len(), 6);
        assert_eq!(rest.last().unwrap().seq, last);
        assert_eq!(reader.pending().unwrap().0, 6);
    }

    #[tokio::test]
    async fn filter_runs_in_the_query() {
        let (_dir, path) = temp_store("filter");
        let writer = Writer::start(&path, vec!["hi".into()], 1_000).unwrap();
        writer
            .append_durable(vec![event(Severity::Info, 0), event(Severity::High, 1), event(Severity::Critical, 2)])
            .await
            .unwrap();
        let filter = Filter { min_severity: Severity::High, kinds: vec!["audit".into()] };
        let reader = Reader::open(&path, "hi", &filter).unwrap();
        assert_eq!(reader.next_batch(Seq(0), 10).unwrap().len(), 2);
        let other = Filter { min_severity: Severity::Info, kinds: vec!["alert".into()] };
        assert!(Reader::open(&path, "hi", &other).unwrap().next_batch(Seq(0), 10).unwrap().is_empty());
    }

    #[tokio::test]
    async fn new_sink_starts_at_the_end_and_prune_keeps_undelivered() {
        let (_dir, path) = temp_store("prune");
        let writer = Writer::start(&path, vec!["a".into()], 1_000).unwrap();
        writer.append_durable((0..5).map(|n| event(Severity::Info, n)).collect()).await.unwrap();
        drop(writer);
        let conn = crate::store::open(&path, &[MIGRATIONS]).unwrap();
        prune(&conn, &["a".into()], 1_000).unwrap();
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM integration_outbox", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 5, "nothing delivered yet, nothing pruned");
        let _writer = Writer::start(&path, vec!["a".into(), "b".into()], 1_000).unwrap();
        let b = Reader::open(&path, "b", &Filter::default()).unwrap();
        assert_eq!(b.pending().unwrap().0, 0, "a new sink does not replay history");
        let a = Reader::open(&path, "a", &Filter::default()).unwrap();
        a.advance(Seq(5), 5).unwrap();
        prune(&conn, &["a".into(), "b".into()], 1_000).unwrap();
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM integration_outbox", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 0);
    }

    fn alert(n: usize) -> GatewayEvent {
        GatewayEvent::new(
            Severity::High,
            None,
            "detector:scan",
            EventKind::Alert {
                incident_id: format!("inc-{n}"),
                detector: "scan".into(),
                score: 0.9,
                expected: "e".into(),
                observed: "o".into(),
                flows: Vec::new(),
                resolved: false,
            },
        )
    }

    fn action(n: usize) -> GatewayEvent {
        GatewayEvent::new(
            Severity::Low,
            None,
            "respond",
            EventKind::Action { action: "quarantine".into(), reason: format!("inc-{n}") },
        )
    }

    fn ids_of(conn: &Connection, kinds: &str) -> std::collections::BTreeSet<String> {
        let mut stmt =
            conn.prepare("SELECT event_id FROM integration_outbox WHERE instr(?1, ',' || kind || ',') > 0").unwrap();
        stmt.query_map([kinds], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[tokio::test]
    async fn full_outbox_drops_audit_lowest_severity_first_and_never_an_alert_or_action() {
        const CAP: u64 = 1_000;
        let (_dir, path) = temp_store("cap-protected");
        let writer = Writer::start(&path, vec!["down".into()], CAP).unwrap();
        // The cap filled with a mix, interleaved, nothing delivered (the sink is down):
        // 500 info and 200 medium audit events, 150 alerts, 150 actions.
        let mut events = Vec::new();
        for n in 0..1_000 {
            events.push(match n % 20 {
                0..=9 => event(Severity::Info, n),
                10..=13 => event(Severity::Medium, n),
                14..=16 => alert(n),
                _ => action(n),
            });
        }
        writer.append_durable(events).await.unwrap();
        let conn = crate::store::open(&path, &[MIGRATIONS]).unwrap();
        let protected = ids_of(&conn, ",alert,action,");
        assert_eq!(protected.len(), 300);
        prune(&conn, &["down".into()], CAP).unwrap();
        assert_eq!(stat(&conn, STAT_DROPPED).unwrap(), 0, "at the cap, not over it");

        // 100 more alerts: the 100 oldest info events go, nothing else.
        let more: Vec<_> = (1_000..1_100).map(alert).collect();
        writer.append_durable(more).await.unwrap();
        let protected = ids_of(&conn, ",alert,action,");
        let audit_before = ids_of(&conn, ",audit,").len();
        prune(&conn, &["down".into()], CAP).unwrap();
        assert_eq!(ids_of(&conn, ",alert,action,"), protected, "no alert or action dropped");
        assert_eq!(ids_of(&conn, ",audit,").len(), audit_before - 100);
        let oldest_info: i64 = conn
            .query_row("SELECT MIN(seq) FROM integration_outbox WHERE kind = 'audit' AND severity = 0", [], |r| {
                r.get(0)
            })
            .unwrap();
        // Ten info events per twenty, seq = n + 1: the 101st info event is n = 200.
        assert_eq!(oldest_info, 201, "the 100 oldest info events went, medium ones stayed");

        // 2,000 more alerts and actions: every audit event goes, then the protected ones stay
        // beyond the cap, counted.
        let flood: Vec<_> = (2_000..4_000).map(|n| if n % 2 == 0 { alert(n) } else { action(n) }).collect();
        writer.append_durable(flood).await.unwrap();
        let protected = ids_of(&conn, ",alert,action,");
        assert_eq!(protected.len(), 2_400);
        prune(&conn, &["down".into()], CAP).unwrap();
        assert_eq!(ids_of(&conn, ",alert,action,"), protected, "no alert or action dropped, even over the cap");
        assert!(ids_of(&conn, ",audit,").is_empty());
        assert_eq!(stat(&conn, STAT_DROPPED).unwrap(), 700);
        assert_eq!(stat(&conn, STAT_PROTECTED_OVER_CAP).unwrap(), 1_400);
        // The sinks still read every protected event, in order.
        let reader = Reader::open(&path, "down", &Filter::default()).unwrap();
        assert_eq!(reader.next_batch(Seq(0), 10_000).unwrap().len(), 2_400);
    }

    #[tokio::test]
    async fn cap_drops_oldest_and_counts_them() {
        let (_dir, path) = temp_store("cap");
        let writer = Writer::start(&path, vec!["a".into()], 3).unwrap();
        writer.append_durable((0..5).map(|n| event(Severity::Info, n)).collect()).await.unwrap();
        let conn = crate::store::open(&path, &[MIGRATIONS]).unwrap();
        prune(&conn, &["a".into()], 3).unwrap();
        let reader = Reader::open(&path, "a", &Filter::default()).unwrap();
        let left = reader.next_batch(Seq(0), 10).unwrap();
        assert_eq!(left.len(), 3);
        assert_eq!(left[0].seq, Seq(3));
        let dropped: i64 =
            conn.query_row("SELECT value FROM integration_stats WHERE key = ?1", [STAT_DROPPED], |r| r.get(0)).unwrap();
        assert_eq!(dropped, 2);
    }
}
