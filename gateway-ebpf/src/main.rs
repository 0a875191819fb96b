//! iotgw's XDP programs, and the TC program that watches the LAN interface's egress
//! (`lan_egress`: the answers of a DNS resolver on the gateway itself). This file declares
//! the maps and dispatches, with the two helpers the programs share (`configured`, `count`);
//! each datapath step has its own module, in packet order:
//!
//! `parse` (headers, bounds-checked) → `classify` (which device, what state) → `budget`
//! (the device's rate and byte budgets, reported when crossed) → `source_guard` (is the
//! IPv4 or IPv6 source the device's own) → `flow`
//! (per-device and per-flow accounting) → `policy` (the verdict) → `events` (new flows and
//! samples to userspace) → `verdict` (apply it: pass, drop, or redirect to quarantine; the
//! one exit, which counts every frame not passed). `lan` and `wan` run the steps in order;
//! `decision` is what the steps hand on, `wire` names the protocol constants, and `rare`
//! logs the few conditions an operator must hear about (aya-log), off the fast path.
//!
//! Names, capacities, codes and layouts come from the `gateway_ebpf` lib (the ABI).
#![no_std]
#![no_main]
// Atomic adds on shared flow counters: core::sync::atomic has no RMW on the bpf target.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod budget;
mod classify;
mod decision;
mod events;
mod flow;
mod lan;
mod lan_egress;
mod parse;
mod policy;
mod rare;
mod source_guard;
mod verdict;
mod wan;
mod wire;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, map, xdp},
    maps::{Array, DevMap, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use gateway_ebpf::{
    ABI_VERSION, BudgetWindows, DeviceRecord, DeviceStats, FlowKey, FlowKeyV4, FlowStats, GatewayConfig, MacKey,
    PolicyKey, PolicyRule, SourceViolation, counter, device_state, maps as abi,
};

#[map(name = "DEVICES")]
static DEVICES: HashMap<MacKey, DeviceRecord> = HashMap::pinned(abi::DEVICES_CAPACITY, 0);

#[map(name = "DEVICE_IPV4")]
static DEVICE_IPV4: HashMap<[u8; 4], MacKey> = HashMap::pinned(abi::DEVICE_IPV4_CAPACITY, 0);

#[map(name = "DEVICE_STATS")]
static DEVICE_STATS: Array<DeviceStats> = Array::pinned(abi::DEVICE_STATS_CAPACITY, 0);

/// Possible CPUs, patched in by the loader (`gateway_ebpf::N_CPUS_GLOBAL`): a slot's elements
/// in `DEVICE_STATS`. 0, an object loaded without it: devices in `DEVICES` are not counted.
// Read-only data, frozen at load: the verifier knows the value, so the index costs a multiply.
#[unsafe(no_mangle)]
static N_CPUS: u32 = 0;

#[map(name = "UNKNOWN_DEVICE_STATS")]
static UNKNOWN_DEVICE_STATS: LruPerCpuHashMap<MacKey, DeviceStats> =
    LruPerCpuHashMap::pinned(abi::UNKNOWN_DEVICE_STATS_CAPACITY, 0);

/// Userspace's slot claims (see `maps::DEVICE_SLOTS`); declared here so the loader creates
/// and pins it with the others. No program reads it.
#[map(name = "DEVICE_SLOTS")]
static DEVICE_SLOTS: HashMap<u32, MacKey> = HashMap::pinned(abi::DEVICES_CAPACITY, 0);

#[map(name = "CHANGED_DEVICES")]
static CHANGED_DEVICES: RingBuf = RingBuf::pinned(abi::CHANGED_DEVICES_BYTES, 0);

#[map(name = "FLOWS_V4")]
static FLOWS_V4: LruHashMap<FlowKeyV4, FlowStats> = LruHashMap::pinned(abi::FLOWS_V4_CAPACITY, 0);

#[map(name = "FLOWS_V6")]
static FLOWS_V6: LruHashMap<FlowKey, FlowStats> = LruHashMap::pinned(abi::FLOWS_V6_CAPACITY, 0);

#[map(name = "POLICY_V4")]
static POLICY_V4: LpmTrie<PolicyKey<4>, PolicyRule> = LpmTrie::pinned(abi::POLICY_CAPACITY, 0);

#[map(name = "POLICY_V6")]
static POLICY_V6: LpmTrie<PolicyKey<16>, PolicyRule> = LpmTrie::pinned(abi::POLICY_CAPACITY, 0);

#[map(name = "BUDGETS")]
static BUDGETS: Array<BudgetWindows> = Array::pinned(abi::BUDGETS_CAPACITY, 0);

#[map(name = "CONFIG")]
static CONFIG: Array<GatewayConfig> = Array::pinned(1, 0);

#[map(name = "GLOBAL_STATS")]
static GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::pinned(counter::COUNT, 0);

#[map(name = "REDIRECT_PORTS")]
static REDIRECT_PORTS: DevMap = DevMap::pinned(abi::REDIRECT_PORTS_CAPACITY, 0);

#[map(name = "SOURCE_BINDINGS_V4")]
static SOURCE_BINDINGS_V4: HashMap<[u8; 4], MacKey> = HashMap::pinned(abi::SOURCE_BINDINGS_V4_CAPACITY, 0);

#[map(name = "SOURCE_BINDINGS_V6")]
static SOURCE_BINDINGS_V6: HashMap<[u8; 16], MacKey> = HashMap::pinned(abi::SOURCE_BINDINGS_V6_CAPACITY, 0);

#[map(name = "SOURCE_VIOLATIONS")]
static SOURCE_VIOLATIONS: LruPerCpuHashMap<MacKey, SourceViolation> =
    LruPerCpuHashMap::pinned(abi::SOURCE_VIOLATIONS_CAPACITY, 0);

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::pinned(abi::EVENTS_BYTES, 0);

/// Occurrences of the rare conditions `rare` logs, per CPU. Private to this object (not
/// pinned, not ABI): a new program starts counting, and so logging, afresh.
/// One slot per CPU holding the parsed IP headers of the frame in flight. The LAN program
/// hands them on from here rather than from its stack: the verifier does not track what a
/// map value holds, so every parse path (VLAN tags, IPv4 options, IPv6 extension chains,
/// each transport) meets the flow and policy steps in one state, and those are verified
/// once instead of once per path (see `tests/netns/tests/verifier.rs`). The lookup of a
/// per-CPU array is inlined by the verifier: a few instructions per frame.
#[map(name = "PARSED")]
static PARSED: PerCpuArray<parse::Ip> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "RARE_EVENTS")]
static RARE_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(rare::site::COUNT, 0);

