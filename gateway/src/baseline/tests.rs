use std::net::Ipv4Addr;

use super::*;
use crate::{detect::synthetic, device::Mac, pipeline::Input};

pub(crate) fn start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub(crate) fn short_config() -> Config {
    Config { learning_secs: 600, seeded_learning_secs: 60, ..Default::default() }
}

/// Learns `inputs` as the detector hands them over: DNS answers through `resolve` (the
/// synthetic devices ask the gateway, trusted here), then everything through `handle`.
fn learn(baselines: &mut Baselines, inputs: &[Input]) -> Vec<Change> {
    baselines.set_trusted_resolvers(TrustedResolvers::new([IpAddr::V4(synthetic::GATEWAY)], []));
    let mut changes = Vec::new();
    for input in inputs {
        if let Input::Datapath(crate::datapath::events::DatapathEvent::Sample(sample)) = input {
            baselines.resolve(sample, false);
        }
        changes.extend(baselines.handle(input, true));
    }
    changes
}

#[test]
fn default_lan_prefixes_parse() {
    assert_eq!(PRIVATE_PREFIXES.len(), DEFAULT_LAN_PREFIXES.len());
    let offline = Config::default();
    assert!(offline.is_lan("10.78.0.99".parse().unwrap()) && !offline.is_lan("8.8.8.8".parse().unwrap()));
    let live = Config { lan_prefixes: vec!["10.77.0.0/24".parse().unwrap()], ..Default::default() };
    assert!(live.is_lan("10.77.0.9".parse().unwrap()) && !live.is_lan("10.78.0.99".parse().unwrap()));
    assert!(Config::default().problems().is_empty());
}

#[test]
fn meter_is_baselined_after_its_learning_period_with_its_destinations() {
    let meter = synthetic::meter(1);
    let mut baselines = Baselines::new(short_config());
    let inputs = synthetic::normal_traffic(std::slice::from_ref(&meter), start(), Duration::from_secs(900), 1);
    let changes = learn(&mut baselines, &inputs);
    assert_eq!(changes, vec![Change::Baselined { mac: meter.mac, class: None }]);
    let profile = baselines.device(meter.mac).and_then(DeviceBaseline::baselined).expect("baselined");
    assert!(profile.knows_destination("203.0.113.40".parse().unwrap()));
    assert!(profile.knows_destination("203.0.113.200".parse().unwrap()), "same /24");
    assert!(!profile.knows_destination("45.9.148.3".parse().unwrap()));
    assert!(profile.names.contains("headend.utility.example"), "{:?}", profile.names);
    assert!(profile.services.contains_key(&Service { proto: 0x06, port: 443 }));
    assert!(profile.peers.contains(&IpAddr::V4(synthetic::GATEWAY)));
    // Per-window numbers: ~600 s of learning in 10 s windows.
    assert!(profile.windows.count >= 50, "{}", profile.windows.count);
    assert!(profile.windows.max[stats::feature::TX_BYTES] > 2_000.0);
    // Telemetry every minute is recognised as periodic.
    assert!(profile.periodic().any(|(key, t)| key.starts_with("tcp/443") && (t.mean_secs - 60.0).abs() < 5.0));
}

#[test]
fn learning_waits_for_enough_windows() {
    let learning = Learning::new(start(), Duration::from_secs(10), None);
    let (learning, reason) = learning.finish(start() + Duration::from_secs(5), 3).unwrap_err();
    assert!(matches!(reason, NotReady::Early { .. }));
    let (_, reason) = learning.finish(start() + Duration::from_secs(20), 3).unwrap_err();
    assert_eq!(reason, NotReady::TooFewWindows { seen: 0, needed: 3 });
}

#[test]
fn anomalous_inputs_are_not_learnt() {
    let meter = synthetic::meter(1);
    let mut baselines = Baselines::new(short_config());
    let flow =
        synthetic::tcp_syn(meter.mac, start(), IpAddr::V4(meter.ip), "45.9.148.3".parse().unwrap(), 40_000, 4444);
    baselines.handle(&flow, false);
    assert!(!baselines.device(meter.mac).unwrap().profile().knows_destination("45.9.148.3".parse().unwrap()));
    baselines.handle(&flow, true);
    assert!(baselines.device(meter.mac).unwrap().profile().knows_destination("45.9.148.3".parse().unwrap()));
}

#[test]
fn replies_and_multicast_are_not_destinations() {
    let mac = Mac([2, 0, 0, 0, 0, 9]);
    let mut baselines = Baselines::new(short_config());
    let src = IpAddr::V4(Ipv4Addr::new(10, 77, 9, 9));
    // SSDP answer from port 1900 to a phone's ephemeral port, and an mDNS announcement.
    baselines.handle(&synthetic::udp(mac, start(), src, "10.77.0.50".parse().unwrap(), 1900, 50_000), true);
    baselines.handle(&synthetic::udp(mac, start(), src, "224.0.0.251".parse().unwrap(), 5353, 5353), true);
    let profile = baselines.device(mac).unwrap().profile();
    assert!(profile.peers.is_empty(), "{:?}", profile.peers);
    assert!(profile.destinations.is_empty());
    assert!(profile.services.contains_key(&Service { proto: 0x11, port: 5353 }));
}

