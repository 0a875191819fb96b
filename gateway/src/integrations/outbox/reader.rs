//! A sink's reader: its filtered batches after its cursor, its cursor, its dead letters.
//!
//! Reads `integration_outbox`; writes `integration_cursors` and `integration_dead_letters`.
use std::path::Path;

use rusqlite::{Connection, params};

use super::{OutboxError, Record, Seq, now_ms, severity_rank};
use crate::integrations::config::Filter;

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
            conn: crate::store::open(path, &[super::MIGRATIONS])?,
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
