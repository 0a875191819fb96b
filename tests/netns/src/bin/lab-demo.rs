//! The demo lab (`cargo xtask demo`): three devices behind the gateway running the real
//! `iotgw` with the shipped policies; a meter enrolls and talks to its head-end, an unknown
//! device stays in the onboarding lane, then the meter is quarantined and its traffic lands
//! on the quarantine host instead of upstream. Everything happens in namespaces the demo
//! makes and removes; every loop is bounded.
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use gateway_ebpf::{counter, reason};
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    controller::Controller,
    lab::{GATEWAY_LAN_IP, Lab, format_mac},
    packets::{self, Endpoints},
    raw::RawSocket,
};

/// The meter's head-end in the shipped `policies/meter.toml`.
const HEAD_END_IP: [u8; 4] = [10, 78, 0, 40];
const HEAD_END_PORT: u16 = 4059;

fn main() {
    let policy_dir = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("policies"));
    let files: Vec<(String, String)> = std::fs::read_dir(&policy_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", policy_dir.display()))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).expect("policy file")))
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();

    step("building the lab: 3 devices, a switch, the gateway, upstream, a quarantine host");
    let lab = Lab::new(3);
    // The head-end lives upstream, on the address the meter policy allows.
    netns_tests::lab::ip(&lab.up, &["addr", "add", "10.78.0.40/24", "dev", "eth0"]);
    step(&format!("starting iotgw with the {} shipped policy files from {}", refs.len(), policy_dir.display()));
    let ctl = Controller::start(&lab, &refs, "");
    let gw_mac = lab.mac_of(&lab.gw, "lan0");
    let meter = &lab.devices[0];
    let stranger = &lab.devices[1];
    let e = |mac, ip, dst| Endpoints { src_mac: mac, dst_mac: gw_mac, src_ip: ip, dst_ip: dst };
    let upstream = RawSocket::open(&lab.up, "eth0");
    let quarantine = RawSocket::open(&lab.quar, "eth0");

    let meter_class = ctl_policy_class(&ctl, "meter");
    step(&format!("meter {} enrolls (class meter, policy {})", format_mac(meter.mac), meter_class.0));
    ctl.maps()
        .set_access(Mac(meter.mac), DeviceAccess { access: Access::Enrolled, policy_id: meter_class.0, class_id: meter_class.1 })
        .expect("device table");
    ctl.maps().set_device_ipv4(Mac(meter.mac), Ipv4Addr::from(meter.ip)).expect("device address");

    let burst = |sock: &RawSocket, frames: &[Vec<u8>]| {
        for f in frames {
            sock.send(f);
        }
    };
    let meter_tx = RawSocket::open(&meter.ns, meter.interface);
    let stranger_tx = RawSocket::open(&stranger.ns, stranger.interface);
    let readings: Vec<Vec<u8>> = (0..5).map(|n| packets::tcp_syn(e(meter.mac, meter.ip, HEAD_END_IP), 50_000 + n, HEAD_END_PORT)).collect();
    let seen = watch(&upstream, HEAD_END_PORT, || burst(&meter_tx, &readings));
    report(&format!("meter → head-end {HEAD_END_PORT}/tcp: {seen} of 5 readings arrived upstream"));

    step(&format!("unknown device {} tries the head-end and the gateway's DNS", format_mac(stranger.mac)));
    let probes = vec![
        packets::tcp_syn(e(stranger.mac, stranger.ip, HEAD_END_IP), 51_000, HEAD_END_PORT),
        packets::udp(e(stranger.mac, stranger.ip, GATEWAY_LAN_IP), 51_001, packets::DNS_PORT, b"query"),
    ];
    let seen = watch(&upstream, HEAD_END_PORT, || burst(&stranger_tx, &probes));
    let dropped = drops(&ctl, stranger.mac, reason::NOT_ENROLLED);
    report(&format!("unknown device: {seen} frames upstream, {dropped} dropped as not enrolled (onboarding lane only)"));

    step("the meter is quarantined (as a detection or an operator would order)");
    ctl.maps()
        .set_access(Mac(meter.mac), DeviceAccess { access: Access::Quarantined, policy_id: meter_class.0, class_id: meter_class.1 })
        .expect("device table");
    let readings: Vec<Vec<u8>> = (0..5).map(|n| packets::tcp_syn(e(meter.mac, meter.ip, HEAD_END_IP), 52_000 + n, HEAD_END_PORT)).collect();
    let (at_quarantine, at_upstream) = std::thread::scope(|s| {
        let q = s.spawn(|| count(&quarantine, HEAD_END_PORT));
        let u = s.spawn(|| count(&upstream, HEAD_END_PORT));
        std::thread::sleep(Duration::from_millis(100));
        burst(&meter_tx, &readings);
        (q.join().expect("sniffer"), u.join().expect("sniffer"))
    });
    report(&format!(
        "quarantined meter: {at_quarantine} of 5 frames redirected to the quarantine host, {at_upstream} upstream; {} redirects counted in XDP",
        ctl.maps().global_counter(counter::REDIRECTED)
    ));
    step("done: stopping iotgw and removing the lab");
    drop(ctl);
    drop(lab);
}

fn ctl_policy_class(ctl: &Controller, name: &str) -> (u32, u16) {
    let policy = iotgw::policy::reload(&ctl.policy_dir).unwrap_or_else(|e| panic!("shipped policy: {e:?}"));
    let class = policy.class(name).unwrap_or_else(|| panic!("no class {name:?} in the shipped policies"));
    (class.policy_id.0, class.class_id.0)
}

fn drops(ctl: &Controller, mac: [u8; 6], why: u32) -> u64 {
    ctl.maps().device_counters().into_iter().find(|(m, _)| *m == Mac(mac)).map(|(_, c)| c.drops[why as usize]).unwrap_or(0)
}

fn count(sock: &RawSocket, port: u16) -> usize {
    sock.collect(Duration::from_millis(700), |f| {
        matches!(etherparse::SlicedPacket::from_ethernet(f).ok().and_then(|p| p.transport),
            Some(etherparse::TransportSlice::Tcp(t)) if t.destination_port() == port)
    })
    .len()
}

fn watch(sock: &RawSocket, port: u16, send: impl FnOnce() + Send) -> usize {
    std::thread::scope(|s| {
        let h = s.spawn(|| count(sock, port));
        std::thread::sleep(Duration::from_millis(100));
        send();
        h.join().expect("sniffer")
    })
}

fn step(text: &str) {
    println!("\n▶ {text}");
}

fn report(text: &str) {
    println!("  {text}");
}
