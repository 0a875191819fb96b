//! The XDP program's per-packet cost, kernel-timed with BPF_PROG_TEST_RUN.
//!
//! Runs iotgw's LAN program, a bare `XDP_PASS` program and the `iotgw_floor` reference (both
//! from the same object) and Debian's xdp-filter (xdp-tools' `xdpfilt_dny_all.o`, all
//! features, deny mode) on the same packets, in the same run: allowed, denied, quarantined,
//! unknown-device and malformed frames.
//!
//! 1. Established flows, `REPEAT` runs of the same frame: the first run opens the flow and
//!    caches its decision, every later one reuses it. This is the normal case (a device's
//!    traffic is nearly all packets of flows it already has) and the figure the target
//!    (iotgw ≤ 2.5× bare on the mix) is about.
//! 2. The other paths cannot be repeated in one run (a repeated frame hits its flow), so they
//!    are timed one run each (`repeat` 1) over `SINGLE_RUNS` runs, median: a new flow per
//!    run (a fresh source port), and an established flow right after the controller bumped
//!    the policy generation (the decision is recomputed, as after any policy, device or
//!    config write). A single run includes the kernel's per-call timer overhead, so the same
//!    figure for established flows and for the bare program are printed beside them.
//! 3. The floor: `iotgw_floor` does what any device-aware gateway must (parse Ethernet, look
//!    the source MAC up in the device table, count the frame per CPU). Its ratio to bare
//!    says whether 2.5× bare is reachable at all.
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use aya::{
    EbpfLoader,
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp},
};
use gateway_ebpf::{GatewayConfig, lane, programs};
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _, loader, maps::Maps},
    device::{Access, Mac},
};
use netns_tests::{
    packets::{self, Endpoints},
    policies,
};

/// Repetitions per packet kind and program (the kernel times the whole loop).
const REPEAT: u32 = 1_000_000;
/// Single runs (repeat 1) per packet kind for the paths a repeat cannot reach.
const SINGLE_RUNS: u16 = 2_000;
/// First source port of the new flows of the single runs.
const FIRST_NEW_FLOW_PORT: u16 = 20_000;
const XDP_FILTER_OBJECT: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_all.o";
const TARGET_RATIO: f64 = 2.5;

const GATEWAY_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const ENROLLED_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x10];
const QUARANTINED_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x11];
const UNKNOWN_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x12];
const DEVICE_IP: [u8; 4] = [10, 77, 0, 16];
const BROKER_IP: [u8; 4] = [10, 78, 0, 2];

/// Lanes and the sensor class; the lab's default verdicts follow (`policies::defaults`).
const POLICY: &str = r#"
[lanes.onboarding]
[[lanes.onboarding.allow]]
nets = ["10.77.0.1/32"]
protocol = "udp"
ports = [53, 67]
[lanes.quarantine]
[[lanes.quarantine.allow]]
nets = ["10.77.0.1/32"]
protocol = "udp"
ports = [53]
[[class]]
name = "sensor"
id = 20
[[class.allow]]
nets = ["10.78.0.0/24"]
protocol = "tcp"
ports = [1883, 8883]
"#;

fn endpoints(src_mac: [u8; 6]) -> Endpoints {
    Endpoints { src_mac, dst_mac: GATEWAY_MAC, src_ip: DEVICE_IP, dst_ip: BROKER_IP }
}

/// The packet kinds of the mix, each weighted equally.
const KINDS: [&str; 5] = [
    "allowed (enrolled, MQTT)",
    "denied (enrolled, HTTP)",
    "quarantined (redirect)",
    "unknown device",
    "malformed (IHL 4)",
];

/// A frame of kind `kind` (index in `KINDS`) from source port `src_port` (malformed frames
/// have no ports, and no flow).
fn packet(kind: usize, src_port: u16) -> Vec<u8> {
    match kind {
        0 => packets::tcp_syn(endpoints(ENROLLED_MAC), src_port, packets::MQTT_PORT),
        1 => packets::tcp_syn(endpoints(ENROLLED_MAC), src_port, packets::HTTP_PORT),
        2 => packets::udp(endpoints(QUARANTINED_MAC), src_port, 9_000, &[0u8; 64]),
        3 => packets::udp(endpoints(UNKNOWN_MAC), src_port, 9_000, &[0u8; 64]),
        _ => packets::ipv4_with_ihl(endpoints(ENROLLED_MAC), 4),
    }
}

