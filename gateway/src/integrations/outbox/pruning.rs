//! Pruning: delivered events go, and beyond the cap the droppable ones, never alerts or
//! actions.
//!
//! Reads `integration_cursors`; writes `integration_outbox` and `integration_stats`.
use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{OutboxError, STAT_DROPPED, STAT_PROTECTED_OVER_CAP};

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
pub(super) fn prune(conn: &Connection, sinks: &[String], max_events: u64) -> Result<(), OutboxError> {
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
    prune(&crate::store::open(path, &[super::MIGRATIONS])?, sinks, max_events)
}
