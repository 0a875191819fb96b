//! Commands from the hub to a gateway, on the real nats-server and PostgreSQL, with the gateway's
//! real SQLite store and inventory ledger (the datapath is the in-memory one: no XDP here; the
//! lab test enforces through XDP). The hub's results ingest is stood in for by a consumer that
//! calls `hub::commands::record_result`, the function the hub's ingest calls.
use std::time::Duration;

use async_nats::jetstream;
use iotgw::{
    datapath::DeviceControl as _,
    device::Access,
    fleet::{
        subjects,
        wire::{Command, CommandAction},
    },
    hub::{
        Hub,
        commands::{self as hub_commands, Request},
    },
    inventory::Ledger,
};

#[path = "fleet_commands/support.rs"]
mod support;
use support::{ABSENT, ANSWER, CAMERA, Fleet, GATEWAY, SITE, mac};

#[tokio::test]
async fn a_quarantine_from_the_hub_is_enforced_once_and_audited_with_its_actor_on_both_sides() {
    let fleet = Fleet::start(3600).await;
    let (_running, _task) = fleet.gateway();

    let quarantine = fleet.issue(CommandAction::Quarantine, CAMERA, None).await;
    assert_eq!(fleet.outcome(quarantine).await, ("done".to_owned(), "enrolled -> quarantined".to_owned()));
    assert_eq!(fleet.access(), Access::Quarantined);
    let record = hub_commands::get(&fleet.hub.pool, quarantine).await.unwrap().unwrap();
    assert_eq!((record.site.as_str(), record.gateway.as_str()), (SITE, GATEWAY), "sent where the device was seen");

    let hub_audit: Vec<(String, String)> = sqlx::query_as("SELECT actor, action FROM hub_audit WHERE mac = $1")
        .bind(CAMERA)
        .fetch_all(&fleet.hub.pool)
        .await
        .unwrap();
    assert_eq!(hub_audit, [("hub:alice".to_owned(), "command_quarantine".to_owned())]);
    let changes = fleet.gateway_audit();
    assert_eq!(changes.last().unwrap().0, "hub:alice");
    assert!(changes.last().unwrap().1.contains("scan seen at site B"), "{changes:?}");

    // A release, then the quarantine delivered again (as after a lost acknowledgement): it
    // is answered from the gateway's store, not enforced a second time.
    let release = fleet.issue(CommandAction::Release, CAMERA, None).await;
    assert_eq!(fleet.outcome(release).await.0, "done");
    assert_eq!(fleet.access(), Access::Enrolled);
    let command = Command {
        v: 1,
        id: quarantine.to_string(),
        site: SITE.into(),
        gateway: GATEWAY.into(),
        action: CommandAction::Quarantine,
        mac: mac(CAMERA),
        actor: "hub:alice".into(),
        reason: "scan seen at site B".into(),
        issued_ms: 0,
        expires_ms: i64::MAX,
    };
    let redelivered = publish_command(&fleet.hub, &command, "redelivery").await;
    wait_consumed(&fleet.hub, redelivered).await;
    assert_eq!(fleet.access(), Access::Enrolled, "the redelivered quarantine was enforced again");
    let actors: Vec<_> = fleet.gateway_audit().into_iter().skip(1).map(|(actor, _)| actor).collect();
    assert_eq!(actors, ["hub:alice", "hub:alice"], "one quarantine and one release");
}

#[tokio::test]
async fn a_command_for_an_offline_gateway_is_taken_when_it_is_back() {
    let fleet = Fleet::start(3600).await;
    let (running, task) = fleet.gateway();
    let quarantine = fleet.issue(CommandAction::Quarantine, CAMERA, None).await;
    assert_eq!(fleet.outcome(quarantine).await.0, "done");
    running.trigger();
    iotgw_test_support::wait::within("the gateway to stop at shutdown", ANSWER, task).await.unwrap();

    let release = fleet.issue(CommandAction::Release, CAMERA, None).await;
    let pending = hub_commands::wait(&fleet.hub, release, Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(pending.outcome, None, "no gateway took it yet");
    assert_eq!(fleet.access(), Access::Quarantined);

    let (_running, _task) = fleet.gateway();
    assert_eq!(fleet.outcome(release).await.0, "done");
    assert_eq!(fleet.access(), Access::Enrolled);
}

#[tokio::test]
async fn expired_commands_and_unknown_devices_are_refused_and_said_so() {
    // Commands expire a second after they are issued (the stream still keeps them).
    let fleet = Fleet::start(1).await;
    let late = fleet.issue(CommandAction::Block, CAMERA, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_running, _task) = fleet.gateway();
    let (outcome, detail) = fleet.outcome(late).await;
    assert_eq!(outcome, "expired", "{detail}");
    assert_eq!(fleet.access(), Access::Enrolled, "an expired block is not enforced");
    let audit = Ledger::open(&fleet.store).unwrap().audit_log(Some(mac(CAMERA)), 100).unwrap();
    let refused = audit.iter().find(|e| e.action == "fleet_command").expect("the refusal is audited");
    assert_eq!(refused.actor, "hub:alice");
    assert!(refused.detail.contains(&format!("command {late} block: expired")), "{}", refused.detail);

    let absent = fleet.issue(CommandAction::Quarantine, ABSENT, Some((SITE, GATEWAY))).await;
    assert_eq!(fleet.outcome(absent).await.0, "unknown_device");
    assert_eq!(fleet.control.access(mac(ABSENT)).unwrap(), None);

    let nowhere = Request {
        mac: mac(ABSENT),
        action: CommandAction::Quarantine,
        actor: "hub:alice".into(),
        reason: String::new(),
        target: None,
    };
    assert!(matches!(
        hub_commands::issue(&fleet.hub, &nowhere).await,
        Err(hub_commands::CommandError::UnknownDevice(_))
    ));
}

/// Publishes `command` as the hub would, under its own message id; returns its stream sequence.
async fn publish_command(hub: &Hub, command: &Command, msg_id: &str) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let payload = serde_json::to_vec(command).unwrap();
    let subject = subjects::command(&command.site, &command.gateway);
    hub.jetstream.publish_with_headers(subject, headers, payload.into()).await.unwrap().await.unwrap().sequence
}

/// Waits until the gateway acknowledged the command at stream sequence `sequence`.
async fn wait_consumed(hub: &Hub, sequence: u64) {
    let stream = hub.jetstream.get_stream(subjects::COMMAND_STREAM).await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer(&subjects::command_consumer(SITE, GATEWAY)).await.unwrap();
    let deadline = tokio::time::Instant::now() + ANSWER;
    while consumer.info().await.unwrap().ack_floor.stream_sequence < sequence {
        assert!(tokio::time::Instant::now() < deadline, "the gateway did not take command {sequence}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
