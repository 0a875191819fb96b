//! The alert store: repeats of an incident update one record, the lifecycle refuses what it
//! must without changing anything, every change is audited, and pages list every record once.
use std::collections::HashSet;

use time::{Duration, OffsetDateTime};

use super::*;
use crate::event::{EventBus, EventKind, GatewayEvent};

const CAMERA: Mac = Mac([0x98, 0x90, 0x96, 0x9a, 0x86, 0xdf]);
const PLUG: Mac = Mac([0x50, 0x02, 0x91, 0, 0, 1]);

fn store() -> AlertStore {
    AlertStore::new(crate::store::open_in_memory(SCHEMA).unwrap())
}

fn base_time() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap()
}

fn alert(device: Mac, detector: &str, score: f64, at_secs: i64, flows: &[&str]) -> GatewayEvent {
    let mut event = GatewayEvent::new(
        if score >= 0.8 { Severity::High } else { Severity::Medium },
        Some(device),
        format!("detector:{detector}"),
        EventKind::Alert {
            incident_id: format!("{detector}:{device}"),
            detector: detector.into(),
            score,
            expected: "at most 5 hosts a minute".into(),
            observed: format!("{} hosts\nforged line", (score * 100.0) as u32),
            flows: flows.iter().map(|f| (*f).to_owned()).collect(),
            resolved: false,
        },
    );
    event.time = base_time() + Duration::seconds(at_secs);
    event
}

fn calm(device: Mac, detector: &str, at_secs: i64) -> GatewayEvent {
    let mut event = alert(device, detector, 0.0, at_secs, &[]);
    if let EventKind::Alert { resolved, .. } = &mut event.kind {
        *resolved = true;
    }
    event.severity = Severity::Info;
    event
}

