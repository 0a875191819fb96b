//! What a rule says, exactly, over the real XDP datapath (issue 17): an `inbound` rule's
//! `ports` is the device's own port, an `outbound` TCP rule does not let a remote open a
//! connection to the device (the device's SYN-ACK is what the LAN program sees of it),
//! `icmp_types` admits the listed messages only, and `source_ports` is the opener's source.
//!
//! Frames are sent from the device's namespace as the device's stack would send them and
//! counted where they arrive upstream. Run as root through `cargo xtask test`, one test at a
//! time (`--test-threads=1`).
use std::{net::Ipv4Addr, time::Duration};

use gateway_ebpf::reason;
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    controller::Controller,
    lab::{Lab, UPSTREAM_IP},
    packets::{self, Endpoints},
    policies::{LANES, SENSOR_CLASS_ID, SENSOR_POLICY_ID, defaults},
    raw::RawSocket,
};

/// The lab's class (id 20, the sensor's policy id), towards the upstream host 10.78.0.2.
const CLASS: &str = r#"
[[class]]
name = "fielded"
id = 20
[[class.allow]]
description = "RTSP served by the device"
nets = ["10.78.0.2/32"]
protocol = "tcp"
ports = [554]
direction = "inbound"
[[class.allow]]
description = "HTTPS the device opens"
nets = ["10.78.0.2/32"]
protocol = "tcp"
ports = [443]
[[class.allow]]
description = "NTP from the NTP port only"
nets = ["10.78.0.2/32"]
protocol = "udp"
ports = [123]
source_ports = [123]
[[class.allow]]
description = "ping, nothing else"
nets = ["10.78.0.2/32"]
protocol = "icmp"
icmp_types = ["8/0"]
"#;

/// How long to wait for frames that should (or should not) arrive.
const SETTLE: Duration = Duration::from_millis(700);

struct Setup {
    lab: Lab,
    ctl: Controller,
}

fn setup() -> Setup {
    let lab = Lab::new(1);
    let defaults = defaults("drop");
    let ctl =
        Controller::start(&lab, &[("lanes.toml", LANES), ("class.toml", CLASS), ("defaults.toml", &defaults)], "");
    let device = &lab.devices[0];
    let mac = Mac(device.mac);
    let entry = DeviceAccess { access: Access::Enrolled, policy_id: SENSOR_POLICY_ID, class_id: SENSOR_CLASS_ID };
    ctl.maps().set_access(mac, entry).expect("device entry");
    ctl.maps().set_device_ipv4(mac, Ipv4Addr::from(device.ip)).expect("device address");
    Setup { lab, ctl }
}

impl Setup {
    /// The device towards the upstream host, through the gateway.
    fn upstream(&self) -> Endpoints {
        let device = &self.lab.devices[0];
        let gateway = self.lab.mac_of(&self.lab.gw, "lan0");
        Endpoints { src_mac: device.mac, dst_mac: gateway, src_ip: device.ip, dst_ip: UPSTREAM_IP }
    }

    /// Sends `frames` from the device and returns the frames upstream receives from it.
    fn send_and_collect(&self, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let device = &self.lab.devices[0];
        let tx = RawSocket::open(&device.ns, device.interface);
        let upstream = RawSocket::open(&self.lab.up, "eth0");
        let source = device.ip;
        std::thread::scope(|scope| {
            let sniffer = scope.spawn(|| upstream.collect(SETTLE * 2, |f| packets::ipv4_source(f) == Some(source)));
            std::thread::sleep(Duration::from_millis(100));
            for frame in frames {
                tx.send(frame);
            }
            sniffer.join().expect("sniffer")
        })
    }

    fn policy_drops(&self) -> u64 {
        self.ctl.device_drops(Mac(self.lab.devices[0].mac), reason::POLICY_DENY)
    }
}

/// The (source, destination) ports of the TCP/UDP frames among `frames`.
fn port_pairs(frames: &[Vec<u8>]) -> Vec<(u16, u16)> {
    frames.iter().filter_map(|frame| packets::ports(frame)).collect()
}

#[test]
fn an_inbound_rule_admits_the_devices_own_port_and_no_other() {
    let s = setup();
    let e = s.upstream();
    let arrived = port_pairs(&s.send_and_collect(&[
        // The remote opened to the device's 554 and 22: the device answers both.
        packets::tcp_syn_ack(e, 554, 40_001),
        packets::tcp_data(e, 554, 40_001, 5_001, 100),
        packets::tcp_syn_ack(e, 22, 40_002),
        packets::tcp_data(e, 22, 40_002, 5_001, 100),
        // The device opening to the remote's 554 is not what the rule says.
        packets::tcp_syn(e, 40_003, 554),
    ]));
    assert_eq!(arrived, vec![(554, 40_001), (554, 40_001)], "only the device's RTSP answers may pass");
    assert_eq!(s.policy_drops(), 3);
}

#[test]
fn an_outbound_rule_does_not_let_a_remote_open_a_connection_even_from_the_allowed_port() {
    let s = setup();
    let e = s.upstream();
    let arrived = port_pairs(&s.send_and_collect(&[
        // The remote opened from its 443 to the device's 40001: the device's answer and what
        // follows on that connection stay here.
        packets::tcp_syn_ack(e, 40_001, 443),
        packets::tcp_data(e, 40_001, 443, 5_001, 100),
        // The device opens to the remote's 443: the rule's very case.
        packets::tcp_syn(e, 40_002, 443),
        packets::tcp_data(e, 40_002, 443, 1_001, 100),
    ]));
    assert_eq!(arrived, vec![(40_002, 443), (40_002, 443)], "only the connection the device opened may pass");
    assert_eq!(s.policy_drops(), 2);
}

#[test]
fn echo_only_icmp_admits_echo_requests_and_no_other_message() {
    let s = setup();
    let e = s.upstream();
    // Echo request (allowed); echo reply (answering the remote's ping, which the rule does not
    // allow), timestamp request, destination unreachable, echo request with another code.
    let messages = [(8, 0), (0, 0), (13, 0), (3, 3), (8, 1)];
    let frames: Vec<Vec<u8>> = messages.iter().map(|(kind, code)| packets::icmp_message(e, *kind, *code)).collect();
    let arrived: Vec<(u8, u8)> =
        s.send_and_collect(&frames).iter().filter_map(|frame| packets::icmp_type_code(frame)).collect();
    assert_eq!(arrived, vec![(8, 0)], "only the echo request may pass");
    assert_eq!(s.policy_drops(), 4);
}

#[test]
fn source_ports_are_the_openers_source_port() {
    let s = setup();
    let e = s.upstream();
    let arrived = port_pairs(&s.send_and_collect(&[
        packets::udp(e, 123, 123, b"ntp"),
        packets::udp(e, 40_001, 123, b"ntp"),
        packets::udp(e, 123, 124, b"ntp"),
    ]));
    assert_eq!(arrived, vec![(123, 123)], "NTP only from the NTP port");
    assert_eq!(s.policy_drops(), 2);
}
