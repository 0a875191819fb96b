//! Per-gateway broker credentials on the real nats-server (2.9), started with the
//! `authorization` block `hub::credentials` provisions: gateway A publishes its reports, takes
//! its commands (through the real command consumer) and reads its policy key; publishing as
//! gateway B, taking B's commands or reading B's key is refused by the broker.
use std::{path::Path, sync::Arc, time::Duration};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt as _;
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _, MemoryDatapath},
    device::{Access, Mac},
    event::EventBus,
    fleet::{
        self,
        connect::{self, Endpoint},
        subjects::{self, ReportKind},
        wire::{self, Command, CommandAction, CommandOutcome, Health, Report, ReportBody},
    },
    hub::{self, credentials},
    inventory::Ledger,
    shutdown,
};
use iotgw_test_support::services::{NatsServer, scratch};

#[path = "fleet_commands/support.rs"]
mod support;

const CAMERA: &str = "98:90:96:9a:86:df";
/// How long a refused request waits for an answer that never comes.
const REFUSED_WITHIN: Duration = Duration::from_secs(2);

/// Removed when dropped.
struct Provisioned {
    seed: std::path::PathBuf,
    entry: String,
}

fn provision(dir: &Path, name: &str, permissions: &credentials::Permissions) -> Provisioned {
    let (public_key, seed) = credentials::new_user();
    let seed = credentials::write_seed(dir, name, &seed).unwrap();
    Provisioned { seed, entry: credentials::user_entry(&public_key, permissions) }
}

async fn connect(nats: &NatsServer, who: &str, seed: &Path, inbox: Option<&str>) -> async_nats::Client {
    let url = nats.url();
    let endpoint = Endpoint { url: &url, name: who, credentials: Some(seed), tls_ca: None, inbox_prefix: inbox };
    connect::connect(&endpoint).await.expect("connect")
}

fn jetstream(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new().timeout(REFUSED_WITHIN).build(client)
}

async fn publish(js: &jetstream::Context, report: &Report) -> Result<(), async_nats::Error> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", report.msg_id().as_str());
    let payload = serde_json::to_vec(report)?;
    js.publish_with_headers(report.subject(), headers, payload.into()).await?.await?;
    Ok(())
}

fn health(site: &str, gateway: &str) -> Report {
    Report::new(site, gateway, 1, ReportBody::Health { health: Health::default() })
}

