//! Hub ingest against the real servers: every kind of report lands in its rows; the same
//! reports delivered again (a new consumer) or published again (after the broker's duplicate
//! window) change nothing; a report claiming another origin than its subject, and one that is
//! not a report, are refused, counted, and never stored or redelivered; a report the database
//! refuses is refused alone, the rest of its batch stored.
#[path = "hub_ingest/support.rs"]
mod support;

use iotgw::fleet::{
    subjects,
    wire::{CommandOutcome, CommandResult, Health, Report, ReportBody},
};
use support::{Fleet, T0_MS, action, alert, inventory, mac};

const COMMAND_ID: &str = "5f0c8f52-3b0e-4c51-9a57-3a8e2f1d9b10";

fn reports() -> Vec<Report> {
    let health = Health { version: "1.2.3".into(), outbox_backlog: 7, devices: 1, ..Health::default() };
    let result =
        CommandResult { command_id: COMMAND_ID.into(), outcome: CommandOutcome::Done, detail: "quarantined".into() };
    vec![
        alert("s1", "gw-1", 1, "scan:1", false),
        alert("s1", "gw-1", 2, "scan:1", true),
        action("s1", "gw-1", 3),
        inventory("s1", "gw-1", mac(1), T0_MS, Some("CN=cam-7")),
        Report::new("s1", "gw-1", T0_MS + 5_000, ReportBody::Health { health }),
        Report::new("s1", "gw-1", T0_MS + 6_000, ReportBody::CommandResult { result }),
    ]
}

async fn issue_command(fleet: &Fleet) {
    sqlx::query(
        "INSERT INTO commands (id, site, gateway, mac, action, actor, reason, issued_at, expires_at)
         VALUES ($1::uuid, 's1', 'gw-1', '02:00:00:00:00:01', 'quarantine', 'hub:alice', 'test', now(),
                 now() + interval '1 hour')",
    )
    .bind(COMMAND_ID)
    .execute(&fleet.pool)
    .await
    .expect("command");
}

#[tokio::test]
async fn every_kind_of_report_lands_in_its_rows_and_storing_it_again_changes_nothing() {
    let fleet = Fleet::start().await;
    issue_command(&fleet).await;
    let reports = reports();
    for report in &reports {
        fleet.publish(report).await;
    }
    let ingest = fleet.ingest("").await;
    ingest.wait_handled(6).await;

    assert_eq!(fleet.count("SELECT count(*) FROM events WHERE site = 's1' AND gateway = 'gw-1'").await, 3);
    let (count, ended, severity): (i64, bool, i16) =
        sqlx::query_as("SELECT count, ended, severity FROM alerts WHERE incident_id = 'scan:1'")
            .fetch_one(&fleet.pool)
            .await
            .expect("one alert row for the incident");
    assert_eq!((count, ended, severity), (2, true, 3), "two alerts, resolved by the second, high at worst");
    assert_eq!(fleet.count("SELECT count(*) FROM gateway_devices WHERE cert_subject = 'CN=cam-7'").await, 1);
    let levels: (Option<String>, Option<String>, Option<String>, Option<f64>) = sqlx::query_as(
        "SELECT device_type, type_vendor, generic_type, (record->>'generic_confidence')::float8 FROM gateway_devices",
    )
    .fetch_one(&fleet.pool)
    .await
    .expect("the device");
    assert_eq!(levels, (Some("camera".into()), None, Some("ip-camera".into()), Some(0.95)), "every level of the guess");
    assert_eq!(fleet.count("SELECT count(*) FROM fleet_devices WHERE site = 's1'").await, 1);
    assert_eq!(fleet.count("SELECT count(*) FROM device_locations").await, 1);
    let (health_ms, backlog): (i64, i64) = sqlx::query_as(
        "SELECT health_ms, (health->>'outbox_backlog')::bigint FROM gateways WHERE site = 's1' AND gateway = 'gw-1'",
    )
    .fetch_one(&fleet.pool)
    .await
    .expect("the gateway");
    assert_eq!((health_ms, backlog), (T0_MS + 5_000, 7));
    let (outcome, detail): (String, String) =
        sqlx::query_as("SELECT outcome, detail FROM commands").fetch_one(&fleet.pool).await.expect("command");
    assert_eq!((outcome.as_str(), detail.as_str()), ("done", "quarantined"));
    let stored = fleet.snapshot().await;

    // Delivered again: a consumer that starts over.
    ingest.stop().await;
    let stream = fleet.js.get_stream(subjects::REPORT_STREAM).await.unwrap();
    stream.delete_consumer(iotgw::hub::ingest::CONSUMER).await.expect("delete the consumer");
    let ingest = fleet.ingest("").await;
    ingest.wait_handled(6).await;
    assert_eq!(ingest.stats.snapshot().duplicate_events, 3);
    assert_eq!(fleet.snapshot().await, stored, "delivering the reports again changed nothing");

    // Published again past the duplicate window (a new message id), plus an older health
    // report and a second result for the same command: still nothing changes.
    for report in &reports {
        fleet
            .publish_as(&report.subject(), &format!("{}-again", report.msg_id()), &serde_json::to_vec(report).unwrap())
            .await;
    }
    let old_health = Report::new("s1", "gw-1", T0_MS + 1_000, ReportBody::Health { health: Health::default() });
    fleet.publish(&old_health).await;
    let refused =
        CommandResult { command_id: COMMAND_ID.into(), outcome: CommandOutcome::Refused, detail: "late".into() };
    // (Its message id is the first result's, so JetStream would drop it: give it another.)
    let second_result = Report::new("s1", "gw-1", T0_MS + 2_000, ReportBody::CommandResult { result: refused });
    fleet.publish_as(&second_result.subject(), "second-result", &serde_json::to_vec(&second_result).unwrap()).await;
    ingest.wait_handled(14).await;
    assert_eq!(ingest.stats.snapshot().refused, 0);
    assert_eq!(fleet.snapshot().await, stored, "republished and older reports changed nothing");
    ingest.stop().await;
}

