//! Detectors that need no history of the device: a device that just appeared, still
//! learning, is flagged for IRC command and control, telnet out, beaconing to an unnamed
//! address and listed destinations; benign periodic traffic (named servers, NTP) is not.
use super::*;

/// A camera that just appeared: its first flows, no baseline of its own or of its type.
fn newcomer() -> DeviceSpec {
    synthetic::camera(7)
}

fn fresh() -> (Detector, DeviceSpec) {
    (detector(), newcomer())
}

fn of(alerts: &[Alert], kind: DetectorKind) -> Vec<&Alert> {
    alerts.iter().filter(|a| a.detector == kind && !a.resolved).collect()
}

#[test]
fn mirai_style_irc_command_and_control_without_any_baseline_is_flagged() {
    let (mut detector, bot) = fresh();
    let src = IpAddr::V4(bot.ip);
    // The bot resolves its controller, joins its IRC channel and keeps the session up.
    let cnc = Ipv4Addr::new(198, 51, 100, 66);
    let mut inputs = synthetic::dns_lookup(bot.mac, start(), "cnc.botnet.example", cnc).to_vec();
    inputs.push(synthetic::tcp_syn(bot.mac, start() + Duration::from_millis(30), src, cnc.into(), 41_000, 6667));
    let alerts = run(&mut detector, &inputs);
    assert!(detector.baselines().device(bot.mac).and_then(DeviceBaseline::baselined).is_none());
    let c2 = of(&alerts, DetectorKind::C2Protocol);
    assert_eq!(c2.len(), 1, "{alerts:#?}");
    assert!((c2[0].score - c2::IRC_SCORE).abs() < 1e-9);
    assert!(c2[0].observed.contains("IRC") && c2[0].observed.contains("198.51.100.66"), "{}", c2[0].observed);
    assert_eq!(DetectorKind::C2Protocol.techniques()[0].id, "T1071");
}

#[test]
fn telnet_out_to_the_internet_is_flagged_but_telnet_on_the_lan_is_not_this_detector() {
    let (mut detector, bot) = fresh();
    let src = IpAddr::V4(bot.ip);
    let out = synthetic::tcp_syn(bot.mac, start(), src, "100.72.9.9".parse().unwrap(), 41_001, 23);
    assert_eq!(of(&detector.handle(&out), DetectorKind::C2Protocol).len(), 1);
    let (mut detector, bot) = fresh();
    let lan = synthetic::tcp_syn(bot.mac, start(), src, "10.77.1.1".parse().unwrap(), 41_002, 23);
    assert!(of(&detector.handle(&lan), DetectorKind::C2Protocol).is_empty());
}

/// Connections every `period` ± 1 s from `bot` to `dst:port`, `count` of them.
fn every(bot: &DeviceSpec, dst: Ipv4Addr, port: u16, period: u64, count: u64, proto: u8) -> Vec<Input> {
    (0..count)
        .map(|i| {
            let jitter = Duration::from_millis(if i % 2 == 0 { 0 } else { 900 });
            let at = start() + Duration::from_secs(period * i) + jitter;
            let src_port = 40_000 + i as u16;
            synthetic::flow(bot.mac, at, IpAddr::V4(bot.ip), dst.into(), src_port, port, proto, 0x02)
        })
        .collect()
}

#[test]
fn beaconing_to_an_unnamed_address_without_any_baseline_is_flagged() {
    let (mut detector, bot) = fresh();
    let alerts = run(&mut detector, &every(&bot, Ipv4Addr::new(45, 9, 148, 3), 4_444, 60, 8, synthetic::PROTO_TCP));
    let beacons = of(&alerts, DetectorKind::Beaconing);
    assert_eq!(beacons.len(), 1, "{alerts:#?}");
    // 0.6 periodic to an unnamed address + 0.2 raw TCP to a high port.
    assert!((beacons[0].score - 0.8).abs() < 1e-9, "{:#?}", beacons[0]);
    assert!(beacons[0].observed.contains("every 60."), "{}", beacons[0].observed);
}

#[test]
fn named_servers_ntp_and_fast_retries_are_no_beacon() {
    let (mut detector, device) = fresh();
    let broker = Ipv4Addr::new(192, 0, 2, 80);
    let mut inputs = synthetic::dns_lookup(device.mac, start(), "broker.camera.example.net", broker).to_vec();
    inputs.extend(every(&device, broker, 8883, 60, 8, synthetic::PROTO_TCP));
    inputs.extend(every(&device, Ipv4Addr::new(198, 51, 100, 123), 123, 64, 8, synthetic::PROTO_UDP));
    // Retries every second: faster than any beacon period.
    inputs.extend(every(&device, Ipv4Addr::new(100, 71, 0, 1), 443, 1, 8, synthetic::PROTO_TCP));
    inputs.sort_by_key(Input::time);
    let alerts = run(&mut detector, &inputs);
    assert!(of(&alerts, DetectorKind::Beaconing).is_empty(), "{alerts:#?}");
}

