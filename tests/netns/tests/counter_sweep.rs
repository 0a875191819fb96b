//! The counter sweep that reads only the devices that changed (`datapath::sweep`) hands the
//! detections exactly the deltas a read of every device would: round after round of traffic
//! from a varying set of devices (none, a few, many, more than the changed-devices ring holds),
//! its deltas are compared with those of two full reads around the round. A third of the
//! devices are in the device table (counted in their slots), the rest unknown (counted by MAC).
//! It also reads only the changed devices while the set is small, and every device after the
//! ring overflowed. A device's traffic is counted whole as it enters and leaves the table,
//! and a slot handed on starts at zero for its next device, on every CPU. A slot's counters are
//! one element per CPU, summed by the readers; devices added together are written in batches
//! that give each its own slot, and a table that refuses some still takes the others.
//!
//! Runs the real LAN program with BPF_PROG_TEST_RUN on crafted frames, with a changed-devices
//! ring of one page (256 records). Needs root (BPF); the maps are pinned in a directory of the
//! test's own, removed on drop.
use std::collections::HashMap;

use aya::maps::{Array, Map, MapData};
use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};

use gateway_ebpf::{DeviceStats, GatewayConfig, lane, maps as abi};
use iotgw::{
    datapath::{
        DeviceAccess, DeviceControl as _, capacity, loader,
        sweep::{CounterSweep, ReadKind},
        traffic::TrafficCounters,
    },
    device::{Access, Mac},
};
use netns_tests::{
    lan_program::LanProgram,
    packets::{self, Endpoints},
};

const GATEWAY_MAC: [u8; 6] = [0x02, 0x67, 0, 0, 0, 1];
const UPSTREAM_IP: [u8; 4] = [10, 79, 0, 2];
/// Devices that send at all; the ring holds 256 records, the sweep reads one by one up to a
/// quarter of the devices it knows (150).
const DEVICES: u32 = 600;
const RING_BYTES: u32 = 4_096;

fn mac(n: u32) -> [u8; 6] {
    let [_, _, a, b] = n.to_be_bytes();
    [0x02, 0x67, 0, 1, a, b]
}

/// A device in the table: counted in its slot.
const ENROLLED: DeviceAccess =
    DeviceAccess { access: Access::Enrolled, policy_id: lane::FIRST_CLASS_POLICY, class_id: 1 };
const REMOVED: DeviceAccess = DeviceAccess { access: Access::Unknown, policy_id: 0, class_id: 0 };

struct Datapath {
    lan: LanProgram,
}

impl Datapath {
    /// Every third device in the device table.
    fn new(name: &str) -> Self {
        Self::sized(name, &[(abi::CHANGED_DEVICES, RING_BYTES)], DEVICES)
    }

    /// The first `enrolled` of every third device in the table, maps `sizes` as given.
    fn sized(name: &str, sizes: &[(&str, u32)], enrolled: u32) -> Self {
        let lan = LanProgram::load(&format!("sweep-{name}"), sizes);
        lan.maps.write_config(&GatewayConfig::default()).expect("datapath config");
        for n in (0..DEVICES).step_by(3).take(enrolled as usize) {
            lan.maps.set_access(Mac(mac(n)), ENROLLED).expect("device entry");
        }
        Self { lan }
    }

    /// `send`, the program run on CPU `cpu` (this thread pinned there, then unpinned).
    fn send_on(&self, cpu: usize, n: u32, frames: u32, payload: usize) {
        let mut one = CpuSet::new();
        one.set(cpu).expect("CPU in range");
        sched_setaffinity(Pid::from_raw(0), &one).expect("pin to a CPU");
        self.send(n, frames, payload);
        let mut all = CpuSet::new();
        for cpu in 0..CpuSet::count() {
            let _ = all.set(cpu);
        }
        sched_setaffinity(Pid::from_raw(0), &all).expect("unpin");
    }

    /// Runs `frames` frames of `payload` bytes from device `n` through the LAN program.
    fn send(&self, n: u32, frames: u32, payload: usize) {
        let [_, _, a, b] = n.to_be_bytes();
        let e = Endpoints { src_mac: mac(n), dst_mac: GATEWAY_MAC, src_ip: [10, 67, a, b], dst_ip: UPSTREAM_IP };
        self.lan.run(&packets::udp(e, 40_000, 9_000, &vec![0x5a; payload]), frames);
    }

    /// Every device's cumulative traffic, read whole.
    fn all(&self) -> HashMap<Mac, TrafficCounters> {
        self.lan.maps.device_traffic().into_iter().collect()
    }
}

/// Whether a sweep read the counters as a round expects.
type ReadAs = fn(ReadKind) -> bool;

