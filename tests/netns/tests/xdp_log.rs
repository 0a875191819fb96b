//! The XDP programs' own log lines (aya-log) reach the controller's tracing output with their
//! level: a quarantine redirect without a port is a WARN, a CONFIG of another ABI an ERROR;
//! both are rate-limited to the 1st, 2nd, 4th, 8th... occurrence per CPU.
//!
//! Run as root through `cargo xtask test` (`--test-threads=1`).
use std::{net::Ipv4Addr, time::Duration};

use gateway_ebpf::{counter, lane, reason};
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    controller::Controller,
    lab::{Lab, UPSTREAM_IP},
    packets::{self, Endpoints},
    policies::{LANES, defaults},
    raw::RawSocket,
};

const SETTLE: Duration = Duration::from_millis(700);
/// How long a log record may take from the program to the controller's stderr.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames sent in each burst.
const FRAMES: u16 = 10;

fn start(lab: &Lab) -> Controller {
    let defaults = defaults("drop");
    Controller::start(lab, &[("lanes.toml", LANES), ("defaults.toml", &defaults)], "")
}

fn endpoints(lab: &Lab, dst_ip: [u8; 4]) -> Endpoints {
    let d = &lab.devices[0];
    Endpoints { src_mac: d.mac, dst_mac: lab.mac_of(&lab.gw, "lan0"), src_ip: d.ip, dst_ip }
}

/// Sends `FRAMES` SYNs to upstream port `port`; returns how many reached (quarantine host,
/// upstream).
fn burst(lab: &Lab, port: u16) -> (usize, usize) {
    let d = &lab.devices[0];
    let tx = RawSocket::open(&d.ns, d.interface);
    let upstream = RawSocket::open(&lab.up, "eth0");
    let quarantine = RawSocket::open(&lab.quar, "eth0");
    let to_port = |f: &[u8]| packets::tcp(f).is_some_and(|t| t.destination_port() == port);
    std::thread::scope(|scope| {
        let q = scope.spawn(|| quarantine.collect(SETTLE, to_port).len());
        let u = scope.spawn(|| upstream.collect(SETTLE, to_port).len());
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..FRAMES {
            tx.send(&packets::tcp_syn(endpoints(lab, UPSTREAM_IP), 47_000 + n, port));
        }
        (q.join().expect("sniffer"), u.join().expect("sniffer"))
    })
}

/// The most log lines `occurrences` of one condition may produce: the 1st, 2nd, 4th...
/// occurrence on each CPU, and the occurrences may fall on any CPU.
fn max_lines(occurrences: u32) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    cpus * (occurrences.ilog2() as usize + 1)
}

#[test]
fn quarantine_redirect_without_a_port_is_logged_by_xdp_as_a_warning() {
    let lab = Lab::new(1);
    let mut ctl = start(&lab);
    let mac = Mac(lab.devices[0].mac);
    let policy_id = lane::FIRST_CLASS_POLICY + 20;
    ctl.maps().set_access(mac, DeviceAccess { access: Access::Quarantined, policy_id, class_id: 20 }).expect("device");
    ctl.maps().set_device_ipv4(mac, Ipv4Addr::from(lab.devices[0].ip)).expect("address");
    // The quarantine port disappears from the devmap (as a second tool could do).
    ctl.maps().set_quarantine_port(None).expect("devmap");
    assert_eq!(ctl.log_count("quarantine redirect failed"), 0, "nothing to log before a redirect fails");

    assert_eq!(burst(&lab, packets::MQTT_PORT), (0, 0), "without a port, quarantined frames are dropped");
    ctl.wait_for_log("quarantine redirect failed", LOG_TIMEOUT);
    let lines = ctl.log_lines("quarantine redirect failed");
    for line in &lines {
        assert!(line.contains(" WARN "), "aya-log's warn! is a tracing WARN: {line}");
        assert!(line.contains("iotgw_xdp::rare"), "the target is the eBPF module: {line}");
        assert!(line.contains("REDIRECT_PORTS slot 0"), "the record's arguments are formatted: {line}");
    }
    assert!(lines.len() <= max_lines(u32::from(FRAMES)), "rate-limited to log2 of the occurrences: {lines:#?}");
    let drops = ctl.maps().global_counter(counter::DROPS_BASE + reason::NO_REDIRECT_PORT);
    assert_eq!(drops, u64::from(FRAMES), "every frame is still counted");
}

#[test]
fn config_of_another_abi_is_logged_by_xdp_as_an_error_and_traffic_passes_unchecked() {
    let lab = Lab::new(1);
    let mut ctl = start(&lab);
    let maps = ctl.maps();
    let good = maps.read_config().expect("config");
    // An unknown device's HTTP is dropped while the CONFIG matches the programs' ABI...
    assert_eq!(burst(&lab, packets::HTTP_PORT), (0, 0));
    assert_eq!(ctl.log_count("CONFIG has ABI version"), 0, "a matching ABI is not logged");

    // ...and passes unchecked (fail open) under a CONFIG of another ABI, which is logged.
    let other = gateway_ebpf::ABI_VERSION + 98;
    maps.write_config(&gateway_ebpf::GatewayConfig { abi_version: other, ..good }).expect("config");
    assert_eq!(burst(&lab, packets::HTTP_PORT), (0, usize::from(FRAMES)));
    ctl.wait_for_log("CONFIG has ABI version", LOG_TIMEOUT);
    let lines = ctl.log_lines("CONFIG has ABI version");
    let expected = format!("CONFIG has ABI version {other}, this program expects {}", gateway_ebpf::ABI_VERSION);
    for line in &lines {
        assert!(line.contains(" ERROR "), "aya-log's error! is a tracing ERROR: {line}");
        assert!(line.contains(&expected), "{line}");
    }
    // Both programs see the other ABI: the LAN one on the SYNs, the WAN one on what upstream
    // answers (a RST each, and ARP): at most 4 frames per SYN.
    assert!(lines.len() <= max_lines(4 * u32::from(FRAMES)), "rate-limited: {lines:#?}");

    maps.write_config(&good).expect("config");
    assert_eq!(burst(&lab, packets::HTTP_PORT), (0, 0), "enforced again");
}
