//! The pipeline end to end: attack scenarios through baseline → detect → respond, the
//! pipeline thread with its channel and store, and the in-process decision latency.
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use iotgw_test_support::{services::scratch, wait};

use super::{Command, Core, Settings, latency};
use crate::{
    alerts,
    baseline::{self, tests::start},
    datapath::{DeviceControl as _, MemoryDatapath},
    detect::synthetic,
    device::{Access, Mac},
    event::{EventBus, EventKind, GatewayEvent},
    pipeline::{self, Input},
    respond::tests::{enrolled, policy},
};

/// The synthetic devices resolve names at the gateway (`synthetic::GATEWAY`).
fn trusting_the_gateway() -> crate::detect::Config {
    crate::detect::Config { gateway_ips: vec![IpAddr::V4(synthetic::GATEWAY)], ..Default::default() }
}

/// Runs a scenario through the whole core (baseline → detect → respond) over a
/// `MemoryDatapath`, after 15 minutes of learning; returns the events and the datapath.
fn scenario(attack: impl FnOnce(std::time::SystemTime) -> Vec<Input>) -> (Vec<GatewayEvent>, Arc<MemoryDatapath>) {
    scenario_on(EventBus::default(), attack)
}

/// `scenario`, publishing on `bus`.
fn scenario_on(
    bus: EventBus,
    attack: impl FnOnce(std::time::SystemTime) -> Vec<Input>,
) -> (Vec<GatewayEvent>, Arc<MemoryDatapath>) {
    let datapath = Arc::new(MemoryDatapath::default());
    let fleet = [synthetic::meter(1), synthetic::camera(1), synthetic::plug(1)];
    for device in &fleet {
        datapath.set_access(device.mac, enrolled()).unwrap();
    }
    let settings = Settings {
        baseline: baseline::Config { learning_secs: 600, ..Default::default() },
        detect: trusting_the_gateway(),
        store: None,
    };
    let mut subscriber = bus.subscribe();
    let mut core = Core::new(settings, policy(), datapath.clone(), bus).unwrap();
    let learn = Duration::from_secs(900);
    for input in synthetic::normal_traffic(&fleet, start(), learn, 5) {
        let events = core.handle(Command::Input(input));
        assert!(events.is_empty(), "learning raised {events:#?}");
    }
    let mut events = Vec::new();
    for input in attack(start() + learn) {
        events.extend(core.handle(Command::Input(input)));
    }
    // Everything returned was also published.
    let mut published = 0;
    while subscriber.try_recv().is_ok() {
        published += 1;
    }
    assert_eq!(published, events.len());
    (events, datapath)
}

fn quarantined(datapath: &MemoryDatapath, mac: Mac) -> bool {
    datapath.access(mac).unwrap().is_some_and(|a| a.access == Access::Quarantined)
}

/// The detectors of the alerts among `events`, sorted.
fn alerted(events: &[GatewayEvent]) -> Vec<&str> {
    let mut detectors: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Alert { detector, .. } => Some(detector.as_str()),
            _ => None,
        })
        .collect();
    detectors.sort();
    detectors
}

/// The meter's implant asks its operator's resolver for the head-end's name, which answers
/// with the command-and-control server's address, then connects there on the meter's own
/// port. The name it already uses does not exempt the server: `new_destination` (whose rule
/// moves it to the update lane) and `untrusted_resolver`. The same lookup answered by the
/// gateway's resolver moves the meter to a new server of its name: nothing.
#[test]
fn a_c2_answering_the_meters_dns_with_its_head_ends_name_is_flagged_and_acted_on() {
    let meter = synthetic::meter(1);
    let c2 = Ipv4Addr::new(45, 9, 170, 3);
    let lookup_and_connect = |now: std::time::SystemTime, resolver: Ipv4Addr| {
        let mut inputs =
            synthetic::dns_lookup_between(meter.mac, now, meter.ip, resolver, &meter.server_name, c2).to_vec();
        let at = now + Duration::from_millis(30);
        inputs.push(synthetic::tcp_syn(meter.mac, at, meter.ip.into(), c2.into(), 41_000, meter.server_port));
        inputs
    };
    let (events, datapath) = scenario(|now| lookup_and_connect(now, Ipv4Addr::new(45, 9, 171, 53)));
    assert_eq!(alerted(&events), ["new_destination", "untrusted_resolver"], "{events:#?}");
    assert_ne!(datapath.access(meter.mac).unwrap(), Some(enrolled()), "the update-lane rule acted: {events:#?}");
    let (events, datapath) = scenario(|now| lookup_and_connect(now, synthetic::GATEWAY));
    assert!(events.is_empty(), "{events:#?}");
    assert_eq!(datapath.access(meter.mac).unwrap(), Some(enrolled()));
}

