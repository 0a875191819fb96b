//! DNS-name rules over the real datapath (issues 4 and 17): a class may reach `names`, and
//! the gateway keeps that true by following the answers its devices receive from upstream to
//! the queries they sent. One lab serves every case: each forgery of issue 17 points at an
//! address of its own, so one round of connections shows which (if any) got through.
use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    api::ApiClient,
    controller::Controller,
    lab::{self, GATEWAY_LAN_IP, Lab},
    packets::{self, Endpoints},
    policies::{LANES, defaults},
    raw::{RawSocket, reachable},
};

/// A camera class reaching its upload service and CDN by name only, and its resolver.
const CAMERA_CLASS: &str = r#"
[[class]]
name = "camera"
id = 14
[[class.allow]]
names = ["upload.camera.example.com", "*.cdn.example.net"]
protocol = "tcp"
ports = [443]
[[class.allow]]
nets = ["10.78.0.53/32"]
protocol = "udp"
ports = [53]
"#;

/// Answers live at least 1 s and at most `TTL_CAP_SECS`, so the cap shows within the test.
const TTL_CAP_SECS: u64 = 5;

const NAME: &str = "upload.camera.example.com";
const RESOLVER: [u8; 4] = [10, 78, 0, 53];
const OTHER_RESOLVER: [u8; 4] = [10, 78, 0, 54];
const HTTPS: u16 = 443;
/// Where the genuine answer points (the upstream namespace's own address).
const GENUINE: [u8; 4] = lab::UPSTREAM_IP;
/// Where the genuine answer with a TTL of ten years points.
const YEARS: [u8; 4] = [10, 78, 0, 70];
/// One address per forgery, each held by the upstream namespace so that a connection the
/// gateway let through would be seen there.
const FORGED: [(&str, [u8; 4]); 6] = [
    ("an answer sent by the device on the LAN", [10, 78, 0, 61]),
    ("an unsolicited answer", [10, 78, 0, 62]),
    ("an answer with the wrong id", [10, 78, 0, 63]),
    ("an answer for another (allowed) name", [10, 78, 0, 64]),
    ("an answer from another resolver", [10, 78, 0, 65]),
    ("a second answer to one query", [10, 78, 0, 66]),
];

/// The value of `iotgw_dns_answers_refused_total{reason="…"}` in a scrape.
fn refused(scrape: &str, reason: &str) -> Option<u64> {
    let series = format!("iotgw_dns_answers_refused_total{{reason=\"{reason}\"}} ");
    scrape.lines().find_map(|line| line.strip_prefix(&series)).and_then(|value| value.trim().parse().ok())
}