fn audit_rows(store: &AlertStore) -> Vec<(String, String, String)> {
    let mut statement = store.conn.prepare("SELECT actor, action, detail FROM inventory_audit ORDER BY id").unwrap();
    statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

fn only_id(store: &AlertStore) -> i64 {
    let page = store.list(&Query::default()).unwrap();
    assert_eq!(page.alerts.len(), 1, "{page:#?}");
    page.alerts[0].id
}

#[test]
fn repeats_of_an_incident_update_one_record() {
    let mut store = store();
    store.record(&[alert(CAMERA, "scan", 0.7, 0, &["tcp a:1 -> b:23", "tcp a:2 -> c:23"])]).unwrap();
    store.record(&[alert(CAMERA, "scan", 0.9, 30, &["tcp a:2 -> c:23", "tcp a:3 -> d:23"])]).unwrap();
    store.record(&[alert(CAMERA, "scan", 0.6, 60, &[])]).unwrap();
    let id = only_id(&store);
    let detail = store.get(id).unwrap();
    let a = &detail.alert;
    assert_eq!((a.count, a.score, a.severity), (3, 0.9, Severity::High), "highest score and severity kept");
    assert_eq!((a.first_seen, a.last_seen), (base_time(), base_time() + Duration::seconds(60)));
    assert_eq!(a.observed, "60 hosts\\nforged line", "the latest words, escaped");
    assert_eq!(detail.flows, ["tcp a:1 -> b:23", "tcp a:2 -> c:23", "tcp a:3 -> d:23"], "new evidence, once each");
    assert_eq!((a.state, a.calm_since), (State::Open, None));

    // The detector calls it over: calm, still open for the analyst; firing again clears calm.
    store.record(&[calm(CAMERA, "scan", 90)]).unwrap();
    let a = store.get(id).unwrap().alert;
    assert_eq!((a.state, a.calm_since, a.count), (State::Open, Some(base_time() + Duration::seconds(90)), 3));
    store.record(&[alert(CAMERA, "scan", 0.7, 120, &[])]).unwrap();
    assert_eq!(store.get(id).unwrap().alert.calm_since, None);

    // Another device or detector is another record.
    store.record(&[alert(PLUG, "scan", 0.7, 0, &[]), alert(CAMERA, "volume", 0.7, 0, &[])]).unwrap();
    assert_eq!(store.list(&Query::default()).unwrap().alerts.len(), 3);
}

#[test]
fn evidence_is_capped_per_record() {
    let mut store = store();
    let flows: Vec<String> = (0..MAX_FLOWS_PER_ALERT + 10).map(|i| format!("tcp a:{i} -> b:23")).collect();
    let flows: Vec<&str> = flows.iter().map(String::as_str).collect();
    store.record(&[alert(CAMERA, "scan", 0.7, 0, &flows)]).unwrap();
    let detail = store.get(only_id(&store)).unwrap();
    assert_eq!(detail.flows.len(), MAX_FLOWS_PER_ALERT);
    assert_eq!(detail.flows[0], "tcp a:0 -> b:23", "the first ones seen are kept");
}

#[test]
fn actions_for_an_incident_are_its_responses() {
    let mut store = store();
    let mut quarantine = GatewayEvent::new(
        Severity::High,
        Some(CAMERA),
        "respond:quarantine attacks",
        EventKind::Action { action: "quarantine".into(), reason: "scan scored 0.90".into() },
    );
    quarantine.responds_to = Some(format!("scan:{CAMERA}"));
    let unrelated = GatewayEvent::new(
        Severity::Medium,
        Some(CAMERA),
        "api:otto",
        EventKind::Action { action: "block".into(), reason: "by hand".into() },
    );
    store.record(&[alert(CAMERA, "scan", 0.9, 0, &[]), quarantine, unrelated]).unwrap();
    let responses = store.get(only_id(&store)).unwrap().responses;
    assert_eq!(responses.len(), 1, "{responses:#?}");
    assert_eq!(
        (responses[0].action.as_str(), responses[0].actor.as_str()),
        ("quarantine", "respond:quarantine attacks")
    );
}

#[test]
fn the_lifecycle_moves_one_way_and_reopens_with_every_change_audited() {
    let mut store = store();
    store.record(&[alert(CAMERA, "scan", 0.9, 0, &[])]).unwrap();
    let id = only_id(&store);
    let ack = Change { state: Some(State::Acknowledged), assignee: Some("alice".into()), ..Change::default() };
    let (detail, event) = store.change(id, ack, "api:otto").unwrap();
    assert_eq!((detail.alert.state, detail.alert.assignee.as_deref()), (State::Acknowledged, Some("alice")));
    let EventKind::Audit { action, detail: said } = &event.kind else { panic!("{event:?}") };
    assert_eq!((event.actor.as_str(), action.as_str(), event.device), ("api:otto", "alert_acknowledged", Some(CAMERA)));
    assert!(said.contains("open -> acknowledged") && said.contains("assigned to alice"), "{said}");

    let note = Change { note: Some("looks like\nthe nightly backup".into()), ..Change::default() };
    store.change(id, note, "api:otto").unwrap();
    let resolve = Change { state: Some(State::Resolved), resolution: Some(Resolution::Benign), ..Change::default() };
    let (detail, _) = store.change(id, resolve, "api:otto").unwrap();
    assert_eq!((detail.alert.state, detail.alert.resolution), (State::Resolved, Some(Resolution::Benign)));
    assert_eq!(detail.notes.len(), 1);
    assert_eq!(
        (detail.notes[0].author.as_str(), detail.notes[0].text.as_str()),
        ("api:otto", "looks like\\nthe nightly backup")
    );

    // A resolved record takes no more repeats: the incident's next alert opens a new one.
    store.record(&[alert(CAMERA, "scan", 0.9, 600, &[])]).unwrap();
    assert_eq!(store.get(id).unwrap().alert.count, 1);
    assert_eq!(store.list(&Query::default()).unwrap().alerts.len(), 2);

    let (detail, _) = store.change(id, Change { state: Some(State::Open), ..Change::default() }, "api:otto").unwrap();
    assert_eq!((detail.alert.state, detail.alert.resolution), (State::Open, None), "reopened");
    let actions: Vec<String> =
        audit_rows(&store).into_iter().map(|(actor, action, _)| format!("{actor} {action}")).collect();
    assert_eq!(
        actions,
        ["api:otto alert_acknowledged", "api:otto alert_updated", "api:otto alert_resolved", "api:otto alert_reopened"]
    );
}

#[test]
fn refused_changes_change_nothing() {
    let mut store = store();
    store.record(&[alert(CAMERA, "scan", 0.9, 0, &[])]).unwrap();
    let id = only_id(&store);
    let before = store.get(id).unwrap();
    let refused = [
        Change::default(),
        Change { state: Some(State::Resolved), ..Change::default() },
        Change { state: Some(State::Acknowledged), resolution: Some(Resolution::Benign), ..Change::default() },
        Change { resolution: Some(Resolution::Benign), note: Some("x".into()), ..Change::default() },
        Change { state: Some(State::Acknowledged), assignee: Some("al\u{202e}ice".into()), ..Change::default() },
        Change { note: Some("x".repeat(MAX_NOTE_BYTES + 1)), ..Change::default() },
        Change { note: Some("  ".into()), ..Change::default() },
        // open -> open: not a transition.
        Change { state: Some(State::Open), note: Some("x".into()), ..Change::default() },
    ];
    for change in refused {
        let error = store.change(id, change.clone(), "api:otto").unwrap_err();
        assert!(matches!(error, AlertsError::Invalid(_) | AlertsError::Transition { .. }), "{change:?}: {error}");
        assert_eq!(store.get(id).unwrap(), before, "{change:?} changed the record");
    }
    let ack = || Change { state: Some(State::Acknowledged), note: Some("mine".into()), ..Change::default() };
    store.change(id, ack(), "api:otto").unwrap();
    let acknowledged = store.get(id).unwrap();
    let error = store.change(id, ack(), "api:otto").unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "alert {id} is acknowledged: it cannot become acknowledged (open -> acknowledged -> resolved, resolved -> open)"
        )
    );
    assert_eq!(store.get(id).unwrap(), acknowledged, "the note of a refused change is not kept");
    assert_eq!(audit_rows(&store).len(), 1, "only the accepted change is audited");
    assert!(matches!(store.change(id + 99, ack(), "api:otto"), Err(AlertsError::NotFound(_))));
}

