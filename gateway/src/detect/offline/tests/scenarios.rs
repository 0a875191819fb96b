//! Attacks injected into real captures: the detectors must fire on them amid real traffic.
//! Each runs on a development capture (where the rules were chosen) and a test-part one
//! (only reported; `bench/detection/RESULTS.md`).
//! - command and control over HTTPS-like TCP on a port the device already uses, at rotating
//!   servers no usual name resolved (what the old "≥ 4 /24s on this port" exemption hid);
//! - a Mirai-style IRC controller and a beacon from a device with no baseline at all.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::SystemTime,
};

use super::*;
use crate::{baseline::DeviceBaseline, datapath::events::DatapathEvent, detect::synthetic};

/// Time of a replayed item.
fn item_time(item: &ReplayItem) -> SystemTime {
    match item {
        ReplayItem::Event(event) => event.time(),
        ReplayItem::Interval(c) => c.start,
    }
}

/// Replays `files` with `injected` (time-ordered) handed over at their time among them.
fn replay_with(detector: &mut Detector, files: &[PathBuf], mut injected: Vec<Input>) -> Vec<Alert> {
    injected.sort_by_key(Input::time);
    let mut pending = injected.into_iter().peekable();
    let mut alerts = Vec::new();
    for file in files {
        for item in crate::datapath::replay::CaptureReplay::open(file, REPLAY_INTERVAL).unwrap() {
            let time = item_time(&item);
            while let Some(input) = pending.next_if(|i| i.time().is_some_and(|t| t <= time)) {
                alerts.extend(detector.handle(&input));
            }
            alerts.extend(handle_item(detector, item));
        }
    }
    alerts.extend(pending.flat_map(|input| detector.handle(&input)));
    alerts
}

/// The LAN address `mac` sends its flows from in `files`.
fn lan_address(files: &[PathBuf], mac: Mac) -> IpAddr {
    let lan = baseline::Config::default();
    files
        .iter()
        .flat_map(|f| crate::datapath::replay::CaptureReplay::open(f, REPLAY_INTERVAL).unwrap())
        .find_map(|item| match item {
            ReplayItem::Event(DatapathEvent::Flow(flow)) if flow.mac == mac && lan.is_lan(flow.src) => Some(flow.src),
            _ => None,
        })
        .expect("the device sends from a LAN address")
}

fn open_of(alerts: &[Alert], mac: Mac, kind: DetectorKind) -> Vec<&Alert> {
    alerts.iter().filter(|a| a.mac == mac && a.detector == kind && !a.resolved).collect()
}

/// Learns `mac` on the setup and idle captures of an NKU lifecycle folder, then injects an
/// implant on the device's most-rotated upstream TCP service among the other phases: a new
/// server every 40 s, each in another /24, none named by DNS. It must be flagged.
fn https_c2_on_the_devices_own_port_is_flagged(folder: &str, mac: Mac) {
    let files = pcaps(&dataset("nku-lifecycle-demo").join(folder));
    let (learn, test): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        name.contains("_setup") || name.contains("_idle_")
    });
    let (mut detector, _, _) = learn_then_test(&learn, &[]);
    let profile = detector.baselines().device(mac).and_then(DeviceBaseline::baselined).unwrap().clone();
    // The TCP service reached at the most upstream prefixes: where an implant hides best.
    let (service, reached) = profile
        .services
        .iter()
        .filter(|(s, p)| s.proto == synthetic::PROTO_TCP && !p.prefixes.is_empty())
        .max_by_key(|(_, p)| p.prefixes.len())
        .map(|(s, p)| (*s, p.prefixes.len()))
        .expect("the device reaches a TCP service upstream");
    let device_ip = lan_address(&learn, mac);
    println!("{folder}: {service} learnt at {reached} prefixes, address {device_ip}");
    let start = SystemTime::UNIX_EPOCH + first_packet(&test[0]);
    let implant: Vec<Input> = (0..6u8)
        .map(|i| {
            let server = IpAddr::V4(Ipv4Addr::new(45, 9, 140 + i, 3));
            let at = start + Duration::from_secs(40 * u64::from(i) + 1);
            synthetic::tcp_syn(mac, at, device_ip, server, 50_000 + u16::from(i), service.port)
        })
        .collect();
    let alerts = replay_with(&mut detector, &test, implant);
    let flagged = open_of(&alerts, mac, DetectorKind::NewDestination);
    assert!(!flagged.is_empty(), "{alerts:#?}");
    println!("flagged: {} — {}", flagged[0].observed, flagged[0].flows[0]);
    assert!(flagged[0].flows[0].contains("45.9.14"), "{:?}", flagged[0].flows);
    // Only the implant: the device's real traffic in those phases raises nothing.
    let others: Vec<_> =
        alerts.iter().filter(|a| !a.resolved && !a.flows.iter().any(|f| f.contains("45.9.14"))).collect();
    assert!(others.is_empty(), "{others:#?}");
}

