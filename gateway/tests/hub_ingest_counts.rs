//! The counts the fleet's status reads (migration 0005: `fleet_device_counts`,
//! `open_alert_counts`) and the state the device list filters on (`fleet_devices.access`) stay
//! exactly what counting the rows says, against the real servers: through a batch holding a
//! device's quarantine and release, a quarantine and release each in its own batch, a device
//! moving to another site, alerts opened, acknowledged and resolved, every report delivered
//! again, and a TRUNCATE.
#[path = "hub_ingest/support.rs"]
mod support;

use iotgw::{
    device::{Access, Mac},
    fleet::wire::{Report, ReportBody},
};
use support::{Fleet, T0_MS, alert, inventory, mac};

const MINUTE_MS: i64 = 60_000;

/// `device`'s snapshot at `gateway` seen at `seen_ms`, in `access`, changed `changed_ms` (a
/// quarantine changes the state, not when the device was last seen).
fn snapshot(site: &str, gateway: &str, device: Mac, seen_ms: i64, changed_ms: i64, access: Access) -> Report {
    let mut report = inventory(site, gateway, device, seen_ms, None);
    let ReportBody::Inventory { changed_ms: changed, device } = &mut report.body else { unreachable!() };
    (*changed, device.access) = (changed_ms, access);
    report.sent_ms = changed_ms;
    report
}

