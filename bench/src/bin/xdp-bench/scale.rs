//! Section 3: the per-packet cost with a large site in the maps and frames drawn at random
//! across it, as traffic really arrives, instead of one frame whose lookups stay in cache.
//!
//! `DEVICES` enrolled devices go into the device table (through `Maps`, as the controller
//! writes them); each opens `FLOWS_PER_DEVICE` MQTT connections by running the LAN program
//! once per flow, so `FLOWS` established flows with cached decisions sit in the flow table.
//! Then `RANDOM_RUNS` frames of those flows, drawn at random (seeded: every program gets the
//! same sequence), are timed one run each (`repeat` 1: a different frame every run), for
//! iotgw, the floor, bare and xdp-filter; beside them the first of those frames, repeated one
//! run at a time, isolates what the random draw adds (cache and TLB misses in the lookups).
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

use super::{CLASS_ID, CLASS_POLICY, GATEWAY_MAC, Programs, single_ns};
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _, maps::Maps},
    device::{Access, Mac},
};
use netns_tests::packets::{self, Endpoints};

pub const DEVICES: u32 = 100_000;
const FLOWS_PER_DEVICE: u16 = 10;
pub const FLOWS: u32 = DEVICES * FLOWS_PER_DEVICE as u32;
/// Map sizes with room to spare: an LRU map starts evicting before it is full (per-CPU free
/// lists), which would turn established flows into new ones.
pub const DEVICES_CAPACITY: u32 = 131_072;
pub const FLOWS_CAPACITY: u32 = 1_310_720;
const RANDOM_RUNS: usize = 200_000;
const SEED: u64 = 19;
const FIRST_PORT: u16 = 40_000;

/// Min, median and mean of a set of run times (ns).
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(mut times: Vec<f64>) -> Self {
        times.sort_unstable_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        Self { min: times.first().copied().unwrap_or(0.0), median: times[times.len() / 2], mean }
    }
}

fn device(n: u32) -> Endpoints {
    let [_, a, b, c] = n.to_be_bytes();
    Endpoints {
        src_mac: [0x02, 0x5c, 0, a, b, c],
        dst_mac: GATEWAY_MAC,
        src_ip: [10, 80 + a, b, c],
        dst_ip: [10, 78, 0, 2],
    }
}

/// A data segment of device `n`'s flow `flow`.
fn frame(n: u32, flow: u16) -> Vec<u8> {
    packets::tcp_data(device(n), FIRST_PORT + flow, packets::MQTT_PORT, 2, 64)
}

pub fn run(p: &Programs, maps: &Maps) -> anyhow::Result<()> {
    println!();
    println!(
        "3. at scale: {DEVICES} devices, {FLOWS} established flows; {RANDOM_RUNS} frames drawn at random (seed {SEED}), one run each"
    );
    let started = std::time::Instant::now();
    let sensor = DeviceAccess { access: Access::Enrolled, policy_id: CLASS_POLICY, class_id: CLASS_ID };
    // In one call, as the controller's restore writes the store at start-up (batched).
    let entries: Vec<_> = (0..DEVICES).map(|n| (Mac(device(n).src_mac), sensor)).collect();
    for written in maps.set_accesses(&entries) {
        written?;
    }
    let devices_written = started.elapsed();
    for n in 0..DEVICES {
        for flow in 0..FLOWS_PER_DEVICE {
            let verdict = super::test_run(p.lan, &frame(n, flow), 1)?.return_value;
            anyhow::ensure!(verdict == super::XDP_PASS, "flow {n}/{flow}: verdict {verdict}");
        }
    }
    println!(
        "   (maps filled in {:.0} s: {DEVICES} devices written in {:.1} s, then the flows opened)",
        started.elapsed().as_secs_f64(),
        devices_written.as_secs_f64()
    );
    // What the metrics step pays every `FILL_INTERVAL` at this size (this thread's CPU time).
    let cpu = || nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map(Duration::from);
    let (reading, before) = (std::time::Instant::now(), cpu()?);
    let fills = maps.fill_levels()?;
    let (wall, used) = (reading.elapsed(), cpu()? - before);
    let flows = fills.iter().find(|f| f.map == gateway_ebpf::maps::FLOWS_V4).map_or(0, |f| f.entries);
    println!(
        "   fill levels read: {:.0} ms CPU, {:.0} ms wall ({flows} flows counted)",
        used.as_secs_f64() * 1e3,
        wall.as_secs_f64() * 1e3
    );
    let mut rng = StdRng::seed_from_u64(SEED);
    let frames: Vec<Vec<u8>> =
        (0..RANDOM_RUNS).map(|_| frame(rng.gen_range(0..DEVICES), rng.gen_range(0..FLOWS_PER_DEVICE))).collect();
    println!(
        "{:<12} {:>16} {:>12} {:>12} {:>12} {:>14}",
        "program", "same frame med", "random min", "random med", "random mean", "random − same"
    );
    let mut medians = Vec::new();
    for (name, program) in [("iotgw", p.lan), ("floor", p.floor), ("bare", p.pass), ("xdp-filter", p.filter)] {
        let same =
            Summary::of((0..RANDOM_RUNS / 10).map(|_| single_ns(program, &frames[0])).collect::<Result<_, _>>()?);
        let random = Summary::of(frames.iter().map(|f| single_ns(program, f)).collect::<Result<_, _>>()?);
        println!(
            "{name:<12} {:>16.0} {:>12.0} {:>12.0} {:>12.0} {:>14.0}",
            same.median,
            random.min,
            random.median,
            random.mean,
            random.median - same.median
        );
        medians.push(random.median);
    }
    // Above bare: what each program adds to the run's fixed cost (the timer, the context).
    let above = |n: usize| medians[n] - medians[2];
    println!(
        "random frames, median above bare: iotgw {:.0}, floor {:.0}, xdp-filter {:.0}; iotgw/floor {:.2}, iotgw/xdp-filter {:.2}",
        above(0),
        above(1),
        above(3),
        above(0) / above(1),
        above(0) / above(3)
    );
    Ok(())
}
