//! Step 3: accounting. Per-device counters (per-CPU) and the per-flow tables (LRU,
//! shared, added to atomically): IPv4 flows in `FLOWS_V4` under a 20-byte key, IPv6 flows in
//! `FLOWS_V6` under a 48-byte one. A flow's first packet is reported by `events`.
//!
//! A device in `DEVICES` is counted in `DEVICE_STATS` at the slot its entry names, in the
//! slot's element for this CPU (`slot × N_CPUS + cpu`): a plain array element, found without
//! hashing or a per-CPU pointer table (the established packet's only large-table lookups are
//! the device's entry and its flow, as the floor's; bench/xdp). A MAC absent from `DEVICES` has
//! no slot and is counted in `UNKNOWN_DEVICE_STATS`, an LRU hash, created on first sight.
//!
//! The flow entry also caches the flow's decision (the conntrack fast path: Cilium skips
//! policy for established connection-tracking entries). The LAN program looks the flow up
//! *before* `policy`; a packet whose flow holds a decision still valid reuses it and skips
//! the LPM lookups. A cached decision is valid while nothing it was made from changed:
//! - the policy maps, `DEVICES` and `CONFIG` (whose verdicts it may hold): the controller
//!   bumps `GatewayConfig::policy_generation` after each of their writes, and the flow keeps
//!   the generation it decided under;
//! - the device's state and policy id, compared with the live `DEVICES` entry on every packet
//!   (closing the moment between a device write and the generation bump).
//! So a revocation, a quarantine or a policy reload takes effect on the flow's next packet.
//! A TCP SYN or SYN-ACK is decided afresh too, never from the cache: it says who opens the
//! connection (`FlowStats::opener`, kept for the flow's later packets), and a reused 5-tuple
//! may be opened the other way.
//! Fragments are always decided afresh and never cached: a non-first fragment has no ports,
//! so it shares its flow key with port-0 packets of the same 5-tuple but is judged differently.
//!
//! A device's first counted frame on a CPU in each sweep epoch (`GatewayConfig::sweep_epoch`)
//! also writes it (MAC and slot) to `CHANGED_DEVICES`, so the controller's sweep reads the
//! devices that changed, not all of them (gateway's `datapath::sweep`).
//!
//! Reads `FLOWS_V4`, `FLOWS_V6`, `DEVICE_STATS`, `UNKNOWN_DEVICE_STATS` and `CONFIG`; writes
//! `FLOWS_V4`, `FLOWS_V6`, `DEVICE_STATS`, `UNKNOWN_DEVICE_STATS` and `CHANGED_DEVICES`.
use core::ptr::NonNull;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    maps::LruHashMap,
};
use gateway_ebpf::{
    CachedDecision, ChangedDevice, DeviceEntry, DeviceStats, FlowKey, FlowKeyV4, FlowStats, MacKey, SynFingerprint,
    counter, opener, proto, reason,
};

use crate::{
    CHANGED_DEVICES, CONFIG, DEVICE_STATS, FLOWS_V4, FLOWS_V6, N_CPUS, UNKNOWN_DEVICE_STATS, count,
    decision::Decision,
    parse::{self, Ip},
    wire::ipv4,
};

/// Zeroed counters to insert for an unknown device seen for the first time (kept out of the
/// 512-byte stack: the value lives in .rodata).
static ZERO_STATS: DeviceStats = DeviceStats::ZERO;

/// Whose counters a frame changes: the device's MAC and its slot (`DeviceEntry::NO_SLOT` for
/// an unknown MAC).
#[derive(Clone, Copy)]
pub struct Counted<'a> {
    pub mac: &'a MacKey,
    pub slot: u32,
}

impl<'a> Counted<'a> {
    #[inline(always)]
    pub fn new(mac: &'a MacKey, device: &DeviceEntry) -> Self {
        Self { mac, slot: device.slot }
    }
}

/// What a frame changes in its device's counters (`account_device`): the high byte says which counters,
/// the low one the IP protocol of a frame from the device or the reason of a frame not passed.
mod change {
    pub const TX: u32 = 1 << 8;
    pub const RX: u32 = 2 << 8;
    pub const DROP: u32 = 3 << 8;
    /// The bits that say which counters.
    pub const KIND: u32 = 0xff << 8;
}

/// Counts a frame from the device (`proto` 0 for non-IP frames).
#[inline(always)]
pub fn count_tx(device: Counted, ip_proto: u8, frame_bytes: u64, now: u64) {
    account_device(device.mac, device.slot, change::TX | u32::from(ip_proto), frame_bytes, now);
}

