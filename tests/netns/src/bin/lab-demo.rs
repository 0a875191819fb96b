//! The demo lab (`cargo xtask demo`): the real `iotgw` with the shipped policies, in
//! namespaces the demo makes and removes. A meter enrolls and reports to its head-end while
//! the gateway learns its behaviour; an unknown device is held in the onboarding lane; then
//! the meter starts a Mirai-style telnet scan, and the gateway detects it and quarantines it
//! in XDP on its own, without a human. Every traffic loop is bounded.
use std::{path::PathBuf, time::Duration};

use gateway_ebpf::{counter, reason};
use iotgw::device::{Access, Mac};
use netns_tests::{
    lab::{GATEWAY_LAN_IP, Lab, format_mac},
    packets::{self, Endpoints},
    raw::RawSocket,
    scenario::{HEAD_END_IP, HEAD_END_PORT, LEARNING, Scenario},
};

fn main() {
    let policy_dir = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("policies"));
    let files = netns_tests::policies::shipped(Some(&policy_dir));
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();

    step(
        "building the lab: 2 devices on a switch, the gateway (LAN, WAN, quarantine port), upstream, a quarantine host",
    );
    let lab = Lab::new(2);
    netns_tests::lab::ip(&lab.up, &["addr", "add", "10.78.0.40/24", "dev", "eth0"]);
    step(&format!("starting iotgw with the {} shipped policy files from {}", refs.len(), policy_dir.display()));
    let mut s = Scenario::start_with(&lab, &refs);
    let meter = Mac(s.mac);
    report(&format!(
        "meter {meter} enrolled in class \"meter\" (head-end {}:{HEAD_END_PORT}/tcp)",
        fmt_ip(HEAD_END_IP)
    ));

    step(&format!("the meter reports on its rhythm for {LEARNING:?} while iotgw learns its baseline"));
    s.learn_normal_behaviour();
    report("baseline learnt");

    let stranger = &lab.devices[1];
    step(&format!("unknown device {} tries the head-end and the gateway's DNS", format_mac(stranger.mac)));
    let gw_mac = lab.mac_of(&lab.gw, "lan0");
    let e = |dst| Endpoints { src_mac: stranger.mac, dst_mac: gw_mac, src_ip: stranger.ip, dst_ip: dst };
    let tx = RawSocket::open(&stranger.ns, stranger.interface);
    tx.send(&packets::tcp_syn(e(HEAD_END_IP), 51_000, HEAD_END_PORT));
    tx.send(&packets::udp(e(GATEWAY_LAN_IP), 51_001, packets::DNS_PORT, b"query"));
    std::thread::sleep(Duration::from_millis(300));
    report(&format!(
        "unknown device: {} frame(s) dropped as not enrolled; DNS to the gateway passed (onboarding lane)",
        drops(&s, stranger.mac, reason::NOT_ENROLLED)
    ));

    step("the meter is compromised and starts a Mirai-style telnet scan of the upstream network");
    let outcome = s.telnet_scan_until_quarantined();
    if outcome.latency == Duration::MAX {
        report(&format!(
            "the meter was NOT quarantined ({} scan frames sent): see the alerts above",
            outcome.frames_sent
        ));
    } else {
        report(&format!(
            "iotgw detected it and quarantined the meter in XDP {:?} after the first scan frame ({} frames sent)",
            outcome.latency, outcome.frames_sent
        ));
    }
    report(&format!("device table now says: {:?}", s.access().unwrap_or(Access::Unknown)));
    let before = s.ctl.maps().global_counter(counter::REDIRECTED);
    s.send_normal_reading(60_000);
    std::thread::sleep(Duration::from_millis(300));
    report(&format!(
        "the meter's next frames go to the quarantine host: {} redirected",
        s.ctl.maps().global_counter(counter::REDIRECTED) - before
    ));
    let quarantined = s.access() == Some(Access::Quarantined);
    step("done: a human would now inspect it and run `iotgw release MAC`; stopping iotgw and removing the lab");
    drop(s);
    drop(lab);
    if !quarantined {
        eprintln!("demo failed: the scanning meter was not quarantined");
        std::process::exit(1);
    }
}

fn drops(s: &Scenario, mac: [u8; 6], why: u32) -> u64 {
    s.ctl
        .maps()
        .device_counters()
        .into_iter()
        .find(|(m, _)| *m == Mac(mac))
        .map(|(_, c)| c.drops[why as usize])
        .unwrap_or(0)
}

fn fmt_ip(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

fn step(text: &str) {
    println!("\n▶ {text}");
}

fn report(text: &str) {
    println!("  {text}");
}