/// Frames from the devices.
#[xdp]
pub fn iotgw_lan(ctx: XdpContext) -> u32 {
    lan::ingress(&ctx)
}

/// Frames from upstream, towards the devices.
#[xdp]
pub fn iotgw_wan(ctx: XdpContext) -> u32 {
    wan::ingress(&ctx)
}

/// Frames leaving towards the devices (TC egress of the LAN interface): observed, never
/// changed.
#[classifier]
pub fn iotgw_lan_egress(ctx: TcContext) -> i32 {
    lan_egress::egress(&ctx)
}

/// The bare baseline: passes everything. Also attached to veth peers that receive redirects.
#[xdp]
pub fn iotgw_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark reference only, never attached (bench/xdp): the least any device- and
/// flow-aware gateway must do per frame, which iotgw's own cost is measured against. Parses
/// the frame (iotgw's parser), looks the source MAC up in `DEVICES`, adds one to a per-CPU
/// counter and looks the flow up in `FLOWS_V4` or `FLOWS_V6`; drops blocked devices and unknown flows of
/// devices not enrolled (so both lookups' results are used and not optimised away).
#[xdp]
pub fn iotgw_floor(ctx: XdpContext) -> u32 {
    let Some(mac) = parse::src_mac(&ctx) else { return xdp_action::XDP_DROP };
    let mac = MacKey::new(mac);
    let device = classify::device(&mac);
    count(counter::LAN_PACKETS);
    let Ok(link) = parse::link(&ctx) else { return xdp_action::XDP_DROP };
    if !parse::is_ip(&link) {
        return xdp_action::XDP_PASS;
    }
    let Ok(ip) = parse::ip(&ctx, &link) else { return xdp_action::XDP_DROP };
    let known =
        if flow::is_v4(&ip) { flow::is_known::<flow::V4>(&mac, &ip) } else { flow::is_known::<flow::V6>(&mac, &ip) };
    let drop = device.state == device_state::BLOCKED || (!known && device.state != device_state::ENROLLED);
    if drop { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// The configuration, once the controller has written one of this ABI. Until then the
/// programs pass everything: loading them must never cut the network by itself.
#[inline(always)]
pub(crate) fn configured() -> Option<&'static GatewayConfig> {
    let config = CONFIG.get(0)?;
    if config.abi_version != ABI_VERSION {
        rare::wrong_abi(config.abi_version, ABI_VERSION);
        return None;
    }
    Some(config)
}

/// Adds one to a global per-CPU counter.
#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(value) = GLOBAL_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, only this CPU's program instance touches it, and XDP
        // programs are not preempted on one CPU.
        unsafe { *value += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this, so it is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
