use std::net::Ipv4Addr;

use super::*;
use crate::{
    baseline::tests::{short_config, start},
    detect::synthetic::{self, DeviceSpec},
};

/// The lab's gateway MAC, for ARP scenarios.
const GATEWAY_MAC: Mac = Mac([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);

fn fleet() -> Vec<DeviceSpec> {
    vec![synthetic::meter(1), synthetic::camera(1), synthetic::plug(1)]
}

fn detector() -> Detector {
    let config = Config { gateway_ips: vec![IpAddr::V4(synthetic::GATEWAY)], ..Default::default() };
    Detector::new(config, Baselines::new(short_config()))
}

/// A detector whose fleet learnt for 15 minutes of normal traffic (learning period 10).
fn baselined() -> (Detector, SystemTime) {
    let mut detector = detector();
    let learn = Duration::from_secs(900);
    let alerts = run(&mut detector, &synthetic::normal_traffic(&fleet(), start(), learn, 7));
    assert!(alerts.is_empty(), "normal learning traffic raised {alerts:#?}");
    for device in fleet() {
        assert!(
            detector.baselines().device(device.mac).and_then(DeviceBaseline::baselined).is_some(),
            "{}",
            device.mac
        );
    }
    (detector, start() + learn)
}

fn run(detector: &mut Detector, inputs: &[Input]) -> Vec<Alert> {
    inputs.iter().flat_map(|input| detector.handle(input)).collect()
}

fn open_alerts(alerts: &[Alert]) -> Vec<&Alert> {
    alerts.iter().filter(|a| !a.resolved).collect()
}

#[test]
fn meter_connecting_to_an_unknown_ip_is_a_new_destination() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    let flow = synthetic::tcp_syn(meter.mac, now, IpAddr::V4(meter.ip), "45.9.148.3".parse().unwrap(), 40_001, 4_444);
    let alerts = detector.handle(&flow);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    assert_eq!((alert.mac, alert.detector), (meter.mac, DetectorKind::NewDestination));
    // 0.6 new destination + 0.2 no DNS name + 0.2 new service.
    assert!((alert.score - 1.0).abs() < 1e-9, "{alert:#?}");
    assert!(alert.expected.contains("203.0.113.0/24"), "{}", alert.expected);
    assert!(alert.observed.contains("45.9.148.3") && alert.observed.contains("no DNS answer"), "{}", alert.observed);
    assert_eq!(alert.flows, vec!["tcp 10.77.1.1:40001 -> 45.9.148.3:4444".to_owned()]);
    assert_eq!(alert.incident.0, "new_destination:02:00:61:00:00:01");
    // The same flow again is the same incident: no second alert.
    assert!(detector.handle(&flow).is_empty());
}

#[test]
fn new_address_of_a_known_name_is_not_a_new_destination() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    let moved = Ipv4Addr::new(198, 18, 7, 7);
    let [query, answer] = synthetic::dns_lookup(meter.mac, now, "eu.headend.utility.example", moved);
    let alerts = run(
        &mut detector,
        &[
            query,
            answer,
            synthetic::tcp_syn(
                meter.mac,
                now + Duration::from_millis(30),
                IpAddr::V4(meter.ip),
                IpAddr::V4(moved),
                40_002,
                443,
            ),
        ],
    );
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn unknown_name_lowers_the_score_but_still_alerts() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    let addr = Ipv4Addr::new(198, 18, 9, 9);
    let [query, answer] = synthetic::dns_lookup(meter.mac, now, "c2.evil.example", addr);
    let alerts = run(
        &mut detector,
        &[
            query,
            answer,
            synthetic::tcp_syn(
                meter.mac,
                now + Duration::from_millis(30),
                IpAddr::V4(meter.ip),
                IpAddr::V4(addr),
                40_003,
                443,
            ),
        ],
    );
    assert_eq!(alerts.len(), 1);
    assert!((alerts[0].score - 0.6).abs() < 1e-9, "{:#?}", alerts[0]);
    assert!(alerts[0].observed.contains("c2.evil.example"));
}

