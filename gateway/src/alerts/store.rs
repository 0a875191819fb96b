//! `AlertStore`: the alert tables over one connection. `record` turns published events into
//! records (the recorder thread calls it), `list`, `get` and `summary` read them (the API, on
//! the blocking pool), `change` moves one through its lifecycle with its audit record in one
//! transaction. Both writers announce what they committed (`announcing`), after the commit.
//! Every call blocks on SQLite: never call it on an async worker.
use rusqlite::{Connection, OptionalExtension as _, Row, params, params_from_iter};
use time::OffsetDateTime;

use super::{
    Alert, AlertChanged, AlertDetail, AlertsError, Change, Changes, MAX_ASSIGNEE_BYTES, MAX_FLOWS_PER_ALERT,
    MAX_NOTE_BYTES, Note, Page, Query, Resolution, Response, SCHEMA, State, Summary, learn,
    query::{COLUMNS, MAX_SORTED, millis},
};
use crate::{
    device::Mac,
    event::{EventKind, GatewayEvent, Severity},
};

pub struct AlertStore {
    pub(super) conn: Connection,
    /// Where committed changes are announced; `None` when nobody listens.
    changes: Option<Changes>,
}

impl AlertStore {
    /// Over `conn`, opened with `alerts::SCHEMA`.
    pub fn new(conn: Connection) -> Self {
        Self { conn, changes: None }
    }

    /// Announces every change this store commits on `changes`.
    pub fn announcing(mut self, changes: Changes) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Sends `changed` to the listeners, if any: call it after the commit.
    fn announce(&self, changed: impl IntoIterator<Item = AlertChanged>) {
        if let Some(changes) = &self.changes {
            for change in changed {
                // No listener now is fine: they read the store when they come.
                let _ = changes.send(change);
            }
        }
    }

    /// The overview's summary (see `summary`).
    pub fn summary(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
        bucket: time::Duration,
    ) -> Result<Summary, AlertsError> {
        super::summary::summary(&self.conn, since, until, bucket)
    }

    /// Opens the store at `path` with the tables the alert store uses.
    pub fn open(path: &std::path::Path) -> Result<Self, AlertsError> {
        Ok(Self::new(crate::store::open(path, SCHEMA)?))
    }

    /// Records alert and action events, all in one transaction. An action without an
    /// `responds_to`, or whose incident has no record, is not an alert's response: skipped.
    pub fn record(&mut self, events: &[GatewayEvent]) -> Result<(), AlertsError> {
        // Immediate: a deferred transaction that reads first cannot take the write lock while
        // another connection (the outbox writer) writes, and fails at once instead of waiting.
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Records changed, each announced once per batch.
        let mut changed = Vec::new();
        for event in events {
            let event = event.escaped();
            match &event.kind {
                EventKind::Alert { resolved: true, incident_id, .. } => {
                    let latest: Option<i64> = tx
                        .query_row(
                            "SELECT id FROM alerts WHERE incident_id = ?1 ORDER BY id DESC LIMIT 1",
                            [incident_id],
                            |row| row.get(0),
                        )
                        .optional()?;
                    let Some(id) = latest else { continue };
                    tx.execute(
                        "UPDATE alerts SET calm_since = ?2, updated = ?3 WHERE id = ?1",
                        params![id, millis(event.time), now()],
                    )?;
                    // The peaks the incident reached since its last alert.
                    learn::add_observations(&tx, id, &event.observations)?;
                    changed.push(id);
                }
                EventKind::Alert { .. } => changed.push(record_alert(&tx, &event)?),
                EventKind::Action { action, reason } => {
                    let Some(incident_id) = &event.responds_to else { continue };
                    let inserted = tx.execute(
                        "INSERT INTO alert_responses (alert_id, event_id, time, actor, action, reason)
                         SELECT id, ?2, ?3, ?4, ?5, ?6 FROM alerts WHERE incident_id = ?1 ORDER BY id DESC LIMIT 1",
                        params![incident_id, event.id, millis(event.time), event.actor, action, reason],
                    )?;
                    if inserted == 0 {
                        tracing::debug!(incident = %incident_id, action, "action for an incident without a record");
                    }
                }
                _ => {}
            }
        }
        changed.sort_unstable();
        changed.dedup();
        let mut read = tx.prepare_cached(&format!("SELECT {COLUMNS} FROM alerts WHERE id = ?1"))?;
        let changed: Vec<AlertChanged> =
            changed.into_iter().map(|id| read.query_row([id], read_alert).map(Into::into)).collect::<Result<_, _>>()?;
        drop(read);
        tx.commit()?;
        self.announce(changed);
        Ok(())
    }

