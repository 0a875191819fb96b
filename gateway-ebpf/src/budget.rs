//! Step 2b: budgets. Each device the controller gave budgets (`BUDGETS`, from its baseline:
//! the rates its flood and volume detectors allow) has its frames and bytes counted over
//! fixed windows here, on every frame it sends; the frame that takes a window above its
//! limit sends one `BudgetEvent`, so the controller hears of a flood or an exfiltration at
//! once rather than at its next counter sweep. The frame itself is judged as any other.
//!
//! One entry per device, shared by the CPUs: counts are added atomically (a per-CPU copy
//! would need a per-CPU share of the limit, and traffic is rarely spread evenly). A device
//! without an entry costs one failed lookup.
//!
//! Reads and writes `BUDGETS` (the controller writes the limits, XDP the windows).
use gateway_ebpf::{BudgetWindow, MacKey, budget_measure};

use crate::{BUDGETS, events, flow::atomic_add};

/// Counts a frame of `frame_bytes` from `mac` against its budgets, and reports a window it
/// takes over its limit.
// A BPF subprogram: the budget paths (no budget, under, crossing, reported) are verified
// once, not once per path of the steps around it.
#[inline(never)]
pub fn account(mac: &MacKey, device_state: u8, frame_bytes: u64, now: u64) {
    let Some(budget) = BUDGETS.get_ptr_mut(mac) else { return };
    // SAFETY: the map value stays valid during the program run (RCU).
    let (packets, bytes) = unsafe { (&raw mut (*budget).packets, &raw mut (*budget).bytes) };
    if let Some((counted, elapsed)) = count(packets, 1, now) {
        events::budget(mac, device_state, budget_measure::PACKETS, packets, counted, elapsed, now);
    }
    if let Some((counted, elapsed)) = count(bytes, frame_bytes, now) {
        events::budget(mac, device_state, budget_measure::BYTES, bytes, counted, elapsed, now);
    }
}

/// Adds `amount` to the window (restarting it when it has run out). When this takes the
/// window over its limit for the first time: what it counts now, and how long after its
/// start.
#[inline(always)]
fn count(window: *mut BudgetWindow, amount: u64, now: u64) -> Option<(u64, u64)> {
    // SAFETY: `window` points into a live map value (RCU); `counted` is added to atomically
    // because every CPU counts into the same entry; the other fields are last-writer-wins
    // (see `BudgetWindow`).
    unsafe {
        let start = (*window).start_ns;
        if now.wrapping_sub(start) >= (*window).window_ns {
            (*window).start_ns = now;
            (*window).counted = 0;
        }
        atomic_add(&raw mut (*window).counted, amount);
        let counted = core::ptr::read_volatile(&raw const (*window).counted);
        let start = (*window).start_ns;
        if counted <= (*window).limit || (*window).reported_start_ns == start {
            return None;
        }
        (*window).reported_start_ns = start;
        Some((counted, now.wrapping_sub(start)))
    }
}