#[test]
fn camera_exfiltrating_is_a_volume_alert() {
    let (mut detector, now) = baselined();
    let camera = synthetic::camera(1);
    // 4 MB/s upload for 5 s; the camera's learnt windows carry about 150 KB.
    let upload: Vec<Input> = (0..5)
        .map(|s| {
            synthetic::traffic(
                camera.mac,
                now + Duration::from_secs(s),
                Duration::from_secs(1),
                4_000_000,
                2_800,
                90_000,
                1_400,
            )
        })
        .collect();
    let alerts = open_alerts(&run(&mut detector, &upload)).into_iter().cloned().collect::<Vec<_>>();
    let volume: Vec<_> = alerts.iter().filter(|a| a.detector == DetectorKind::Volume).collect();
    assert_eq!(volume.len(), 1, "{alerts:#?}");
    assert_eq!(volume[0].mac, camera.mac);
    assert!(volume[0].score > 0.5, "{:#?}", volume[0]);
    assert!(volume[0].expected.contains("bytes sent per 10 s"), "{}", volume[0].expected);
    // A camera's normal upload is not a flood: the packet rate stays under 5× its learnt maximum.
    assert!(alerts.iter().all(|a| a.mac == camera.mac));
}

#[test]
fn mirai_telnet_scan_is_a_scan_even_while_learning() {
    let mut detector = detector();
    let victim = synthetic::plug(1);
    // Not yet baselined: absolute limits apply.
    let scan = synthetic::telnet_scan(victim.mac, victim.ip, start(), 200, 100, 3);
    let alerts = run(&mut detector, &scan);
    let scans: Vec<_> = alerts.iter().filter(|a| a.detector == DetectorKind::Scan).collect();
    // One incident, alerted again only as its score climbs.
    assert!(!scans.is_empty() && scans.iter().all(|a| a.incident == scans[0].incident), "{alerts:#?}");
    assert!(scans.windows(2).all(|pair| pair[1].score > pair[0].score), "{scans:#?}");
    let alert = scans[0];
    assert!(alert.observed.contains("Mirai-style"), "{}", alert.observed);
    assert!(alert.score >= 0.7, "{alert:#?}");
    assert_eq!(alert.flows.len(), EVIDENCE_FLOWS);
    assert!(alert.flows.iter().all(|f| f.ends_with(":23") || f.ends_with(":2323")), "{:?}", alert.flows);
    // The scan flows were not learnt as destinations.
    assert!(detector.baselines().device(victim.mac).unwrap().profile().destinations.len() <= DEFAULT_SCAN_HOSTS);
}

#[test]
fn vertical_port_scan_of_one_host_is_a_scan() {
    let (mut detector, now) = baselined();
    let plug = synthetic::plug(1);
    let target: IpAddr = "10.77.1.1".parse().unwrap();
    let inputs: Vec<Input> = (0..40u16)
        .map(|i| {
            synthetic::tcp_syn(
                plug.mac,
                now + Duration::from_millis(u64::from(i) * 20),
                IpAddr::V4(plug.ip),
                target,
                50_000,
                1 + i * 7,
            )
        })
        .collect();
    let alerts = run(&mut detector, &inputs);
    assert!(
        alerts.iter().any(|a| a.detector == DetectorKind::Scan && a.observed.contains("distinct ports on 10.77.1.1")),
        "{alerts:#?}"
    );
    // ... and, being a new LAN peer, lateral movement.
    assert!(alerts.iter().any(|a| a.detector == DetectorKind::LateralMovement));
}

#[test]
fn packet_flood_is_a_flood() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    let flood = synthetic::traffic(meter.mac, now, Duration::from_secs(1), 25_000 * 64, 25_000, 0, 0);
    let alerts = detector.handle(&flood);
    let floods: Vec<_> = alerts.iter().filter(|a| a.detector == DetectorKind::Flood).collect();
    assert_eq!(floods.len(), 1, "{alerts:#?}");
    assert!(floods[0].score > 0.9, "{:#?}", floods[0]);
    assert!(floods[0].observed.starts_with("25000 packets/s"), "{}", floods[0].observed);
}

