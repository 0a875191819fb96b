//! Step 2b: budgets. Each device the controller gave budgets (the limits in its `DEVICES`
//! record, from its baseline: the rates its flood and volume detectors allow) has its frames
//! and bytes counted over fixed windows here, on every frame it sends; the frame that takes a
//! window above its limit sends one `BudgetEvent`, so the controller hears of a flood or an
//! exfiltration at once rather than at its next counter sweep. The frame itself is judged as
//! any other.
//!
//! The windows are in `BUDGETS` at the device's slot (an array: no second hash lookup), shared
//! by the CPUs: counts are added atomically (a per-CPU copy would need a per-CPU share of the
//! limit, and traffic is rarely spread evenly). A device without budgets costs two compares
//! (`any`).
//!
//! Reads the device's `DEVICES` record; reads and writes `BUDGETS` (only XDP writes the
//! windows; the controller zeroes a slot's when it hands the slot to another device).
use gateway_ebpf::{BudgetLimit, BudgetWindow, DeviceRecord, MacKey, budget_measure};

use crate::{BUDGETS, events, flow::atomic_add};

/// Whether the device whose `DEVICES` record is `record` has a budget.
#[inline(always)]
pub fn any(record: *const DeviceRecord) -> bool {
    // SAFETY: the map value stays valid during the program run (RCU).
    let (packets, bytes) = unsafe { ((*record).budget.packets.limit, (*record).budget.bytes.limit) };
    packets != BudgetLimit::NONE.limit || bytes != BudgetLimit::NONE.limit
}

/// Counts a frame of `frame_bytes` from `mac` (whose `DEVICES` record is `record`) against
/// its budgets, and reports a window it takes over its limit.
// A BPF subprogram: the budget paths (no budget, under, crossing, reported) are verified
// once, not once per path of the steps around it.
#[inline(never)]
pub fn account(mac: &MacKey, record: *const DeviceRecord, frame_bytes: u64, now: u64) {
    // SAFETY: the map value stays valid during the program run (RCU).
    let (packets, bytes) = unsafe { ((*record).budget.packets, (*record).budget.bytes) };
    let none = BudgetLimit::NONE.limit;
    // SAFETY: as above.
    let (slot, state) = unsafe { ((*record).entry.slot, (*record).entry.state) };
    let Some(windows) = BUDGETS.get_ptr_mut(slot) else { return };
    // SAFETY: a live map value (RCU).
    let (packet_window, byte_window) = unsafe { (&raw mut (*windows).packets, &raw mut (*windows).bytes) };
    if packets.limit != none
        && let Some((counted, elapsed)) = count(packet_window, &packets, 1, now)
    {
        events::budget(mac, state, budget_measure::PACKETS, &packets, counted, elapsed, now);
    }
    if bytes.limit != none
        && let Some((counted, elapsed)) = count(byte_window, &bytes, frame_bytes, now)
    {
        events::budget(mac, state, budget_measure::BYTES, &bytes, counted, elapsed, now);
    }
}

/// Adds `amount` to the window (restarting it when it has run out). When this takes the
/// window over its limit for the first time: what it counts now, and how long after its
/// start.
#[inline(always)]
fn count(window: *mut BudgetWindow, limit: &BudgetLimit, amount: u64, now: u64) -> Option<(u64, u64)> {
    // SAFETY: `window` points into a live map value (RCU); `counted` is added to atomically
    // because every CPU counts into the same entry; the other fields are last-writer-wins
    // (see `BudgetWindow`).
    unsafe {
        let start = (*window).start_ns;
        if now.wrapping_sub(start) >= limit.window_ns {
            (*window).start_ns = now;
            (*window).counted = 0;
        }
        atomic_add(&raw mut (*window).counted, amount);
        let counted = core::ptr::read_volatile(&raw const (*window).counted);
        let start = (*window).start_ns;
        if counted <= limit.limit || (*window).reported_start_ns == start {
            return None;
        }
        (*window).reported_start_ns = start;
        Some((counted, now.wrapping_sub(start)))
    }
}
