//! XDP attach modes over the real kernel: `auto` falls back to generic (skb) XDP on a LAN
//! port without native XDP (a macvlan), with a warning, and enforces there exactly as in
//! native mode (lanes, drop counters, the quarantine redirect through the devmap, the WAN
//! program); explicit `generic` on veths enforces too; a restarted controller reports the
//! mode of the pinned link it reuses and keeps it when the configuration asks for another.
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
    lab::{GATEWAY_LAN_IP, LAN_LOWER, Lab, LanPort, UPSTREAM_IP, XdpAttached, xdp_attached},
    packets::{self, BROADCAST_IP, BROADCAST_MAC, Endpoints, UNSPECIFIED_IP},
    policies::{LANES, defaults},
    raw::RawSocket,
};

/// How long to wait for frames that should (or should not) arrive.
const SETTLE: Duration = Duration::from_millis(700);
/// The auto mode's warning when native XDP is refused.
const FALLBACK_WARNING: &str = "native XDP unavailable; running in generic (skb) mode";

fn start(lab: &Lab, attach_mode: &str) -> Controller {
    let defaults = defaults("drop");
    Controller::start_with_attach_mode(lab, &[("lanes.toml", LANES), ("defaults.toml", &defaults)], attach_mode)
}

fn endpoints(lab: &Lab, dst_ip: [u8; 4]) -> Endpoints {
    let d = &lab.devices[0];
    Endpoints { src_mac: d.mac, dst_mac: lab.mac_of(&lab.gw, "lan0"), src_ip: d.ip, dst_ip }
}

/// Puts device 0 in `access` on an (empty) class policy, with its address known upstream.
fn enroll(ctl: &Controller, lab: &Lab, access: Access) {
    let mac = Mac(lab.devices[0].mac);
    let policy_id = lane::FIRST_CLASS_POLICY + 20;
    ctl.maps().set_access(mac, DeviceAccess { access, policy_id, class_id: 20 }).expect("device entry");
    ctl.maps().set_device_ipv4(mac, Ipv4Addr::from(lab.devices[0].ip)).expect("device address");
}

/// Destination ports of the TCP/UDP frames among `frames`.
fn ports(frames: &[Vec<u8>]) -> Vec<u16> {
    frames.iter().filter_map(|f| packets::destination_port(f)).collect()
}

/// The unknown device sends three onboarding frames and three others; returns the
/// destination ports that reached the gateway's stack on `lan0`.
fn unknown_device_traffic(lab: &Lab) -> Vec<u16> {
    let d = &lab.devices[0];
    let tx = RawSocket::open(&d.ns, d.interface);
    let gw_lan = RawSocket::open(&lab.gw, "lan0");
    let dhcp = Endpoints {
        src_ip: UNSPECIFIED_IP,
        dst_ip: BROADCAST_IP,
        dst_mac: BROADCAST_MAC,
        ..endpoints(lab, BROADCAST_IP)
    };
    let frames = std::thread::scope(|scope| {
        let h = scope.spawn(|| gw_lan.collect(SETTLE * 2, |f| etherparse::SlicedPacket::from_ethernet(f).is_ok()));
        std::thread::sleep(Duration::from_millis(100));
        // Onboarding: DHCP discover, DNS to the gateway, enrollment.
        tx.send(&packets::udp(dhcp, packets::DHCP_CLIENT_PORT, packets::DHCP_SERVER_PORT, b"discover"));
        tx.send(&packets::udp(endpoints(lab, GATEWAY_LAN_IP), 40_001, packets::DNS_PORT, b"query"));
        tx.send(&packets::tcp_syn(endpoints(lab, GATEWAY_LAN_IP), 40_002, packets::ENROLLMENT_PORT));
        // Not onboarding: the world, DNS elsewhere, another port on the gateway.
        tx.send(&packets::tcp_syn(endpoints(lab, UPSTREAM_IP), 40_003, packets::HTTP_PORT));
        tx.send(&packets::udp(endpoints(lab, UPSTREAM_IP), 40_004, packets::DNS_PORT, b"query"));
        tx.send(&packets::tcp_syn(endpoints(lab, GATEWAY_LAN_IP), 40_005, 22));
        h.join().expect("sniffer")
    });
    ports(&frames)
}

fn assert_onboarding_lane_enforced(ctl: &Controller, lab: &Lab) {
    let ports = unknown_device_traffic(lab);
    assert!(ports.contains(&packets::DHCP_SERVER_PORT), "DHCP must pass: {ports:?}");
    assert!(ports.contains(&packets::ENROLLMENT_PORT), "enrollment must pass: {ports:?}");
    assert_eq!(
        ports.iter().filter(|p| **p == packets::DNS_PORT).count(),
        1,
        "only DNS to the gateway passes: {ports:?}"
    );
    assert!(!ports.contains(&packets::HTTP_PORT), "upstream HTTP must be dropped: {ports:?}");
    assert!(!ports.contains(&22), "other gateway ports must be dropped: {ports:?}");
    assert_eq!(
        ctl.device_drops(Mac(lab.devices[0].mac), reason::NOT_ENROLLED),
        3,
        "the three non-onboarding frames are counted"
    );
    assert_eq!(ctl.maps().global_counter(counter::DROPS_BASE + reason::NOT_ENROLLED), 3);
}