/// Counts a frame towards the device.
#[inline(always)]
pub fn count_rx(device: Counted, frame_bytes: u64) {
    account_device(device.mac, device.slot, change::RX, frame_bytes, 0);
}

/// Counts a frame not passed, against the device (if known) and globally.
#[inline(always)]
pub fn count_drop(device: Option<Counted>, why: u32) {
    count(counter::DROPS_BASE + why);
    let Some(device) = device else { return };
    account_device(device.mac, device.slot, change::DROP | (why & 0xff), 0, 0);
}

/// Applies `what` (`change`) to this CPU's counters of the device at `slot` (or of the unknown
/// `mac`), marking the device changed in this sweep epoch first.
// A BPF subprogram: each counting site is a call, not a copy of both lookups' paths.
#[inline(never)]
fn account_device(mac: &MacKey, slot: u32, what: u32, frame_bytes: u64, now: u64) {
    let stats = if slot == DeviceEntry::NO_SLOT { unknown(mac) } else { slot_stats(slot) };
    let Some(stats) = stats else { return };
    let stats = stats.as_ptr();
    mark_changed(mac, slot, stats);
    // SAFETY: this CPU's own value (its element of the slot, or a per-CPU entry), only touched
    // by this CPU's program instance.
    unsafe {
        match what & change::KIND {
            change::TX => {
                (*stats).tx_packets += 1;
                (*stats).tx_bytes += frame_bytes;
                (*stats).last_seen_ns = now;
                match what as u8 {
                    proto::TCP => (*stats).tcp_packets += 1,
                    proto::UDP => (*stats).udp_packets += 1,
                    proto::ICMP | proto::ICMPV6 => (*stats).icmp_packets += 1,
                    _ => (*stats).other_packets += 1,
                }
            }
            change::RX => {
                (*stats).rx_packets += 1;
                (*stats).rx_bytes += frame_bytes;
            }
            // change::DROP
            _ => {
                // The mask bounds the index on the register that is used, in a form every LLVM
                // keeps (a separate `< COUNT` check was dropped by one nightly and the verifier
                // refused it).
                let index = what as usize & (reason::SLOTS - 1);
                (*stats).drops[index] += 1;
            }
        }
    }
}

/// This CPU's counters of the device at `slot`: its own element of `DEVICE_STATS`, at
/// `slot × N_CPUS + cpu`. A plain array, not a per-CPU one: finding a per-CPU element reads its
/// pointer from a table first, a dependent cache miss at scale that the floor does not pay
/// (bench/xdp). No atomics: only this CPU writes this element.
#[inline(always)]
fn slot_stats(slot: u32) -> Option<NonNull<DeviceStats>> {
    // SAFETY: a read-only global the loader patched (`N_CPUS`); volatile, or rustc would
    // fold the object's 0 in.
    let cpus = unsafe { core::ptr::read_volatile(&raw const N_CPUS) };
    // SAFETY: a helper without arguments (inlined by the verifier on x86-64 and arm64).
    let cpu = unsafe { aya_ebpf::helpers::generated::bpf_get_smp_processor_id() };
    // A CPU beyond the loader's count (never, when possible CPUs are numbered without gaps) or
    // an object loaded without it counts nothing rather than another slot's element.
    if cpu >= cpus {
        return None;
    }
    NonNull::new(DEVICE_STATS.get_ptr_mut(slot.wrapping_mul(cpus).wrapping_add(cpu))?)
}

/// This CPU's counters of the unknown `mac` (`UNKNOWN_DEVICE_STATS`), created on first sight.
// Not inlined: kept apart from the slot's array lookup, so LLVM cannot merge the two lookups
// into one call site with the map in a register, which the verifier would not inline
// (see `Table`).
#[inline(never)]
fn unknown(mac: &MacKey) -> Option<NonNull<DeviceStats>> {
    if let Some(stats) = UNKNOWN_DEVICE_STATS.get_ptr_mut(mac) {
        return NonNull::new(stats);
    }
    if UNKNOWN_DEVICE_STATS.insert(mac, &ZERO_STATS, u64::from(BPF_NOEXIST)).is_ok() {
        count(counter::UNKNOWN_DEVICE_STATS_INSERTED);
    }
    NonNull::new(UNKNOWN_DEVICE_STATS.get_ptr_mut(mac)?)
}

