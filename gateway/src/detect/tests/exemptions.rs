//! The new-destination exemptions hold on names, pool services and device types, so an
//! intruder cannot hide behind them: command and control on a port the device already uses
//! (HTTPS) at rotating servers no usual name resolved is flagged; a device sharing only a
//! Wi-Fi chip vendor's OUI gets nothing from another's destinations. Names are grouped by
//! registrable domain (public suffix list): hosts of the device's own registrant rotate
//! freely, another registrant under the same public suffix never passes.
use super::*;

/// A meter whose head-end is a CDN: its name resolves to a new /24 on most lookups, so its
/// HTTPS service reaches many prefixes while learning (what the old ≥ 4 /24 rule took as
/// "rotating").
fn cdn_meter() -> DeviceSpec {
    let mut meter = synthetic::meter(1);
    meter.server_addrs = (1..=6).map(|i| Ipv4Addr::new(198, 18, i * 10, 40)).collect();
    meter
}

/// `meter` baselined, its HTTPS service learnt at as many /24s as the old "rotating service"
/// rule needed to exempt the port.
fn baselined_at_many_https_prefixes(meter: &DeviceSpec) -> (Detector, SystemTime) {
    let (detector, now) = baselined_fleet(std::slice::from_ref(meter), Vec::new());
    let https = Service { proto: synthetic::PROTO_TCP, port: 443 };
    let profile = detector.baselines().device(meter.mac).and_then(DeviceBaseline::baselined).unwrap();
    assert!(profile.services[&https].prefixes.len() >= DEFAULT_DIVERSE_SERVICE_PREFIXES, "{profile:#?}");
    (detector, now)
}

#[test]
fn https_command_and_control_at_rotating_unnamed_servers_is_a_new_destination() {
    let meter = cdn_meter();
    let (mut detector, now) = baselined_at_many_https_prefixes(&meter);
    // The implant calls a new server on 443 every 30 s, each in another /24, none named.
    let mut alerts = Vec::new();
    for i in 0..5u8 {
        let server = IpAddr::V4(Ipv4Addr::new(45, 9, 140 + i, 3));
        let at = now + Duration::from_secs(30 * u64::from(i));
        alerts.extend(detector.handle(&synthetic::tcp_syn(meter.mac, at, IpAddr::V4(meter.ip), server, 41_000, 443)));
    }
    let open = open_alerts(&alerts);
    assert_eq!(open.len(), 1, "one incident: {alerts:#?}");
    assert_eq!(open[0].detector, DetectorKind::NewDestination);
    // 0.6 new destination + 0.2 no DNS name; the service is a known one.
    assert!((open[0].score - 0.8).abs() < 1e-9, "{:#?}", open[0]);
    assert!(open[0].observed.contains("no DNS answer named it"), "{}", open[0].observed);
}

#[test]
fn rotating_servers_named_by_another_domain_are_a_new_destination_but_the_usual_names_are_not() {
    let meter = cdn_meter();
    let (mut detector, now) = baselined_fleet(std::slice::from_ref(&meter), Vec::new());
    let connect = |detector: &mut Detector, at: SystemTime, name: &str, addr: Ipv4Addr| {
        let [query, answer] = synthetic::dns_lookup(meter.mac, at, name, addr);
        run(
            detector,
            &[
                query,
                answer,
                synthetic::tcp_syn(
                    meter.mac,
                    at + Duration::from_millis(30),
                    IpAddr::V4(meter.ip),
                    addr.into(),
                    41_001,
                    443,
                ),
            ],
        )
    };
    // New firmware: new servers under the names the meter already used.
    for i in 0..4u8 {
        let at = now + Duration::from_secs(u64::from(i));
        let alerts = connect(&mut detector, at, "fw2.headend.utility.example", Ipv4Addr::new(100, 80, i, 1));
        assert!(alerts.is_empty(), "{alerts:#?}");
    }
    let alerts =
        connect(&mut detector, now + Duration::from_secs(10), "update.c2-domain.example", Ipv4Addr::new(100, 90, 0, 1));
    assert_eq!(new_destinations(&alerts), 1, "{alerts:#?}");
}

/// A meter whose head-end sits behind a CDN under a two-label public suffix
/// (`a.cdn.headend-vendor.co.uk`), reached at six /24s while learning.
fn co_uk_cdn_meter() -> DeviceSpec {
    let mut meter = cdn_meter();
    meter.server_name = "a.cdn.headend-vendor.co.uk".into();
    meter
}

/// A DNS answer naming `addr`, then the meter's HTTPS connection to it.
fn resolve_and_connect(meter: &DeviceSpec, at: SystemTime, name: &str, addr: Ipv4Addr) -> [Input; 3] {
    let [query, answer] = synthetic::dns_lookup(meter.mac, at, name, addr);
    [
        query,
        answer,
        synthetic::tcp_syn(meter.mac, at + Duration::from_millis(30), IpAddr::V4(meter.ip), addr.into(), 41_002, 443),
    ]
}

