//! Hub ingest stores a batch with one statement per table, folding what the batch says of one
//! row first: against the real servers, reports stored as one batch leave exactly the rows they
//! leave stored one at a time (several snapshots of one device, older after newer; a device
//! moving; a clone; alerts of one incident; an event twice; health reports out of order; a
//! command result; a forged report), and delivering the whole batch again changes nothing.
#[path = "hub_ingest/support.rs"]
mod support;

use iotgw::fleet::{
    subjects,
    wire::{CommandOutcome, CommandResult, Health, Report, ReportBody},
};
use support::{Fleet, T0_MS, action, alert, inventory, mac};

const MINUTE_MS: i64 = 60_000;
const COMMAND_ID: &str = "0b6b1f0e-8f7c-4d8e-9a43-1c2f3e4d5a6b";

/// Each with the message id it is published under: (report, id suffix).
fn reports() -> Vec<(Report, &'static str)> {
    let health = |ms, backlog| {
        let health = Health { version: "1.2.3".into(), outbox_backlog: backlog, ..Health::default() };
        Report::new("s1", "gw-1", ms, ReportBody::Health { health })
    };
    let result =
        CommandResult { command_id: COMMAND_ID.into(), outcome: CommandOutcome::Done, detail: "quarantined".into() };
    vec![
        // One device at s1/gw-1: the newer snapshot first, then an older one.
        (inventory("s1", "gw-1", mac(1), T0_MS + 10 * MINUTE_MS, None), ""),
        (inventory("s1", "gw-1", mac(1), T0_MS, Some("CN=old")), ""),
        // The same device at s2/gw-1 in between: one fleet device, two locations, still at s1.
        (inventory("s2", "gw-1", mac(1), T0_MS + 5 * MINUTE_MS, None), ""),
        // A clone: one certificate at two sites a minute apart.
        (inventory("s1", "gw-1", mac(2), T0_MS, Some("CN=cam")), ""),
        (inventory("s2", "gw-1", mac(3), T0_MS + MINUTE_MS, Some("CN=cam")), ""),
        // Alerts of one incident, an action, and the action again under another message id.
        (alert("s1", "gw-1", 1, "scan:1", false), ""),
        (alert("s1", "gw-1", 2, "scan:1", true), ""),
        (action("s1", "gw-1", 3), ""),
        (action("s1", "gw-1", 3), "-again"),
        // Health reports, the newer first.
        (health(T0_MS + 5_000, 7), ""),
        (health(T0_MS + 1_000, 99), ""),
        (Report::new("s1", "gw-1", T0_MS + 6_000, ReportBody::CommandResult { result }), ""),
    ]
}

async fn publish_all(fleet: &Fleet) {
    for (report, suffix) in reports() {
        let payload = serde_json::to_vec(&report).unwrap();
        fleet.publish_as(&report.subject(), &format!("{}{suffix}", report.msg_id()), &payload).await;
    }
    // A forged report among them: refused, whatever the batch.
    let forged = serde_json::to_vec(&action("s9", "gw-9", 1)).unwrap();
    fleet.publish_as("iotgw.s1.gw-1.event", "forged", &forged).await;
}

const MESSAGES: u64 = 13;
/// The whole batch to one writer (its sites would be split over the default writers).
const ONE_WRITER: &str = "[ingest]\nwriters = 1\n";

/// The rows ingest writes, without what differs between two equal stores: serial ids and the
/// time the hub audited.
async fn rows(fleet: &Fleet) -> Vec<String> {
    let mut rows = Vec::new();
    for (table, drop) in [
        ("gateways", ""),
        ("gateway_devices", ""),
        ("fleet_devices", ""),
        ("device_locations", ""),
        ("events", ""),
        ("alerts", " - 'id'"),
        ("commands", " - 'done_at'"),
        ("hub_audit", " - 'id' - 'time'"),
    ] {
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t){drop} ORDER BY (to_jsonb(t){drop})::text), '[]')::text FROM {table} t"
        );
        // The table names and column lists are the literals above.
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&fleet.pool).await.expect("rows");
        rows.push(format!("{table}: {text}"));
    }
    rows
}

async fn issue_command(fleet: &Fleet) {
    sqlx::query(
        "INSERT INTO commands (id, site, gateway, mac, action, actor, reason, issued_at, expires_at)
         VALUES ($1::uuid, 's1', 'gw-1', '02:00:00:00:00:01', 'quarantine', 'hub:alice', 'test',
                 '2026-01-01T00:00:00Z', '2027-01-01T00:00:00Z')",
    )
    .bind(COMMAND_ID)
    .execute(&fleet.pool)
    .await
    .expect("command");
}