/// Writes the device to `CHANGED_DEVICES` if this is its first counted frame on this CPU in
/// the live sweep epoch. The stamp is set even when the ring is full: the loss is counted and
/// the sweep then reads every device, so one count per epoch is enough.
#[inline(always)]
fn mark_changed(mac: &MacKey, slot: u32, stats: *mut DeviceStats) {
    let Some(config) = CONFIG.get(0) else { return };
    let epoch = config.sweep_epoch;
    // SAFETY: this CPU's own value (its element of the slot, or a per-CPU entry), only touched
    // by this CPU's program instance.
    unsafe {
        if (*stats).sweep_epoch == epoch {
            return;
        }
        (*stats).sweep_epoch = epoch;
    }
    let changed = ChangedDevice { mac: *mac, slot, _pad: 0 };
    // No wake-up: the sweep reads the ring on its own schedule, nobody polls it.
    if CHANGED_DEVICES.output::<ChangedDevice>(&changed, u64::from(BPF_RB_NO_WAKEUP)).is_err() {
        count(counter::CHANGED_DEVICES_LOST);
    }
}

/// The packet's flow as userspace sees it: `FLOWS_V6`'s key, and every new-flow event's.
#[inline(always)]
pub fn key(mac: &MacKey, ip: &Ip) -> FlowKey {
    FlowKey {
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port: ip.src_port,
        dst_port: ip.dst_port,
        proto: ip.proto,
        ip_version: ip.version,
        _pad: [0; 2],
        mac: *mac,
    }
}

/// One of the flow tables, with its key. The flow steps that hold a table's entry are generic
/// over it and not inlined, one copy per table: two lookups of different maps at one call
/// site (which LLVM makes of an `if` over the two) cannot be inlined by the verifier, and
/// cost a call through the map's operations (bench/xdp).
pub trait Table {
    type Key: 'static;
    const INSERTED: u32;
    fn flows() -> &'static LruHashMap<Self::Key, FlowStats>;
    fn key(mac: &MacKey, ip: &Ip) -> Self::Key;
}

/// IPv4 flows: `FLOWS_V4`.
pub struct V4;
/// IPv6 flows: `FLOWS_V6`.
pub struct V6;

impl Table for V4 {
    type Key = FlowKeyV4;
    const INSERTED: u32 = counter::FLOWS_V4_INSERTED;

    #[inline(always)]
    fn flows() -> &'static LruHashMap<FlowKeyV4, FlowStats> {
        &FLOWS_V4
    }

    #[inline(always)]
    fn key(mac: &MacKey, ip: &Ip) -> FlowKeyV4 {
        let (s, d) = (&ip.src, &ip.dst);
        FlowKeyV4 {
            src_addr: [s[0], s[1], s[2], s[3]],
            dst_addr: [d[0], d[1], d[2], d[3]],
            src_port: ip.src_port,
            dst_port: ip.dst_port,
            proto: ip.proto,
            _pad: 0,
            mac: mac.addr,
        }
    }
}

impl Table for V6 {
    type Key = FlowKey;
    const INSERTED: u32 = counter::FLOWS_V6_INSERTED;

    #[inline(always)]
    fn flows() -> &'static LruHashMap<FlowKey, FlowStats> {
        &FLOWS_V6
    }

    #[inline(always)]
    fn key(mac: &MacKey, ip: &Ip) -> FlowKey {
        key(mac, ip)
    }
}

/// Whether `ip` is IPv4, whose flows are in `FLOWS_V4` (`V4`), not `FLOWS_V6`.
#[inline(always)]
pub fn is_v4(ip: &Ip) -> bool {
    ip.version == ipv4::VERSION
}

/// Whether the packet's flow is in table `T`: the floor's lookup (`iotgw_floor`), one
/// copy per table like the LAN program's (see `Table`).
#[inline(never)]
pub fn is_known<T: Table>(mac: &MacKey, ip: &Ip) -> bool {
    find::<T>(mac, ip).is_some()
}

/// The packet's flow entry in table `T`, if the flow is known.
#[inline(always)]
pub fn find<T: Table>(mac: &MacKey, ip: &Ip) -> Option<*mut FlowStats> {
    T::flows().get_ptr_mut(&T::key(mac, ip))
}