#[test]
fn a_cdn_rotating_hosts_and_addresses_under_the_devices_registrable_domain_raises_no_alert() {
    let meter = co_uk_cdn_meter();
    let (mut detector, now) = baselined_fleet(std::slice::from_ref(&meter), Vec::new());
    // Another CDN host of the same registrant, at twelve /24s the meter never reached.
    for i in 0..12u8 {
        let at = now + Duration::from_secs(60 * u64::from(i));
        let inputs = resolve_and_connect(&meter, at, "b.cdn.headend-vendor.co.uk", Ipv4Addr::new(100, 81, i * 9, 7));
        let alerts = run(&mut detector, &inputs);
        assert!(alerts.is_empty(), "{alerts:#?}");
    }
}

#[test]
fn an_attacker_on_the_known_https_port_at_rotating_servers_is_flagged_under_a_shared_suffix() {
    let meter = co_uk_cdn_meter();
    let (mut detector, now) = baselined_at_many_https_prefixes(&meter);
    // Another registrant under the same public suffix: last-two-label grouping (`co.uk`)
    // would have counted these as the meter's own names.
    let mut alerts = Vec::new();
    for i in 0..5u8 {
        let at = now + Duration::from_secs(40 * u64::from(i));
        let name = format!("node{i}.c2-operator.co.uk");
        alerts.extend(run(&mut detector, &resolve_and_connect(&meter, at, &name, Ipv4Addr::new(45, 9, 150 + i, 3))));
    }
    let open = open_alerts(&alerts);
    assert_eq!(open.len(), 1, "one incident: {alerts:#?}");
    assert_eq!(open[0].detector, DetectorKind::NewDestination);
    assert!(open[0].observed.contains("resolved from unknown name node0.c2-operator.co.uk"), "{}", open[0].observed);
    // 0.6 new destination, named, on a known service.
    assert!((open[0].score - 0.6).abs() < 1e-9, "{:#?}", open[0]);
}

#[test]
fn another_customers_host_under_a_shared_cloud_domain_is_a_new_destination() {
    let mut meter = cdn_meter();
    meter.server_name = "d1a2b3c4d5e6f7.cloudfront.net".into();
    let (mut detector, now) = baselined_fleet(std::slice::from_ref(&meter), Vec::new());
    // The meter's own distribution at a new edge: its exact name, known.
    let own = resolve_and_connect(&meter, now, "d1a2b3c4d5e6f7.cloudfront.net", Ipv4Addr::new(100, 82, 0, 1));
    assert!(run(&mut detector, &own).is_empty());
    // The attacker's distribution on the same CDN and port: another registrant.
    let theirs = resolve_and_connect(
        &meter,
        now + Duration::from_secs(5),
        "d9z8y7x6w5v4u3.cloudfront.net",
        Ipv4Addr::new(100, 82, 1, 1),
    );
    assert_eq!(new_destinations(&run(&mut detector, &theirs)), 1);
}

#[test]
fn a_destination_the_other_devices_of_its_type_reach_is_their_cloud_but_not_of_its_chip_vendor() {
    // Two plugs of one type, and a camera whose Wi-Fi chip comes from the same vendor
    // (Espressif's OUI 24:0a:c4 on all three).
    let mut relay_user = synthetic::meter(1);
    relay_user.mac = "24:0a:c4:4a:76:49".parse().unwrap();
    relay_user.server_addrs = vec!["54.217.230.12".parse().unwrap()];
    relay_user.server_port = 8767;
    relay_user.server_name = "relay.myedimax.com".into();
    let mut sibling = synthetic::meter(2);
    sibling.mac = "24:0a:c4:23:22:7b".parse().unwrap();
    let mut same_chip = synthetic::meter(3);
    same_chip.mac = "24:0a:c4:98:ee:fd".parse().unwrap();
    let classes = vec![
        Input::Class { mac: relay_user.mac, class: "smart-plug".into() },
        Input::Class { mac: sibling.mac, class: "smart-plug".into() },
        Input::Class { mac: same_chip.mac, class: "ip-camera".into() },
    ];
    let (mut detector, now) = baselined_fleet(&[relay_user, sibling.clone(), same_chip.clone()], classes);
    let relay: IpAddr = "54.217.230.12".parse().unwrap();
    let to_relay = |device: &DeviceSpec, port: u16| {
        synthetic::tcp_syn(device.mac, now, IpAddr::V4(device.ip), relay, 40_000, port)
    };
    assert!(detector.handle(&to_relay(&sibling, 8767)).is_empty());
    // The type's prefix on another service is not its cloud.
    assert_eq!(new_destinations(&detector.handle(&to_relay(&sibling, 6667))), 1);
    let alerts = detector.handle(&to_relay(&same_chip, 8767));
    assert_eq!(new_destinations(&alerts), 1, "{alerts:#?}");
    assert!(alerts[0].expected.contains("the 1 baselined ip-camera devices"), "{}", alerts[0].expected);
}