#[test]
fn filters_select_by_state_severity_device_detector_and_time() {
    let mut store = store();
    store
        .record(&[
            alert(CAMERA, "scan", 0.9, 0, &[]),
            alert(CAMERA, "volume", 0.6, 100, &[]),
            alert(PLUG, "scan", 0.7, 200, &[]),
        ])
        .unwrap();
    let ids = |store: &AlertStore, filter: Filter| -> Vec<String> {
        let page = store.list(&Query { filter, ..Query::default() }).unwrap();
        page.alerts.iter().map(|a| a.incident_id.clone()).collect()
    };
    assert_eq!(
        ids(&store, Filter { device: Some(CAMERA), ..Filter::default() }),
        [format!("volume:{CAMERA}"), format!("scan:{CAMERA}")]
    );
    assert_eq!(ids(&store, Filter { detector: Some("scan".into()), ..Filter::default() }).len(), 2);
    assert_eq!(ids(&store, Filter { severity: Some(Severity::High), ..Filter::default() }), [format!("scan:{CAMERA}")]);
    let window = Filter {
        since: Some(base_time() + Duration::seconds(50)),
        until: Some(base_time() + Duration::seconds(200)),
        ..Filter::default()
    };
    assert_eq!(ids(&store, window), [format!("volume:{CAMERA}")]);
    let plug_id = store.list(&Query::default()).unwrap().alerts[0].id;
    store.change(plug_id, Change { state: Some(State::Acknowledged), ..Change::default() }, "api:otto").unwrap();
    assert_eq!(ids(&store, Filter { state: Some(State::Acknowledged), ..Filter::default() }), [format!("scan:{PLUG}")]);
    assert_eq!(ids(&store, Filter { state: Some(State::Open), ..Filter::default() }).len(), 2);
}