#[test]
fn scenario_mirai_scan_is_quarantined() {
    let plug = synthetic::plug(1);
    let (events, datapath) = scenario(|now| synthetic::telnet_scan(plug.mac, plug.ip, now, 100, 200, 1));
    assert!(quarantined(&datapath, plug.mac), "{events:#?}");
    assert!(!quarantined(&datapath, synthetic::meter(1).mac));
}

#[test]
fn a_detected_scan_is_recorded_as_an_alert_with_the_quarantine_it_triggered() {
    let dir = scratch("pipeline-alerts");
    let path = dir.join("alerts.db");
    let bus = EventBus::default();
    let recorder = alerts::Recorder::spawn(alerts::AlertStore::open(&path).unwrap(), &bus).unwrap();
    let plug = synthetic::plug(1);
    let (events, datapath) = scenario_on(bus, |now| synthetic::telnet_scan(plug.mac, plug.ip, now, 100, 200, 1));
    assert!(quarantined(&datapath, plug.mac), "{events:#?}");
    recorder.join();

    let store = alerts::AlertStore::open(&path).unwrap();
    let device = alerts::Filter { device: Some(plug.mac), ..alerts::Filter::default() };
    let page = store.list(&alerts::Query { filter: device, ..alerts::Query::default() }).unwrap();
    let raised = events.iter().filter(|e| e.kind_name() == "alert").count();
    let counted: u64 = page.alerts.iter().map(|a| a.count).sum();
    assert_eq!(counted as usize, raised, "every alert raised is counted in a record: {page:#?}");
    let scan = page.alerts.iter().find(|a| a.detector == "scan").expect("a scan record");
    let detail = store.get(scan.id).unwrap();
    let responses: Vec<&str> = detail.responses.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(responses, ["quarantine"], "{detail:#?}");
    assert_eq!(detail.responses[0].actor, "respond:quarantine attacks");
    assert!(!detail.flows.is_empty() && detail.alert.state == alerts::State::Open);
}

#[test]
fn scenario_camera_exfiltration_is_quarantined() {
    let camera = synthetic::camera(1);
    let (events, datapath) = scenario(|now| {
        (0..3)
            .map(|s| {
                synthetic::traffic(
                    camera.mac,
                    now + Duration::from_secs(s),
                    Duration::from_secs(1),
                    5_000_000,
                    3_500,
                    100_000,
                    1_700,
                )
            })
            .collect()
    });
    assert!(quarantined(&datapath, camera.mac), "{events:#?}");
}

#[test]
fn scenario_meter_to_unknown_ip_goes_to_the_update_lane() {
    let meter = synthetic::meter(1);
    let (events, datapath) = scenario(|now| {
        vec![synthetic::tcp_syn(meter.mac, now, IpAddr::V4(meter.ip), "45.9.148.3".parse().unwrap(), 40_000, 4444)]
    });
    let access = datapath.access(meter.mac).unwrap().unwrap();
    assert_eq!((access.access, access.policy_id), (Access::Enrolled, gateway_ebpf::lane::QUARANTINE), "{events:#?}");
    assert!(events.iter().any(|e| e.kind_name() == "alert"));
}

