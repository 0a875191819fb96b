use std::path::PathBuf;

use rusqlite::Connection;

use super::{pruning::prune, *};
use crate::{event::EventKind, integrations::config::Filter};

/// A store in its own temp folder, removed when the test ends (even by a panic).
type TempStore = iotgw_test_support::services::Scratch;

fn temp_store(name: &str) -> (TempStore, PathBuf) {
    let dir = iotgw_test_support::services::scratch(&format!("outbox-{name}"));
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
    let conn = crate::store::open(&path, &[super::MIGRATIONS]).unwrap();
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
    let conn = crate::store::open(&path, &[super::MIGRATIONS]).unwrap();
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
        .query_row("SELECT MIN(seq) FROM integration_outbox WHERE kind = 'audit' AND severity = 0", [], |r| r.get(0))
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
    let conn = crate::store::open(&path, &[super::MIGRATIONS]).unwrap();
    prune(&conn, &["a".into()], 3).unwrap();
    let reader = Reader::open(&path, "a", &Filter::default()).unwrap();
    let left = reader.next_batch(Seq(0), 10).unwrap();
    assert_eq!(left.len(), 3);
    assert_eq!(left[0].seq, Seq(3));
    let dropped: i64 =
        conn.query_row("SELECT value FROM integration_stats WHERE key = ?1", [STAT_DROPPED], |r| r.get(0)).unwrap();
    assert_eq!(dropped, 2);
}
