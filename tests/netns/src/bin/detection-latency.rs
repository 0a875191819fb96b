//! Benchmark (`cargo xtask bench detection`): time from a device's first anomalous packet to
//! the quarantine being enforced in XDP (the pinned device table), over the real datapath
//! and the real `iotgw` in the lab, and false alerts over a run of normal traffic.
//!
//! Each run builds a fresh lab, lets a meter learn its baseline, then misbehaves in one of
//! the four ways: a Mirai-style telnet scan, a connection to an unknown IP, a
//! camera-style exfiltration (3 MB on its allowed connection), a UDP flood. Prints every
//! sample, p50, p99 and max per misbehaviour. Target: p99 ≤ 1 s; 0 false alerts.
//!
//! Options (after `--`): `--only TEXT` runs the misbehaviours whose name contains it
//! (`--only scan`), `--runs N` (default 10), `--normal-secs N` the false-alert run (default
//! 600; 0 skips it).
use std::time::Duration;

use netns_tests::{lab::Lab, scenario::Scenario};

/// Runs per misbehaviour (each builds its own lab: about 10 s).
const RUNS: usize = 10;
/// Normal traffic after learning, watched for false alerts.
const NORMAL_RUN: Duration = Duration::from_secs(600);

/// What to run (`--only`, `--runs`, `--normal-secs`).
struct Options {
    only: Option<String>,
    runs: usize,
    normal_run: Duration,
}

impl Options {
    fn parse() -> Self {
        let mut options = Options { only: None, runs: RUNS, normal_run: NORMAL_RUN };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
            let number = |text: String| text.parse::<u64>().unwrap_or_else(|_| panic!("{arg}: not a number: {text}"));
            match arg.as_str() {
                "--only" => options.only = Some(value()),
                "--runs" => options.runs = number(value()) as usize,
                "--normal-secs" => options.normal_run = Duration::from_secs(number(value())),
                other => panic!("unknown option {other}; known: --only TEXT, --runs N, --normal-secs N"),
            }
        }
        options
    }
}
/// Longest wait for a quarantine before a run counts as missed.
const MISSED: Duration = Duration::from_secs(5);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let missed = samples.iter().filter(|s| **s == Duration::MAX).count();
    println!(
        "{name:<24} runs {:>2}  p50 {:>10.2?}  p99 {:>10.2?}  max {:>10.2?}  missed {missed}  target p99 ≤ 1 s: {}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
        if percentile(&samples, 0.99) <= Duration::from_secs(1) { "met" } else { "NOT met" }
    );
}

/// Time from the first anomalous frame sent (`misbehave` starts sending at once) to the
/// quarantine in the pinned device table, watched while it sends; `Duration::MAX` when it
/// never came.
fn after_first_frame(s: &mut Scenario, misbehave: impl FnOnce(&mut Scenario)) -> Duration {
    s.time_to_quarantine(MISSED, misbehave).unwrap_or(Duration::MAX)
}

fn main() {
    let options = Options::parse();
    let names = ["telnet scan", "unknown destination", "exfiltration (3 MB)", "UDP flood"];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    // The scan's gateway share: from the frame that took it over the threshold.
    let mut scan_after_threshold = Vec::new();
    for run in 0..options.runs {
        for (kind, name) in names.iter().enumerate() {
            if options.only.as_ref().is_some_and(|only| !name.contains(only.as_str())) {
                continue;
            }
            let lab = Lab::new(1);
            let mut s = Scenario::start(&lab);
            s.learn_normal_behaviour();
            let latency = match kind {
                0 => {
                    let outcome = s.telnet_scan_until_quarantined();
                    println!(
                        "run {run}: {name}: {} frames, {:?} after scan frame {}",
                        outcome.frames_sent,
                        outcome.after_threshold,
                        netns_tests::scenario::SCAN_DETECTION_HOSTS
                    );
                    scan_after_threshold.push(outcome.after_threshold);
                    outcome.latency
                }
                1 => after_first_frame(&mut s, |s| s.connect_to([10, 78, 99, 7], 4059)),
                2 => after_first_frame(&mut s, |s| s.exfiltrate(3_000_000)),
                _ => after_first_frame(&mut s, |s| s.flood(20_000)),
            };
            println!("run {run}: {name} → quarantine in XDP {latency:?}");
            samples[kind].push(latency);
        }
    }

    let false_alerts = (!options.normal_run.is_zero()).then(|| {
        let lab = Lab::new(1);
        let mut s = Scenario::start(&lab);
        s.learn_normal_behaviour();
        s.normal_traffic(options.normal_run);
        s.ctl.log_count("alert raised")
    });
    println!();
    for (name, samples) in names.iter().zip(samples) {
        if !samples.is_empty() {
            summary(name, samples);
        }
    }
    if !scan_after_threshold.is_empty() {
        summary("scan, after threshold", scan_after_threshold);
    }
    if let Some(false_alerts) = false_alerts {
        println!(
            "false alerts over {:?} of normal traffic after learning: {false_alerts} (target 0)",
            options.normal_run
        );
    }
}