#[test]
fn baselines_survive_a_restart_through_the_store() {
    let dir = iotgw_test_support::services::scratch("baseline");
    let path = dir.join("store.db");
    let meter = synthetic::meter(1);
    let mut baselines = Baselines::new(short_config());
    baselines.handle(&Input::Class { mac: meter.mac, class: "meter".into() }, true);
    learn(
        &mut baselines,
        &synthetic::normal_traffic(std::slice::from_ref(&meter), start(), Duration::from_secs(900), 1),
    );
    let (devices, classes) = baselines.take_dirty();
    assert_eq!(classes.len(), 1);
    {
        let mut conn = crate::store::open(&path, &[super::MIGRATIONS]).unwrap();
        store::save(&mut conn, &devices, &classes).unwrap();
    }
    // Nothing dirty is left once taken.
    assert_eq!(baselines.take_dirty().0.len(), 0);
    let conn = crate::store::open(&path, &[super::MIGRATIONS]).unwrap();
    let (devices, classes) = store::load(&conn).unwrap();
    let mut restored = Baselines::new(short_config());
    restored.restore(devices, classes);
    let (before, after) = (baselines.device(meter.mac).unwrap(), restored.device(meter.mac).unwrap());
    assert_eq!(after.state_name(), "baselined");
    let (before, after) = (before.profile(), after.profile());
    assert_eq!(
        (&after.services, &after.destinations, &after.names, &after.peers),
        (&before.services, &before.destinations, &before.names, &before.peers)
    );
    assert_eq!(after.windows.count, before.windows.count);
    assert_eq!(after.windows.max, before.windows.max);
    // JSON floats round-trip to within the last bit.
    assert!((&after.windows.std_dev() - &before.windows.std_dev()).iter().all(|d| d.abs() < 1e-6));
    assert_eq!(after.windows.quantile(0.99), before.windows.quantile(0.99));
    assert_eq!(restored.class_of(meter.mac), Some("meter"));
    assert_eq!(restored.class("meter").unwrap().devices, 1);
    assert!(store::load_device(&conn, meter.mac).unwrap().is_some());
}

#[test]
fn corrupt_stored_baseline_is_a_clear_error() {
    let conn = crate::store::open_in_memory(&[super::MIGRATIONS]).unwrap();
    conn.execute(
        "INSERT INTO baseline_devices (mac, class, state, baseline) VALUES ('02:00:00:00:00:01', NULL, 'learning', '{nope')",
        [],
    )
    .unwrap();
    let error = store::load(&conn).unwrap_err();
    assert!(error.to_string().contains("02:00:00:00:00:01"), "{error}");
}

#[test]
fn class_baseline_seeds_a_new_device_of_the_same_class() {
    let mut baselines = Baselines::new(short_config());
    let first = synthetic::meter(1);
    baselines.handle(&Input::Class { mac: first.mac, class: "meter".into() }, true);
    learn(&mut baselines, &synthetic::normal_traffic(&[first], start(), Duration::from_secs(900), 1));
    assert_eq!(baselines.class("meter").unwrap().devices, 1);

    let second = synthetic::meter(2);
    let later = start() + Duration::from_secs(1_000);
    baselines.handle(&Input::Class { mac: second.mac, class: "meter".into() }, true);
    let DeviceBaseline::Learning(learning) = baselines.device(second.mac).unwrap() else { panic!() };
    assert_eq!(learning.seeded_from.as_deref(), Some("meter"));
    assert_eq!(learning.period, Duration::from_secs(60), "seeded devices learn for the shorter period");
    assert!(learning.profile.knows_destination("203.0.113.40".parse().unwrap()), "seeded destinations");
    let changes = learn(
        &mut baselines,
        &synthetic::normal_traffic(std::slice::from_ref(&second), later, Duration::from_secs(120), 2),
    );
    assert_eq!(changes.len(), 1, "baselined after the seeded period");
    assert_eq!(baselines.class("meter").unwrap().devices, 2);
}

#[test]
fn class_learning_period_overrides_the_default() {
    let mut config = short_config();
    config.class_learning_secs.insert("camera".into(), 7_200);
    let mut baselines = Baselines::new(config);
    let camera = synthetic::camera(1);
    baselines.handle(&Input::Class { mac: camera.mac, class: "camera".into() }, true);
    let changes = learn(
        &mut baselines,
        &synthetic::normal_traffic(std::slice::from_ref(&camera), start(), Duration::from_secs(3_600), 3),
    );
    assert!(changes.is_empty(), "an hour is not the camera class's two hours");
    let DeviceBaseline::Learning(learning) = baselines.device(camera.mac).unwrap() else { panic!() };
    assert_eq!(learning.period, Duration::from_secs(7_200));
    // Learning starts with the first input (a counter ending 1 s in), not at the epoch
    // placeholder of a device classified before it sent anything.
    assert_eq!(learning.started, start() + Duration::from_secs(1));
}

#[test]
fn export_is_a_policy_file_the_policy_loader_accepts() {
    let plug = synthetic::plug(1);
    let mut baselines = Baselines::new(short_config());
    learn(
        &mut baselines,
        &synthetic::normal_traffic(std::slice::from_ref(&plug), start(), Duration::from_secs(900), 4),
    );
    let text = export::to_toml(plug.mac, Some("learnt-plug"), 4_000, baselines.device(plug.mac).unwrap()).unwrap();
    assert!(text.contains("203.0.113.0/24"), "{text}");
    assert!(text.contains("mqtt.plug.example.com"), "{text}");
    assert!(text.contains("10.77.0.10/32"), "LAN peer: {text}");
    let policy = crate::policy::load::parse_sources(&[(std::path::PathBuf::from("learnt.toml"), text.clone())])
        .unwrap_or_else(|errors| panic!("{errors:?}\n{text}"));
    let class = policy.class("learnt-plug").unwrap();
    assert!(class.rules.len() >= 4, "{:?}\n{text}", class.rules);
}
