//! Step 3: accounting. Per-device counters (per-CPU, LRU) and the per-flow table (LRU,
//! shared, added to atomically). A flow's first packet is reported by `events`.
use aya_ebpf::bindings::BPF_NOEXIST;
use gateway_ebpf::{DeviceStats, FlowKey, FlowStats, MacKey, SynFingerprint, counter, proto, reason};

use crate::{DEVICE_STATS, FLOWS, count, parse::Ip};

/// Zeroed counters to insert for a device seen for the first time (kept out of the
/// 512-byte stack: the value lives in .rodata).
static ZERO_STATS: DeviceStats = DeviceStats::ZERO;

/// This CPU's counters of `mac`, created on first sight.
#[inline(always)]
fn stats(mac: &MacKey) -> Option<*mut DeviceStats> {
    if let Some(stats) = DEVICE_STATS.get_ptr_mut(mac) {
        return Some(stats);
    }
    let _ = DEVICE_STATS.insert(mac, &ZERO_STATS, u64::from(BPF_NOEXIST));
    DEVICE_STATS.get_ptr_mut(mac)
}

/// Counts a frame from the device (`proto` 0 for non-IP frames).
#[inline(always)]
pub fn count_tx(mac: &MacKey, ip_proto: u8, frame_bytes: u64, now: u64) {
    let Some(stats) = stats(mac) else { return };
    // SAFETY: per-CPU value, only touched by this CPU's program instance.
    unsafe {
        (*stats).tx_packets += 1;
        (*stats).tx_bytes += frame_bytes;
        (*stats).last_seen_ns = now;
        match ip_proto {
            proto::TCP => (*stats).tcp_packets += 1,
            proto::UDP => (*stats).udp_packets += 1,
            proto::ICMP | proto::ICMPV6 => (*stats).icmp_packets += 1,
            _ => (*stats).other_packets += 1,
        }
    }
}

/// Counts a frame towards the device.
#[inline(always)]
pub fn count_rx(mac: &MacKey, frame_bytes: u64) {
    let Some(stats) = stats(mac) else { return };
    // SAFETY: per-CPU value, only touched by this CPU's program instance.
    unsafe {
        (*stats).rx_packets += 1;
        (*stats).rx_bytes += frame_bytes;
    }
}

/// Counts a frame not passed, against the device (if known) and globally.
#[inline(always)]
pub fn count_drop(mac: Option<&MacKey>, why: u32) {
    count(counter::DROPS_BASE + why);
    let Some(mac) = mac else { return };
    let Some(stats) = stats(mac) else { return };
    let index = why as usize;
    if index < reason::COUNT {
        // SAFETY: per-CPU value; index checked against the array length.
        unsafe { (*stats).drops[index] += 1 };
    }
}

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

/// Accounts the packet to its flow. Returns true when the flow is new (this packet opened it).
#[inline(always)]
pub fn account(key: &FlowKey, ip: &Ip, syn: &SynFingerprint, frame_bytes: u64, verdict: u8, now: u64) -> bool {
    if let Some(stats) = FLOWS.get_ptr_mut(key) {
        // SAFETY: the map value stays valid during the program run (RCU); packets and bytes
        // are added atomically because both CPUs may account the same flow.
        unsafe {
            atomic_add(&raw mut (*stats).packets, 1);
            atomic_add(&raw mut (*stats).bytes, frame_bytes);
            (*stats).last_seen_ns = now;
            (*stats).tcp_flags |= ip.tcp_flags;
            (*stats).last_verdict = verdict;
        }
        return false;
    }
    let stats = FlowStats {
        packets: 1,
        bytes: frame_bytes,
        first_seen_ns: now,
        last_seen_ns: now,
        tcp_flags: ip.tcp_flags,
        last_verdict: verdict,
        _pad: [0; 6],
        syn: *syn,
        _pad_end: [0; 4],
    };
    match FLOWS.insert(key, &stats, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // Another CPU opened it first: add to that entry instead.
        Err(_) => {
            if let Some(existing) = FLOWS.get_ptr_mut(key) {
                // SAFETY: as above.
                unsafe {
                    atomic_add(&raw mut (*existing).packets, 1);
                    atomic_add(&raw mut (*existing).bytes, frame_bytes);
                }
            } else {
                count(counter::FLOW_INSERT_FAILED);
                crate::rare::flow_insert_failed();
            }
            false
        }
    }
}

/// `*counter += value`, atomically (BPF_ATOMIC add). core's `AtomicU64` has no RMW methods
/// on the bpf target, so this goes through the intrinsic it would use.
#[inline(always)]
unsafe fn atomic_add(counter: *mut u64, value: u64) {
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