    /// One record with its flows, responses and notes.
    pub fn get(&self, id: i64) -> Result<AlertDetail, AlertsError> {
        get(&self.conn, id)
    }

    /// One page of records (see `Query`).
    pub fn list(&self, query: &Query) -> Result<Page, AlertsError> {
        let size = query.page_size()?;
        let walk = match query.count_sql() {
            Some((sql, values)) => {
                let count: i64 =
                    self.conn.prepare_cached(&sql)?.query_row(params_from_iter(values), |row| row.get(0))?;
                count > MAX_SORTED as i64
            }
            None => false,
        };
        let (sql, values) = query.sql(walk)?;
        let mut statement = self.conn.prepare_cached(&sql)?;
        let mut alerts = statement.query_map(params_from_iter(values), read_alert)?.collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if alerts.len() > size {
            alerts.truncate(size);
            alerts.last().map(|last| query.cursor_after(last))
        } else {
            None
        };
        Ok(Page { alerts, next_cursor })
    }

    /// Applies an analyst's `change` to alert `id` and audits it as `actor`, all or nothing.
    /// Returns the record as it now is and the `Audit` event to publish.
    pub fn change(&mut self, id: i64, change: Change, actor: &str) -> Result<(AlertDetail, GatewayEvent), AlertsError> {
        let change = checked(change)?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = get(&tx, id)?.alert;
        let at = now();
        let mut said = Vec::new();
        if let Some(to) = change.state {
            if !current.state.may_become(to) {
                return Err(AlertsError::Transition { id, from: current.state, to });
            }
            if crate::baseline::learned::is_learnt(&tx, id)? {
                return Err(AlertsError::Conflict(format!(
                    "alert {id} is learnt as normal: unlearn it before reopening it"
                )));
            }
            tx.execute(
                "UPDATE alerts SET state = ?2, resolution = ?3, updated = ?4 WHERE id = ?1",
                params![id, to.as_str(), change.resolution.map(Resolution::as_str), at],
            )?;
            said.push(format!("{} -> {to}", current.state));
            if let Some(resolution) = change.resolution {
                said.push(format!("resolution {resolution}"));
            }
        }
        if let Some(assignee) = &change.assignee {
            let assignee = Some(assignee.as_str()).filter(|a| !a.is_empty());
            tx.execute("UPDATE alerts SET assignee = ?2, updated = ?3 WHERE id = ?1", params![id, assignee, at])?;
            said.push(assignee.map_or_else(|| "unassigned".to_owned(), |a| format!("assigned to {a}")));
        }
        if let Some(note) = &change.note {
            tx.execute(
                "INSERT INTO alert_notes (alert_id, time, author, text) VALUES (?1, ?2, ?3, ?4)",
                params![id, at, actor, note],
            )?;
            said.push(format!("note: {note}"));
        }
        let action = match change.state {
            Some(State::Acknowledged) => "alert_acknowledged",
            Some(State::Resolved) => "alert_resolved",
            Some(State::Open) => "alert_reopened",
            None => "alert_updated",
        };
        let detail = format!("alert {id} ({}): {}", current.incident_id, said.join("; "));
        crate::inventory::ledger::audit(&tx, actor, current.device, action, &detail)?;
        let detail_now = get(&tx, id)?;
        tx.commit()?;
        self.announce([AlertChanged::from(detail_now.alert.clone())]);
        let event = GatewayEvent::new(
            Severity::Info,
            current.device,
            actor,
            EventKind::Audit { action: action.into(), detail },
        );
        Ok((detail_now, event))
    }
}

