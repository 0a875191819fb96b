//! DNS-name rules over the real datapath (issue 4): a class may reach `names`, and the
//! gateway keeps that true by following the DNS answers its devices receive from upstream.
//! Only answers the WAN program saw count: a device cannot open a name for itself by sending
//! a forged answer on the LAN.
use std::{net::Ipv4Addr, time::Duration};

use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    controller::Controller,
    lab::{GATEWAY_LAN_IP, Lab},
    packets::{self, Endpoints},
    policies::{LANES, defaults},
    raw::RawSocket,
};

/// A camera class reaching its upload service by name only.
const CAMERA_CLASS: &str = r#"
[[class]]
name = "camera"
id = 14
[[class.allow]]
names = ["upload.camera.example.com"]
protocol = "tcp"
ports = [443]
"#;

/// Where the CDN answer points (an upstream address the lab owns).
const CDN_ADDR: [u8; 4] = [10, 78, 0, 2];
const NAME: &str = "upload.camera.example.com";
const HTTPS: u16 = 443;

fn https_frames_upstream(up: &RawSocket, tx: &RawSocket, e: Endpoints, base: u16) -> usize {
    std::thread::scope(|scope| {
        let sniffer = scope.spawn(|| {
            up.collect(Duration::from_millis(600), |f| packets::tcp(f).is_some_and(|t| t.destination_port() == HTTPS))
                .len()
        });
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..3 {
            tx.send(&packets::tcp_syn(e, base + n, HTTPS));
        }
        sniffer.join().expect("sniffer")
    })
}

#[test]
fn dns_answers_from_upstream_open_allowed_names_and_forged_ones_do_not() {
    let lab = Lab::new(1);
    let defaults = defaults("drop");
    let mut ctl = Controller::start(
        &lab,
        &[("lanes.toml", LANES), ("camera.toml", CAMERA_CLASS), ("defaults.toml", &defaults)],
        "",
    );
    let device = &lab.devices[0];
    let mac = Mac(device.mac);
    let policy_id = gateway_ebpf::lane::FIRST_CLASS_POLICY + 14;
    ctl.maps()
        .set_access(mac, DeviceAccess { access: Access::Enrolled, policy_id, class_id: 14 })
        .expect("device table");
    ctl.maps().set_device_ipv4(mac, Ipv4Addr::from(device.ip)).expect("device address");
    let gw_lan = lab.mac_of(&lab.gw, "lan0");
    let gw_wan = lab.mac_of(&lab.gw, "wan0");
    let up_mac = lab.mac_of(&lab.up, "eth0");
    let tx = RawSocket::open(&device.ns, device.interface);
    let up = RawSocket::open(&lab.up, "eth0");
    let to_cdn = Endpoints { src_mac: device.mac, dst_mac: gw_lan, src_ip: device.ip, dst_ip: CDN_ADDR };

    assert_eq!(https_frames_upstream(&up, &tx, to_cdn, 30_000), 0, "before any answer the name's address is closed");

    // A forged answer from the device itself (LAN side) must not open anything.
    let forged = Endpoints { src_mac: device.mac, dst_mac: gw_lan, src_ip: device.ip, dst_ip: GATEWAY_LAN_IP };
    tx.send(&packets::dns_answer(forged, 5_353, 7, NAME, CDN_ADDR, 300));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(https_frames_upstream(&up, &tx, to_cdn, 31_000), 0, "a forged LAN-side answer opens nothing");

    // The resolver upstream answers the device: the WAN program samples it.
    let answer = Endpoints { src_mac: up_mac, dst_mac: gw_wan, src_ip: [10, 78, 0, 53], dst_ip: device.ip };
    up.send(&packets::dns_answer(answer, 5_353, 8, NAME, CDN_ADDR, 300));
    let mut opened = 0;
    for attempt in 0..10 {
        opened = https_frames_upstream(&up, &tx, to_cdn, 32_000 + attempt * 10);
        if opened > 0 {
            break;
        }
    }
    assert_eq!(opened, 3, "the answered address of an allowed name is open for the class");
    ctl.wait_for_log("DNS answer opened addresses", Duration::from_secs(1));
}