#[tokio::test]
async fn a_report_claiming_another_origin_or_not_a_report_is_refused_and_counted() {
    let fleet = Fleet::start().await;
    // Gateway s1/gw-1 publishes an alert that claims to come from s2/gw-9.
    let forged = alert("s2", "gw-9", 1, "forged", false);
    fleet.publish_as("iotgw.s1.gw-1.event", "forged-1", &serde_json::to_vec(&forged).unwrap()).await;
    fleet.publish_as("iotgw.s1.gw-1.health", "junk-1", b"{\"v\":1,\"kind\":\"health\",\n\"junk").await;
    let genuine = alert("s1", "gw-1", 1, "genuine", false);
    fleet.publish(&genuine).await;

    let ingest = fleet.ingest("").await;
    ingest.wait_handled(3).await;
    let stats = ingest.stats.snapshot();
    assert_eq!((stats.reports, stats.refused), (1, 2), "{stats:?}");
    assert_eq!(fleet.count("SELECT count(*) FROM events").await, 1);
    assert_eq!(fleet.count("SELECT count(*) FROM events WHERE site = 's2' OR gateway = 'gw-9'").await, 0);
    assert_eq!(fleet.count("SELECT count(*) FROM gateways WHERE site = 's2'").await, 0);
    assert_eq!(fleet.count("SELECT count(*) FROM alerts WHERE incident_id = 'forged'").await, 0);
    // Terminated, not left for redelivery.
    fleet.wait_consumer_done().await;
    ingest.stop().await;
}

#[tokio::test]
async fn a_report_the_database_refuses_is_refused_alone_and_its_batch_stored() {
    let fleet = Fleet::start().await;
    // Stands for any report PostgreSQL cannot take (an integrity violation, SQLSTATE 23514).
    sqlx::query("ALTER TABLE events ADD CONSTRAINT unlucky CHECK (seq <> 13)").execute(&fleet.pool).await.unwrap();
    for seq in 10..=16 {
        fleet.publish(&action("s1", "gw-1", seq)).await;
    }
    let ingest = fleet.ingest("").await;
    ingest.wait_handled(7).await;
    let stats = ingest.stats.snapshot();
    assert_eq!((stats.reports, stats.refused), (6, 1), "{stats:?}");
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM events ORDER BY seq").fetch_all(&fleet.pool).await.unwrap();
    assert_eq!(stored, [10, 11, 12, 14, 15, 16]);
    fleet.wait_consumer_done().await;
    ingest.stop().await;
}