#[test]
fn pages_list_every_record_exactly_once_in_every_order_while_records_arrive() {
    for sort in SortKey::ALL {
        for order in [Order::Desc, Order::Asc] {
            let mut store = store();
            // Ties on purpose: 5 distinct times, 3 scores, 2 severities for 40 records.
            let device = |i: u8| Mac([2, 0, 0, 0, 0, i]);
            let batch: Vec<GatewayEvent> = (0..40u8)
                .map(|i| alert(device(i), "scan", [0.6, 0.7, 0.9][usize::from(i % 3)], i64::from(i % 5), &[]))
                .collect();
            store.record(&batch).unwrap();
            let (mut seen, mut previous) = (Vec::new(), None::<Alert>);
            let mut query = Query { sort, order, limit: Some(7), ..Query::default() };
            for page_number in 0.. {
                let page = store.list(&query).unwrap();
                for alert in &page.alerts {
                    if let Some(previous) = &previous {
                        assert!(
                            in_order(previous, alert, sort, order),
                            "{sort:?} {order:?}: {previous:?} then {alert:?}"
                        );
                    }
                    previous = Some(alert.clone());
                }
                seen.extend(page.alerts.iter().map(|a| a.id));
                // New records arrive while the analyst pages.
                store.record(&[alert(device(100 + page_number), "volume", 0.7, 2, &[])]).unwrap();
                match page.next_cursor {
                    Some(cursor) => query.cursor = Some(Cursor::decode(&cursor.encode()).unwrap()),
                    None => break,
                }
            }
            let unique: HashSet<i64> = seen.iter().copied().collect();
            assert_eq!(unique.len(), seen.len(), "{sort:?} {order:?}: a record listed twice");
            assert!((1..=40).all(|id| unique.contains(&id)), "{sort:?} {order:?}: a record skipped");
        }
    }
}

fn in_order(a: &Alert, b: &Alert, sort: SortKey, order: Order) -> bool {
    let key = |x: &Alert| match sort {
        SortKey::LastSeen => (x.last_seen.unix_timestamp_nanos() as f64, x.id),
        SortKey::FirstSeen => (x.first_seen.unix_timestamp_nanos() as f64, x.id),
        SortKey::Score => (x.score, x.id),
        SortKey::Severity => (x.severity.rank() as f64, x.id),
    };
    let (ka, kb) = (key(a), key(b));
    match order {
        Order::Desc => ka.0 > kb.0 || (ka.0 == kb.0 && ka.1 > kb.1),
        Order::Asc => ka.0 < kb.0 || (ka.0 == kb.0 && ka.1 < kb.1),
    }
}

#[test]
fn bad_limits_and_foreign_cursors_are_refused() {
    let store = store();
    for limit in [0, MAX_PAGE + 1] {
        assert!(matches!(store.list(&Query { limit: Some(limit), ..Query::default() }), Err(AlertsError::Invalid(_))));
    }
    assert!(Cursor::decode("not a cursor").is_err());
    assert!(Cursor::decode("").is_err());
    let mut store = store;
    store.record(&(0..3).map(|i| alert(Mac([2, 0, 0, 0, 0, i]), "scan", 0.7, 0, &[])).collect::<Vec<_>>()).unwrap();
    let cursor = store.list(&Query { limit: Some(1), ..Query::default() }).unwrap().next_cursor.unwrap();
    let by_score = Query { sort: SortKey::Score, cursor: Some(cursor), ..Query::default() };
    assert!(matches!(store.list(&by_score), Err(AlertsError::Invalid(_))), "a cursor of another order");
}