/// Development part: the plug's tcp/443 reached 4 prefixes while learning (the old rule
/// would have exempted the port).
#[test]
fn https_command_and_control_on_the_plugs_own_port_at_rotating_servers_is_flagged() {
    https_c2_on_the_devices_own_port_is_flagged("xiaodu_plug_lifecycle", "f4:21:ae:9e:8f:cb".parse().unwrap());
}

/// Test part.
#[test]
fn https_command_and_control_on_the_cameras_own_port_at_rotating_servers_is_flagged() {
    https_c2_on_the_devices_own_port_is_flagged("xiaobai_Y2camera_lifecycle", "78:df:72:24:69:4d".parse().unwrap());
}

/// Replays `files` with a Mirai-style bot injected on their most talkative LAN device that is
/// neither a router nor in `exclude`, 5 s in: an IRC connection to its controller, then a
/// loader polled every 10 s ± 0.3 s on a raw high port. No device can have a baseline. The
/// bot must be flagged for both; no other device but those in `exclude` alerts.
fn mirai_style_bot_without_baseline_is_flagged(files: &[PathBuf], exclude: &[Mac]) {
    let mut detector = detector_for(files, baseline::Config::default());
    let mut talk: BTreeMap<Mac, (usize, IpAddr)> = BTreeMap::new();
    let mut first = None;
    for item in crate::datapath::replay::CaptureReplay::open(&files[0], REPLAY_INTERVAL).unwrap() {
        first.get_or_insert(item_time(&item));
        if let ReplayItem::Event(DatapathEvent::Flow(flow)) = item
            && flow.src.is_ipv4()
            && baseline::Config::default().is_lan(flow.src)
        {
            talk.entry(flow.mac).or_insert((0, flow.src)).0 += 1;
        }
    }
    let routers = infer_gateways(files, &baseline::Config::default()).unwrap();
    let (bot, (_, bot_ip)) = talk
        .into_iter()
        .filter(|(m, _)| !routers.contains(m) && !exclude.contains(m))
        .max_by_key(|(_, (n, _))| *n)
        .unwrap();
    let start = first.unwrap() + Duration::from_secs(5);
    let cnc: IpAddr = "198.51.100.66".parse().unwrap();
    let loader: IpAddr = "203.0.113.99".parse().unwrap();
    let mut attack = vec![synthetic::tcp_syn(bot, start, bot_ip, cnc, 41_000, 6667)];
    attack.extend((0..7u64).map(|i| {
        let at = start + Duration::from_secs(10 * i) + Duration::from_millis(if i % 2 == 0 { 0 } else { 300 });
        synthetic::tcp_syn(bot, at, bot_ip, loader, 42_000 + i as u16, 48_101)
    }));
    let alerts = replay_with(&mut detector, files, attack);
    assert!(detector.baselines().device(bot).and_then(DeviceBaseline::baselined).is_none(), "no baseline");
    let irc = open_of(&alerts, bot, DetectorKind::C2Protocol);
    let beacon = open_of(&alerts, bot, DetectorKind::Beaconing);
    println!("bot {bot}: {:?} / {:?}", irc.first().map(|a| &a.observed), beacon.first().map(|a| &a.observed));
    assert_eq!(irc.len(), 1, "{alerts:#?}");
    assert_eq!(beacon.len(), 1, "{alerts:#?}");
    let others: Vec<_> = alerts.iter().filter(|a| a.mac != bot && !exclude.contains(&a.mac) && !a.resolved).collect();
    assert!(others.is_empty(), "{others:#?}");
}

/// Development part: kitsune's busiest device.
#[test]
fn mirai_style_irc_and_beacon_from_a_device_without_baseline_are_flagged_amid_real_traffic() {
    mirai_style_bot_without_baseline_is_flagged(&pcaps(&dataset("kitsune-mirai-prefix")), &[]);
}

/// Test part: uq-iot-attacks' busiest device after the port scanner (whose scan alerts are
/// that capture's own test).
#[test]
fn mirai_style_irc_and_beacon_on_the_test_part_are_flagged_beside_a_port_scan() {
    mirai_style_bot_without_baseline_is_flagged(&pcaps(&dataset("uq-iot-attacks")), &[ATTACKER]);
}