/// The deltas between two full reads, devices without traffic left out.
fn full_read_deltas(
    before: &HashMap<Mac, TrafficCounters>,
    after: &HashMap<Mac, TrafficCounters>,
) -> HashMap<Mac, TrafficCounters> {
    after
        .iter()
        .map(|(mac, now)| (*mac, now.since(&before.get(mac).copied().unwrap_or_default())))
        .filter(|(_, delta)| !delta.is_idle())
        .collect()
}

#[test]
fn the_changed_devices_sweep_reports_exactly_the_full_reads_deltas() {
    let d = Datapath::new("rounds");
    // Every device known to the counters (and to the sweep) before it starts.
    for n in 0..DEVICES {
        d.send(n, 1, 10);
    }
    let mut sweep = CounterSweep::start(&d.lan.maps);
    let mut before = d.all();

    // (devices active in the round, how the sweep must read): the first read after the start
    // reads all; then only the changed ones (a round's devices and the round's before); a round
    // past a quarter of the devices, or past the ring's 256 records, reads all, and so does
    // the round after an overflow.
    let rounds: [(u32, ReadAs); 9] = [
        (0, |k| k == ReadKind::Full),
        (5, |k| k == ReadKind::Changed(5)),
        (0, |k| k == ReadKind::Changed(5)),
        (40, |k| k == ReadKind::Changed(40)),
        (120, |k| k == ReadKind::Changed(120)),
        (200, |k| k == ReadKind::Full),
        (300, |k| k == ReadKind::Full),
        (3, |k| k == ReadKind::Full),
        (7, |k| k == ReadKind::Changed(10)),
    ];
    let mut reported = 0;
    for (round, (active, read_as)) in rounds.into_iter().enumerate() {
        let round = round as u32;
        for i in 0..active {
            // A different set each round, each device with its own frame count and size.
            let n = (i * 7 + round * 131) % DEVICES;
            d.send(n, 1 + (n + round) % 3, 20 + ((n * round) % 200) as usize);
        }
        let (deltas, kind) = sweep.read(&d.lan.maps);
        let after = d.all();
        let expected = full_read_deltas(&before, &after);
        let got: HashMap<Mac, TrafficCounters> = deltas.iter().copied().collect();
        assert_eq!(got.len(), deltas.len(), "round {round}: each device reported once");
        assert_eq!(got, expected, "round {round} ({active} devices active): the deltas of a full read");
        assert_eq!(got.len(), active as usize, "round {round}: every active device, no other");
        assert!(read_as(kind), "round {round} ({active} devices active) read as {kind:?}");
        reported += got.len();
        before = after;
    }
    assert!(reported > 600, "the rounds reported {reported} deltas");
}

#[test]
fn another_writer_of_the_sweep_epoch_makes_the_next_sweep_read_every_device() {
    let d = Datapath::new("epoch");
    for n in 0..20 {
        d.send(n, 1, 10);
    }
    let mut sweep = CounterSweep::start(&d.lan.maps);
    assert_eq!(sweep.read(&d.lan.maps).1, ReadKind::Full, "the first sweep after the start reads all");
    d.send(1, 1, 10);
    assert_eq!(sweep.read(&d.lan.maps).1, ReadKind::Changed(1));
    // A second sweep (another process) moves the epoch and takes the ring's records.
    d.send(2, 1, 10);
    d.lan.maps.next_sweep_epoch().expect("epoch");
    d.lan.maps.drain_changed_devices(&mut Vec::new());
    let (deltas, kind) = sweep.read(&d.lan.maps);
    assert_eq!(kind, ReadKind::Full, "the set is no longer known complete");
    assert_eq!(deltas.iter().map(|(mac, _)| *mac).collect::<Vec<_>>(), [Mac(mac(2))], "still exactly the delta");
}

#[test]
fn a_devices_traffic_is_counted_whole_as_it_enters_and_leaves_the_table() {
    let d = Datapath::sized("moves", &[(abi::CHANGED_DEVICES, RING_BYTES)], 0);
    let device = Mac(mac(1));
    d.send(0, 1, 10);
    let mut sweep = CounterSweep::start(&d.lan.maps);
    let counted = |sweep: &mut CounterSweep| -> u64 {
        let (deltas, _) = sweep.read(&d.lan.maps);
        deltas.iter().filter(|(mac, _)| *mac == device).map(|(_, delta)| delta.tx_packets).sum()
    };
    // Unknown, enrolled (a slot), removed (unknown again), enrolled again (a slot again,
    // zeroed): every frame reported once, in the sweep after it was sent.
    for (step, access) in
        [None, Some(ENROLLED), Some(REMOVED), Some(ENROLLED), Some(REMOVED), Some(ENROLLED)].into_iter().enumerate()
    {
        if let Some(access) = access {
            d.lan.maps.set_access(device, access).expect("device entry");
        }
        let sent = 2 + step as u32;
        d.send(1, sent, 10);
        assert_eq!(counted(&mut sweep), u64::from(sent), "step {step}: the frames sent since the last sweep");
    }
    assert_eq!(counted(&mut sweep), 0, "nothing new");
}

