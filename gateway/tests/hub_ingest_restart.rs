//! A hub killed mid-stream (its ingest task aborted mid-batch, nothing acknowledged after that)
//! and started again takes the rest, and what it had taken but not acknowledged is delivered
//! again without being stored or counted twice: every event once, every alert counted once.
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
