//! Issue 16: `kill -9` of a gateway publishing to the fleet loses nothing and duplicates
//! nothing. A child process (this test binary re-executed) runs the gateway's reporting side
//! on a store, publishes numbered events and is SIGKILLed, once while the broker is down (all
//! of it a backlog) and once in the middle of publishing; a new gateway on the same store then
//! brings the stream to every event exactly once, in order.
#[path = "common/crash_child.rs"]
mod crash_child;
#[path = "fleet/support.rs"]
mod support;

use std::time::Duration;

use iotgw::fleet::subjects;
use support::*;

const CHILD_ENV: &str = "IOTGW_FLEET_CRASH_CHILD";
const EVENTS: usize = 3_000;
const WAIT: Duration = Duration::from_secs(60);

/// Events the outbox ever held: its sequence's high-water mark.
fn outbox_high_water(store: &std::path::Path) -> usize {
    let conn = iotgw::schema::open(store).unwrap();
    conn.query_row("SELECT IFNULL(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'integration_outbox'", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as usize
}

/// The child: only does something when started by a parent test with `CHILD_ENV`.
#[test]
#[ignore = "child process of the kill -9 tests"]
fn crash_child_gateway() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.split('|');
    let (url, store, mode) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let store = std::path::PathBuf::from(store);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let gateway = Gateway::start(url, &store).await;
        for n in 0..EVENTS {
            gateway.bus.publish(numbered(n));
        }
        // Every event durable in the outbox first: what the gateway promises to keep.
        wait_for("every event in the outbox", WAIT, async || (outbox_high_water(&store) == EVENTS).then_some(())).await;
        if mode == "publishing" {
            wait_for("publishing under way", WAIT, async || {
                (gateway.counters().await.published_events > 0).then_some(())
            })
            .await;
        }
        println!("{}", crash_child::READY);
        // The parent kills us with SIGKILL; never exit on our own before that.
        tokio::time::sleep(Duration::from_secs(120)).await;
        panic!("child was not killed");
    });
}

/// Runs the child until it says it is ready, then SIGKILLs it.
async fn run_and_kill_child(url: &str, store: &std::path::Path, mode: &str) {
    crash_child::run_and_kill("crash_child_gateway", (CHILD_ENV, format!("{url}|{}|{mode}", store.display())), WAIT)
        .await;
}

/// After the kill: a new gateway on the same store brings the stream to every event once.
async fn resume_and_check(broker: &Broker, store: &std::path::Path) -> usize {
    let gateway = Gateway::start(&broker.nats.url(), store).await;
    let subject = subjects::report(SITE, GATEWAY, subjects::ReportKind::Event);
    let reports = wait_for("every event in the stream", WAIT, async || {
        let reports = broker.reports(&subject).await;
        (reports.len() >= EVENTS).then_some(reports)
    })
    .await;
    let numbers: Vec<usize> = reports.iter().map(|(_, r)| number_of(r)).collect();
    assert_eq!(numbers, (0..EVENTS).collect::<Vec<_>>(), "every event once, in order");
    let ids: std::collections::HashSet<&String> = reports.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), EVENTS, "one message id each");
    let resumed = wait_for("the backlog to drain", WAIT, async || {
        let counters = gateway.counters().await;
        (counters.backlog_events == 0).then_some(counters.published_events as usize)
    })
    .await;
    gateway.stop().await;
    resumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_the_broker_down_keeps_the_backlog() {
    let mut broker = Broker::start().await;
    let store = store("fleet-crash-backlog");
    broker.nats.kill9();
    run_and_kill_child(&broker.nats.url(), &store, "backlog").await;
    broker.nats.restart();
    let resumed = resume_and_check(&broker, &store).await;
    assert_eq!(resumed, EVENTS, "the whole backlog was published after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_publishing_resumes_from_the_cursor() {
    let broker = Broker::start().await;
    let store = store("fleet-crash-publishing");
    run_and_kill_child(&broker.nats.url(), &store, "publishing").await;
    let resumed = resume_and_check(&broker, &store).await;
    assert!(resumed < EVENTS, "the new gateway went on from the cursor ({resumed} of {EVENTS} sent again)");
}