/// Sends `count` MQTT SYNs from device 0 upstream; returns (at the quarantine host, upstream).
fn quarantined_burst(lab: &Lab, count: u16) -> (usize, usize) {
    let d = &lab.devices[0];
    let tx = RawSocket::open(&d.ns, d.interface);
    let upstream = RawSocket::open(&lab.up, "eth0");
    let quarantine = RawSocket::open(&lab.quar, "eth0");
    let mqtt = |frame: &[u8]| ports(&[frame.to_vec()]) == [packets::MQTT_PORT];
    std::thread::scope(|scope| {
        let q = scope.spawn(|| quarantine.collect(SETTLE, mqtt).len());
        let u = scope.spawn(|| upstream.collect(SETTLE, mqtt).len());
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..count {
            tx.send(&packets::tcp_syn(endpoints(lab, UPSTREAM_IP), 43_000 + n, packets::MQTT_PORT));
        }
        (q.join().expect("sniffer"), u.join().expect("sniffer"))
    })
}

#[test]
fn auto_mode_falls_back_to_generic_on_a_macvlan_and_enforces_the_onboarding_lane() {
    let lab = Lab::with_lan_port(1, LanPort::Macvlan);
    let ctl = start(&lab, "auto");
    // Only lan0 (a macvlan: no ndo_bpf) falls back; the WAN veth attaches natively.
    let warnings = ctl.log_lines(FALLBACK_WARNING);
    assert_eq!(warnings.len(), 1, "one fallback warning, for lan0: {warnings:?}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("interface=\"lan0\""), "{warnings:?}");
    assert!(warnings[0].contains("driver mode"), "the warning carries the native error: {warnings:?}");
    assert_eq!(xdp_attached(&lab.gw, "lan0"), XdpAttached::Generic, "ip -d link shows xdpgeneric on lan0");
    assert_eq!(xdp_attached(&lab.gw, "wan0"), XdpAttached::Driver, "the veth keeps native XDP");
    assert_eq!(xdp_attached(&lab.gw, LAN_LOWER), XdpAttached::None, "nothing on the macvlan's lower veth");
    let attached = ctl.log_lines("XDP attached");
    assert!(attached.iter().any(|l| l.contains("lan0") && l.contains("mode=\"skb\"")), "{attached:?}");
    assert!(attached.iter().any(|l| l.contains("wan0") && l.contains("mode=\"driver\"")), "{attached:?}");

    assert_onboarding_lane_enforced(&ctl, &lab);
}

#[test]
fn generic_mode_redirects_quarantined_frames_through_the_devmap() {
    let lab = Lab::with_lan_port(1, LanPort::Macvlan);
    let ctl = start(&lab, "auto");
    assert_eq!(xdp_attached(&lab.gw, "lan0"), XdpAttached::Generic);
    enroll(&ctl, &lab, Access::Quarantined);
    // Generic XDP redirects with dev_queue_xmit on the devmap's port: the quarantine veth
    // needs no NAPI on its peer for that (native veth redirects do).
    assert_eq!(
        quarantined_burst(&lab, 5),
        (5, 0),
        "every quarantined frame goes to the quarantine host, none upstream"
    );
    assert_eq!(ctl.maps().global_counter(counter::REDIRECTED), 5);
}

#[test]
fn explicit_generic_mode_on_veths_enforces_on_lan_and_wan() {
    let lab = Lab::new(1);
    let ctl = start(&lab, "generic");
    assert_eq!(ctl.log_count(FALLBACK_WARNING), 0, "generic was asked for: no fallback to warn about");
    assert_eq!(xdp_attached(&lab.gw, "lan0"), XdpAttached::Generic);
    assert_eq!(xdp_attached(&lab.gw, "wan0"), XdpAttached::Generic);
    assert_onboarding_lane_enforced(&ctl, &lab);

    // The WAN program in generic mode: upstream frames towards a quarantined device are
    // dropped (its lane admits only DNS answers from the gateway) and counted against it.
    enroll(&ctl, &lab, Access::Quarantined);
    let up = RawSocket::open(&lab.up, "eth0");
    let device = RawSocket::open(&lab.devices[0].ns, lab.devices[0].interface);
    let towards_device = Endpoints {
        src_mac: lab.mac_of(&lab.up, "eth0"),
        dst_mac: lab.mac_of(&lab.gw, "wan0"),
        src_ip: UPSTREAM_IP,
        dst_ip: lab.devices[0].ip,
    };
    const FROM_UPSTREAM: u64 = 4;
    let arrived = std::thread::scope(|scope| {
        let h = scope.spawn(|| device.collect(SETTLE, |f| ports(&[f.to_vec()]) == [packets::MQTT_PORT]).len());
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..FROM_UPSTREAM as u16 {
            up.send(&packets::udp(towards_device, 44_000 + n, packets::MQTT_PORT, b"push"));
        }
        h.join().expect("sniffer")
    });
    assert_eq!(arrived, 0, "nothing from upstream reaches the quarantined device");
    assert_eq!(ctl.device_drops(Mac(lab.devices[0].mac), reason::TO_ISOLATED_DEVICE), FROM_UPSTREAM);
}

