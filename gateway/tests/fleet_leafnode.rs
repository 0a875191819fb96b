//! Issue 16: a site's NATS leaf node, as the README describes it. The gateway connects only
//! to a leaf node on its own network (no JetStream of its own); the hub's server holds the
//! streams and the bundle bucket. Reports reach the hub's stream through the leaf, exactly
//! once and in order, also when the uplink (the hub's server) is gone for a while and comes
//! back; a bundle the hub puts in its bucket reaches a gateway watching through the leaf; the
//! credentials `hub provision-gateway --jetstream-domain` writes hold at the leaf.
#[path = "fleet/support.rs"]
mod support;

use std::time::Duration;

use futures::StreamExt as _;
use iotgw::{
    fleet::{self, subjects},
    hub::{self, credentials},
};
use iotgw_test_support::services::{NatsServer, free_port, scratch};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// The hub's JetStream domain: nats-server carries `$JS.<domain>.API` across a leaf
/// connection, not `$JS.API`.
const DOMAIN: &str = "hub";

/// The hub's server, accepting leaf nodes on a port of its own, with the hub's streams; and
/// a site's leaf node connected to it, with `leaf_conf` in its configuration.
async fn hub_and_leaf(leaf_conf: &str) -> (Broker, NatsServer) {
    let leaf_port = free_port();
    let hub_nats = NatsServer::start_with_config(&format!(
        "jetstream {{ domain: {DOMAIN} }}\nleafnodes {{ listen: \"127.0.0.1:{leaf_port}\" }}\n"
    ));
    let broker = Broker::on(hub_nats).await;
    let leaf = NatsServer::start_leaf(leaf_port, leaf_conf);
    (broker, leaf)
}

fn event_subject() -> String {
    subjects::report(SITE, GATEWAY, subjects::ReportKind::Event)
}

fn numbers(reports: &[(String, fleet::wire::Report)]) -> Vec<usize> {
    reports.iter().map(|(_, report)| number_of(report)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_cross_a_leaf_node_and_survive_the_uplink_going_away() {
    let (mut broker, leaf) = hub_and_leaf("").await;
    let config = fleet::Config { jetstream_domain: Some(DOMAIN.into()), ..config(&leaf.url()) };
    let store = store("fleet-leaf");
    let gateway = Gateway::start_with(&config, &store).await;

    const FIRST: usize = 200;
    for n in 0..FIRST {
        gateway.bus.publish(numbered(n));
    }
    let reports = wait_for("the first events in the hub's stream", WAIT, async || {
        let reports = broker.reports(&event_subject()).await;
        (reports.len() >= FIRST).then_some(reports)
    })
    .await;
    assert_eq!(numbers(&reports), (0..FIRST).collect::<Vec<_>>(), "every event once, in order, through the leaf");

    // The uplink goes: the hub's server dies; the gateway still reaches its leaf node, but
    // no stream acknowledges, so the outbox keeps everything.
    broker.nats.kill9();
    const SECOND: usize = 300;
    for n in FIRST..FIRST + SECOND {
        gateway.bus.publish(numbered(n));
    }
    let backlog = wait_for("a backlog while the uplink is down", WAIT, async || {
        let counters = gateway.counters().await;
        (counters.backlog_events > 0).then_some(counters.backlog_events)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(gateway.counters().await.backlog_events >= backlog, "nothing is taken while no stream acknowledges");

    broker.nats.restart();
    let reports = wait_for("every event in the hub's stream after the uplink returns", WAIT, async || {
        let reports = broker.reports(&event_subject()).await;
        (reports.len() >= FIRST + SECOND).then_some(reports)
    })
    .await;
    assert_eq!(numbers(&reports), (0..FIRST + SECOND).collect::<Vec<_>>(), "nothing lost, nothing twice");
    wait_for("the backlog to drain", WAIT, async || (gateway.counters().await.backlog_events == 0).then_some(())).await;
    println!("backlog while the uplink was down: {backlog} events");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_in_the_hubs_bucket_reaches_a_gateway_through_the_leaf() {
    let (broker, leaf) = hub_and_leaf("").await;
    let bucket = hub::bundles::ensure_bucket(&broker.js).await.expect("the hub's bundle bucket");

    // The gateway's side: its own connection to the leaf, the bucket as its watcher opens it.
    let endpoint =
        fleet::connect::Endpoint { url: &leaf.url(), name: "gw", credentials: None, tls_ca: None, inbox_prefix: None };
    let config = fleet::Config { jetstream_domain: Some(DOMAIN.into()), ..config(&leaf.url()) };
    let gateway_js = config.jetstream(fleet::connect::connect(&endpoint).await.expect("connect to the leaf"));
    let watched = wait_for("the bucket visible through the leaf", WAIT, async || {
        gateway_js.get_key_value(subjects::POLICY_BUCKET).await.ok()
    })
    .await;
    let key = format!("site.{SITE}");
    let mut updates = watched.watch(&key).await.expect("watch the site's key");

    bucket.put(&key, "bundle-v1".into()).await.expect("the hub puts a bundle");
    let entry = tokio::time::timeout(WAIT, updates.next())
        .await
        .expect("the bundle within the wait")
        .expect("a watch entry")
        .expect("a good entry");
    assert_eq!(entry.key, key);
    assert_eq!(&entry.value[..], b"bundle-v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_own_credentials_hold_at_the_leaf_in_the_hubs_domain() {
    let dir = scratch("fleet-leaf-credentials");
    let permissions = credentials::gateway_permissions(SITE, GATEWAY, &[], Some(DOMAIN));
    let (public_key, seed) = credentials::new_user();
    let seed = credentials::write_seed(&dir, "gw.nk", &seed).expect("seed");
    let authorization =
        format!("authorization {{ users = [ {} ] }}", credentials::user_entry(&public_key, &permissions));
    let (broker, leaf) = hub_and_leaf(&authorization).await;
    let bucket = hub::bundles::ensure_bucket(&broker.js).await.expect("the hub's bundle bucket");
    let own_key = subjects::site_bundle_key(SITE);
    let other_key = subjects::site_bundle_key("elsewhere");
    bucket.put(&own_key, "own".into()).await.expect("put");
    bucket.put(&other_key, "other".into()).await.expect("put");

    let url = leaf.url();
    let inbox = subjects::inbox_prefix(SITE, GATEWAY);
    let endpoint = fleet::connect::Endpoint {
        url: &url,
        name: "gw",
        credentials: Some(&seed),
        tls_ca: None,
        inbox_prefix: Some(&inbox),
    };
    let client = fleet::connect::connect(&endpoint).await.expect("connect to the leaf with the gateway's seed");
    let js = async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).domain(DOMAIN).build(client);
    let kv =
        wait_for("the bucket through the leaf", WAIT, async || js.get_key_value(subjects::POLICY_BUCKET).await.ok())
            .await;
    let own = kv.get(&own_key).await.expect("its own site's key is readable");
    assert_eq!(own.as_deref(), Some(&b"own"[..]));
    assert!(kv.get(&other_key).await.is_err(), "another site's key is refused at the leaf");

    let report = subjects::report(SITE, GATEWAY, subjects::ReportKind::Health);
    js.publish(report, "{}".into()).await.expect("publish").await.expect("its own report is acknowledged");
    let foreign = subjects::report("elsewhere", GATEWAY, subjects::ReportKind::Health);
    let refused: Result<_, Box<dyn std::error::Error + Send + Sync>> =
        async { Ok(js.publish(foreign, "{}".into()).await?.await?) }.await;
    assert!(refused.is_err(), "publishing as another site is refused at the leaf");
    let _ = std::fs::remove_dir_all(&dir);
}
