//! The controller's counter sweep at scale: the CPU one read of every device's per-CPU
//! counters costs with `DEVICES` devices in `DEVICE_STATS`, and so the share of one core the
//! counter step takes at its default interval (250 ms; goal ≤ 5 %).
//!
//! Loads the object with the device maps sized for `DEVICES` (maps only, no program runs),
//! fills `DEVICE_STATS` from userspace with distinct counters on every CPU, then times
//! `Maps::device_traffic` (the controller's sweep, `BPF_MAP_LOOKUP_BATCH`), the batched read
//! alone (`batch::count`: the kernel's copy, nothing summed) and, for comparison, the
//! key-by-key walk the sweep replaced (`get_next_key` + `lookup` per device, aya's iterator). Time is the thread's CPU time (user and kernel: the kernel's copy of the
//! per-CPU values is most of it), so other builds on the machine inflate it little.
//!
//! `cargo xtask bench scale` or, as root, `cargo run -p iotgw-bench --bin scale-bench -- [DEVICES [ROUNDS]]`.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use aya::maps::{IterableMap as _, Map, MapData, PerCpuHashMap, PerCpuValues};
use gateway_ebpf::{DeviceStats, MacKey, maps as abi};
use iotgw::datapath::{DatapathConfig, batch, config::DEFAULT_COUNTER_INTERVAL_MS, loader, maps::Maps};
use nix::time::{ClockId, clock_gettime};

const DEFAULT_DEVICES: u32 = 100_000;
/// The device maps' size for `DEVICES` devices: an LRU map starts evicting before it is full
/// (per-CPU free lists), so a site is configured with room to spare.
fn capacity_for(devices: u32) -> u32 {
    devices.saturating_add(devices / 4).next_power_of_two()
}
const DEFAULT_ROUNDS: usize = 20;
/// The goal: the sweep takes at most this share of one core.
const GOAL_SHARE: f64 = 0.05;

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map(Duration::from).unwrap_or_default()
}

/// CPU time of each of `rounds` calls of `sweep`, sorted; `sweep` returns the devices it read.
fn cpu_per_sweep(rounds: usize, devices: u32, mut sweep: impl FnMut() -> usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let before = thread_cpu();
        let read = sweep();
        times.push(thread_cpu() - before);
        anyhow::ensure!(read == devices as usize, "the sweep read {read} devices of {devices}");
    }
    times.sort_unstable();
    Ok(times)
}

fn mac(n: u32) -> MacKey {
    let [a, b, c, d] = n.to_be_bytes();
    MacKey::new([0x02, 0x5c, a, b, c, d])
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let mut args = std::env::args().skip(1);
    let devices: u32 = args.next().map(|a| a.parse()).transpose().context("DEVICES")?.unwrap_or(DEFAULT_DEVICES);
    let rounds: usize = args.next().map(|a| a.parse()).transpose().context("ROUNDS")?.unwrap_or(DEFAULT_ROUNDS);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/iotgw-scale-bench-{}", std::process::id()));
    let result = run(&pin_dir, devices, rounds);
    let _ = loader::detach_all(&pin_dir);
    let _ = std::fs::remove_dir_all(&pin_dir);
    result
}

fn run(pin_dir: &std::path::Path, devices: u32, rounds: usize) -> anyhow::Result<()> {
    let config = DatapathConfig {
        pin_path: pin_dir.to_owned(),
        devices_capacity: capacity_for(devices),
        ..DatapathConfig::default()
    };
    let mut loaded = loader::load(&config).context("loading iotgw's object")?;
    let maps = Maps::take(&mut loaded.ebpf)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;

    // The counters as XDP leaves them: every device seen on every CPU.
    let data = MapData::from_pin(pin_dir.join(abi::DEVICE_STATS))?;
    let mut stats: PerCpuHashMap<_, MacKey, DeviceStats> = PerCpuHashMap::try_from(Map::PerCpuLruHashMap(data))?;
    for n in 0..devices {
        let per_cpu = (0..cpus as u64).map(|cpu| DeviceStats { tx_packets: u64::from(n) + cpu, ..DeviceStats::ZERO });
        stats.insert(mac(n), PerCpuValues::try_from(per_cpu.collect::<Vec<_>>())?, 0)?;
    }

    println!(
        "counter sweep, {devices} devices × {cpus} CPUs in DEVICE_STATS ({} B per CPU), {rounds} rounds, thread CPU time",
        size_of::<DeviceStats>()
    );
    let interval = Duration::from_millis(DEFAULT_COUNTER_INTERVAL_MS);
    let sweeps_per_second = 1_000.0 / DEFAULT_COUNTER_INTERVAL_MS as f64;
    println!("{:<36} {:>10} {:>10} {:>10} {:>16}", "sweep", "min ms", "median ms", "max ms", "core share @250ms");
    let batched = cpu_per_sweep(rounds, devices, || maps.device_traffic().len())?;
    let kernel = cpu_per_sweep(rounds, devices, || batch::count(stats.map()).unwrap_or(0))?;
    let walked = cpu_per_sweep(rounds.min(5), devices, || stats.iter().filter_map(Result::ok).count())?;
    for (name, times) in [
        ("sweep (Maps::device_traffic)", &batched),
        ("  of which the batched read", &kernel),
        ("key by key (before)", &walked),
    ] {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        let median = &times[times.len() / 2];
        let share = median.as_secs_f64() * sweeps_per_second;
        println!(
            "{name:<36} {:>10.1} {:>10.1} {:>10.1} {:>15.1}%",
            ms(&times[0]),
            ms(median),
            ms(&times[times.len() - 1]),
            share * 100.0
        );
    }
    let share = batched[batched.len() / 2].as_secs_f64() * sweeps_per_second;
    println!(
        "goal: sweep ≤ {:.0} % of one core at a {interval:?} interval: {}",
        GOAL_SHARE * 100.0,
        if share <= GOAL_SHARE { "met" } else { "NOT met" }
    );
    Ok(())
}