/// The established-flow frames: one fixed flow per kind.
fn packets() -> Vec<(&'static str, Vec<u8>)> {
    KINDS.iter().enumerate().map(|(kind, name)| (*name, packet(kind, 40_000 + kind as u16))).collect()
}

/// Mean kernel time of one run over `REPEAT` runs (BPF_PROG_TEST_RUN's `duration`).
fn time_per_packet(program: &Xdp, packet: &[u8]) -> Result<Duration, ProgramError> {
    time_runs(program, packet, REPEAT)
}

fn time_runs(program: &Xdp, packet: &[u8], repeat: u32) -> Result<Duration, ProgramError> {
    let mut out = vec![0u8; packet.len() + 256];
    let opts = TestRunOptions { data_in: Some(packet), data_out: Some(&mut out), repeat, ..TestRunOptions::new() };
    let result = program.test_run(opts)?;
    Ok(result.duration)
}

/// Median kernel time (ns) of `SINGLE_RUNS` single runs; `before` runs first each time
/// (untimed) with the run number, and picks the frame.
fn median_single(program: &Xdp, mut before: impl FnMut(u16) -> anyhow::Result<Vec<u8>>) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(usize::from(SINGLE_RUNS));
    for run in 0..SINGLE_RUNS {
        let frame = before(run)?;
        times.push(time_runs(program, &frame, 1)?.as_nanos());
    }
    times.sort_unstable();
    Ok(times[times.len() / 2] as f64)
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/iotgw-bench-{}", std::process::id()));
    loader::prepare_bpffs(&pin_dir)?;
    let result = run(&pin_dir);
    let _ = loader::detach_all(&pin_dir);
    let _ = std::fs::remove_dir_all(&pin_dir);
    result
}

