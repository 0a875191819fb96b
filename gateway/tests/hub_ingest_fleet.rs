//! Fleet identity at the hub, against the real servers: a device that moves from one site to
//! another is one fleet device with two locations; one certificate active at two sites raises
//! exactly one clone alert (and one audit row), however often the pair is seen again.
#[path = "hub_ingest/support.rs"]
mod support;

use support::{Fleet, T0_MS, inventory, mac};

const MINUTE_MS: i64 = 60_000;

#[tokio::test]
async fn a_device_moving_between_sites_is_one_fleet_device_with_two_locations() {
    let fleet = Fleet::start().await;
    let ingest = fleet.ingest("").await;
    fleet.publish(&inventory("site-a", "gw-1", mac(5), T0_MS, None)).await;
    fleet.publish(&inventory("site-b", "gw-2", mac(5), T0_MS + 60 * MINUTE_MS, None)).await;
    ingest.wait_handled(2).await;
    // A late copy of the old sighting (redelivered) does not move it back.
    fleet
        .publish_as(
            "iotgw.site-a.gw-1.inventory",
            "late-copy",
            &serde_json::to_vec(&inventory("site-a", "gw-1", mac(5), T0_MS, None)).unwrap(),
        )
        .await;
    ingest.wait_handled(3).await;

    let (site, gateway): (String, String) =
        sqlx::query_as("SELECT site, gateway FROM fleet_devices WHERE mac = '02:00:00:00:00:05'")
            .fetch_one(&fleet.pool)
            .await
            .expect("one fleet device");
    assert_eq!((site.as_str(), gateway.as_str()), ("site-b", "gw-2"), "where it was seen last");
    assert_eq!(fleet.count("SELECT count(*) FROM fleet_devices").await, 1);
    let locations: Vec<(String, String)> = sqlx::query_as(
        "SELECT site, gateway FROM device_locations WHERE mac = '02:00:00:00:00:05' ORDER BY first_seen",
    )
    .fetch_all(&fleet.pool)
    .await
    .unwrap();
    assert_eq!(locations, [("site-a".into(), "gw-1".into()), ("site-b".into(), "gw-2".into())]);
    assert_eq!(fleet.count("SELECT count(*) FROM gateway_devices").await, 2, "each gateway's own view");
    assert_eq!(fleet.count("SELECT count(*) FROM alerts").await, 0, "no certificate, no clone");
    ingest.stop().await;
}

#[tokio::test]
async fn one_certificate_at_two_sites_raises_exactly_one_clone_alert() {
    let fleet = Fleet::start().await;
    let ingest = fleet.ingest("[ingest]\nclone_window_secs = 300\n").await;
    // The clone: one subject at two sites a minute apart, on two devices.
    fleet.publish(&inventory("site-a", "gw-1", mac(1), T0_MS, Some("CN=cam-7"))).await;
    fleet.publish(&inventory("site-b", "gw-1", mac(2), T0_MS + MINUTE_MS, Some("CN=cam-7"))).await;
    // A traveller: one subject at two sites an hour apart.
    fleet.publish(&inventory("site-a", "gw-1", mac(3), T0_MS, Some("CN=laptop"))).await;
    fleet.publish(&inventory("site-b", "gw-1", mac(3), T0_MS + 60 * MINUTE_MS, Some("CN=laptop"))).await;
    // Two gateways of one site: not a clone either.
    fleet.publish(&inventory("site-c", "gw-1", mac(4), T0_MS, Some("CN=sensor"))).await;
    fleet.publish(&inventory("site-c", "gw-2", mac(4), T0_MS, Some("CN=sensor"))).await;
    ingest.wait_handled(6).await;

    let clone_alerts = "SELECT count(*) FROM alerts WHERE detector = 'certificate_clone'";
    assert_eq!(fleet.count(clone_alerts).await, 1);
    let (site, severity, incident_id): (String, i16, String) =
        sqlx::query_as("SELECT site, severity, incident_id FROM alerts WHERE detector = 'certificate_clone'")
            .fetch_one(&fleet.pool)
            .await
            .unwrap();
    assert_eq!(site, "site-b", "raised at the newer sighting");
    assert_eq!(severity, 3, "high");
    assert!(incident_id.contains("CN=cam-7"), "{incident_id}");
    assert_eq!(fleet.count("SELECT count(*) FROM hub_audit WHERE action = 'certificate_clone'").await, 1);

    // Both keep being seen, the newer sighting now at site-a; and the reports come again.
    fleet.publish(&inventory("site-b", "gw-1", mac(2), T0_MS + 2 * MINUTE_MS, Some("CN=cam-7"))).await;
    fleet.publish(&inventory("site-a", "gw-1", mac(1), T0_MS + 3 * MINUTE_MS, Some("CN=cam-7"))).await;
    let copy = inventory("site-b", "gw-1", mac(2), T0_MS + MINUTE_MS, Some("CN=cam-7"));
    fleet.publish_as(&copy.subject(), "copy", &serde_json::to_vec(&copy).unwrap()).await;
    ingest.wait_handled(9).await;
    assert_eq!(fleet.count(clone_alerts).await, 1, "one incident per certificate and pair");
    assert_eq!(fleet.count("SELECT count(*) FROM hub_audit").await, 1);
    assert_eq!(ingest.stats.snapshot().clone_alerts, 1);
    let last_seen_ms: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM last_seen) * 1000)::bigint FROM alerts WHERE detector = 'certificate_clone'",
    )
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    assert_eq!(last_seen_ms, T0_MS + 3 * MINUTE_MS, "the incident's latest sighting");
    ingest.stop().await;
}