#[test]
fn a_slot_handed_to_another_device_starts_at_zero() {
    // Two slots: the third device gets the slot the first left.
    let cpus = loader::possible_cpus().expect("possible CPUs");
    let sizes = [
        (abi::CHANGED_DEVICES, RING_BYTES),
        (abi::DEVICES, 2),
        (abi::DEVICE_STATS, capacity::device_stats_entries(2, cpus)),
        (abi::DEVICE_SLOTS, 2),
    ];
    let d = Datapath::sized("handed-on", &sizes, 0);
    let (first, second, third) = (Mac(mac(0)), Mac(mac(1)), Mac(mac(2)));
    d.lan.maps.set_access(first, ENROLLED).expect("first device");
    d.lan.maps.set_access(second, ENROLLED).expect("second device");
    let slot_of = |mac: Mac| d.lan.maps.devices().into_iter().find(|(m, _)| *m == mac).map(|(_, entry)| entry.slot);
    let left = slot_of(first).expect("the first device's slot");
    d.send(0, 5, 10);
    d.send(1, 1, 10);
    let mut sweep = CounterSweep::start(&d.lan.maps);
    assert_eq!(d.all().get(&first).map(|t| t.tx_packets), Some(5));

    d.lan.maps.set_access(first, REMOVED).expect("first device leaves");
    d.lan.maps.set_access(third, ENROLLED).expect("third device");
    assert_eq!(slot_of(third), Some(left), "the slot the first device left");
    assert_eq!(d.all().get(&third).copied().unwrap_or_default(), TrafficCounters::default(), "the slot was zeroed");
    assert_eq!(d.all().get(&first), None, "the first device's counters left with its slot");
    assert!(d.lan.maps.set_access(Mac(mac(3)), ENROLLED).is_err(), "no third slot: refused, clearly");
    d.send(2, 3, 10);
    let (deltas, _) = sweep.read(&d.lan.maps);
    let deltas: HashMap<Mac, TrafficCounters> = deltas.into_iter().collect();
    assert_eq!(deltas.get(&third).map(|t| t.tx_packets), Some(3), "only its own frames: {deltas:?}");
    assert_eq!(deltas.get(&first), None, "the device that left sent nothing");
}

/// Every CPU's element of `slot` in the pinned `DEVICE_STATS` (index `slot × CPUs + cpu`),
/// read one by one, not through `Maps` (whose batched range read is under test).
fn elements(d: &Datapath, slot: u32) -> Vec<DeviceStats> {
    let cpus = loader::possible_cpus().expect("possible CPUs");
    let data = MapData::from_pin(d.lan.pin_dir().join(abi::DEVICE_STATS)).expect("DEVICE_STATS pinned");
    let stats: Array<_, DeviceStats> = Array::try_from(Map::Array(data)).expect("a plain array");
    (0..cpus).map(|cpu| stats.get(&(slot * cpus + cpu), 0).expect("element")).collect()
}