#[test]
fn restart_reuses_the_generic_link_reports_its_mode_and_keeps_it_against_the_config() {
    let lab = Lab::with_lan_port(1, LanPort::Macvlan);
    let mut ctl = start(&lab, "auto");
    assert_eq!(ctl.log_count(FALLBACK_WARNING), 1);
    ctl.kill9();

    // Same configuration: the pinned generic link is swapped in place, no second fallback.
    ctl.spawn();
    let attached = ctl.log_lines("XDP attached");
    assert!(
        attached.iter().any(|l| l.contains("lan0") && l.contains("mode=\"skb\"") && l.contains("replaced=true")),
        "the reused pin's mode is known: {attached:?}"
    );
    assert_eq!(ctl.log_count(FALLBACK_WARNING), 0, "no new attach, so no fallback");
    assert_eq!(xdp_attached(&lab.gw, "lan0"), XdpAttached::Generic);
    ctl.kill9();

    // attach_mode = "native" now: switching would need a detach (a gap in enforcement), so
    // the generic link stays, with a warning naming both modes.
    let config = std::fs::read_to_string(&ctl.config).expect("config");
    std::fs::write(&ctl.config, config.replace("attach_mode = \"auto\"", "attach_mode = \"native\"")).expect("config");
    ctl.spawn();
    let conflict = ctl.log_lines("runs in another mode than attach_mode asks");
    assert_eq!(conflict.len(), 1, "one warning, for lan0 (wan0 runs natively as asked): {conflict:?}");
    assert!(
        conflict[0].contains("lan0") && conflict[0].contains("skb") && conflict[0].contains("Native"),
        "{conflict:?}"
    );
    assert_eq!(xdp_attached(&lab.gw, "lan0"), XdpAttached::Generic);
    assert_onboarding_lane_enforced(&ctl, &lab);
}

/// Generic XDP on a stacked interface sees only what the stack hands to that interface: a
/// frame addressed to the *lower* device's MAC never reaches the macvlan, so its program. In
/// this lab, without more, three SYNs sent that way reached upstream (forwarded) and three
/// reached the gateway's own TCP stack (`TcpInSegs`), none counted. The deployment recipe,
/// strict reverse-path filtering on the lower device (which holds no address or route, so
/// no source validates through it), closes both; this test holds the recipe to that.
#[test]
fn macvlan_lower_device_with_strict_rp_filter_lets_nothing_past_xdp() {
    let lab = Lab::with_lan_port(1, LanPort::Macvlan);
    netns_tests::lab::sysctl(&lab.gw, &format!("net.ipv4.conf.{LAN_LOWER}.rp_filter"), "1");
    let _ctl = start(&lab, "auto");
    let d = &lab.devices[0];
    let tx = RawSocket::open(&d.ns, d.interface);
    let upstream = RawSocket::open(&lab.up, "eth0");
    let lower_mac = lab.mac_of(&lab.gw, LAN_LOWER);
    let to_upstream = Endpoints { dst_mac: lower_mac, ..endpoints(&lab, UPSTREAM_IP) };
    let to_gateway = Endpoints { dst_mac: lower_mac, ..endpoints(&lab, GATEWAY_LAN_IP) };
    let tcp_in = || {
        let out = netns_tests::lab::sh("ip", &["netns", "exec", &lab.gw, "nstat", "-az", "TcpInSegs"]);
        let value = out.lines().find(|l| l.starts_with("TcpInSegs")).and_then(|l| l.split_whitespace().nth(1));
        value.and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("nstat: {out}"))
    };
    let tcp_in_before = tcp_in();
    let forwarded = std::thread::scope(|scope| {
        let u = scope.spawn(|| upstream.collect(SETTLE, |f| ports(&[f.to_vec()]) == [packets::HTTP_PORT]).len());
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..3 {
            tx.send(&packets::tcp_syn(to_upstream, 48_000 + n, packets::HTTP_PORT));
            tx.send(&packets::tcp_syn(to_gateway, 49_000 + n, 22));
        }
        u.join().expect("sniffer")
    });
    assert_eq!(forwarded, 0, "nothing sent to the lower device's MAC is forwarded upstream");
    assert_eq!(tcp_in() - tcp_in_before, 0, "nothing sent to the lower device's MAC reaches the gateway's TCP");
}