#[tokio::test]
async fn a_gateways_credentials_reach_its_own_subjects_only() {
    let dir = scratch("fleet-credentials");
    let dir = &*dir;
    let hub_user = provision(dir, "hub.nk", &credentials::hub_permissions());
    let gateway_a = provision(dir, "s1.gw-a.nk", &credentials::gateway_permissions("s1", "gw-a", &[], None));
    let gateway_b = provision(dir, "s2.gw-b.nk", &credentials::gateway_permissions("s2", "gw-b", &[], None));
    let log = dir.join("nats.log");
    let conf = format!(
        "log_file: \"{}\"\n{}",
        log.display(),
        credentials::authorization(&[hub_user.entry, gateway_a.entry, gateway_b.entry])
    );
    let nats = NatsServer::start_with_config(&conf);

    // The hub: streams, the policy bucket with both sites' keys, a command for each gateway.
    let hub = jetstream(connect(&nats, "hub", &hub_user.seed, None).await);
    hub::streams::ensure(&hub, &support::TEST_STREAMS, Duration::from_secs(3600)).await.expect("hub creates streams");
    // As a stream: async-nats's `create_key_value` reads account info 2.9 answers in a shape
    // it does not parse.
    let bucket_stream = stream::Config {
        name: format!("KV_{}", subjects::POLICY_BUCKET),
        subjects: vec![format!("$KV.{}.>", subjects::POLICY_BUCKET)],
        max_messages_per_subject: 5,
        allow_direct: true,
        allow_rollup: true,
        deny_delete: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    hub.create_stream(bucket_stream).await.expect("hub creates the policy bucket");
    let bucket = hub.get_key_value(subjects::POLICY_BUCKET).await.expect("hub opens the policy bucket");
    for site in ["s1", "s2"] {
        bucket.put(subjects::site_bundle_key(site), format!("bundle of {site}").into()).await.expect("hub puts");
    }
    for (site, gateway) in [("s1", "gw-a"), ("s2", "gw-b")] {
        let command = Command {
            v: wire::VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            site: site.into(),
            gateway: gateway.into(),
            action: CommandAction::Quarantine,
            mac: CAMERA.parse().unwrap(),
            actor: "hub:alice".into(),
            reason: "test".into(),
            issued_ms: 0,
            expires_ms: i64::MAX,
        };
        let payload = serde_json::to_vec(&command).unwrap();
        hub.publish(subjects::command(site, gateway), payload.into()).await.unwrap().await.expect("hub sends");
    }

    let inbox = subjects::inbox_prefix("s1", "gw-a");
    let client = connect(&nats, "gw-a", &gateway_a.seed, Some(&inbox)).await;
    let js = jetstream(client.clone());

    // Its own reports are stored.
    publish(&js, &health("s1", "gw-a")).await.expect("A publishes its health");

    // Its own commands: the real consumer takes, enforces and answers A's command.
    let store = dir.join("gw-a.db");
    let camera: Mac = CAMERA.parse().unwrap();
    let enrolled = DeviceAccess { access: Access::Enrolled, policy_id: 1000, class_id: 3 };
    Ledger::open(&store).unwrap().record_access(camera, enrolled, "test", "enrolled").unwrap();
    let control = Arc::new(MemoryDatapath::default());
    control.set_access(camera, enrolled).unwrap();
    let config =
        fleet::Config { nats_url: Some(nats.url()), site: "s1".into(), gateway: "gw-a".into(), ..Default::default() };
    let (_running, shutdown) = shutdown::channel();
    let _task = fleet::commands::spawn(&config, client.clone(), &store, control.clone(), EventBus::default(), shutdown)
        .unwrap();
    let reports = hub.get_stream(subjects::REPORT_STREAM).await.unwrap();
    let result_subject = subjects::report("s1", "gw-a", ReportKind::CommandResult);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let result = loop {
        if let Ok(message) = reports.get_last_raw_message_by_subject(&result_subject).await {
            break serde_json::from_slice::<Report>(&message.payload).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "no command result from A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ReportBody::CommandResult { result } = result.body else { panic!("{result:?}") };
    assert_eq!(result.outcome, CommandOutcome::Done, "{}", result.detail);
    assert_eq!(control.access(camera).unwrap().unwrap().access, Access::Quarantined);
    let commands = hub.get_stream(subjects::COMMAND_STREAM).await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer =
        commands.get_consumer(&subjects::command_consumer("s1", "gw-a")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while consumer.info().await.unwrap().ack_floor.stream_sequence == 0 {
        assert!(tokio::time::Instant::now() < deadline, "A's command was not acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Its own policy key, by get and by watch.
    let policy = js.get_key_value(subjects::POLICY_BUCKET).await.expect("A opens the bucket");
    let own = policy.get(subjects::site_bundle_key("s1")).await.expect("A reads its key");
    assert_eq!(own.as_deref(), Some(&b"bundle of s1"[..]));
    let mut watch = policy.watch_with_history(subjects::site_bundle_key("s1")).await.expect("A watches its key");
    let entry = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("a watched entry").unwrap();
    assert!(entry.unwrap().key.starts_with("site."));

    // Everything of B's is refused.
    assert!(publish(&js, &health("s2", "gw-b")).await.is_err(), "A published as B");
    let forged = pull::Config {
        durable_name: Some(subjects::command_consumer("s2", "gw-b")),
        filter_subject: subjects::command("s2", "gw-b"),
        ..Default::default()
    };
    assert!(js.create_consumer_on_stream(forged, subjects::COMMAND_STREAM).await.is_err(), "A took B's commands");
    let b_next = format!("$JS.API.CONSUMER.MSG.NEXT.{}.gw_s2~gw-b", subjects::COMMAND_STREAM);
    assert!(
        tokio::time::timeout(REFUSED_WITHIN, client.request(b_next, "1".into())).await.map_or(true, |r| r.is_err()),
        "A pulled from B's consumer"
    );
    assert!(policy.get(subjects::site_bundle_key("s2")).await.is_err(), "A read B's policy key by direct get");
    assert!(publish(&js, &health("s1", "gw-a")).await.is_ok(), "A still publishes after the refusals");
    // The broker logged exactly those four refusals: A's own work needed nothing more.
    let log = std::fs::read_to_string(&log).unwrap();
    let violations: Vec<&str> = log.lines().filter(|line| line.contains("Violation")).collect();
    for refused in [
        "iotgw.s2.gw-b.health",
        "$JS.API.CONSUMER.CREATE.IOTGW_CMD.gw_s2~gw-b.iotgw.s2.gw-b.cmd",
        "$JS.API.CONSUMER.MSG.NEXT.IOTGW_CMD.gw_s2~gw-b",
        "$JS.API.DIRECT.GET.KV_iotgw_policy.$KV.iotgw_policy.site.s2",
    ] {
        assert!(
            violations.iter().any(|line| line.ends_with(&format!("Subject \"{refused}\""))),
            "{refused}: {violations:#?}"
        );
    }
    assert_eq!(violations.len(), 4, "{violations:#?}");
}

/// A gateway's watch of its policy key goes on after the broker restarts: async-nats recreates
/// the watch's consumer, named, on a subject the credentials must allow (refused, it retries for
/// ever and the gateway never takes another bundle).
#[tokio::test]
async fn a_gateways_policy_watch_goes_on_after_the_broker_restarts() {
    let dir = scratch("fleet-credentials-restart");
    let dir = &*dir;
    let hub_user = provision(dir, "hub.nk", &credentials::hub_permissions());
    let gateway_a = provision(dir, "s1.gw-a.nk", &credentials::gateway_permissions("s1", "gw-a", &[], None));
    let mut nats = NatsServer::start_with_config(&credentials::authorization(&[hub_user.entry, gateway_a.entry]));
    let hub = jetstream(connect(&nats, "hub", &hub_user.seed, None).await);
    let bucket = hub::bundles::ensure_bucket(&hub).await.expect("hub creates the policy bucket");
    let key = subjects::site_bundle_key("s1");
    bucket.put(&key, "v1".into()).await.expect("hub puts v1");

    let inbox = subjects::inbox_prefix("s1", "gw-a");
    let js = jetstream(connect(&nats, "gw-a", &gateway_a.seed, Some(&inbox)).await);
    let policy = js.get_key_value(subjects::POLICY_BUCKET).await.expect("A opens the bucket");
    let mut watch = policy.watch_with_history(&key).await.expect("A watches its key");
    let watched = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("v1 watched");
    assert_eq!(watched.unwrap().unwrap().value.as_ref(), b"v1");

    // Down long enough for both clients to see the connection go.
    nats.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while bucket.put(&key, "v2".into()).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the hub did not reconnect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The watch may report the heartbeats it missed meanwhile; then it goes on.
    loop {
        let watched = tokio::time::timeout_at(deadline, watch.next()).await.expect("v2 watched after the restart");
        match watched.expect("the watch goes on") {
            Ok(entry) if entry.value.as_ref() == b"v2" => break,
            Ok(entry) => panic!("watched {entry:?}, not v2"),
            Err(missed) => println!("the watch says: {missed}"),
        }
    }
}