fn run(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(loader::object())
        .context("loading iotgw's object")?;
    for name in [programs::LAN_INGRESS, programs::PASS, programs::FLOOR] {
        let program: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
        program.load()?;
    }
    let maps = Maps::take(&mut ebpf)?;
    let policy =
        iotgw::policy::parse_sources(&[("bench.toml".into(), format!("{POLICY}{}", policies::defaults("drop")))])
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let policy = iotgw::policy::compile(&policy).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    maps.sync_policy(policy.rules.iter().map(iotgw::policy::CompiledRule::to_abi))?;
    let v = policy.verdicts;
    maps.write_config(&GatewayConfig {
        malformed_verdict: v.malformed,
        unknown_verdict: v.unknown,
        policy_miss_verdict: v.policy_miss,
        quarantine_verdict: v.quarantine,
        ..GatewayConfig::default()
    })?;
    let class_policy = lane::FIRST_CLASS_POLICY + 20;
    maps.set_access(
        Mac(ENROLLED_MAC),
        DeviceAccess { access: Access::Enrolled, policy_id: class_policy, class_id: 20 },
    )?;
    maps.set_access(
        Mac(QUARANTINED_MAC),
        DeviceAccess { access: Access::Quarantined, policy_id: class_policy, class_id: 20 },
    )?;
    maps.set_device_ipv4(Mac(ENROLLED_MAC), Ipv4Addr::from(DEVICE_IP))?;

    // xdp-filter pins its maps by name: keep them in our directory, removed at the end.
    let mut filter = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load_file(XDP_FILTER_OBJECT)
        .with_context(|| format!("loading {XDP_FILTER_OBJECT} (apt-get install xdp-tools)"))?;
    let filter_name =
        filter.programs().map(|(name, _)| name.to_owned()).next().context("no program in xdp-filter's object")?;
    let filter_program: &mut Xdp = filter.program_mut(&filter_name).context("xdp-filter program")?.try_into()?;
    filter_program.load().context("loading xdp-filter's program")?;

    let lan: &Xdp = ebpf.program(programs::LAN_INGRESS).context("lan")?.try_into()?;
    let pass: &Xdp = ebpf.program(programs::PASS).context("pass")?.try_into()?;
    let filter_program: &Xdp = filter.program(&filter_name).context("xdp-filter program")?.try_into()?;

    let floor: &Xdp = ebpf.program(programs::FLOOR).context("floor")?.try_into()?;

    println!("XDP per-packet cost, BPF_PROG_TEST_RUN, repeat {REPEAT}, kernel-timed (ns/packet)");
    println!("1. established flows (cached decision; the first of the {REPEAT} runs opens the flow)");
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>11} {:>10} {:>11} {:>12}",
        "packet", "iotgw", "bare", "floor", "xdp-filter", "iotgw/bare", "floor/bare", "filter/bare"
    );
    let ns = |d: Duration| d.as_nanos() as f64;
    let mut sums = [0.0; 4];
    let mix = packets();
    for (name, packet) in &mix {
        // The kernel reports the mean time of one repetition.
        let row = [
            ns(time_per_packet(lan, packet)?),
            ns(time_per_packet(pass, packet)?),
            ns(time_per_packet(floor, packet)?),
            ns(time_per_packet(filter_program, packet)?),
        ];
        print_row(name, row);
        for (sum, value) in sums.iter_mut().zip(row) {
            *sum += value;
        }
    }
    let n = mix.len() as f64;
    let mean = sums.map(|sum| sum / n);
    print_row("mix average", mean);
    let [l, p, fl, _] = mean;
    println!(
        "target: iotgw ≤ {TARGET_RATIO}× bare on the mix: {}",
        if l / p <= TARGET_RATIO { "met" } else { "NOT met" }
    );
    println!(
        "floor: the minimum (Ethernet, device lookup, one per-CPU counter) is {:.2}× bare: 2.5× bare is {}",
        fl / p,
        if fl / p <= TARGET_RATIO { "reachable in principle" } else { "below the floor, unreachable" }
    );
    println!("iotgw / floor on the mix: {:.2}", l / fl);

    println!();
    println!("2. single runs (repeat 1), median of {SINGLE_RUNS}, timer overhead included (see bare)");
    println!("{:<28} {:>12} {:>15} {:>10}", "packet", "established", "policy change", "new flow");
    let mut sums = [0.0; 3];
    for (kind, (name, frame)) in mix.iter().enumerate() {
        let established = median_single(lan, |_| Ok(frame.clone()))?;
        // The controller's real invalidation: every flow decides afresh on its next packet.
        let changed = median_single(lan, |_| {
            maps.bump_policy_generation()?;
            Ok(frame.clone())
        })?;
        // Malformed frames open no flow: every run is the same path.
        let new_flow = median_single(lan, |run| Ok(packet(kind, FIRST_NEW_FLOW_PORT + run)))?;
        println!("{name:<28} {established:>12.0} {changed:>15.0} {new_flow:>10.0}");
        for (sum, value) in sums.iter_mut().zip([established, changed, new_flow]) {
            *sum += value;
        }
    }
    let [e, c, f] = sums.map(|sum| sum / n);
    println!("{:<28} {e:>12.0} {c:>15.0} {f:>10.0}", "mix average");
    let bare = median_single(pass, |_| Ok(mix[0].1.clone()))?;
    let floor_single = median_single(floor, |_| Ok(mix[0].1.clone()))?;
    println!("{:<28} {bare:>12.0}", "bare pass (allowed frame)");
    println!("{:<28} {floor_single:>12.0}", "floor (allowed frame)");
    println!("xdp-filter program: {filter_name} from {XDP_FILTER_OBJECT}");
    println!();
    // The verifier walks every path up to a million instructions; a program near that limit
    // breaks on the next small change, so its complexity is a figure to watch.
    for (name, program) in [(programs::LAN_INGRESS, lan), (programs::FLOOR, floor)] {
        let info = program.info()?;
        println!(
            "verifier: {name} processed {} instructions (limit 1,000,000); {} bytes translated, {} jitted",
            info.verified_instruction_count().unwrap_or(0),
            info.size_translated().unwrap_or(0),
            info.size_jitted(),
        );
    }
    Ok(())
}

fn print_row(name: &str, [l, p, fl, f]: [f64; 4]) {
    println!("{name:<28} {l:>8.1} {p:>8.1} {fl:>8.1} {f:>11.1} {:>10.2} {:>11.2} {:>12.2}", l / p, fl / p, f / p);
}
