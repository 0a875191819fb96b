//! Benchmark (`cargo xtask bench detection`): time from a device's first anomalous packet to
//! the quarantine being enforced in XDP (the pinned device table), over the real datapath
//! and the real `iotgw` in the lab, and false alerts over a run of normal traffic.
//!
//! Each run builds a fresh lab, lets a meter learn its baseline, then either scans telnet
//! (Mirai-style) or connects to an unknown IP. Prints every sample, p50, p99 and max.
//! Target: p99 ≤ 1 s; 0 false alerts.
use std::time::Duration;

use netns_tests::{lab::Lab, scenario::Scenario};

/// Runs per misbehaviour (each builds its own lab: about 10 s).
const RUNS: usize = 6;
/// Normal traffic after learning, watched for false alerts.
const NORMAL_RUN: Duration = Duration::from_secs(60);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<24} runs {:>2}  p50 {:>10.2?}  p99 {:>10.2?}  max {:>10.2?}  target p99 ≤ 1 s: {}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
        if percentile(&samples, 0.99) <= Duration::from_secs(1) { "met" } else { "NOT met" }
    );
}

fn main() {
    let mut scan = Vec::new();
    let mut stranger = Vec::new();
    for run in 0..RUNS {
        let lab = Lab::new(1);
        let mut s = Scenario::start(&lab);
        s.learn_normal_behaviour();
        let outcome = s.telnet_scan_until_quarantined();
        println!("run {run}: telnet scan → quarantine in XDP {:?} ({} frames)", outcome.latency, outcome.frames_sent);
        scan.push(outcome.latency);
        drop(s);
        drop(lab);

        let lab = Lab::new(1);
        let mut s = Scenario::start(&lab);
        s.learn_normal_behaviour();
        let start = std::time::Instant::now();
        s.connect_to([10, 78, 99, 7], 4059);
        let latency = s
            .wait_for_access(iotgw::device::Access::Quarantined, Duration::from_secs(5))
            .map(|_| start.elapsed())
            .unwrap_or(Duration::MAX);
        println!("run {run}: unknown destination → quarantine in XDP {latency:?}");
        stranger.push(latency);
    }

    let lab = Lab::new(1);
    let mut s = Scenario::start(&lab);
    s.learn_normal_behaviour();
    s.normal_traffic(NORMAL_RUN);
    let false_alerts = s.ctl.log_count("alert raised");
    println!();
    summary("telnet scan", scan);
    summary("unknown destination", stranger);
    println!("false alerts over {NORMAL_RUN:?} of normal traffic after learning: {false_alerts} (target 0)");
}
