//! The outbox's one writer: a dedicated thread that batches queued events into one
//! transaction each, so producers never wait on SQLite, and prunes on the way.
//!
//! Writes `integration_outbox` and `integration_cursors` (sinks added or dropped at start).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::{mpsc, oneshot, watch};

use super::{OutboxError, Seq, now_ms, pruning::prune, severity_rank};
use crate::event::GatewayEvent;

/// Events the writer takes in one transaction at most.
pub const WRITE_BATCH_MAX: usize = 2_048;
/// Events queued for the writer thread before the intake task waits (producers never do:
/// they publish on the broadcast bus).
pub const WRITE_QUEUE_CAPACITY: usize = 16_384;
/// How often delivered events are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

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
        let conn = crate::store::open(path, &[super::MIGRATIONS])?;
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
