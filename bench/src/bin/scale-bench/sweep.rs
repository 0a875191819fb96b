//! The counter sweep at scale: the CPU one sweep of `DEVICES` devices' per-CPU
//! counters costs, and so the share of one core the counter step takes at its default
//! interval (250 ms; goal ≤ 5 %), with N devices active per sweep.
//!
//! Loads the object with the device maps sized for `DEVICES`, enrolls every device (a counter
//! slot each), fills their `DEVICE_STATS` slots from userspace with distinct counters on every
//! CPU, then times:
//! - the full batched read (`Maps::device_traffic`, `BPF_MAP_LOOKUP_BATCH`), the batched read
//!   alone (`batch::count`: the kernel's copy, nothing summed) and the key-by-key walk the
//!   batched read replaced (`get_next_key` + `lookup` per device, aya's iterator);
//! - the counter step's sweep (`sweep::CounterSweep`, reading only the devices that changed)
//!   with N devices active per interval: before each timed sweep, N devices (a different N
//!   each round, as sensors reporting in turn) send one frame each through the real LAN
//!   program (BPF_PROG_TEST_RUN, not timed), which marks them changed.
//!
//! Time is the thread's CPU time (user and kernel: the kernel's copies are most of it), so
//! other builds on the machine inflate it little.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use aya::{
    maps::{Array, IterableMap as _, Map, MapData},
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use gateway_ebpf::{DeviceStats, GatewayConfig, lane, maps as abi, programs};
use iotgw::{
    datapath::{
        DatapathConfig, DeviceAccess, DeviceControl as _, batch,
        config::DEFAULT_COUNTER_INTERVAL_MS,
        loader,
        maps::Maps,
        sweep::{CounterSweep, ReadKind},
    },
    device::{Access, Mac},
};
use netns_tests::packets::{self, Endpoints};
use nix::time::{ClockId, clock_gettime};

use crate::capacity_for;

/// Devices active per sweep interval: 100,000 sensors reporting once a minute (400 per
/// quarter second), a tenth of them active at once, and all.
const ACTIVE: [u32; 4] = [400, 2_000, 10_000, 100_000];
/// The goal: the sweep takes at most this share of one core.
const GOAL_SHARE: f64 = 0.05;
const GATEWAY_MAC: [u8; 6] = [0x02, 0x5c, 0xff, 0, 0, 1];

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map(Duration::from).unwrap_or_default()
}

/// CPU time of each of `rounds` calls of `sweep` (after `prepare`, not timed), sorted.
fn cpu_per_sweep(rounds: usize, mut prepare: impl FnMut(usize), mut sweep: impl FnMut()) -> Vec<Duration> {
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        prepare(round);
        let before = thread_cpu();
        sweep();
        times.push(thread_cpu() - before);
    }
    times.sort_unstable();
    times
}

fn mac(n: u32) -> [u8; 6] {
    let [a, b, c, d] = n.to_be_bytes();
    [0x02, 0x5c, a, b, c, d]
}

/// Runs the sweep section on maps pinned under a directory of its own, removed after.
pub fn run(devices: u32, rounds: usize) -> anyhow::Result<()> {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/iotgw-scale-bench-{}", std::process::id()));
    let result = measure(&pin_dir, devices, rounds);
    let _ = loader::detach_all(&pin_dir);
    let _ = std::fs::remove_dir_all(&pin_dir);
    result
}

/// One line of the table: min, median, max ms and the median's share of one core.
fn report(name: &str, times: &[Duration]) {
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let median = &times[times.len() / 2];
    let share = median.as_secs_f64() * 1_000.0 / DEFAULT_COUNTER_INTERVAL_MS as f64;
    println!(
        "{name:<44} {:>9.2} {:>10.2} {:>9.2} {:>15.2}%",
        ms(&times[0]),
        ms(median),
        ms(&times[times.len() - 1]),
        share * 100.0
    );
}