#[test]
fn scenario_flood_is_quarantined() {
    let meter = synthetic::meter(1);
    let (_, datapath) =
        scenario(|now| vec![synthetic::traffic(meter.mac, now, Duration::from_secs(1), 1_280_000, 20_000, 0, 0)]);
    assert!(quarantined(&datapath, meter.mac));
}

#[test]
fn scenario_arp_spoofing_is_quarantined() {
    let camera = synthetic::camera(1);
    let gateway_mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    let (_, datapath) = scenario(|now| {
        vec![
            synthetic::arp(gateway_mac, now, gateway_mac, synthetic::GATEWAY, Ipv4Addr::new(10, 77, 2, 1), true),
            synthetic::arp(
                camera.mac,
                now + Duration::from_secs(1),
                camera.mac,
                synthetic::GATEWAY,
                Ipv4Addr::new(10, 77, 1, 1),
                true,
            ),
        ]
    });
    assert!(quarantined(&datapath, camera.mac));
    assert!(datapath.access(gateway_mac).unwrap().is_none(), "the real owner is left alone");
}

#[test]
fn scenario_lateral_movement_is_quarantined() {
    let plug = synthetic::plug(1);
    let meter = synthetic::meter(1);
    let (_, datapath) =
        scenario(|now| vec![synthetic::tcp_syn(plug.mac, now, IpAddr::V4(plug.ip), IpAddr::V4(meter.ip), 41_000, 23)]);
    assert!(quarantined(&datapath, plug.mac));
    assert!(!quarantined(&datapath, meter.mac));
}

#[test]
fn pipeline_thread_quarantines_and_releases_through_its_channel() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let datapath = Arc::new(MemoryDatapath::default());
        let dir = scratch("pipeline");
        let path = dir.join("store.db");
        let settings = Settings {
            baseline: baseline::Config { learning_secs: 600, ..Default::default() },
            detect: trusting_the_gateway(),
            store: Some(path.clone()),
        };
        let bus = EventBus::default();
        let mut events = bus.subscribe();
        let pipeline = pipeline::spawn(settings.clone(), policy(), datapath.clone(), bus).unwrap();
        let plug = synthetic::plug(1);
        let sender = pipeline.sender();
        for input in synthetic::normal_traffic(std::slice::from_ref(&plug), start(), Duration::from_secs(900), 2) {
            sender.send(Command::Input(input)).await.unwrap();
        }
        for input in synthetic::telnet_scan(plug.mac, plug.ip, start() + Duration::from_secs(900), 60, 100, 9) {
            sender.send(Command::Input(input)).await.unwrap();
        }
        // The scan's first flow is a new destination (update lane); the scan itself then
        // escalates to quarantine.
        let actions = wait::within("a quarantine", Duration::from_secs(60), async {
            let mut actions = Vec::new();
            loop {
                let event = events.recv().await.unwrap();
                if let EventKind::Action { action, .. } = &event.kind {
                    actions.push(action.clone());
                    if action == "quarantine" {
                        return actions;
                    }
                }
            }
        })
        .await;
        assert_eq!(actions, ["update_lane", "quarantine"]);
        assert!(quarantined(&datapath, plug.mac));
        pipeline.release(plug.mac, "api:alice").await.unwrap();
        assert_eq!(datapath.access(plug.mac).unwrap(), None);
        assert!(matches!(pipeline.release(plug.mac, "api:alice").await, Err(pipeline::ReleaseError::Respond(_))));
        drop(sender);
        pipeline.join();
        // The loop saved the learnt baseline on its way out.
        let conn = crate::store::open(&path, crate::pipeline::SCHEMA).unwrap();
        let record = baseline::store::load_device(&conn, plug.mac).unwrap().expect("saved");
        assert_eq!(record.baseline.state_name(), "baselined");
        drop(conn);
        // Every action landed in the inventory's audit log.
        let inventory = crate::inventory::Inventory::new(
            crate::store::open(&path, crate::pipeline::SCHEMA).unwrap(),
            crate::inventory::Vendors::empty(),
            None,
        );
        let log = inventory.audit_log(Some(plug.mac), 100).unwrap();
        let actions: Vec<&str> = log.iter().map(|entry| entry.action.as_str()).collect();
        for expected in ["respond.update_lane", "respond.quarantine", "respond.release"] {
            assert!(actions.contains(&expected), "{actions:?}");
        }
        // And every device-table change went through the inventory's audited path, the one a
        // restart restores the table from.
        let changes: Vec<(String, String)> = log
            .iter()
            .rev()
            .filter(|entry| entry.action == "access_changed")
            .map(|entry| (entry.actor.clone(), entry.detail.split(':').next().unwrap_or_default().to_owned()))
            .collect();
        let expected = [
            ("respond:update lane for strays", "unknown -> enrolled"),
            ("respond:quarantine attacks", "enrolled -> quarantined"),
            ("api:alice", "quarantined -> unknown"),
        ];
        assert_eq!(changes, expected.map(|(a, d)| (a.to_owned(), d.to_owned())), "{log:#?}");
    });
}

