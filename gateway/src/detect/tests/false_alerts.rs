//! Benign change longer than the learnt pattern raises nothing: a firmware update moving to
//! new servers under the same names, a CDN rotating addresses, a phone app appearing on the
//! LAN, day/night cycles. (The synthetic fleet learns 15 minutes, then lives for hours.)
use super::*;

/// Runs `inputs` and returns the open alerts.
fn open_after(detector: &mut Detector, inputs: &[Input]) -> Vec<Alert> {
    run(detector, inputs).into_iter().filter(|a| !a.resolved).collect()
}

#[test]
fn new_firmware_reaching_new_servers_under_the_same_names_raises_no_alert() {
    let (mut detector, now) = baselined();
    let mut updated = fleet();
    for device in &mut updated {
        device.server_name = format!("v2.{}", device.server_name);
        device.server_addrs =
            device.server_addrs.iter().map(|a| Ipv4Addr::new(100, 64, a.octets()[2], a.octets()[3])).collect();
    }
    let alerts = open_after(&mut detector, &synthetic::normal_traffic(&updated, now, Duration::from_secs(3_600), 21));
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn a_cdn_rotating_its_addresses_over_many_prefixes_raises_no_alert() {
    let (mut detector, now) = baselined();
    let mut moved = fleet();
    for (i, device) in moved.iter_mut().enumerate() {
        // Each lookup lands in another /24 the fleet never reached.
        device.server_addrs = (0..12u8).map(|j| Ipv4Addr::new(100, 90 + i as u8, j * 7, 10 + j)).collect();
    }
    let alerts = open_after(&mut detector, &synthetic::normal_traffic(&moved, now, Duration::from_secs(7_200), 22));
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn a_phone_app_appearing_and_driving_the_plug_raises_no_alert() {
    let (mut detector, now) = baselined();
    let plug = synthetic::plug(1);
    // A phone joins: it resolves and reaches its cloud services (push every 60 s), polls NTP,
    // and its app opens the plug's local API every few minutes.
    let mut phone = synthetic::meter(40);
    phone.mac = Mac([0x3a, 0x71, 0x0c, 0x5e, 0x12, 0x9d]);
    phone.ip = Ipv4Addr::new(10, 77, 9, 40);
    phone.server_name = "push.phone-vendor.example".into();
    phone.server_addrs = (1..=5).map(|i| Ipv4Addr::new(100, 100, i, 5)).collect();
    phone.period = Duration::from_secs(60);
    phone.lan_peers = vec![(synthetic::GATEWAY, 53), (plug.ip, 8080)];
    let inputs = synthetic::normal_traffic(&[phone, plug], now, Duration::from_secs(3_600), 23);
    let alerts = open_after(&mut detector, &inputs);
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn a_night_of_sparse_reports_and_the_next_day_raise_no_alert() {
    let (mut detector, now) = baselined();
    let mut night = fleet();
    for device in &mut night {
        // At night the devices report a tenth as often, and less each time.
        device.period *= 10;
        device.report_bytes /= 4;
    }
    let hours = |h: u64| Duration::from_secs(h * 3_600);
    let mut inputs = synthetic::normal_traffic(&night, now, hours(10), 24);
    inputs.extend(synthetic::normal_traffic(&fleet(), now + hours(10), hours(4), 25));
    let alerts = open_after(&mut detector, &inputs);
    assert!(alerts.is_empty(), "{alerts:#?}");
}
