//! The console overview's view of the alerts: open records by severity, records by state, and
//! records over time (by when their incident began), bucketed. Counts come from `alert_counts`,
//! which the migration's triggers keep in step with every write, so they cost the same at a
//! million records; the buckets read the covering index on (first_seen, severity) over the
//! asked range only (`schema`).
//!
//! Reads `alert_counts` and `alerts`; writes nothing.
use std::collections::BTreeMap;

use rusqlite::{Connection, params};
use time::{Duration, OffsetDateTime};

use super::{AlertsError, State, query::millis};
use crate::event::Severity;

/// Most buckets one summary holds.
pub const MAX_BUCKETS: i64 = 1_000;

/// Counts of every state and severity (zeros included) and the buckets asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub open_by_severity: BTreeMap<Severity, u64>,
    pub by_state: BTreeMap<State, u64>,
    /// Oldest first, every bucket of the range (empty ones too).
    pub over_time: Vec<Bucket>,
}

/// Records whose incident began in `[start, start + bucket)`, by severity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub start: OffsetDateTime,
    pub by_severity: BTreeMap<Severity, u64>,
}

/// What the counts read: at most one row per state and severity.
pub(super) const COUNTS_SQL: &str = "SELECT state, severity, count FROM alert_counts";
/// What the buckets read: `?1` since, `?2` until, `?3` the bucket, all in milliseconds.
pub(super) const BUCKETS_SQL: &str = "SELECT (first_seen - ?1) / ?3, severity, COUNT(*) FROM alerts
     WHERE first_seen >= ?1 AND first_seen < ?2 GROUP BY 1, 2";

fn zeros() -> BTreeMap<Severity, u64> {
    Severity::ALL.into_iter().map(|s| (s, 0)).collect()
}

