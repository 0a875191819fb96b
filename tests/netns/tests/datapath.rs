//! The XDP datapath over the real kernel, in the lab: lanes, policy, quarantine, counters,
//! malformed frames, and enforcement surviving a `kill -9` of the controller.
//!
//! Run as root through `cargo xtask test`. One test at a time (`--test-threads=1`): each
//! builds its own lab, but the machine has two cores and XDP loads are heavy.
use std::{net::Ipv4Addr, time::Duration};

use gateway_ebpf::reason;
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    controller::Controller,
    lab::{GATEWAY_LAN_IP, Lab, QUARANTINE_HOST_IP, UPSTREAM_IP},
    packets::{self, BROADCAST_IP, BROADCAST_MAC, Endpoints, UNSPECIFIED_IP},
    policies::{LANES, SENSOR_CLASS, SENSOR_CLASS_ID, SENSOR_POLICY_ID, defaults},
    raw::RawSocket,
};

fn policies(malformed: &str) -> Vec<(&'static str, String)> {
    vec![
        ("lanes.toml", LANES.to_owned()),
        ("sensor.toml", SENSOR_CLASS.to_owned()),
        ("defaults.toml", defaults(malformed)),
    ]
}

fn start(lab: &Lab, malformed: &str) -> Controller {
    let files = policies(malformed);
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    Controller::start(lab, &refs, "")
}

/// How long to wait for frames that should (or should not) arrive.
const SETTLE: Duration = Duration::from_millis(700);

struct Setup {
    lab: Lab,
    ctl: Controller,
    gw_lan_mac: [u8; 6],
}

fn setup(devices: usize, malformed: &str) -> Setup {
    let lab = Lab::new(devices);
    let ctl = start(&lab, malformed);
    let gw_lan_mac = lab.mac_of(&lab.gw, "lan0");
    Setup { lab, ctl, gw_lan_mac }
}

impl Setup {
    fn endpoints(&self, device: usize, dst_ip: [u8; 4]) -> Endpoints {
        let d = &self.lab.devices[device];
        Endpoints { src_mac: d.mac, dst_mac: self.gw_lan_mac, src_ip: d.ip, dst_ip }
    }

    fn device_socket(&self, device: usize) -> RawSocket {
        let d = &self.lab.devices[device];
        RawSocket::open(&d.ns, d.interface)
    }

    fn enroll(&self, device: usize, access: Access) {
        let mac = Mac(self.lab.devices[device].mac);
        let entry = DeviceAccess { access, policy_id: SENSOR_POLICY_ID, class_id: SENSOR_CLASS_ID };
        self.ctl.maps().set_access(mac, entry).expect("device entry");
        self.ctl.maps().set_device_ipv4(mac, Ipv4Addr::from(self.lab.devices[device].ip)).expect("device address");
    }

    fn device_drops(&self, device: usize, why: u32) -> u64 {
        self.ctl.device_drops(Mac(self.lab.devices[device].mac), why)
    }
}

/// Frames at `socket` within the settle time whose UDP/TCP destination port is `port`.
fn arrivals_to_port(socket: &RawSocket, port: u16) -> usize {
    socket.collect(SETTLE, |frame| packets::destination_port(frame) == Some(port)).len()
}

#[test]
fn unknown_device_reaches_only_the_onboarding_lane() {
    let s = setup(1, "drop");
    let tx = s.device_socket(0);
    let gw_lan = RawSocket::open(&s.lab.gw, "lan0");
    let dhcp = Endpoints {
        src_ip: UNSPECIFIED_IP,
        dst_ip: BROADCAST_IP,
        dst_mac: BROADCAST_MAC,
        ..s.endpoints(0, BROADCAST_IP)
    };

    // Allowed: DHCP discover, DNS to the gateway, enrollment port.
    let sniff = std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            gw_lan.collect(SETTLE * 2, |f| etherparse::SlicedPacket::from_ethernet(f).is_ok_and(|p| p.link.is_some()))
        });
        std::thread::sleep(Duration::from_millis(100));
        tx.send(&packets::udp(dhcp, packets::DHCP_CLIENT_PORT, packets::DHCP_SERVER_PORT, b"discover"));
        tx.send(&packets::udp(s.endpoints(0, GATEWAY_LAN_IP), 40_001, packets::DNS_PORT, b"query"));
        tx.send(&packets::tcp_syn(s.endpoints(0, GATEWAY_LAN_IP), 40_002, packets::ENROLLMENT_PORT));
        // Denied: the world, DNS elsewhere, another port on the gateway.
        tx.send(&packets::tcp_syn(s.endpoints(0, UPSTREAM_IP), 40_003, packets::HTTP_PORT));
        tx.send(&packets::udp(s.endpoints(0, UPSTREAM_IP), 40_004, packets::DNS_PORT, b"query"));
        tx.send(&packets::tcp_syn(s.endpoints(0, GATEWAY_LAN_IP), 40_005, 22));
        h.join().expect("sniffer")
    });
    let ports: Vec<u16> = sniff.iter().filter_map(|f| packets::destination_port(f)).collect();
    assert!(ports.contains(&packets::DHCP_SERVER_PORT), "DHCP must pass: {ports:?}");
    assert!(ports.contains(&packets::DNS_PORT), "DNS to the gateway must pass: {ports:?}");
    assert!(ports.contains(&packets::ENROLLMENT_PORT), "enrollment must pass: {ports:?}");
    assert!(!ports.contains(&packets::HTTP_PORT), "upstream HTTP must be dropped: {ports:?}");
    assert!(!ports.contains(&22), "other gateway ports must be dropped: {ports:?}");
    assert_eq!(
        ports.iter().filter(|p| **p == packets::DNS_PORT).count(),
        1,
        "only the DNS query to the gateway passes"
    );
    assert_eq!(s.device_drops(0, reason::NOT_ENROLLED), 3);
}

