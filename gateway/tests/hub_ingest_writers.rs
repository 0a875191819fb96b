//! Hub ingest with several writers (`[ingest] writers`), against the real servers: the reports of
//! many gateways at many sites, stored by three writers in small batches at once, all land once;
//! each gateway's events commit in the order it sent them (a later event never in an earlier
//! transaction than one before it); devices seen at sites of different writers end where they
//! were seen last; one certificate at sites of two writers is a clone, raised once; and
//! delivering everything again changes nothing.
#[path = "hub_ingest/support.rs"]
mod support;

use std::collections::BTreeSet;

use iotgw::{
    fleet::{subjects, wire::Report},
    hub::ingest::writer_of,
};
use support::{Fleet, T0_MS, action, alert, inventory, mac};

const WRITERS: usize = 3;
const SITES: usize = 12;
const GATEWAYS_PER_SITE: usize = 2;
const EVENTS_PER_GATEWAY: i64 = 40;
/// Devices seen by one gateway of every site, one minute after another site by site.
const ROAMING_DEVICES: u8 = 4;
const MINUTE_MS: i64 = 60_000;

fn site(n: usize) -> String {
    format!("site-{n:02}")
}

/// The reports in the order gateways publish them: each gateway's events in sequence, the
/// gateways interleaved; every roaming device's sightings, site after site.
fn reports() -> Vec<Report> {
    let mut reports = Vec::new();
    for seq in 1..=EVENTS_PER_GATEWAY {
        for s in 0..SITES {
            for g in 0..GATEWAYS_PER_SITE {
                let gateway = format!("gw-{g}");
                reports.push(if seq % 4 == 0 {
                    alert(&site(s), &gateway, seq, &format!("scan:{}", seq % 8), false)
                } else {
                    action(&site(s), &gateway, seq)
                });
            }
        }
    }
    for s in 0..SITES {
        for device in 1..=ROAMING_DEVICES {
            reports.push(inventory(&site(s), "gw-0", mac(device), T0_MS + s as i64 * MINUTE_MS, None));
        }
    }
    // One certificate on two devices at two sites of different writers, a second apart: a clone.
    let (first, second) = clone_sites();
    reports.push(inventory(&site(first), "gw-1", mac(100), T0_MS, Some("CN=twin")));
    reports.push(inventory(&site(second), "gw-1", mac(101), T0_MS + 1_000, Some("CN=twin")));
    reports
}

/// Two sites that different writers store.
fn clone_sites() -> (usize, usize) {
    let second = (1..SITES).find(|&s| writer_of(&site(s), WRITERS) != writer_of(&site(0), WRITERS)).unwrap();
    (0, second)
}

#[tokio::test]
async fn several_writers_store_every_report_once_each_gateway_in_order() {
    let writers: BTreeSet<usize> = (0..SITES).map(|s| writer_of(&site(s), WRITERS)).collect();
    assert_eq!(writers.len(), WRITERS, "the sites spread over every writer");

    let fleet = Fleet::start().await;
    let reports = reports();
    for report in &reports {
        fleet.publish(report).await;
    }
    let config = format!("[ingest]\nwriters = {WRITERS}\nbatch = 50\n");
    let ingest = fleet.ingest(&config).await;
    ingest.wait_handled(reports.len() as u64).await;
    fleet.wait_consumer_done().await;
    let stats = ingest.stats.snapshot();
    assert_eq!((stats.refused, stats.duplicate_events, stats.failed_batches), (0, 0, 0), "{stats:?}");
    assert!(stats.batches > WRITERS as u64, "many transactions: {stats:?}");

    let gateways = (SITES * GATEWAYS_PER_SITE) as i64;
    assert_eq!(fleet.count("SELECT count(*) FROM events").await, gateways * EVENTS_PER_GATEWAY);
    assert_eq!(
        fleet.count("SELECT count(DISTINCT (site, gateway, seq)) FROM events").await,
        gateways * EVENTS_PER_GATEWAY
    );
    assert_eq!(fleet.count("SELECT count(*) FROM gateways").await, gateways);
    // Every alert counted once into its incident: 10 alerts per gateway over incidents 0 and 4
    // (and the clone below).
    assert_eq!(
        fleet.count("SELECT sum(count)::int8 FROM alerts WHERE detector = 'scan'").await,
        gateways * EVENTS_PER_GATEWAY / 4
    );
    assert_eq!(fleet.count("SELECT sum(alerts)::int8 FROM open_alert_counts").await, gateways * 2 + 1);

    // Committed in order: a gateway's events by sequence come from transactions in the order
    // one writer ran them (each writer's transactions take increasing ids).
    let out_of_order: i64 = fleet
        .count(
            "SELECT count(*) FROM (
               SELECT xmin::text::int8 AS tx, lag(xmin::text::int8) OVER (PARTITION BY site, gateway ORDER BY seq) AS before
               FROM events) e
             WHERE tx < before",
        )
        .await;
    assert_eq!(out_of_order, 0, "an event committed before an earlier one of its gateway");
    assert!(
        fleet.count("SELECT count(DISTINCT xmin::text) FROM events").await > WRITERS as i64,
        "events stored by many transactions"
    );

    // Devices seen at every site (sites of all three writers): where they were seen last.
    let last_site = site(SITES - 1);
    let at_last: i64 = sqlx::query_scalar("SELECT count(*) FROM fleet_devices WHERE site = $1")
        .bind(&last_site)
        .fetch_one(&fleet.pool)
        .await
        .unwrap();
    assert_eq!(at_last, i64::from(ROAMING_DEVICES));
    assert_eq!(
        fleet.count("SELECT count(*) FROM device_locations").await,
        SITES as i64 * i64::from(ROAMING_DEVICES) + 2
    );
    assert_eq!(fleet.count("SELECT sum(devices)::int8 FROM fleet_device_counts").await, i64::from(ROAMING_DEVICES) + 2);
    // The clone across two writers: found (whichever committed last checked against both), once.
    assert_eq!(fleet.count("SELECT count(*) FROM alerts WHERE detector = 'certificate_clone'").await, 1);
    assert_eq!(ingest.stats.snapshot().clone_alerts, 1);
    let stored = fleet.snapshot().await;

    // Delivered again to a consumer that starts over: nothing changes.
    ingest.stop().await;
    let stream = fleet.js.get_stream(subjects::REPORT_STREAM).await.unwrap();
    stream.delete_consumer(iotgw::hub::ingest::CONSUMER).await.expect("delete the consumer");
    let ingest = fleet.ingest(&config).await;
    ingest.wait_handled(reports.len() as u64).await;
    fleet.wait_consumer_done().await;
    assert_eq!(ingest.stats.snapshot().duplicate_events, (gateways * EVENTS_PER_GATEWAY) as u64);
    assert_eq!(fleet.snapshot().await, stored, "delivering the reports again changed nothing");
    ingest.stop().await;
}

#[test]
fn writers_are_checked() {
    let settings = |writers| iotgw::hub::ingest::Settings { writers, ..Default::default() };
    assert!(settings(0).problems().iter().any(|p| p.contains("ingest.writers")));
    assert!(settings(33).problems().iter().any(|p| p.contains("ingest.writers")));
    assert!(settings(4).problems().is_empty());
}