#[test]
fn quarter_second_samples_show_a_flood_in_the_first_quarter_and_keep_rates_per_second() {
    let quarter = Duration::from_millis(250);
    let meter = synthetic::meter(1);
    let flood_rate = |samples: &[(u64, Duration)]| {
        let (mut detector, now) = baselined();
        let mut at = now;
        let mut alerts = Vec::new();
        for &(packets, length) in samples {
            alerts.extend(detector.handle(&synthetic::traffic(meter.mac, at, length, packets * 64, packets, 0, 0)));
            at += length;
        }
        alerts.into_iter().filter(|a| a.detector == DetectorKind::Flood).map(|a| a.observed).collect::<Vec<_>>()
    };
    // 5 000 packets in the first quarter second: flagged at once, as packets per second.
    let first = flood_rate(&[(5_000, quarter)]);
    assert_eq!(first.len(), 1);
    assert!(first[0].starts_with("5000 packets/s"), "{first:?}");
    // 290 packets a second is under the 300 floor whether read in one piece or in quarters.
    assert!(flood_rate(&[(290, Duration::from_secs(1))]).is_empty());
    assert!(flood_rate(&[(72, quarter), (73, quarter), (72, quarter), (73, quarter)]).is_empty());
    // ... and 400 a second is over it either way.
    assert_eq!(flood_rate(&[(400, Duration::from_secs(1))]).len(), 1);
    assert_eq!(flood_rate(&[(100, quarter), (100, quarter), (100, quarter), (100, quarter)]).len(), 1);
}

#[test]
fn syn_flood_with_rotating_ports_is_a_flood_from_flows_alone() {
    let (mut detector, now) = baselined();
    let camera = synthetic::camera(1);
    let target: IpAddr = "192.0.2.80".parse().unwrap();
    let inputs: Vec<Input> = (0..600u32)
        .map(|i| {
            synthetic::tcp_syn(
                camera.mac,
                now + Duration::from_millis(u64::from(i)),
                IpAddr::V4(camera.ip),
                target,
                10_000 + i as u16,
                8883,
            )
        })
        .collect();
    let alerts = run(&mut detector, &inputs);
    assert!(
        alerts.iter().any(|a| a.detector == DetectorKind::Flood && a.observed.contains("new flows")),
        "{alerts:#?}"
    );
}

#[test]
fn device_claiming_the_gateway_address_is_arp_spoofing() {
    let (mut detector, now) = baselined();
    let camera = synthetic::camera(1);
    let gateway = synthetic::GATEWAY;
    let alerts = run(
        &mut detector,
        &[
            synthetic::arp(GATEWAY_MAC, now, GATEWAY_MAC, gateway, Ipv4Addr::new(10, 77, 2, 1), true),
            synthetic::arp(
                camera.mac,
                now + Duration::from_secs(1),
                camera.mac,
                gateway,
                Ipv4Addr::new(10, 77, 1, 1),
                true,
            ),
        ],
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!((alerts[0].mac, alerts[0].detector), (camera.mac, DetectorKind::ArpSpoof));
    assert_eq!(alerts[0].score, 1.0);
    assert!(alerts[0].expected.contains("10.77.0.1 at 02:00:00:00:00:01"), "{}", alerts[0].expected);
}

#[test]
fn forged_arp_sender_and_gratuitous_storm_are_arp_spoofing() {
    let mut detector = detector();
    let plug = synthetic::plug(1);
    let forged =
        synthetic::arp(plug.mac, start(), GATEWAY_MAC, Ipv4Addr::new(10, 77, 3, 1), Ipv4Addr::new(10, 77, 3, 1), true);
    let alerts = detector.handle(&forged);
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].observed.contains("forged sender"));

    let mut storm_detector = self::detector();
    let storm: Vec<Input> = (0..30)
        .map(|i| synthetic::arp(plug.mac, start() + Duration::from_millis(i * 100), plug.mac, plug.ip, plug.ip, false))
        .collect();
    let alerts = run(&mut storm_detector, &storm);
    assert!(!alerts.is_empty() && alerts.iter().all(|a| a.incident == alerts[0].incident), "{alerts:#?}");
    assert!(alerts[0].observed.contains("gratuitous ARPs"), "{}", alerts[0].observed);
}

#[test]
fn lateral_movement_to_another_lan_device_on_telnet() {
    let (mut detector, now) = baselined();
    let plug = synthetic::plug(1);
    let meter = synthetic::meter(1);
    let flow = synthetic::tcp_syn(plug.mac, now, IpAddr::V4(plug.ip), IpAddr::V4(meter.ip), 41_000, 23);
    let alerts = detector.handle(&flow);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].detector, DetectorKind::LateralMovement);
    // 0.5 new peer + 0.3 admin port + 0.2 new service.
    assert!((alerts[0].score - 1.0).abs() < 1e-9);
    assert!(
        alerts[0].expected.contains("10.77.0.1") && alerts[0].expected.contains("10.77.0.10"),
        "{}",
        alerts[0].expected
    );
    // The learnt hub exchange stays quiet.
    let hub = synthetic::udp(
        plug.mac,
        now + Duration::from_secs(1),
        IpAddr::V4(plug.ip),
        "10.77.0.10".parse().unwrap(),
        45_000,
        5683,
    );
    assert!(detector.handle(&hub).is_empty());
}