#[test]
fn enrolled_device_reaches_allowed_destinations_and_no_others() {
    let s = setup(1, "drop");
    s.enroll(0, Access::Enrolled);
    let tx = s.device_socket(0);
    let upstream = RawSocket::open(&s.lab.up, "eth0");
    let (mqtt, http) = std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            let frames = upstream.collect(SETTLE * 2, |_| true);
            let count =
                |port| frames.iter().filter(|f| packets::tcp(f).is_some_and(|t| t.destination_port() == port)).count();
            (count(packets::MQTT_PORT), count(packets::HTTP_PORT))
        });
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..3 {
            tx.send(&packets::tcp_syn(s.endpoints(0, UPSTREAM_IP), 41_000 + n, packets::MQTT_PORT));
            tx.send(&packets::tcp_syn(s.endpoints(0, UPSTREAM_IP), 42_000 + n, packets::HTTP_PORT));
        }
        h.join().expect("sniffer")
    });
    assert_eq!(mqtt, 3, "allowed MQTT must be forwarded upstream");
    assert_eq!(http, 0, "HTTP is outside the sensor policy");
    assert_eq!(s.device_drops(0, reason::POLICY_DENY), 3);
}

#[test]
fn quarantined_device_is_redirected_to_the_quarantine_host_never_upstream() {
    let s = setup(1, "drop");
    s.enroll(0, Access::Quarantined);
    let tx = s.device_socket(0);
    let upstream = RawSocket::open(&s.lab.up, "eth0");
    let quarantine = RawSocket::open(&s.lab.quar, "eth0");
    let (at_quarantine, at_upstream) = std::thread::scope(|scope| {
        let q = scope.spawn(|| arrivals_to_port(&quarantine, packets::MQTT_PORT));
        let u = scope.spawn(|| arrivals_to_port(&upstream, packets::MQTT_PORT));
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..5 {
            tx.send(&packets::tcp_syn(s.endpoints(0, UPSTREAM_IP), 43_000 + n, packets::MQTT_PORT));
        }
        (q.join().expect("sniffer"), u.join().expect("sniffer"))
    });
    assert_eq!(at_quarantine, 5, "every quarantined frame must reach the quarantine host");
    assert_eq!(at_upstream, 0, "no quarantined frame may reach upstream");
    assert_eq!(s.ctl.maps().global_counter(gateway_ebpf::counter::REDIRECTED), 5);
    let _ = QUARANTINE_HOST_IP;
}