/// The decision `stats` cached, if it is still valid for this packet from `device` (see the
/// module doc).
#[inline(always)]
pub fn cached_decision(stats: *mut FlowStats, device: &DeviceEntry, generation: u32, ip: &Ip) -> Option<Decision> {
    if ip.is_fragment != 0 {
        return None;
    }
    // SAFETY: the map value stays valid during the program run (RCU); volatile keeps the
    // packed decision one 64-bit load (see `FlowStats::decision`).
    let (word, policy_id) =
        unsafe { (core::ptr::read_volatile(&raw const (*stats).decision), (*stats).decided_policy_id) };
    let cached = CachedDecision::unpack(word);
    let valid =
        cached.policy_generation == generation && cached.device_state == device.state && policy_id == device.policy_id;
    valid.then_some(Decision { verdict: cached.verdict, reason: u32::from(cached.reason) })
}

/// What a flow caches after `decision` was computed for this packet (nothing for fragments).
#[inline(always)]
pub fn to_cache(decision: &Decision, device: &DeviceEntry, generation: u32, ip: &Ip) -> u64 {
    if ip.is_fragment != 0 {
        return CachedDecision::NONE;
    }
    // Reason codes are below 256 (`reason::COUNT`), so the cast keeps them whole.
    CachedDecision {
        policy_generation: generation,
        device_state: device.state,
        verdict: decision.verdict,
        reason: decision.reason as u8,
    }
    .pack()
}

/// Who opened the flow, as its latest SYN or SYN-ACK told (`opener::EITHER` before one).
#[inline(always)]
pub fn opener(stats: *mut FlowStats) -> u8 {
    // SAFETY: the map value stays valid during the program run (RCU).
    unsafe { (*stats).opener }
}

/// Accounts the packet to its known flow; `recomputed` is the decision to cache when the
/// packet did not reuse the cached one. A SYN or SYN-ACK records who opened.
#[inline(always)]
pub fn add(stats: *mut FlowStats, ip: &Ip, frame_bytes: u64, verdict: u8, recomputed: Option<(u64, u32)>, now: u64) {
    // SAFETY: the map value stays valid during the program run (RCU); packets and bytes are
    // added atomically because both CPUs may account the same flow.
    unsafe {
        atomic_add(&raw mut (*stats).packets, 1);
        atomic_add(&raw mut (*stats).bytes, frame_bytes);
        (*stats).last_seen_ns = now;
        (*stats).tcp_flags |= ip.tcp_flags;
        (*stats).last_verdict = verdict;
        let told = parse::opener_from_device(ip);
        if told != opener::EITHER {
            (*stats).opener = told;
        }
        if let Some((decision, policy_id)) = recomputed {
            (*stats).decided_policy_id = policy_id;
            core::ptr::write_volatile(&raw mut (*stats).decision, decision);
        }
    }
}

/// A new flow's entry, inserted from .rodata and filled in place: building the 72-byte value
/// on the stack would not fit beside the other steps' frames in XDP's 512 bytes.
static NEW_FLOW: FlowStats = FlowStats::NEW;

/// Opens a flow under `key` in table `T`: its entry, and whether this call inserted it (false
/// when another CPU did first). A new entry holds no packet and no decision yet (`add`).
#[inline(always)]
pub fn open<T: Table>(key: &T::Key, now: u64) -> Option<(*mut FlowStats, bool)> {
    let opened = T::flows().insert(key, &NEW_FLOW, u64::from(BPF_NOEXIST)).is_ok();
    if opened {
        count(T::INSERTED);
    }
    let Some(stats) = T::flows().get_ptr_mut(key) else {
        count(counter::FLOW_INSERT_FAILED);
        crate::rare::flow_insert_failed();
        return None;
    };
    if opened {
        // SAFETY: as in `add`; only the CPU that inserted the entry sets it.
        unsafe { (*stats).first_seen_ns = now };
    }
    Some((stats, opened))
}

/// Keeps the SYN fingerprint of the flow `stats` this CPU just opened.
#[inline(always)]
pub fn set_syn(stats: *mut FlowStats, syn: &SynFingerprint) {
    // SAFETY: as in `add`; only the CPU that inserted the entry sets it.
    unsafe { (*stats).syn = *syn };
}

/// `*counter += value`, atomically (BPF_ATOMIC add). core's `AtomicU64` has no RMW methods
/// on the bpf target, so this goes through the intrinsic it would use.
#[inline(always)]
pub unsafe fn atomic_add(counter: *mut u64, value: u64) {
    // SAFETY: the caller passes a pointer into a live map value.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(counter, value);
    }
}

/// Now, CLOCK_MONOTONIC at jiffy resolution: first/last-seen times need no better, and the
/// coarse clock costs a fraction of `bpf_ktime_get_ns` on every packet (bench/xdp).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns() }
}