#[test]
fn incident_resolves_after_the_calm_period() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    let flow = synthetic::tcp_syn(meter.mac, now, IpAddr::V4(meter.ip), "45.9.148.3".parse().unwrap(), 40_001, 4_444);
    assert_eq!(detector.handle(&flow).len(), 1);
    assert!(detector.tick(now + Duration::from_secs(30)).is_empty());
    let resolved = detector.tick(now + Duration::from_secs(DEFAULT_CALM.as_secs() + 1));
    assert_eq!(resolved.len(), 1);
    assert!(resolved[0].resolved);
    assert_eq!(resolved[0].incident.0, "new_destination:02:00:61:00:00:01");
    let event = resolved[0].to_event();
    assert!(matches!(event.kind, crate::event::EventKind::Alert { resolved: true, .. }));
    assert_eq!(event.severity, crate::event::Severity::Info);
}

#[test]
fn alert_maps_to_a_gateway_event_with_evidence() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    let flow = synthetic::tcp_syn(meter.mac, now, IpAddr::V4(meter.ip), "45.9.148.3".parse().unwrap(), 40_001, 4_444);
    let event = detector.handle(&flow)[0].to_event();
    assert_eq!(event.actor, "detector:new_destination");
    assert_eq!(event.device, Some(meter.mac));
    assert_eq!(event.device_ip, Some(IpAddr::V4(meter.ip)));
    assert_eq!(event.severity, crate::event::Severity::High);
    let crate::event::EventKind::Alert { detector, flows, expected, .. } = &event.kind else { panic!() };
    assert_eq!(detector, "new_destination");
    assert_eq!(flows.len(), 1);
    assert!(!expected.is_empty());
}

#[test]
fn hours_of_normal_traffic_raise_no_alert() {
    let devices: Vec<DeviceSpec> =
        (1..=3).flat_map(|i| [synthetic::meter(i), synthetic::camera(i), synthetic::plug(i)]).collect();
    // 30 minutes of learning (the default period), then 6 hours of the same behaviour with
    // fresh jitter, rotating server addresses and random report sizes.
    let mut config = short_config();
    config.learning_secs = baseline::DEFAULT_LEARNING_PERIOD.as_secs();
    let trusting_gateway = Config { gateway_ips: vec![IpAddr::V4(synthetic::GATEWAY)], ..Default::default() };
    let mut detector = Detector::new(trusting_gateway, Baselines::new(config));
    let hours = Duration::from_secs(6 * 3_600 + 1_800);
    let inputs = synthetic::normal_traffic(&devices, start(), hours, 11);
    let alerts = run(&mut detector, &inputs);
    assert!(alerts.is_empty(), "{} false alerts: {:#?}", alerts.len(), alerts.iter().take(5).collect::<Vec<_>>());
    for device in &devices {
        assert!(detector.baselines().device(device.mac).unwrap().baselined().is_some());
    }
}

#[test]
fn hostile_samples_never_panic_and_change_nothing() {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let (mut detector, now) = baselined();
    let camera = synthetic::camera(1);
    let before = detector.baselines().device(camera.mac).cloned();
    // 20 000 random DNS and ARP payloads of random lengths, some truncated mid-header.
    for i in 0..20_000u64 {
        let len = rng.gen_range(0..96);
        let data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        let kind = if i % 2 == 0 { SampleKind::Dns } else { SampleKind::Arp };
        let sample = PacketSample {
            time: now,
            mac: camera.mac,
            kind,
            data,
            payload_offset: 0,
            frame_bytes: 60,
            verdict: gateway_ebpf::verdict::PASS,
        };
        let alerts = detector.handle(&Input::Datapath(DatapathEvent::Sample(sample)));
        // Random ARP can claim addresses; it must never be anything but an ARP alert.
        assert!(alerts.iter().all(|a| a.detector == DetectorKind::ArpSpoof), "{alerts:#?}");
    }
    let after = detector.baselines().device(camera.mac).cloned();
    assert_eq!(before.map(|b| b.profile().destinations.clone()), after.map(|b| b.profile().destinations.clone()));
}