#[test]
fn only_the_answer_to_a_devices_query_opens_an_allowed_name_and_every_forgery_opens_nothing() {
    let lab = Lab::new(1);
    let defaults = defaults("drop");
    let config = format!(
        "[policy.dns]\nttl_floor_secs = 1\nttl_ceiling_secs = {TTL_CAP_SECS}\n\n[api]\nmetrics_public = true\n"
    );
    let mut ctl = Controller::start(
        &lab,
        &[("lanes.toml", LANES), ("camera.toml", CAMERA_CLASS), ("defaults.toml", &defaults)],
        &config,
    );
    let device = &lab.devices[0];
    let mac = Mac(device.mac);
    let policy_id = gateway_ebpf::lane::FIRST_CLASS_POLICY + 14;
    ctl.maps()
        .set_access(mac, DeviceAccess { access: Access::Enrolled, policy_id, class_id: 14 })
        .expect("device table");
    ctl.maps().set_device_ipv4(mac, Ipv4Addr::from(device.ip)).expect("device address");
    for (_, addr) in FORGED.iter().chain(&[("", YEARS)]) {
        let cidr = format!("{}/24", Ipv4Addr::from(*addr));
        lab::ip(&lab.up, &["addr", "add", &cidr, "dev", "eth0"]);
    }
    let (gw_lan, gw_wan, up_mac) =
        (lab.mac_of(&lab.gw, "lan0"), lab.mac_of(&lab.gw, "wan0"), lab.mac_of(&lab.up, "eth0"));
    let tx = RawSocket::open(&device.ns, device.interface);
    let up = RawSocket::open(&lab.up, "eth0");
    let from_device = Endpoints { src_mac: device.mac, dst_mac: gw_lan, src_ip: device.ip, dst_ip: RESOLVER };
    let from = |resolver: [u8; 4]| Endpoints { src_mac: up_mac, dst_mac: gw_wan, src_ip: resolver, dst_ip: device.ip };
    let mut targets: Vec<[u8; 4]> = FORGED.iter().map(|(_, addr)| *addr).collect();
    targets.extend([GENUINE, YEARS]);

    assert!(
        reachable(&up, &tx, from_device, &targets, HTTPS, 30_000).is_empty(),
        "before any answer every address is closed"
    );

    let [lan, unsolicited, wrong_id, wrong_name, other_resolver, second] = FORGED.map(|(_, addr)| addr);
    // The device answers itself, to the gateway (LAN side).
    let to_gateway = Endpoints { dst_ip: GATEWAY_LAN_IP, ..from_device };
    tx.send(&packets::dns_answer(to_gateway, 5_301, 1, NAME, lan, 300));
    // Nobody asked.
    up.send(&packets::dns_answer(from(RESOLVER), 5_302, 2, NAME, unsolicited, 300));
    // The device asks; forgeries race the genuine answer, and one comes after it.
    tx.send(&packets::dns_query(from_device, 5_303, 3, NAME));
    std::thread::sleep(Duration::from_millis(50));
    up.send(&packets::dns_answer(from(RESOLVER), 5_303, 4, NAME, wrong_id, 300));
    up.send(&packets::dns_answer(from(RESOLVER), 5_303, 3, "x.cdn.example.net", wrong_name, 300));
    up.send(&packets::dns_answer(from(OTHER_RESOLVER), 5_303, 3, NAME, other_resolver, 300));
    up.send(&packets::dns_answer(from(RESOLVER), 5_303, 3, NAME, GENUINE, 300));
    up.send(&packets::dns_answer(from(RESOLVER), 5_303, 3, NAME, second, 300));
    // A genuine answer claiming ten years.
    tx.send(&packets::dns_query(from_device, 5_304, 4, NAME));
    std::thread::sleep(Duration::from_millis(50));
    up.send(&packets::dns_answer(from(RESOLVER), 5_304, 4, NAME, YEARS, 10 * 365 * 86_400));
    let answered = std::time::Instant::now();

    let mut open = BTreeSet::new();
    for attempt in 0..5 {
        open = reachable(&up, &tx, from_device, &targets, HTTPS, 31_000 + attempt * 10);
        if open.contains(&GENUINE) && open.contains(&YEARS) {
            break;
        }
    }
    for (forgery, addr) in FORGED {
        assert!(!open.contains(&addr), "{forgery} opened {}", Ipv4Addr::from(addr));
    }
    assert!(open.contains(&GENUINE), "the genuine answer to the device's query opens the name's address");
    assert!(open.contains(&YEARS), "a genuine answer with a long TTL opens its address (for a while)");
    ctl.wait_for_log("DNS answer opened addresses", Duration::from_secs(1));

    let scrape = ApiClient::new(&lab.gw).get("/metrics", None).body;
    for reason in ["unsolicited", "wrong_id", "wrong_name_or_type", "wrong_resolver", "duplicate"] {
        assert_eq!(refused(&scrape, reason), Some(1), "refusals for {reason} in:\n{scrape}");
    }
    assert_eq!(ctl.log_count("DNS answer refused"), 5, "each first refusal of a reason is logged");

    // Ten years are capped: the address closes once the cap has passed.
    let capped = Duration::from_secs(TTL_CAP_SECS + 1);
    std::thread::sleep(capped.saturating_sub(answered.elapsed()));
    let after = reachable(&up, &tx, from_device, &targets, HTTPS, 32_000);
    assert!(after.is_empty(), "past the TTL cap nothing stays open: {after:?}");
}
