//! Issue 16: a gateway's events reach the fleet broker from the durable outbox, in order,
//! each exactly once in the `IOTGW` stream, across a broker `kill -9` under load and a gateway
//! restart. Real nats-server (Debian's 2.9) with the hub's streams; the stream is read
//! directly (the hub's consumer is not part of this).
#[path = "fleet/support.rs"]
mod support;

use std::time::Duration;

use iotgw::fleet::{subjects, wire::ReportBody};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn event_subject() -> String {
    subjects::report(SITE, GATEWAY, subjects::ReportKind::Event)
}

/// Checks that the stream holds events `0..count` once each, in order, each under its own
/// message id and outbox sequence.
fn assert_exactly_once_in_order(reports: &[(String, iotgw::fleet::wire::Report)], count: usize) {
    let numbers: Vec<usize> = reports.iter().map(|(_, r)| number_of(r)).collect();
    assert_eq!(numbers, (0..count).collect::<Vec<_>>(), "every event once, in order");
    let mut last_seq = 0;
    for (id, report) in reports {
        let ReportBody::Event { seq, .. } = &report.body else { unreachable!() };
        assert!(*seq > last_seq, "outbox sequences grow: {seq} after {last_seq}");
        last_seq = *seq;
        assert_eq!(id, &report.msg_id(), "the Nats-Msg-Id header is the report's id");
        assert_eq!(id, &format!("{SITE}.{GATEWAY}.event.{seq}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_stream_in_order_with_their_subjects_and_ids() {
    let broker = Broker::start().await;
    let store = store("fleet-order");
    let gateway = Gateway::start(&broker.nats.url(), &store).await;
    const COUNT: usize = 500;
    for n in 0..COUNT {
        gateway.bus.publish(numbered(n));
    }
    let reports = wait_for("every event in the stream", WAIT, async || {
        let reports = broker.reports(&event_subject()).await;
        (reports.len() >= COUNT).then_some(reports)
    })
    .await;
    assert_exactly_once_in_order(&reports, COUNT);
    let counters = wait_for("the backlog to drain", WAIT, async || {
        let counters = gateway.counters().await;
        (counters.backlog_events == 0).then_some(counters)
    })
    .await;
    assert!(counters.connected);
    assert_eq!(counters.published_events, COUNT as u64);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_under_load_loses_nothing_and_duplicates_nothing() {
    let mut broker = Broker::start().await;
    let store = store("fleet-kill9");
    let gateway = Gateway::start(&broker.nats.url(), &store).await;
    const COUNT: usize = 1_500;
    const PACE: Duration = Duration::from_millis(4);
    // Events keep coming the whole time, about 250 a second for 6 s.
    let bus = gateway.bus.clone();
    let producer = tokio::spawn(async move {
        for n in 0..COUNT {
            bus.publish(numbered(n));
            tokio::time::sleep(PACE).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.nats.kill9();
    let mut peak_backlog = 0;
    let outage = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < outage {
        let counters = gateway.counters().await;
        peak_backlog = peak_backlog.max(counters.backlog_events);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = gateway.counters().await;
    assert!(!during.connected, "the link shows the broker is gone");
    assert!(peak_backlog > 0, "the backlog grew while the broker was down");
    broker.nats.restart();
    producer.await.unwrap();

    let reports = wait_for("every event in the stream after the restart", WAIT, async || {
        let reports = broker.reports(&event_subject()).await;
        (reports.len() >= COUNT).then_some(reports)
    })
    .await;
    assert_exactly_once_in_order(&reports, COUNT);
    wait_for("the backlog to drain", WAIT, async || (gateway.counters().await.backlog_events == 0).then_some(())).await;
    // Nothing more arrives later: what is in the stream is all there is.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(broker.reports(&event_subject()).await.len(), COUNT);
    println!("peak backlog while the broker was down: {peak_backlog} events");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_resumes_from_its_cursor() {
    let broker = Broker::start().await;
    let store = store("fleet-restart");
    const HALF: usize = 100;
    let first = Gateway::start(&broker.nats.url(), &store).await;
    for n in 0..HALF {
        first.bus.publish(numbered(n));
    }
    wait_for("the first half taken", WAIT, async || {
        let counters = first.counters().await;
        (counters.published_events == HALF as u64 && counters.backlog_events == 0).then_some(())
    })
    .await;
    first.stop().await;

    let second = Gateway::start(&broker.nats.url(), &store).await;
    for n in HALF..2 * HALF {
        second.bus.publish(numbered(n));
    }
    let reports = wait_for("both halves in the stream", WAIT, async || {
        let reports = broker.reports(&event_subject()).await;
        (reports.len() >= 2 * HALF).then_some(reports)
    })
    .await;
    assert_exactly_once_in_order(&reports, 2 * HALF);
    let counters = wait_for("the second half taken", WAIT, async || {
        let counters = second.counters().await;
        (counters.backlog_events == 0 && counters.published_events >= HALF as u64).then_some(counters)
    })
    .await;
    assert_eq!(counters.published_events, HALF as u64, "the restarted gateway sent only what was new");
    second.stop().await;
}