// The churn the novelty detectors take as normal (see `novelty`), each beside its control.

/// `devices` after 15 minutes of normal traffic plus `extra` learning inputs.
fn baselined_fleet(devices: &[DeviceSpec], extra: Vec<Input>) -> (Detector, SystemTime) {
    let mut detector = detector();
    let learn = Duration::from_secs(900);
    let mut inputs = synthetic::normal_traffic(devices, start(), learn, 11);
    inputs.extend(extra);
    inputs.sort_by_key(|input| input.time());
    let alerts = run(&mut detector, &inputs);
    assert!(alerts.is_empty(), "normal learning traffic raised {alerts:#?}");
    for device in devices {
        assert!(
            detector.baselines().device(device.mac).and_then(DeviceBaseline::baselined).is_some(),
            "{}",
            device.mac
        );
    }
    (detector, start() + learn)
}

fn new_destinations(alerts: &[Alert]) -> usize {
    alerts.iter().filter(|a| a.detector == DetectorKind::NewDestination).count()
}

#[test]
fn ntp_client_that_polled_a_fresh_server_each_time_takes_another_but_a_fixed_one_does_not() {
    let mut pooled = synthetic::meter(1);
    // Three polls while learning, each to another pool member in another /24.
    pooled.ntp_servers =
        ["198.51.100.123", "198.18.0.123", "100.64.0.123"].iter().map(|a| a.parse().unwrap()).collect();
    pooled.ntp_period = Duration::from_secs(290);
    let fixed = synthetic::camera(1);
    let (mut detector, now) = baselined_fleet(&[pooled.clone(), fixed.clone()], Vec::new());
    let next_pool_member =
        synthetic::udp(pooled.mac, now, IpAddr::V4(pooled.ip), "100.70.1.2".parse().unwrap(), 123, 123);
    assert!(detector.handle(&next_pool_member).is_empty());
    let other_server = synthetic::udp(fixed.mac, now, IpAddr::V4(fixed.ip), "100.70.1.2".parse().unwrap(), 123, 123);
    assert_eq!(new_destinations(&detector.handle(&other_server)), 1);
}

#[test]
fn traffic_a_device_forwards_for_a_host_behind_it_is_not_its_own_novelty() {
    let (mut detector, now) = baselined();
    let plug = synthetic::plug(1);
    detector.handle(&synthetic::arp(plug.mac, now, plug.mac, plug.ip, synthetic::GATEWAY, false));
    // The phone on the plug's setup access point browses through it.
    let phone_behind = synthetic::tcp_syn(
        plug.mac,
        now + Duration::from_secs(1),
        "10.22.22.2".parse().unwrap(),
        "52.1.2.3".parse().unwrap(),
        50_000,
        443,
    );
    assert!(detector.handle(&phone_behind).is_empty());
    // From the plug's own address the same destination is news.
    let own = synthetic::tcp_syn(
        plug.mac,
        now + Duration::from_secs(2),
        IpAddr::V4(plug.ip),
        "52.1.2.3".parse().unwrap(),
        50_001,
        443,
    );
    assert_eq!(new_destinations(&detector.handle(&own)), 1);
}

#[test]
fn another_public_resolver_is_name_resolution_but_its_neighbour_is_not() {
    let (mut detector, now) = baselined();
    let camera = synthetic::camera(1);
    let httpdns =
        synthetic::tcp_syn(camera.mac, now, IpAddr::V4(camera.ip), "119.29.29.29".parse().unwrap(), 39_225, 80);
    assert!(detector.handle(&httpdns).is_empty());
    let neighbour =
        synthetic::tcp_syn(camera.mac, now, IpAddr::V4(camera.ip), "119.29.29.30".parse().unwrap(), 39_226, 80);
    assert_eq!(new_destinations(&detector.handle(&neighbour)), 1);
}