/// The summary of the records, with buckets of `bucket` from `since` up to `until`.
pub(super) fn summary(
    conn: &Connection,
    since: OffsetDateTime,
    until: OffsetDateTime,
    bucket: Duration,
) -> Result<Summary, AlertsError> {
    let bucket_ms = bucket.whole_milliseconds();
    if bucket_ms <= 0 || since >= until {
        return Err(AlertsError::Invalid("the bucket must be positive and since before until".into()));
    }
    let (from, to) = (millis(since), millis(until));
    let bucket_ms = i64::try_from(bucket_ms).unwrap_or(i64::MAX);
    let buckets = (to - from).saturating_add(bucket_ms - 1) / bucket_ms;
    if buckets > MAX_BUCKETS {
        return Err(AlertsError::Invalid(format!("at most {MAX_BUCKETS} buckets: a longer bucket or a later since")));
    }
    let mut open_by_severity = zeros();
    let mut by_state: BTreeMap<State, u64> = State::ALL.iter().map(|s| (*s, 0)).collect();
    let mut statement = conn.prepare_cached(COUNTS_SQL)?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get(2)?)))?;
    for row in rows {
        let (state, severity, count): (String, i64, i64) = row?;
        let (Ok(state), Some(severity)) = (state.parse::<State>(), Severity::from_rank(severity)) else {
            return Err(AlertsError::Invalid(format!("alert_counts holds {state:?} rank {severity}")));
        };
        let count = u64::try_from(count).unwrap_or_default();
        *by_state.entry(state).or_default() += count;
        if state == State::Open {
            *open_by_severity.entry(severity).or_default() += count;
        }
    }
    let mut over_time: Vec<Bucket> = (0..buckets)
        .map(|k| Bucket { start: since + Duration::milliseconds(k * bucket_ms), by_severity: zeros() })
        .collect();
    let mut statement = conn.prepare_cached(BUCKETS_SQL)?;
    let rows = statement.query_map(params![from, to, bucket_ms], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    })?;
    for row in rows {
        let (index, severity, count) = row?;
        let slot = usize::try_from(index).ok().and_then(|index| over_time.get_mut(index));
        if let (Some(slot), Some(severity)) = (slot, Severity::from_rank(severity)) {
            *slot.by_severity.entry(severity).or_default() += u64::try_from(count).unwrap_or_default();
        }
    }
    Ok(Summary { open_by_severity, by_state, over_time })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        alerts::{AlertStore, Change, Filter, Query, SCHEMA},
        device::Mac,
        event::{EventKind, GatewayEvent},
    };

    fn alert(n: u32, severity: Severity, at: OffsetDateTime) -> GatewayEvent {
        let mut event = GatewayEvent::new(
            severity,
            Some(Mac([2, 0, 0, 0, 0, (n % 200) as u8])),
            "detector:scan",
            EventKind::Alert {
                incident_id: format!("scan:{n}"),
                detector: "scan".into(),
                score: 0.5,
                expected: String::new(),
                observed: String::new(),
                flows: vec![],
                resolved: false,
            },
        );
        event.time = at;
        event
    }

    /// A store holding `n` records seen `now`, each severity in turn.
    fn store_of(n: u32, now: OffsetDateTime) -> AlertStore {
        let mut store = AlertStore::new(crate::store::open_in_memory(SCHEMA).unwrap());
        let events: Vec<_> = (0..n).map(|n| alert(n, Severity::ALL[n as usize % 5], now)).collect();
        store.record(&events).unwrap();
        store
    }

    /// (state, severity rank, count) rows of `sql`.
    fn counted(store: &AlertStore, sql: &str) -> Vec<(String, i64, i64)> {
        let mut statement = store.conn.prepare(sql).unwrap();
        statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn counts_follow_records_repeats_and_analysts() {
        let now = OffsetDateTime::now_utc();
        let mut store = store_of(30, now);
        // A repeat raises one record's severity; analysts move two along.
        store.record(&[alert(0, Severity::Critical, now)]).unwrap();
        let info = Query { filter: Filter { severity: Some(Severity::Info), ..Filter::default() }, ..Query::default() };
        let ids: Vec<i64> = store.list(&info).unwrap().alerts.iter().map(|a| a.id).take(2).collect();
        let ack = Change { state: Some(State::Acknowledged), ..Change::default() };
        store.change(ids[0], ack, "api:otto").unwrap();
        let resolve = Change {
            state: Some(State::Resolved),
            resolution: Some(super::super::Resolution::Benign),
            ..Change::default()
        };
        store.change(ids[1], resolve, "api:otto").unwrap();
        // The counts the triggers keep, checked against the table itself.
        assert_eq!(
            counted(&store, "SELECT state, severity, count FROM alert_counts WHERE count > 0 ORDER BY 1, 2"),
            counted(&store, "SELECT state, severity, COUNT(*) FROM alerts GROUP BY 1, 2 ORDER BY 1, 2")
        );

        let summary =
            store.summary(now - Duration::hours(1), now + Duration::minutes(1), Duration::minutes(10)).unwrap();
        assert_eq!(summary.by_state.values().sum::<u64>(), 30);
        assert_eq!(summary.by_state[&State::Acknowledged], 1);
        assert_eq!(summary.open_by_severity.values().sum::<u64>(), 28);
        assert_eq!(summary.open_by_severity[&Severity::Critical], 7, "six critical, and the raised repeat");
        assert_eq!(summary.open_by_severity[&Severity::Info], 3, "five left after the raise, two worked");
        assert_eq!(summary.over_time.len(), 7);
        assert_eq!(summary.over_time.iter().flat_map(|b| b.by_severity.values()).sum::<u64>(), 30);
        assert!(store.summary(now - Duration::days(30), now, Duration::minutes(1)).is_err(), "too many buckets");
    }

    /// The plan of `sql` with `values` bound, one line per step.
    fn plan(store: &AlertStore, sql: &str, values: &[i64]) -> String {
        let mut statement = store.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = statement.query_map(rusqlite::params_from_iter(values), |r| r.get(3)).unwrap();
        rows.collect::<Result<Vec<String>, _>>().unwrap().join("\n")
    }

    #[test]
    fn the_summary_reads_counts_and_a_covering_index_never_the_table() {
        let store = store_of(2_000, OffsetDateTime::now_utc());
        store.conn.execute_batch("ANALYZE").unwrap();
        let counts = plan(&store, COUNTS_SQL, &[]);
        assert!(counts.contains("alert_counts") && !counts.contains("alerts"), "{counts}");
        let buckets = plan(&store, BUCKETS_SQL, &[0, 1, 1]);
        assert!(
            buckets.contains("USING COVERING INDEX alerts_first_seen_severity (first_seen>? AND first_seen<?)"),
            "{buckets}"
        );
        assert!(!buckets.contains("SCAN alerts"), "{buckets}");
    }
}
