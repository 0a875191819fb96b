//! Issue 16: a gateway's inventory reaches the fleet broker as device snapshots, one per
//! device per few seconds however often it changes, and catches up after a broker outage
//! from the store (nothing held in memory); health reports arrive every `health_secs`. Real
//! nats-server with the hub's streams, read directly.
#[path = "fleet/support.rs"]
mod support;

use std::time::Duration;

use iotgw::{
    datapath::DeviceAccess,
    device::{Access, Mac},
    fleet::{
        subjects::{self, ReportKind},
        wire::{Report, ReportBody},
    },
    inventory::Ledger,
};
use support::*;

const WAIT: Duration = Duration::from_secs(60);
const FIRST: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
const SECOND: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);

fn set(ledger: &mut Ledger, mac: Mac, access: Access) {
    ledger.record_access(mac, DeviceAccess { access, policy_id: 0, class_id: 0 }, "test", "fleet test").unwrap();
}

/// The snapshots of `mac` in the stream: (changed_ms, access).
fn snapshots(reports: &[(String, Report)], mac: Mac) -> Vec<(i64, Access)> {
    reports
        .iter()
        .filter_map(|(id, report)| match &report.body {
            ReportBody::Inventory { changed_ms, device } if device.mac == mac => {
                assert_eq!(id, &report.msg_id());
                Some((*changed_ms, device.access))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_changes_arrive_coalesced_and_catch_up_after_an_outage() {
    let mut broker = Broker::start().await;
    let store = store("fleet-inventory");
    let gateway = Gateway::start(&broker.nats.url(), &store).await;
    let subject = subjects::report(SITE, GATEWAY, ReportKind::Inventory);
    let mut ledger = Ledger::open(&gateway.store).unwrap();

    // Ten changes in a burst: far fewer snapshots, the last one the device as it is.
    for round in 0..10 {
        set(&mut ledger, FIRST, if round % 2 == 0 { Access::Quarantined } else { Access::Blocked });
    }
    let first = wait_for("the device as it is now", WAIT, async || {
        let seen = snapshots(&broker.reports(&subject).await, FIRST);
        (seen.last().map(|(_, access)| *access) == Some(Access::Blocked)).then_some(seen)
    })
    .await;
    assert!(first.len() <= 2, "ten changes in one burst coalesce: {first:?}");

    // The broker goes away; the device changes and a new one appears meanwhile.
    broker.nats.kill9();
    set(&mut ledger, FIRST, Access::Quarantined);
    set(&mut ledger, SECOND, Access::Blocked);
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.nats.restart();
    let reports = wait_for("the changes made during the outage", WAIT, async || {
        let reports = broker.reports(&subject).await;
        let caught_up = snapshots(&reports, FIRST).last().map(|(_, a)| *a) == Some(Access::Quarantined)
            && !snapshots(&reports, SECOND).is_empty();
        caught_up.then_some(reports)
    })
    .await;
    let all = snapshots(&reports, FIRST);
    assert!(all.windows(2).all(|pair| pair[0].0 < pair[1].0), "snapshots of a device are ordered: {all:?}");
    let ids: std::collections::HashSet<&String> = reports.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), reports.len(), "no snapshot stored twice");

    // The classifier's guess at its other levels (as `inventory::classify` writes it): the next
    // snapshot carries the vendor and the generic type with their confidences.
    ledger
        .connection()
        .execute(
            "UPDATE inventory_devices SET type_vendor = 'Edimax', type_vendor_confidence = 0.8,
             generic_type = 'ip-camera', generic_confidence = 0.95 WHERE mac = ?1",
            [FIRST.to_string()],
        )
        .unwrap();
    let guess = wait_for("a snapshot with the generic type", WAIT, async || {
        broker.reports(&subject).await.into_iter().find_map(|(_, report)| match report.body {
            ReportBody::Inventory { device, .. } if device.mac == FIRST && device.generic_type.is_some() => {
                Some(device)
            }
            _ => None,
        })
    })
    .await;
    assert_eq!((guess.generic_type.as_deref(), guess.generic_confidence), (Some("ip-camera"), Some(0.95)));
    assert_eq!((guess.type_vendor.as_deref(), guess.type_vendor_confidence), (Some("Edimax"), Some(0.8)));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_arrive_with_the_version_and_backlog() {
    let broker = Broker::start().await;
    let store = store("fleet-health");
    let gateway = Gateway::start(&broker.nats.url(), &store).await;
    let subject = subjects::report(SITE, GATEWAY, ReportKind::Health);
    let reports = wait_for("two health reports", WAIT, async || {
        let reports = broker.reports(&subject).await;
        (reports.len() >= 2).then_some(reports)
    })
    .await;
    let ReportBody::Health { health } = &reports[1].1.body else { panic!("not a health report") };
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
    assert_eq!((health.policy_version, health.outbox_backlog, health.devices), (None, 0, 0));
    assert!(gateway.counters().await.published_health >= 2);
    gateway.stop().await;
}
