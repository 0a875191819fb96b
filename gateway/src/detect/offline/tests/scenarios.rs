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
use crate::{
    baseline::{DeviceBaseline, Profile},
    datapath::events::DatapathEvent,
    detect::synthetic,
};

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

/// The resolver `mac` asks in `files` (where its first DNS query goes).
fn resolver_of(files: &[PathBuf], mac: Mac) -> Ipv4Addr {
    files
        .iter()
        .flat_map(|f| crate::datapath::replay::CaptureReplay::open(f, REPLAY_INTERVAL).unwrap())
        .find_map(|item| match item {
            ReplayItem::Event(DatapathEvent::Sample(sample)) if sample.mac == mac => {
                let datagram = crate::policy::dns::Datagram::read(&sample).ok()?;
                match datagram.dst.ip() {
                    IpAddr::V4(resolver) if !datagram.is_response() && datagram.dst.port() == 53 => Some(resolver),
                    _ => None,
                }
            }
            _ => None,
        })
        .expect("the device resolves names")
}

/// A lookup of `name` by the device at `device_ip` from `resolver`, answered `addr`, as a
/// capture on the LAN shows it: the query from the device, the answer relayed by `router`.
fn relayed_lookup(
    (mac, device_ip): (Mac, IpAddr),
    router: Mac,
    at: SystemTime,
    resolver: Ipv4Addr,
    name: &str,
    addr: Ipv4Addr,
) -> Vec<Input> {
    let IpAddr::V4(device_ip) = device_ip else { panic!("the device asks over IPv4") };
    let [query, answer] = synthetic::dns_lookup_between(mac, at, device_ip, resolver, name, addr);
    let Input::Datapath(DatapathEvent::Sample(mut answer)) = answer else { unreachable!("an answer sample") };
    answer.mac = router;
    answer.kind = crate::datapath::events::SampleKind::Dns;
    vec![query, Input::Datapath(DatapathEvent::Sample(answer))]
}