#[test]
fn a_slots_counters_are_one_element_per_cpu_summed_and_zeroed_together() {
    let cpus = loader::possible_cpus().expect("possible CPUs");
    assert!(cpus >= 2, "needs two CPUs to count a device on two ({cpus})");
    let sizes = [
        (abi::CHANGED_DEVICES, RING_BYTES),
        (abi::DEVICES, 2),
        (abi::DEVICE_STATS, capacity::device_stats_entries(2, cpus)),
        (abi::DEVICE_SLOTS, 2),
    ];
    let d = Datapath::sized("per-cpu", &sizes, 0);
    let (first, second, third) = (Mac(mac(0)), Mac(mac(1)), Mac(mac(2)));
    d.lan.maps.set_access(first, ENROLLED).expect("first device");
    d.lan.maps.set_access(second, ENROLLED).expect("second device");
    let slot_of = |mac: Mac| d.lan.maps.devices().into_iter().find(|(m, _)| *m == mac).map(|(_, entry)| entry.slot);
    let slot = slot_of(first).expect("the first device's slot");
    // Unknown devices the sweep knows besides them, so that two changed ones are few enough to
    // be read one by one.
    for n in 10..30 {
        d.send(n, 1, 10);
    }
    let mut sweep = CounterSweep::start(&d.lan.maps);
    d.send_on(0, 0, 3, 10);
    d.send_on(1, 0, 5, 10);
    d.send_on(1, 1, 2, 10);
    let own = elements(&d, slot);
    assert_eq!(own.iter().map(|s| s.tx_packets).collect::<Vec<_>>()[..2], [3, 5], "CPU 0's and CPU 1's own elements");
    assert!(own.iter().all(|s| s.owner == first.key()), "every element stamped with the owner");
    assert_eq!(d.all().get(&first).map(|t| t.tx_packets), Some(8), "a full read sums the CPUs");
    let (deltas, kind) = sweep.read(&d.lan.maps);
    assert_eq!(kind, ReadKind::Full, "the first sweep after the start reads all");
    let deltas: HashMap<Mac, TrafficCounters> = deltas.into_iter().collect();
    assert_eq!(deltas.get(&first).map(|t| t.tx_packets), Some(8));
    d.send_on(0, 0, 1, 10);
    d.send_on(1, 0, 4, 10);
    let (deltas, kind) = sweep.read(&d.lan.maps);
    assert_eq!(kind, ReadKind::Changed(2), "the changed devices only, each slot's CPUs in one read");
    let deltas: HashMap<Mac, TrafficCounters> = deltas.into_iter().collect();
    assert_eq!(deltas.get(&first).map(|t| t.tx_packets), Some(5), "the changed read sums the CPUs too: {deltas:?}");

    // Handed on: every CPU's element starts at zero, stamped with the new owner.
    d.lan.maps.set_access(first, REMOVED).expect("first device leaves");
    d.lan.maps.set_access(third, ENROLLED).expect("third device");
    assert_eq!(slot_of(third), Some(slot), "the slot the first device left");
    for (cpu, element) in elements(&d, slot).iter().enumerate() {
        assert_eq!(*element, DeviceStats { owner: third.key(), ..DeviceStats::ZERO }, "CPU {cpu}'s element zeroed");
    }
}

#[test]
fn devices_added_together_get_their_own_zeroed_slots_and_a_full_table_refuses_only_the_rest() {
    let cpus = loader::possible_cpus().expect("possible CPUs");
    // Four device entries, eight slots: the batch claims five slots and the table takes three.
    let sizes = [
        (abi::CHANGED_DEVICES, RING_BYTES),
        (abi::DEVICES, 4),
        (abi::DEVICE_STATS, capacity::device_stats_entries(8, cpus)),
        (abi::DEVICE_SLOTS, 8),
    ];
    let d = Datapath::sized("batched", &sizes, 0);
    let macs: Vec<Mac> = (0..5).map(|n| Mac(mac(n))).collect();
    d.lan.maps.set_access(macs[0], ENROLLED).expect("a device already in the table");
    d.send(0, 4, 10);
    let quarantined = DeviceAccess { access: Access::Quarantined, ..ENROLLED };
    let mut entries = vec![(macs[0], quarantined)];
    entries.extend(macs[1..].iter().map(|&mac| (mac, ENROLLED)));
    let results = d.lan.maps.set_accesses(&entries);
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, true, true, true, false], "the fifth device does not fit: {results:?}");

    let table: HashMap<Mac, gateway_ebpf::DeviceEntry> = d.lan.maps.devices().into_iter().collect();
    assert_eq!(table.len(), 4);
    assert_eq!(table[&macs[0]].state, Access::Quarantined.code(), "the existing device rewritten in place");
    let mut slots: Vec<u32> = table.values().map(|entry| entry.slot).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), 4, "a slot of its own each: {table:?}");
    for (mac, entry) in &table {
        let own = elements(&d, entry.slot);
        assert!(own.iter().all(|s| s.owner == mac.key()), "{mac}'s slot stamped as its own on every CPU");
        if *mac != macs[0] {
            assert!(own.iter().all(|s| s.tx_packets == 0), "{mac}'s slot starts at zero");
        }
    }
    let counted: HashMap<Mac, TrafficCounters> = d.all();
    assert_eq!(counted.get(&macs[0]).map(|t| t.tx_packets), Some(4), "the existing device kept its counters");
    assert!(!counted.contains_key(&macs[4]), "the refused device holds no slot");
    let fill = d.lan.maps.fill_levels().expect("fill levels");
    let claimed = fill.iter().find(|f| f.map == abi::DEVICE_STATS).map(|f| f.entries);
    assert_eq!(claimed, Some(4), "the refused device's slot given back");
    d.send(2, 3, 10);
    assert_eq!(d.all().get(&macs[2]).map(|t| t.tx_packets), Some(3), "a batched device counts in its slot");
}