/// `change` with its text checked and escaped, or why it cannot apply to any alert.
pub(crate) fn checked(mut change: Change) -> Result<Change, AlertsError> {
    let invalid = |why: String| Err(AlertsError::Invalid(why));
    if change == Change::default() {
        return invalid("nothing to change: give state, resolution, assignee or note".into());
    }
    match (change.state, change.resolution) {
        (Some(State::Resolved), None) => {
            return invalid("resolving needs a resolution: true_positive, false_positive or benign".into());
        }
        (Some(State::Resolved), Some(_)) | (_, None) => {}
        (_, Some(_)) => return invalid("a resolution goes only with state resolved".into()),
    }
    if let Some(assignee) = &change.assignee {
        // A name, shown as is: refused rather than escaped when it holds a control character.
        if let Err(unsafe_text) = crate::untrusted::check("assignee", assignee) {
            return invalid(unsafe_text.to_string());
        }
        if assignee.len() > MAX_ASSIGNEE_BYTES {
            return invalid(format!("assignee is longer than {MAX_ASSIGNEE_BYTES} bytes"));
        }
    }
    if let Some(note) = &mut change.note {
        // Free text: kept readable, escaped (`untrusted`); the limit counts the escaped text.
        *note = crate::untrusted::escape(note.trim()).into_owned();
        if note.is_empty() {
            return invalid("the note is empty".into());
        }
        if note.len() > MAX_NOTE_BYTES {
            return invalid(format!("the note is longer than {MAX_NOTE_BYTES} bytes (escaped)"));
        }
    }
    Ok(change)
}

impl From<Alert> for AlertChanged {
    fn from(alert: Alert) -> Self {
        Self { id: alert.id, state: alert.state, device: alert.device, severity: alert.severity }
    }
}

/// Adds an alert to its incident's open record, or opens one. Returns the record's id.
fn record_alert(conn: &Connection, event: &GatewayEvent) -> Result<i64, AlertsError> {
    let EventKind::Alert { incident_id, detector, score, expected, observed, flows, .. } = &event.kind else {
        return Err(AlertsError::Invalid("not an alert".into()));
    };
    let (time, at) = (millis(event.time), now());
    let device_ip = event.device_ip.map(|ip| ip.to_string());
    let open: Option<i64> = conn
        .query_row(
            "SELECT id FROM alerts WHERE incident_id = ?1 AND state != 'resolved' ORDER BY id DESC LIMIT 1",
            [incident_id],
            |row| row.get(0),
        )
        .optional()?;
    let id = match open {
        Some(id) => {
            conn.execute(
                "UPDATE alerts SET severity = MAX(severity, ?2), score = MAX(score, ?3), expected = ?4,
                 observed = ?5, device_ip = COALESCE(?6, device_ip), first_seen = MIN(first_seen, ?7),
                 last_seen = MAX(last_seen, ?7), count = count + ?8, calm_since = NULL, updated = ?9
                 WHERE id = ?1",
                params![id, event.severity.rank(), score, expected, observed, device_ip, time, event.count(), at],
            )?;
            id
        }
        None => {
            conn.execute(
                "INSERT INTO alerts (incident_id, detector, actor, severity, score, expected, observed, device,
                 device_ip, first_seen, last_seen, count, state, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, 'open', ?12)",
                params![
                    incident_id,
                    detector,
                    event.actor,
                    event.severity.rank(),
                    score,
                    expected,
                    observed,
                    event.device.map(|mac| mac.to_string()),
                    device_ip,
                    time,
                    event.count(),
                    at
                ],
            )?;
            conn.last_insert_rowid()
        }
    };
    let mut add_flow = conn.prepare_cached(
        "INSERT OR IGNORE INTO alert_flows (alert_id, flow)
         SELECT ?1, ?2 WHERE (SELECT COUNT(*) FROM alert_flows WHERE alert_id = ?1) < ?3",
    )?;
    for flow in flows {
        add_flow.execute(params![id, flow, MAX_FLOWS_PER_ALERT])?;
    }
    learn::add_observations(conn, id, &event.observations)?;
    Ok(id)
}