#[test]
fn counters_and_flow_entries_match_a_known_burst_exactly() {
    let s = setup(1, "drop");
    s.enroll(0, Access::Enrolled);
    let tx = s.device_socket(0);
    const ALLOWED: u64 = 40;
    const DENIED: u64 = 25;
    let allowed = packets::tcp_syn(s.endpoints(0, UPSTREAM_IP), 44_000, packets::MQTT_PORT);
    let denied = packets::udp(s.endpoints(0, UPSTREAM_IP), 44_001, 9_999, &[0xab; 100]);
    for _ in 0..ALLOWED {
        tx.send(&allowed);
    }
    for _ in 0..DENIED {
        tx.send(&denied);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mac = Mac(s.lab.devices[0].mac);
    let maps = s.ctl.maps();
    let (_, counters) = maps.device_counters().into_iter().find(|(m, _)| *m == mac).expect("device counters");
    assert_eq!(counters.traffic.tx_packets, ALLOWED + DENIED);
    assert_eq!(counters.traffic.tx_bytes, ALLOWED * allowed.len() as u64 + DENIED * denied.len() as u64);
    assert_eq!(counters.tcp_packets, ALLOWED);
    assert_eq!(counters.udp_packets, DENIED);
    assert_eq!(counters.drops[reason::POLICY_DENY as usize], DENIED);
    let flows = maps.flows(Some(mac));
    assert_eq!(flows.len(), 2, "one entry per 5-tuple: {flows:?}");
    for (key, stats) in flows {
        let (packets, frame) = if key.dst_port == packets::MQTT_PORT { (ALLOWED, &allowed) } else { (DENIED, &denied) };
        assert_eq!(stats.packets, packets, "{key:?}");
        assert_eq!(stats.bytes, packets * frame.len() as u64, "{key:?}");
        assert_eq!(&key.dst_addr[..4], &UPSTREAM_IP);
        if key.dst_port == packets::MQTT_PORT {
            assert_eq!(stats.tcp_flags & 0x02, 0x02, "SYN flag recorded");
            assert_eq!(stats.syn.mss, 1460, "SYN fingerprint: MSS");
            assert_eq!(stats.syn.window_scale, 7, "SYN fingerprint: window scale");
            assert_eq!(stats.syn.window, 64_240, "SYN fingerprint: window");
            assert_eq!(&stats.syn.option_kinds[..5], &[2, 4, 8, 1, 3], "SYN fingerprint: option order");
            assert_eq!(stats.syn.ttl, packets::DEFAULT_TTL);
        }
    }
}

/// Sends each frame and returns the device's drop counter for `why` and what reached the
/// gateway's LAN side.
fn malformed_cases(s: &Setup) -> Vec<(&'static str, Vec<u8>, u32)> {
    let e = s.endpoints(0, GATEWAY_LAN_IP);
    vec![
        ("IHL below 5", packets::ipv4_with_ihl(e, 4), reason::BAD_IPV4),
        ("IHL beyond the frame", packets::ipv4_with_ihl(e, 15), reason::BAD_IPV4),
        ("TCP data offset below 5", packets::tcp_with_data_offset(e, packets::ENROLLMENT_PORT, 3), reason::BAD_L4),
        (
            "TCP header cut short",
            packets::truncated(
                packets::tcp_syn(e, 40_000, packets::ENROLLMENT_PORT),
                etherparse::Ethernet2Header::LEN + etherparse::Ipv4Header::MIN_LEN + packets::TCP_MIN_HEADER - 6,
            ),
            reason::BAD_L4,
        ),
        ("three stacked VLAN tags", packets::udp_vlan(e, 3, packets::DNS_PORT), reason::BAD_VLAN),
        (
            "IPv6 with five extension headers",
            packets::ipv6_with_extensions(e.src_mac, e.dst_mac, 5, packets::DNS_PORT),
            reason::BAD_IPV6,
        ),
        (
            "runt: Ethernet header and half an IPv4 header",
            packets::truncated(packets::udp(e, 40_000, packets::DNS_PORT, b""), etherparse::Ethernet2Header::LEN + 10),
            reason::BAD_IPV4,
        ),
    ]
}

#[test]
fn malformed_and_truncated_frames_get_the_configured_verdict_and_are_counted() {
    for verdict in ["drop", "pass"] {
        let s = setup(1, verdict);
        let tx = s.device_socket(0);
        let gw_lan = RawSocket::open(&s.lab.gw, "lan0");
        let cases = malformed_cases(&s);
        for (name, frame, why) in &cases {
            let before = s.device_drops(0, *why);
            let arrived = std::thread::scope(|scope| {
                // The receiving stack moves VLAN tags out of the frame, so match on the sender
                // and the frame's tail rather than on every byte.
                let src_mac = &frame[6..12];
                let tail = &frame[frame.len().saturating_sub(8)..];
                let h = scope.spawn(|| {
                    gw_lan.collect(Duration::from_millis(400), |f| f.get(6..12) == Some(src_mac) && f.ends_with(tail))
                });
                std::thread::sleep(Duration::from_millis(50));
                tx.send(frame);
                h.join().expect("sniffer").len()
            });
            let mac = Mac(s.lab.devices[0].mac);
            let all = s.ctl.maps().device_counters().into_iter().find(|(m, _)| *m == mac).map(|(_, c)| c);
            assert_eq!(
                s.device_drops(0, *why),
                before + 1,
                "{name} ({verdict}): counted once under {}; arrived {arrived}; counters {all:?}",
                reason::NAMES[*why as usize]
            );
            let expected = usize::from(verdict == "pass");
            assert_eq!(arrived, expected, "{name}: verdict {verdict}");
        }
        // Well-formed stacks within the bounds are parsed, not counted as malformed.
        let e = s.endpoints(0, GATEWAY_LAN_IP);
        let vlan_before = s.device_drops(0, reason::BAD_VLAN);
        let v6_before = s.device_drops(0, reason::BAD_IPV6);
        tx.send(&packets::udp_vlan(e, 2, packets::DNS_PORT));
        tx.send(&packets::ipv6_with_extensions(e.src_mac, e.dst_mac, 2, packets::DNS_PORT));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(s.device_drops(0, reason::BAD_VLAN), vlan_before, "QinQ is valid");
        assert_eq!(s.device_drops(0, reason::BAD_IPV6), v6_before, "two extension headers are valid");
    }
}

#[test]
fn quarantine_survives_kill_9_and_a_restart_reuses_the_pinned_state() {
    let mut s = setup(1, "drop");
    s.enroll(0, Access::Quarantined);
    s.ctl.kill9();
    let tx = s.device_socket(0);
    let upstream = RawSocket::open(&s.lab.up, "eth0");
    let quarantine = RawSocket::open(&s.lab.quar, "eth0");
    let endpoints = s.endpoints(0, UPSTREAM_IP);
    let send_burst = |base: u16| {
        std::thread::scope(|scope| {
            let q = scope.spawn(|| arrivals_to_port(&quarantine, packets::MQTT_PORT));
            let u = scope.spawn(|| arrivals_to_port(&upstream, packets::MQTT_PORT));
            std::thread::sleep(Duration::from_millis(100));
            for n in 0..4 {
                tx.send(&packets::tcp_syn(endpoints, base + n, packets::MQTT_PORT));
            }
            (q.join().expect("sniffer"), u.join().expect("sniffer"))
        })
    };
    assert_eq!(send_burst(45_000), (4, 0), "with the controller dead, quarantine still holds");
    let counted_before = s.ctl.maps().global_counter(gateway_ebpf::counter::REDIRECTED);

    s.ctl.spawn();
    s.ctl.wait_for_log("replaced=true", Duration::from_secs(1));
    let mac = Mac(s.lab.devices[0].mac);
    assert_eq!(
        s.ctl.maps().access(mac).expect("lookup").map(|a| a.access),
        Some(Access::Quarantined),
        "device table kept"
    );
    assert_eq!(send_burst(46_000), (4, 0), "the restarted controller enforces the same state");
    assert_eq!(
        s.ctl.maps().global_counter(gateway_ebpf::counter::REDIRECTED),
        counted_before + 4,
        "counters kept, not reset"
    );
}

#[test]
fn quarantine_cuts_an_established_flow_at_its_next_packet() {
    // The flow caches its decision in XDP after its first packet: the quarantine must still
    // reach the very next packet of the same 5-tuple, through real interfaces.
    let s = setup(1, "drop");
    s.enroll(0, Access::Enrolled);
    let tx = s.device_socket(0);
    let upstream = RawSocket::open(&s.lab.up, "eth0");
    let quarantine = RawSocket::open(&s.lab.quar, "eth0");
    let endpoints = s.endpoints(0, UPSTREAM_IP);
    const SEGMENTS: u32 = 4;
    let send_segments = |first_seq: u32| {
        std::thread::scope(|scope| {
            let q = scope.spawn(|| arrivals_to_port(&quarantine, packets::MQTT_PORT));
            let u = scope.spawn(|| arrivals_to_port(&upstream, packets::MQTT_PORT));
            std::thread::sleep(Duration::from_millis(100));
            for n in 0..SEGMENTS {
                tx.send(&packets::tcp_data(endpoints, 47_000, packets::MQTT_PORT, first_seq + n * 100, 64));
            }
            (q.join().expect("sniffer"), u.join().expect("sniffer"))
        })
    };
    assert_eq!(send_segments(1), (0, SEGMENTS as usize), "enrolled: the flow reaches the broker");
    s.enroll(0, Access::Quarantined);
    assert_eq!(send_segments(1_001), (SEGMENTS as usize, 0), "quarantined: the same flow goes to the quarantine host");
    s.enroll(0, Access::Enrolled);
    assert_eq!(send_segments(2_001), (0, SEGMENTS as usize), "released: the same flow reaches the broker again");
    let flows = s.ctl.maps().flows(Some(Mac(s.lab.devices[0].mac)));
    let flow = flows.iter().find(|(key, _)| key.src_port == 47_000).expect("the flow's entry");
    assert_eq!(flow.1.packets, 3 * u64::from(SEGMENTS), "one flow entry all along");
}