fn measure(pin_dir: &std::path::Path, devices: u32, rounds: usize) -> anyhow::Result<()> {
    let config = DatapathConfig {
        pin_path: pin_dir.to_owned(),
        devices_capacity: capacity_for(devices),
        ..DatapathConfig::default()
    };
    let mut loaded = loader::load(&config).context("loading iotgw's object")?;
    let lan: &mut Xdp = loaded.ebpf.program_mut(programs::LAN_INGRESS).context("LAN program")?.try_into()?;
    lan.load()?;
    let maps = Maps::take(&mut loaded.ebpf)?;
    maps.write_config(&GatewayConfig::default())?;
    let lan: &Xdp = loaded.ebpf.program(programs::LAN_INGRESS).context("LAN program")?.try_into()?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;

    // Every device enrolled (a slot each), its counters as XDP leaves them: seen on every CPU.
    let enrolled = DeviceAccess { access: Access::Enrolled, policy_id: lane::FIRST_CLASS_POLICY, class_id: 1 };
    let entries: Vec<_> = (0..devices).map(|n| (Mac(mac(n)), enrolled)).collect();
    for written in maps.set_accesses(&entries) {
        written?;
    }
    let data = MapData::from_pin(pin_dir.join(abi::DEVICE_STATS))?;
    let stats: Array<_, DeviceStats> = Array::try_from(Map::Array(data))?;
    // A slot's CPUs are its `cpus` consecutive elements (gateway-ebpf's `flow`).
    let elements: Vec<(u32, DeviceStats)> = maps
        .devices()
        .into_iter()
        .flat_map(|(mac, entry)| {
            (0..cpus as u32).map(move |cpu| {
                let stats =
                    DeviceStats { tx_packets: u64::from(entry.slot + cpu), owner: mac.key(), ..DeviceStats::ZERO };
                (entry.slot * cpus as u32 + cpu, stats)
            })
        })
        .collect();
    batch::update(stats.map(), &elements).map_err(|e| e.error)?;
    // One frame from device `n` through the LAN program, as its traffic would arrive.
    let send = |n: u32| {
        let [_, a, b, c] = n.to_be_bytes();
        let e = Endpoints { src_mac: mac(n), dst_mac: GATEWAY_MAC, src_ip: [10, a, b, c], dst_ip: [192, 0, 2, 1] };
        let frame = packets::udp(e, 40_000, 9_000, b"reading");
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..TestRunOptions::new() };
        lan.test_run(opts).map(|_| ())
    };

    println!(
        "counter sweep, {devices} devices × {cpus} CPUs in DEVICE_STATS ({} B per CPU), {rounds} rounds, thread CPU time",
        size_of::<DeviceStats>()
    );
    println!("{:<44} {:>9} {:>10} {:>9} {:>16}", "sweep", "min ms", "median ms", "max ms", "core share @250ms");
    let full = cpu_per_sweep(rounds, |_| {}, || drop(maps.device_traffic()));
    report("every device, batched (Maps::device_traffic)", &full);
    let copy = cpu_per_sweep(rounds, |_| {}, || drop(batch::count(stats.map())));
    report("  of which the batched read", &copy);
    let walked = cpu_per_sweep(rounds.min(3), |_| {}, || _ = stats.iter().filter_map(Result::ok).count());
    report("every device, key by key (before batching)", &walked);

    let mut sweep = CounterSweep::start(&maps);
    let mut verdicts = Vec::new();
    for active in ACTIVE.into_iter().filter(|&a| a <= devices) {
        // Reaches the steady state (the previous row's devices read once more) untimed.
        for n in 0..active {
            send(n)?;
        }
        sweep.read(&maps);
        let mut kinds = Vec::new();
        let mut failed = None;
        let times = cpu_per_sweep(
            rounds,
            |round| {
                let first = (round as u32 + 1) * active;
                for i in 0..active {
                    if let Err(e) = send((first + i) % devices) {
                        failed.get_or_insert(e);
                    }
                }
            },
            || kinds.push(sweep.read(&maps)),
        );
        if let Some(e) = failed {
            return Err(e.into());
        }
        let reads: Vec<ReadKind> = kinds.iter().map(|(_, kind)| *kind).collect();
        anyhow::ensure!(
            kinds.iter().all(|(deltas, _)| deltas.len() == active as usize),
            "a sweep did not report every active device once"
        );
        let how = match reads[reads.len() / 2] {
            ReadKind::Changed(n) => format!("{n} lookups"),
            ReadKind::Full => "every device".to_owned(),
        };
        report(&format!("changed only, {active} active ({how})"), &times);
        verdicts.push((active, times[times.len() / 2].as_secs_f64() * 1_000.0 / DEFAULT_COUNTER_INTERVAL_MS as f64));
    }
    for (active, share) in verdicts {
        println!(
            "goal: sweep ≤ {:.0} % of one core at {active} active of {devices}: {} ({:.2} %)",
            GOAL_SHARE * 100.0,
            if share <= GOAL_SHARE { "met" } else { "NOT met" },
            share * 100.0
        );
    }
    Ok(())
}