#[test]
fn every_list_order_and_filter_reads_an_index_without_sorting_on_every_page() {
    let mut store = store();
    store.record(&(0..3).map(|i| alert(Mac([2, 0, 0, 0, 0, i]), "scan", 0.7, 0, &[])).collect::<Vec<_>>()).unwrap();
    let mut queries: Vec<Query> = SortKey::ALL
        .into_iter()
        .flat_map(|sort| [Order::Desc, Order::Asc].map(|order| Query { sort, order, ..Query::default() }))
        .collect();
    for filter in [
        Filter { state: Some(State::Open), ..Filter::default() },
        Filter { severity: Some(Severity::Critical), ..Filter::default() },
        Filter { device: Some(CAMERA), ..Filter::default() },
        Filter { detector: Some("scan".into()), ..Filter::default() },
        Filter { since: Some(base_time()), until: Some(base_time() + Duration::days(1)), ..Filter::default() },
    ] {
        queries.push(Query { filter, ..Query::default() });
    }
    // The same lists further on: after the first page's cursor.
    let deeper: Vec<Query> = queries
        .iter()
        .map(|query| {
            let first = Query { filter: Filter::default(), limit: Some(1), ..query.clone() };
            let cursor = store.list(&first).unwrap().next_cursor.expect("three records, pages of one");
            Query { cursor: Some(cursor), ..query.clone() }
        })
        .collect();
    let filters: Vec<Filter> =
        queries.iter().map(|query| query.filter.clone()).filter(|f| *f != Filter::default()).collect();
    let mut lists: Vec<(Query, bool)> = queries.into_iter().chain(deeper).map(|query| (query, false)).collect();
    // Other orders under a filter matching many: the order's index, walked.
    for sort in [SortKey::FirstSeen, SortKey::Score, SortKey::Severity] {
        for filter in &filters {
            lists.push((Query { sort, filter: filter.clone(), ..Query::default() }, true));
        }
    }
    for (query, walk) in lists {
        let (sql, values) = query.sql(walk).unwrap();
        let mut statement = store.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = statement
            .query_map(rusqlite::params_from_iter(values), |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("USING INDEX") && !plan.contains("TEMP B-TREE"), "{query:?}: {plan}");
        if walk {
            let index = format!("alerts_{}", query.sort.as_str());
            assert!(plan.split([' ', ';']).any(|word| word == index), "{query:?} walks {index}: {plan}");
        }
    }
}

#[test]
fn a_filtered_list_in_another_order_is_the_same_sorted_or_walked() {
    let mut store = store();
    let events: Vec<GatewayEvent> = (0..60u8)
        .map(|i| {
            let device = if i % 4 == 0 { CAMERA } else { Mac([2, 0, 0, 0, 1, i]) };
            alert(
                device,
                ["scan", "volume", "flood"][usize::from(i % 3)],
                f64::from(i % 7) / 7.0 + 0.1,
                i64::from(i % 9),
                &[],
            )
        })
        .collect();
    store.record(&events).unwrap();
    store.conn.execute("UPDATE alerts SET state = 'acknowledged' WHERE id % 5 = 0", []).unwrap();
    let ids = |query: &Query, walk: bool| -> Vec<i64> {
        let (sql, values) = query.sql(walk).unwrap();
        let mut statement = store.conn.prepare(&sql).unwrap();
        statement.query_map(rusqlite::params_from_iter(values), |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let at = |secs: i64| Some(base_time() + Duration::seconds(secs));
    for filter in [
        Filter { state: Some(State::Acknowledged), ..Filter::default() },
        Filter { severity: Some(Severity::High), ..Filter::default() },
        Filter { device: Some(CAMERA), ..Filter::default() },
        Filter { detector: Some("volume".into()), ..Filter::default() },
        Filter { since: at(2), until: at(6), ..Filter::default() },
    ] {
        for sort in SortKey::ALL {
            for order in [Order::Desc, Order::Asc] {
                let query = Query { filter: filter.clone(), sort, order, limit: Some(MAX_PAGE), cursor: None };
                let sorted = ids(&query, false);
                assert!(!sorted.is_empty() && sorted.len() < 60, "{query:?}: the fixtures match some");
                assert_eq!(sorted, ids(&query, true), "{query:?}");
            }
        }
    }
}

#[test]
fn the_recorder_gets_every_alert_however_far_the_bus_lags() {
    let scratch = iotgw_test_support::services::scratch("alerts");
    let path = scratch.join("alerts.db");
    let bus = EventBus::new(4);
    let recorder = Recorder::spawn(AlertStore::open(&path).unwrap(), &bus).unwrap();
    let _lagging = bus.subscribe();
    for i in 0..200u8 {
        bus.publish(alert(Mac([2, 0, 0, 0, 0, i]), "scan", 0.7, 0, &[]));
    }
    recorder.join();
    let store = AlertStore::open(&path).unwrap();
    let page = store.list(&Query { limit: Some(MAX_PAGE), ..Query::default() }).unwrap();
    assert_eq!(page.alerts.len(), 200);
}

mod learn;
