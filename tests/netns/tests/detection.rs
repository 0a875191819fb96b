//! Behaviour in the lab, end to end over the real datapath: a device learns its baseline,
//! then misbehaves; the controller detects it and the quarantine lands in XDP within a
//! second (issue 6). Run through `cargo xtask test` as root.
use std::time::{Duration, Instant};

use gateway_ebpf::counter;
use iotgw::device::{Access, Mac};
use netns_tests::{
    controller::Controller,
    lab::{GATEWAY_LAN_IP, Lab},
    scenario::{self, Scenario},
};

#[test]
fn mirai_style_telnet_scan_is_quarantined_in_xdp_within_a_second() {
    let lab = Lab::new(1);
    let mut s = Scenario::start(&lab);
    s.learn_normal_behaviour();

    let outcome = s.telnet_scan_until_quarantined();
    println!(
        "scan: first anomalous packet → quarantine in XDP: {:?} ({} scan frames sent)",
        outcome.latency, outcome.frames_sent
    );
    assert!(outcome.latency <= Duration::from_secs(1), "enforcement took {:?}", outcome.latency);
    assert_eq!(s.access(), Some(Access::Quarantined));
    // Later frames of the quarantined device go to the quarantine segment.
    let redirected_before = s.ctl.maps().global_counter(counter::REDIRECTED);
    s.send_normal_reading(60_000);
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.ctl.maps().global_counter(counter::REDIRECTED) > redirected_before, "quarantined traffic is redirected");
    s.ctl.wait_for_log("alert raised", Duration::from_secs(2));
    s.ctl.wait_for_log("action=quarantine", Duration::from_secs(2));
}

#[test]
fn meter_talking_to_an_unknown_ip_is_detected_and_quarantined() {
    let lab = Lab::new(1);
    let mut s = Scenario::start(&lab);
    s.learn_normal_behaviour();
    let started = Instant::now();
    // Upstream (outside the LAN interface's subnet), outside the head-end's learnt /24.
    s.connect_to([10, 78, 99, 7], 4059);
    let latency = s.wait_for_access(Access::Quarantined, Duration::from_secs(3)).expect("quarantined");
    println!("new destination: quarantine in XDP {latency:?} after the flow");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(latency <= Duration::from_secs(1), "enforcement took {latency:?}");
    s.ctl.wait_for_log("detector=new_destination", Duration::from_secs(1));
}

/// A device that just appeared, with no baseline of its own or of its type, opens IRC to
/// its controller (Mirai-family): `c2_protocol` fires on the first SYN and the quarantine
/// lands in XDP.
#[test]
fn mirai_style_irc_from_a_device_without_baseline_is_detected_and_quarantined() {
    let lab = Lab::new(1);
    let policy = scenario::POLICY.replace(r#"detectors = ["scan","#, r#"detectors = ["c2_protocol", "scan","#);
    assert_ne!(policy, scenario::POLICY, "the scenario's response rule changed shape");
    let mut s = Scenario::start_with(&lab, &[("scenario.toml", &policy)]);
    let started = Instant::now();
    s.connect_to([10, 78, 66, 67], 6667);
    let latency = s.wait_for_access(Access::Quarantined, Duration::from_secs(3)).expect("quarantined");
    println!("IRC without baseline: quarantine in XDP {latency:?} after the flow");
    assert!(started.elapsed() < Duration::from_secs(3));
    s.ctl.wait_for_log("detector=c2_protocol", Duration::from_secs(1));
}

#[test]
fn camera_exfiltrating_is_detected_by_volume_and_quarantined() {
    let lab = Lab::new(1);
    let mut s = Scenario::start(&lab);
    s.learn_normal_behaviour();
    // 3 MB as fast as the raw socket goes, on the device's allowed destination: the volume is
    // odd (and so is the rate: more than its packets-per-second limit).
    let latency = s.time_to_quarantine(Duration::from_secs(5), |s| s.exfiltrate(3_000_000)).expect("quarantined");
    println!("exfiltration: quarantine in XDP {latency:?} after the first byte");
    assert!(latency <= Duration::from_secs(1), "enforcement took {latency:?}");
    s.ctl.wait_for_log("detector=volume", Duration::from_secs(1));
}

#[test]
fn udp_flood_is_detected_and_quarantined() {
    let lab = Lab::new(1);
    let mut s = Scenario::start(&lab);
    s.learn_normal_behaviour();
    let latency = s.time_to_quarantine(Duration::from_secs(5), |s| s.flood(20_000)).expect("quarantined");
    println!("flood: quarantine in XDP {latency:?} after the first packet");
    assert!(latency <= Duration::from_secs(1), "enforcement took {latency:?}");
    s.ctl.wait_for_log("detector=flood", Duration::from_secs(1));
}

#[test]
fn normal_behaviour_after_learning_raises_no_alert() {
    let lab = Lab::new(1);
    let mut s = Scenario::start(&lab);
    s.learn_normal_behaviour();
    // As much normal traffic again as during learning: same peers, same rhythm.
    s.normal_traffic(scenario::LEARNING);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.access(), Some(Access::Enrolled), "no response on normal traffic");
    assert_eq!(s.ctl.log_count("alert raised"), 0, "no alert on normal traffic");
    let _ = (Mac([0; 6]), GATEWAY_LAN_IP, Controller::start as fn(&Lab, &[(&str, &str)], &str) -> Controller);
}

/// The demo's path under CI: the shipped policy files (their response rules, not the lab's
/// permissive one) quarantine a Mirai-style scan. The scan's first alert scores low; the
/// incident is alerted again as it grows, and the shipped quarantine rule takes it.
#[test]
fn shipped_policies_quarantine_a_telnet_scan() {
    let files = netns_tests::policies::shipped(None);
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let lab = Lab::new(1);
    let mut s = Scenario::start_with(&lab, &refs);
    s.learn_normal_behaviour();
    let outcome = s.telnet_scan_until_quarantined();
    println!("shipped policies: scan quarantined in XDP {:?} ({} frames)", outcome.latency, outcome.frames_sent);
    assert_eq!(s.access(), Some(Access::Quarantined));
    assert!(outcome.latency <= Duration::from_secs(1), "enforcement took {:?}", outcome.latency);
    s.ctl.wait_for_log("escalated from", Duration::from_secs(1));
}