#[test]
fn a_listed_address_or_domain_is_flagged_from_the_first_flow() {
    let lists = iotgw_test_support::services::scratch("detect-intel");
    let (path, domains) = (lists.join("addresses"), lists.join("domains"));
    std::fs::write(&path, "45.9.148.0/24\nnot an address\n").unwrap();
    std::fs::write(&domains, "botnet.example\n").unwrap();
    let sources = [
        intel::IntelSource { path: path.clone(), format: intel::IntelFormat::Ip, column: None },
        intel::IntelSource { path: domains.clone(), format: intel::IntelFormat::Domain, column: None },
    ];
    let loaded = intel::load_all(&sources);
    let loaded = Arc::new(loaded.unwrap());
    assert_eq!(loaded.lists()[0].refused, 1);
    let (mut detector, bot) = fresh();
    detector.set_threat_intel(loaded.clone());
    let src = IpAddr::V4(bot.ip);
    let listed = synthetic::tcp_syn(bot.mac, start(), src, "45.9.148.77".parse().unwrap(), 41_000, 443);
    let alerts = detector.handle(&listed);
    let hits = of(&alerts, DetectorKind::ThreatIntel);
    assert_eq!(hits.len(), 1, "{alerts:#?}");
    assert!((hits[0].score - intel::LISTED_ADDRESS_SCORE).abs() < 1e-9);
    assert!(hits[0].observed.contains("45.9.148.0/24"), "{}", hits[0].observed);
    assert!(hits[0].observations.is_empty(), "a listed destination is not learnable");
    let (mut detector, bot) = fresh();
    detector.set_threat_intel(loaded);
    let cnc = Ipv4Addr::new(100, 73, 0, 9);
    let [query, answer] = synthetic::dns_lookup(bot.mac, start(), "c2.botnet.example", cnc);
    let alerts = run(
        &mut detector,
        &[
            query,
            answer,
            synthetic::tcp_syn(bot.mac, start() + Duration::from_millis(30), src, cnc.into(), 41_002, 443),
        ],
    );
    let hits = of(&alerts, DetectorKind::ThreatIntel);
    assert_eq!(hits.len(), 1, "{alerts:#?}");
    assert!(hits[0].observed.contains("c2.botnet.example, listed as botnet.example"), "{}", hits[0].observed);
    let (mut detector, bot) = fresh();
    detector.set_threat_intel(Arc::new(intel::load_all(&[]).unwrap()));
    let unlisted = synthetic::tcp_syn(bot.mac, start(), src, "100.72.1.1".parse().unwrap(), 41_001, 443);
    assert!(of(&detector.handle(&unlisted), DetectorKind::ThreatIntel).is_empty());
}

#[test]
fn a_device_still_learning_is_held_to_its_types_rates() {
    let (camera, newcomer) = (synthetic::camera(1), newcomer());
    let classes = vec![
        Input::Class { mac: camera.mac, class: "ip-camera".into() },
        Input::Class { mac: newcomer.mac, class: "ip-camera".into() },
    ];
    let (mut detector, now) = baselined_fleet(&[camera], classes);
    // The new camera's first seconds: 5 MB a second, far above what the baselined camera sent.
    let five_mb_a_second = |mac: Mac| -> Vec<Input> {
        let second = |s: u64| now + Duration::from_secs(s);
        (0..10)
            .map(|s| synthetic::traffic(mac, second(s), Duration::from_secs(1), 5_000_000, 3_500, 100_000, 1_500))
            .collect()
    };
    let alerts = run(&mut detector, &five_mb_a_second(newcomer.mac));
    assert!(detector.baselines().device(newcomer.mac).and_then(DeviceBaseline::baselined).is_none());
    let volume = of(&alerts, DetectorKind::Volume);
    assert_eq!(volume.len(), 1, "{alerts:#?}");
    assert!(volume[0].expected.contains("the baselined ip-camera devices'"), "{}", volume[0].expected);
    // Without a type, only the absolute limits hold: the same seconds raise nothing.
    let mut alone = super::detector();
    assert!(run(&mut alone, &five_mb_a_second(synthetic::plug(9).mac)).is_empty());
}