/// Learns `mac` on the setup and idle captures of an NKU lifecycle folder, then, amid the
/// other phases, an implant resolves a name the device uses on one of its TCP services at
/// its operator's resolver, which answers with the command-and-control server's address,
/// and connects there on that service; and, as a forgery on the LAN, sends itself an answer
/// that claims to come from the device's real resolver. Neither may name the server: the
/// connection is a new destination, and the answer from the operator's resolver raises
/// `untrusted_resolver`. The control: the device's real resolver moving the same name to a
/// new address raises nothing.
fn c2_answering_the_devices_dns_with_a_known_name_is_flagged(folder: &str, mac: Mac) {
    let files = pcaps(&dataset("nku-lifecycle-demo").join(folder));
    let (learn, test): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        name.contains("_setup") || name.contains("_idle_")
    });
    let all: Vec<PathBuf> = learn.iter().chain(&test).cloned().collect();
    let router = infer_gateways(&all, &baseline::Config::default()).unwrap()[0];
    let resolver = resolver_of(&learn, mac);
    let device = (mac, lan_address(&learn, mac));
    let start = SystemTime::UNIX_EPOCH + first_packet(&test[0]);
    let run = |attack: &dyn Fn(&Profile) -> Vec<Input>| {
        // The resolver the device asks is the site's (live, the gateway's own address; the
        // plug's capture shows no frame from it, only answers relayed from upstream).
        let config = Config {
            gateway_macs: infer_gateways(&all, &baseline::Config::default()).unwrap(),
            trusted_resolvers: vec![IpAddr::V4(resolver)],
            ..Default::default()
        };
        let mut detector = Detector::new(config, Baselines::new(learn_until_told(baseline::Config::default())));
        replay_files(&mut detector, &learn).unwrap();
        let now = detector.now();
        end_learning(&mut detector, now);
        let profile = detector.baselines().device(mac).and_then(DeviceBaseline::baselined).unwrap().clone();
        replay_with(&mut detector, &test, attack(&profile))
    };
    // The TCP service the device reaches by the most names (at the most prefixes when no
    // trusted answer named any), and a name it uses there (or asked for while learning).
    let named_service = |profile: &Profile| {
        let (service, used) = profile
            .services
            .iter()
            .filter(|(s, p)| s.proto == synthetic::PROTO_TCP && !p.prefixes.is_empty())
            .max_by_key(|(_, p)| (p.names.len(), p.prefixes.len()))
            .expect("the device reaches a TCP service upstream");
        let name = used.names.iter().chain(&profile.names).next().expect("the device knows a name");
        (*service, name.clone())
    };
    let c2 = Ipv4Addr::new(45, 9, 160, 3);
    let operators_resolver = Ipv4Addr::new(45, 9, 161, 53);
    let attack = |profile: &Profile| {
        let (service, name) = named_service(profile);
        println!("{folder}: resolver {resolver}, implant on {service} as {name}");
        let mut inputs = relayed_lookup(device, router, start + Duration::from_secs(1), operators_resolver, &name, c2);
        inputs.push(synthetic::tcp_syn(mac, start + Duration::from_secs(2), device.1, c2.into(), 50_100, service.port));
        // The forgery: the device's own answer, from its real resolver's address.
        let IpAddr::V4(device_ip) = device.1 else { unreachable!("checked by relayed_lookup") };
        let [query, forged] =
            synthetic::dns_lookup_between(mac, start + Duration::from_secs(60), device_ip, resolver, &name, c2);
        let Input::Datapath(DatapathEvent::Sample(mut forged)) = forged else { unreachable!("an answer sample") };
        forged.kind = crate::datapath::events::SampleKind::Dns;
        inputs.extend([query, Input::Datapath(DatapathEvent::Sample(forged))]);
        inputs.push(synthetic::tcp_syn(
            mac,
            start + Duration::from_secs(61),
            device.1,
            c2.into(),
            50_101,
            service.port,
        ));
        inputs
    };
    let alerts = run(&attack);
    let flagged = open_of(&alerts, mac, DetectorKind::NewDestination);
    assert!(flagged.iter().any(|a| a.flows.iter().any(|f| f.contains("45.9.160.3"))), "{alerts:#?}");
    let untrusted = open_of(&alerts, mac, DetectorKind::UntrustedResolver);
    assert_eq!(untrusted.len(), 1, "{alerts:#?}");
    println!("flagged: {}\nuntrusted resolver: {}", flagged[0].observed, untrusted[0].observed);
    assert!(untrusted[0].observed.contains("45.9.161.53:53"), "{}", untrusted[0].observed);
    let others: Vec<_> = alerts
        .iter()
        .filter(|a| !a.resolved && a.detector != DetectorKind::UntrustedResolver)
        .filter(|a| !a.flows.iter().any(|f| f.contains("45.9.160.3")))
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    // The control: the real resolver names a new server of the same name.
    let moved = Ipv4Addr::new(45, 9, 162, 3);
    let control = |profile: &Profile| {
        let (service, name) = named_service(profile);
        let mut inputs = relayed_lookup(device, router, start + Duration::from_secs(1), resolver, &name, moved);
        inputs.push(synthetic::tcp_syn(
            mac,
            start + Duration::from_secs(2),
            device.1,
            moved.into(),
            50_102,
            service.port,
        ));
        inputs
    };
    let alerts = run(&control);
    let open: Vec<_> = alerts.iter().filter(|a| !a.resolved).collect();
    assert!(open.is_empty(), "{open:#?}");
}

/// Development part.
#[test]
fn command_and_control_answering_the_plugs_dns_with_a_name_it_uses_is_flagged() {
    c2_answering_the_devices_dns_with_a_known_name_is_flagged(
        "xiaodu_plug_lifecycle",
        "f4:21:ae:9e:8f:cb".parse().unwrap(),
    );
}

/// Test part.
#[test]
fn command_and_control_answering_the_cameras_dns_with_a_name_it_uses_is_flagged() {
    c2_answering_the_devices_dns_with_a_known_name_is_flagged(
        "xiaobai_Y2camera_lifecycle",
        "78:df:72:24:69:4d".parse().unwrap(),
    );
}