async fn start_over(fleet: &Fleet) {
    let stream = fleet.js.get_stream(subjects::REPORT_STREAM).await.unwrap();
    stream.delete_consumer(iotgw::hub::ingest::CONSUMER).await.expect("delete the consumer");
}

#[tokio::test]
async fn one_batch_leaves_the_rows_reports_stored_one_at_a_time_leave_and_storing_it_again_changes_nothing() {
    let fleet = Fleet::start().await;
    issue_command(&fleet).await;
    publish_all(&fleet).await;

    let one_by_one = fleet.ingest("[ingest]\nbatch = 1\nwriters = 1\n").await;
    one_by_one.wait_handled(MESSAGES).await;
    let stats = one_by_one.stats.snapshot();
    assert_eq!((stats.reports, stats.refused, stats.batches), (MESSAGES - 1, 1, MESSAGES - 1), "{stats:?}");
    one_by_one.stop().await;
    let expected = rows(&fleet).await;

    sqlx::query(
        "TRUNCATE gateways, gateway_devices, fleet_devices, device_locations, events, alerts, hub_audit, commands
         RESTART IDENTITY CASCADE",
    )
    .execute(&fleet.pool)
    .await
    .unwrap();
    issue_command(&fleet).await;
    start_over(&fleet).await;
    let batched = fleet.ingest(ONE_WRITER).await;
    batched.wait_handled(MESSAGES).await;
    let stats = batched.stats.snapshot();
    assert_eq!((stats.reports, stats.refused, stats.batches), (MESSAGES - 1, 1, 1), "one batch: {stats:?}");
    assert_eq!((stats.duplicate_events, stats.clone_alerts), (1, 1), "{stats:?}");
    batched.stop().await;
    assert_eq!(rows(&fleet).await, expected, "one batch stored what one report at a time stored");

    // What the rows are (so that both ways being equally wrong would fail too).
    let device: (String, i64) = sqlx::query_as(
        "SELECT access, changed_ms FROM gateway_devices WHERE site = 's1' AND mac = '02:00:00:00:00:01'",
    )
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    assert_eq!(device.1, T0_MS + 10 * MINUTE_MS, "the older snapshot after the newer changed nothing");
    let (site, cert): (String, Option<String>) =
        sqlx::query_as("SELECT site, cert_subject FROM fleet_devices WHERE mac = '02:00:00:00:00:01'")
            .fetch_one(&fleet.pool)
            .await
            .unwrap();
    assert_eq!((site.as_str(), cert), ("s1", None), "where it was seen last, its certificate from then");
    assert_eq!(fleet.count("SELECT count(*) FROM device_locations WHERE mac = '02:00:00:00:00:01'").await, 2);
    let first_seen_ms: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM first_seen) * 1000)::bigint FROM device_locations
         WHERE mac = '02:00:00:00:00:01' AND site = 's1'",
    )
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    assert_eq!(first_seen_ms, T0_MS - MINUTE_MS, "the older snapshot's first sighting");
    assert_eq!(fleet.count("SELECT count(*) FROM events").await, 3);
    let (count, ended): (i64, bool) = sqlx::query_as("SELECT count, ended FROM alerts WHERE incident_id = 'scan:1'")
        .fetch_one(&fleet.pool)
        .await
        .unwrap();
    assert_eq!((count, ended), (2, true));
    let clone_site: String = sqlx::query_scalar("SELECT site FROM alerts WHERE detector = 'certificate_clone'")
        .fetch_one(&fleet.pool)
        .await
        .unwrap();
    assert_eq!(clone_site, "s2", "raised at the newer sighting");
    let (health_ms, backlog): (i64, i64) =
        sqlx::query_as("SELECT health_ms, (health->>'outbox_backlog')::bigint FROM gateways WHERE site = 's1'")
            .fetch_one(&fleet.pool)
            .await
            .unwrap();
    assert_eq!((health_ms, backlog), (T0_MS + 5_000, 7), "the newer health report");
    assert_eq!(fleet.count("SELECT count(*) FROM commands WHERE outcome = 'done'").await, 1);
    assert_eq!(fleet.count("SELECT count(*) FROM gateways WHERE site = 's9'").await, 0, "the forged one");

    // The whole batch delivered again.
    let stored = fleet.snapshot().await;
    start_over(&fleet).await;
    let again = fleet.ingest(ONE_WRITER).await;
    again.wait_handled(MESSAGES).await;
    let stats = again.stats.snapshot();
    assert_eq!((stats.batches, stats.duplicate_events, stats.clone_alerts), (1, 4, 0), "{stats:?}");
    again.stop().await;
    assert_eq!(fleet.snapshot().await, stored, "storing the batch again changed nothing");
}