pub(super) fn get(conn: &Connection, id: i64) -> Result<AlertDetail, AlertsError> {
    let alert = conn
        .query_row(&format!("SELECT {COLUMNS} FROM alerts WHERE id = ?1"), [id], read_alert)
        .optional()?
        .ok_or(AlertsError::NotFound(id))?;
    let flows = conn
        .prepare_cached("SELECT flow FROM alert_flows WHERE alert_id = ?1 ORDER BY rowid")?
        .query_map([id], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let responses = conn
        .prepare_cached("SELECT time, actor, action, reason FROM alert_responses WHERE alert_id = ?1 ORDER BY id")?
        .query_map([id], |row| {
            Ok(Response { time: time_at(row, 0)?, actor: row.get(1)?, action: row.get(2)?, reason: row.get(3)? })
        })?
        .collect::<Result<_, _>>()?;
    let notes = conn
        .prepare_cached("SELECT time, author, text FROM alert_notes WHERE alert_id = ?1 ORDER BY id")?
        .query_map([id], |row| Ok(Note { time: time_at(row, 0)?, author: row.get(1)?, text: row.get(2)? }))?
        .collect::<Result<_, _>>()?;
    let learned = crate::baseline::learned::is_learnt(conn, id)?;
    let observations = learn::observations(conn, id)?;
    Ok(AlertDetail { alert, flows, responses, notes, learned, observations })
}

/// A row of `COLUMNS`.
fn read_alert(row: &Row) -> rusqlite::Result<Alert> {
    let severity: i64 = row.get(4)?;
    let device: Option<String> = row.get(8)?;
    let device_ip: Option<String> = row.get(9)?;
    let calm_since: Option<i64> = row.get(13)?;
    let resolution: Option<String> = row.get(15)?;
    Ok(Alert {
        id: row.get(0)?,
        incident_id: row.get(1)?,
        detector: row.get(2)?,
        actor: row.get(3)?,
        severity: Severity::from_rank(severity).ok_or_else(|| corrupt(4, format!("severity rank {severity}")))?,
        score: row.get(5)?,
        expected: row.get(6)?,
        observed: row.get(7)?,
        device: device.map(|text| text.parse::<Mac>().map_err(|e| corrupt(8, e.to_string()))).transpose()?,
        device_ip: device_ip.map(|text| text.parse().map_err(|_| corrupt(9, text))).transpose()?,
        first_seen: time_at(row, 10)?,
        last_seen: time_at(row, 11)?,
        count: row.get(12)?,
        calm_since: calm_since.map(|ms| from_millis(ms).ok_or_else(|| corrupt(13, ms.to_string()))).transpose()?,
        state: row.get::<_, String>(14)?.parse().map_err(|e| corrupt(14, e))?,
        resolution: resolution.map(|text| text.parse().map_err(|e| corrupt(15, e))).transpose()?,
        assignee: row.get(16)?,
    })
}

fn time_at(row: &Row, column: usize) -> rusqlite::Result<OffsetDateTime> {
    let ms: i64 = row.get(column)?;
    from_millis(ms).ok_or_else(|| corrupt(column, format!("time {ms}")))
}

fn from_millis(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

fn corrupt(column: usize, reason: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, reason.into())
}

pub(super) fn now() -> i64 {
    millis(OffsetDateTime::now_utc())
}
