//! A hub killed mid-stream (its ingest task aborted mid-batch, nothing acknowledged after that)
//! and started again takes the rest, and what it had taken but not acknowledged is delivered
//! again without being stored or counted twice: every event once, every alert counted once. A
//! broker killed and restarted under a running hub: ingest pulls again and takes what follows.
#[path = "hub_ingest/support.rs"]
mod support;

use support::{Fleet, alert};

const BEFORE: i64 = 3_000;
const WHILE_DOWN: i64 = 1_000;
/// Small batches and a short acknowledgement wait, so the test sees many batches and the
/// unacknowledged ones come back quickly.
const SETTINGS: &str = "[ingest]\nbatch = 100\nack_wait_secs = 2\n";

#[tokio::test]
async fn a_hub_killed_mid_stream_resumes_and_stores_everything_exactly_once() {
    let fleet = Fleet::start().await;
    for seq in 1..=BEFORE {
        fleet.publish(&alert("s1", "gw-1", seq, "flood", false)).await;
    }
    let first = fleet.ingest(SETTINGS).await;
    first.wait_for("a few batches", |s| s.batches >= 3).await;
    first.task.abort();
    let _ = first.task.await;
    let taken = fleet.count("SELECT count(*) FROM events").await;
    assert!(taken < BEFORE, "killed mid-stream, not after everything: {taken} stored");

    for seq in BEFORE + 1..=BEFORE + WHILE_DOWN {
        fleet.publish(&alert("s1", "gw-1", seq, "flood", false)).await;
    }
    let second = fleet.ingest(SETTINGS).await;
    let total = BEFORE + WHILE_DOWN;
    // Everything delivered and acknowledged: the redelivered batch included.
    fleet.wait_consumer_done().await;
    assert_eq!(fleet.count("SELECT count(*) FROM events").await, total);
    assert_eq!(fleet.count("SELECT count(DISTINCT seq) FROM events").await, total);
    assert_eq!(
        fleet.count("SELECT count FROM alerts WHERE incident_id = 'flood'").await,
        total,
        "each alert counted once into its incident, redelivered or not"
    );
    assert_eq!(second.stats.snapshot().refused, 0);
    second.stop().await;
}

#[tokio::test]
async fn ingest_resumes_after_the_broker_is_killed_and_restarted() {
    let mut fleet = Fleet::start().await;
    let ingest = fleet.ingest("").await;
    for seq in 1..=100 {
        fleet.publish(&alert("s1", "gw-1", seq, "before", false)).await;
    }
    ingest.wait_handled(100).await;

    fleet.nats.kill9();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    fleet.nats.restart();
    for seq in 101..=200 {
        publish_until_acknowledged(&fleet, &alert("s1", "gw-1", seq, "after", false)).await;
    }
    ingest.wait_handled(200).await;
    assert_eq!(fleet.count("SELECT count(*) FROM events").await, 200);
    assert_eq!(fleet.count("SELECT sum(count)::bigint FROM alerts").await, 200);
    ingest.stop().await;
}

/// Publishes, retrying while the client reconnects to the restarted broker.
async fn publish_until_acknowledged(fleet: &Fleet, report: &iotgw::fleet::wire::Report) {
    let deadline = std::time::Instant::now() + support::PATIENCE;
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", report.msg_id().as_str());
        let payload = serde_json::to_vec(report).unwrap();
        if let Ok(ack) = fleet.js.publish_with_headers(report.subject(), headers, payload.into()).await
            && ack.await.is_ok()
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the restarted broker never acknowledged");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