#[test]
fn calling_back_a_lan_host_that_called_while_learning_is_no_lateral_movement() {
    let phone_mac: Mac = "24:77:03:7c:ea:dc".parse().unwrap();
    let phone: IpAddr = "10.77.0.50".parse().unwrap();
    let (camera, meter) = (synthetic::camera(1), synthetic::meter(1));
    // The phone app opens the camera's API while the camera learns.
    let app =
        synthetic::tcp_syn(phone_mac, start() + Duration::from_secs(300), phone, IpAddr::V4(camera.ip), 50_477, 62_910);
    let (mut detector, now) = baselined_fleet(&[camera.clone(), meter.clone()], vec![app]);
    let lateral = |alerts: Vec<Alert>| alerts.iter().filter(|a| a.detector == DetectorKind::LateralMovement).count();
    let callback = synthetic::udp(camera.mac, now, IpAddr::V4(camera.ip), phone, 23_272, 23_272);
    assert_eq!(lateral(detector.handle(&callback)), 0);
    // The meter never talked with the phone: the same flow from it is lateral movement.
    let from_meter = synthetic::udp(meter.mac, now, IpAddr::V4(meter.ip), phone, 23_272, 23_272);
    assert_eq!(lateral(detector.handle(&from_meter)), 1);
}

#[test]
fn a_lone_flow_to_a_lan_address_nobody_uses_is_no_lateral_movement() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    let stale = synthetic::tcp_syn(meter.mac, now, IpAddr::V4(meter.ip), "10.22.22.138".parse().unwrap(), 4_606, 8_059);
    assert!(detector.handle(&stale).is_empty());
}

#[test]
fn a_service_used_with_several_lan_hosts_takes_another_except_remote_shells() {
    let mut hub = synthetic::plug(1);
    hub.lan_peers =
        vec![(synthetic::GATEWAY, 53), ("10.77.0.10".parse().unwrap(), 5683), ("10.77.0.11".parse().unwrap(), 5683)];
    let meter = synthetic::meter(1);
    let mut extra = Vec::new();
    // The two CoAP peers are live hosts of the LAN.
    for (i, peer) in ["10.77.0.10", "10.77.0.11"].iter().enumerate() {
        let mac = Mac([0x02, 0, 0x77, 0, 0, i as u8]);
        extra.push(synthetic::udp(
            mac,
            start() + Duration::from_secs(1),
            peer.parse().unwrap(),
            IpAddr::V4(synthetic::GATEWAY),
            40_000,
            53,
        ));
    }
    let (mut detector, now) = baselined_fleet(&[hub.clone(), meter.clone()], extra);
    let coap_to_meter = synthetic::udp(hub.mac, now, IpAddr::V4(hub.ip), IpAddr::V4(meter.ip), 45_000, 5683);
    assert!(detector.handle(&coap_to_meter).is_empty());
    let telnet_to_meter = synthetic::tcp_syn(hub.mac, now, IpAddr::V4(hub.ip), IpAddr::V4(meter.ip), 41_000, 23);
    let alerts = detector.handle(&telnet_to_meter);
    assert!(alerts.iter().any(|a| a.detector == DetectorKind::LateralMovement), "{alerts:#?}");
}

#[test]
fn a_growing_scan_is_alerted_again_as_its_score_rises_by_a_step() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    // One new host on an ordinary port every 50 ms: past the host limit, the score climbs.
    let alerts: Vec<Alert> = (0..120u32)
        .flat_map(|i| {
            let host = IpAddr::V4(Ipv4Addr::new(100, 70, (i / 250) as u8, (i % 250) as u8 + 1));
            detector.handle(&synthetic::tcp_syn(
                meter.mac,
                now + Duration::from_millis(u64::from(i) * 50),
                IpAddr::V4(meter.ip),
                host,
                40_000 + i as u16,
                8_080,
            ))
        })
        .filter(|a| a.detector == DetectorKind::Scan)
        .collect();
    assert!(alerts.len() >= 3, "{alerts:#?}");
    assert!(alerts.iter().all(|a| a.incident == alerts[0].incident && !a.resolved));
    for pair in alerts.windows(2) {
        assert!(pair[1].score >= pair[0].score + ESCALATION_STEP - 1e-9, "{pair:#?}");
        assert!(pair[1].observed.contains(&format!("escalated from {:.2}", pair[0].score)), "{}", pair[1].observed);
    }
    // The same score again is the same incident: nothing new.
    let again = synthetic::tcp_syn(
        meter.mac,
        now + Duration::from_millis(6_000),
        IpAddr::V4(meter.ip),
        "100.70.0.1".parse().unwrap(),
        39_000,
        8_080,
    );
    assert!(detector.handle(&again).iter().all(|a| a.detector != DetectorKind::Scan));
}

mod budgets;
mod exemptions;
mod false_alerts;
mod learned;
mod no_baseline;
