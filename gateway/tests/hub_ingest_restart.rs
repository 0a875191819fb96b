//! A hub killed mid-stream (its ingest task aborted mid-batch, nothing acknowledged after that)
//! and started again takes the rest, and what it had taken but not acknowledged is delivered
//! again without being stored or counted twice: every event once, every alert counted once. A
//! broker killed and restarted under a running hub: ingest pulls again and takes what follows.
//! A hub restarted with other `[ingest]` settings brings its consumer to them, keeping its
//! position.
#[path = "hub_ingest/support.rs"]
mod support;

use support::{Fleet, alert};

const BEFORE: i64 = 3_000;
const WHILE_DOWN: i64 = 1_000;
/// Small batches and a short acknowledgement wait, so the test sees many batches and the
/// unacknowledged ones come back quickly.
const SETTINGS: &str = "[ingest]\nbatch = 100\nwriters = 2\nack_wait_secs = 2\n";

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
    // A delivery under way when the connection broke is lost with it, and comes again after
    // the acknowledgement wait: keep that short.
    let ingest = fleet.ingest(SETTINGS).await;
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
    // Not `wait_handled`: acknowledgements not yet on disk when the broker was killed bring
    // their reports again, which count as handled again.
    fleet.wait_count("SELECT count(*) FROM events", 200).await;
    fleet.wait_consumer_done().await;
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

#[tokio::test]
async fn a_restarted_hub_brings_its_consumer_to_new_settings_and_keeps_its_position() {
    let fleet = Fleet::start().await;
    let first = fleet.ingest("").await;
    for seq in 1..=10 {
        fleet.publish(&alert("s1", "gw-1", seq, "before", false)).await;
    }
    first.wait_handled(10).await;
    first.stop().await;
    for seq in 11..=20 {
        fleet.publish(&alert("s1", "gw-1", seq, "after", false)).await;
    }
    let second = fleet.ingest(SETTINGS).await;
    second.wait_handled(10).await;
    let stream = fleet.js.get_stream(iotgw::fleet::subjects::REPORT_STREAM).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(iotgw::hub::ingest::CONSUMER).await.unwrap();
    let config = consumer.info().await.unwrap().config.clone();
    // Room for what each of the 2 writers stores, decodes and has queued, and the batch in hand.
    assert_eq!((config.ack_wait, config.max_ack_pending), (std::time::Duration::from_secs(2), 100 * (3 * 2 + 1)));
    fleet.wait_consumer_done().await;
    assert_eq!(second.stats.snapshot().reports, 10, "only what came after");
    assert_eq!(second.stats.snapshot().duplicate_events, 0);
    second.stop().await;
}