#[test]
fn a_false_positive_learnt_as_normal_stays_quiet_across_a_restart_until_unlearnt() {
    let dir = scratch("pipeline-learn");
    let settings = Settings {
        baseline: baseline::Config { learning_secs: 600, ..Default::default() },
        detect: trusting_the_gateway(),
        store: Some(dir.join("store.db")),
    };
    let core = || Core::new(settings.clone(), policy(), Arc::new(MemoryDatapath::default()), EventBus::default());
    let meter = synthetic::meter(1);
    let probe = |at| {
        let unknown = "45.9.148.3".parse().unwrap();
        Command::Input(synthetic::tcp_syn(meter.mac, at, IpAddr::V4(meter.ip), unknown, 40_000, 4444))
    };
    let raised = |events: &[GatewayEvent]| {
        events.iter().any(
            |e| matches!(&e.kind, EventKind::Alert { detector, resolved: false, .. } if detector == "new_destination"),
        )
    };
    let mut detecting = core().unwrap();
    for input in synthetic::normal_traffic(std::slice::from_ref(&meter), start(), Duration::from_secs(900), 5) {
        detecting.handle(Command::Input(input));
    }
    let mut now = start() + Duration::from_secs(900);
    let events = detecting.handle(probe(now));
    assert!(raised(&events), "{events:#?}");

    // The analyst resolves the record as a false positive and learns it.
    let mut alerts = alerts::AlertStore::open(settings.store.as_ref().unwrap()).unwrap();
    alerts.record(&events).unwrap();
    let page = alerts.list(&alerts::Query::default()).unwrap();
    let id = page.alerts.iter().find(|a| a.detector == "new_destination").expect("a record").id;
    let resolve = alerts::Change {
        state: Some(alerts::State::Resolved),
        resolution: Some(alerts::Resolution::FalsePositive),
        ..alerts::Change::default()
    };
    alerts.change(id, resolve, "api:otto").unwrap();
    let (_, _, learnt) = alerts.learn(id, "api:otto").unwrap();
    detecting.handle(Command::Learned(learnt));
    now += Duration::from_secs(600);
    detecting.handle(Command::Tick(now));
    assert!(!raised(&detecting.handle(probe(now))), "learnt");

    // Restarted: the baseline and what was learnt come back from the store.
    detecting.checkpoint();
    drop(detecting);
    let mut detecting = core().unwrap();
    now += Duration::from_secs(600);
    assert!(!raised(&detecting.handle(probe(now))), "learnt, after a restart");

    let (_, _, unlearnt) = alerts.unlearn(id, "api:otto").unwrap();
    detecting.handle(Command::Learned(unlearnt));
    assert!(raised(&detecting.handle(probe(now + Duration::from_secs(1)))), "unlearnt");
    drop(alerts);
}

#[test]
fn decision_latency_stays_under_a_second() {
    let report = latency::measure_decision_latency(20);
    assert_eq!(report.missed, 0, "{report:?}");
    assert!(report.p99 < Duration::from_secs(1), "{report:?}");
}