/// What the counters say and what counting the rows says, each as sorted lines.
async fn counted(fleet: &Fleet) -> [(Vec<String>, Vec<String>); 3] {
    let lines = |sql: &'static str| async move {
        sqlx::query_scalar::<_, String>(sql).fetch_all(&fleet.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    [
        (
            lines(
                "SELECT site || ' ' || access || ' ' || devices FROM fleet_device_counts WHERE devices <> 0 ORDER BY 1",
            )
            .await,
            lines(
                "SELECT f.site || ' ' || g.access || ' ' || count(*) FROM fleet_devices f \
                 JOIN gateway_devices g ON g.site = f.site AND g.gateway = f.gateway AND g.mac = f.mac \
                 GROUP BY f.site, g.access ORDER BY 1",
            )
            .await,
        ),
        (
            lines("SELECT mac || ' ' || access FROM fleet_devices ORDER BY 1").await,
            lines(
                "SELECT f.mac || ' ' || g.access FROM fleet_devices f \
                 JOIN gateway_devices g ON g.site = f.site AND g.gateway = f.gateway AND g.mac = f.mac ORDER BY 1",
            )
            .await,
        ),
        (
            lines(
                "SELECT site || ' ' || severity || ' ' || alerts FROM open_alert_counts WHERE alerts <> 0 ORDER BY 1",
            )
            .await,
            lines(
                "SELECT site || ' ' || severity || ' ' || count(*) FROM alerts WHERE state <> 'resolved' \
                 GROUP BY site, severity ORDER BY 1",
            )
            .await,
        ),
    ]
}

/// Fails unless every counter equals its count; returns the device counts.
async fn assert_exact(fleet: &Fleet, when: &str) -> Vec<String> {
    let [devices, states, alerts] = counted(fleet).await;
    assert_eq!(devices.0, devices.1, "{when}: fleet_device_counts against count(*)");
    assert_eq!(states.0, states.1, "{when}: fleet_devices.access against the last gateway's row");
    assert_eq!(alerts.0, alerts.1, "{when}: open_alert_counts against count(*)");
    devices.0
}

async fn publish_again(fleet: &Fleet, reports: &[Report], suffix: &str) {
    for report in reports {
        let payload = serde_json::to_vec(report).unwrap();
        fleet.publish_as(&report.subject(), &format!("{}{suffix}", report.msg_id()), &payload).await;
    }
}

#[tokio::test]
async fn counts_and_states_stay_exact_through_state_changes_moves_and_redelivery() {
    let fleet = Fleet::start().await;
    // Batch 1 (all published before ingest starts): five devices at s1, one of them quarantined
    // and released within the batch, another quarantined; two alerts.
    let mut first = Vec::new();
    for n in 1..=5 {
        first.push(snapshot("s1", "gw-1", mac(n), T0_MS, T0_MS, Access::Enrolled));
    }
    first.push(snapshot("s1", "gw-1", mac(1), T0_MS, T0_MS + 1_000, Access::Quarantined));
    first.push(snapshot("s1", "gw-1", mac(1), T0_MS, T0_MS + 2_000, Access::Enrolled));
    first.push(snapshot("s1", "gw-1", mac(2), T0_MS, T0_MS + 1_000, Access::Quarantined));
    first.push(alert("s1", "gw-1", 1, "scan:1", false));
    first.push(alert("s1", "gw-1", 2, "scan:2", false));
    publish_again(&fleet, &first, "").await;
    let ingest = fleet.ingest("").await;
    let mut handled = first.len() as u64;
    ingest.wait_handled(handled).await;
    assert_eq!(
        assert_exact(&fleet, "after the first batch").await,
        ["s1 enrolled 4", "s1 quarantined 1"],
        "the counts themselves"
    );

    // Its own batch each: mac 3 quarantined (seen no later), then released; mac 2 released.
    let quarantine = snapshot("s1", "gw-1", mac(3), T0_MS, T0_MS + 3_000, Access::Quarantined);
    publish_again(&fleet, std::slice::from_ref(&quarantine), "").await;
    handled += 1;
    ingest.wait_handled(handled).await;
    assert_eq!(assert_exact(&fleet, "after a quarantine").await, ["s1 enrolled 3", "s1 quarantined 2"]);
    let release = [
        snapshot("s1", "gw-1", mac(3), T0_MS, T0_MS + 4_000, Access::Enrolled),
        snapshot("s1", "gw-1", mac(2), T0_MS, T0_MS + 4_000, Access::Enrolled),
    ];
    publish_again(&fleet, &release, "").await;
    handled += 2;
    ingest.wait_handled(handled).await;
    assert_eq!(assert_exact(&fleet, "after the releases").await, ["s1 enrolled 5"]);

    // mac 4 moves to s2, quarantined there; an analyst acknowledges one alert, resolves the
    // other.
    let moved = snapshot("s2", "gw-2", mac(4), T0_MS + MINUTE_MS, T0_MS + MINUTE_MS, Access::Quarantined);
    publish_again(&fleet, std::slice::from_ref(&moved), "").await;
    handled += 1;
    ingest.wait_handled(handled).await;
    for (incident, state) in [("scan:1", "acknowledged"), ("scan:2", "resolved")] {
        sqlx::query("UPDATE alerts SET state = $2 WHERE incident_id = $1")
            .bind(incident)
            .bind(state)
            .execute(&fleet.pool)
            .await
            .unwrap();
    }
    assert_eq!(assert_exact(&fleet, "after a move and the analysts").await, ["s1 enrolled 4", "s2 quarantined 1"]);
    let stored = fleet.snapshot().await;
    let counters = counted(&fleet).await;

    // Everything again, oldest first, under new message ids (an outbox replayed): the
    // quarantines come back after their releases, the old sighting after the move.
    let mut everything = first.clone();
    everything.extend([quarantine, release[0].clone(), release[1].clone(), moved]);
    publish_again(&fleet, &everything, "-again").await;
    handled += everything.len() as u64;
    ingest.wait_handled(handled).await;
    assert_exact(&fleet, "after redelivery").await;
    assert_eq!(fleet.snapshot().await, stored, "redelivery changed no row");
    assert_eq!(counted(&fleet).await, counters, "redelivery changed no count");

    // A new alert of a resolved incident's gateway opens again; the counts follow.
    let reopened = alert("s1", "gw-1", 3, "scan:3", false);
    publish_again(&fleet, std::slice::from_ref(&reopened), "").await;
    ingest.wait_handled(handled + 1).await;
    assert_exact(&fleet, "after a new alert").await;
    ingest.stop().await;

    sqlx::query("TRUNCATE fleet_devices, alerts CASCADE").execute(&fleet.pool).await.unwrap();
    assert_eq!(assert_exact(&fleet, "after TRUNCATE").await, Vec::<String>::new());
}
