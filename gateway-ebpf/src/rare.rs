//! Rare conditions worth telling the operator, through aya-log (forwarded by the controller
//! into its `tracing` output). Reads and writes `RARE_EVENTS` (this object's private per-CPU
//! occurrence counts, not pinned, not part of the ABI); writes the `AYA_LOGS` ring buffer.
//!
//! Nothing here runs on the fast path: each function is called only on a branch that is
//! already a failure (a redirect without a port, a full flow table or ring buffer, a CONFIG
//! of another ABI). Per-packet facts stay counters (`GLOBAL_STATS`); a log line says *that*
//! something is wrong. Because such a condition usually persists (every quarantined frame
//! fails the same way), each site logs only its 1st, 2nd, 4th, 8th... occurrence per CPU:
//! about log2(n) lines for n occurrences, and no state touched while things go well.
//!
//! The functions are `inline(never)`: the log record code becomes one BPF subprogram per
//! site, out of the hot function's register allocation and instruction stream.
use aya_log_ebpf::{error, warn};
use gateway_ebpf::QUARANTINE_SLOT;

use crate::RARE_EVENTS;

/// The sites, indexes into `RARE_EVENTS`.
pub mod site {
    pub const NO_REDIRECT_PORT: u32 = 0;
    pub const FLOW_INSERT_FAILED: u32 = 1;
    pub const EVENTS_LOST: u32 = 2;
    pub const WRONG_ABI: u32 = 3;
    /// Number of sites: `RARE_EVENTS`' capacity.
    pub const COUNT: u32 = 4;
}

/// Counts one more occurrence of `site` on this CPU. Returns the count when it is a power of
/// two (the occurrences worth a log line).
#[inline(always)]
fn occurrence_to_log(site: u32) -> Option<u64> {
    let slot = RARE_EVENTS.get_ptr_mut(site)?;
    // SAFETY: per-CPU value, only this CPU's program instance touches it, and XDP programs
    // are not preempted on one CPU.
    let n = unsafe {
        *slot += 1;
        *slot
    };
    n.is_power_of_two().then_some(n)
}

/// A frame to redirect to quarantine found no port in the devmap: it is dropped instead.
#[inline(never)]
pub fn no_redirect_port() {
    if let Some(n) = occurrence_to_log(site::NO_REDIRECT_PORT) {
        warn!(
            &(),
            "quarantine redirect failed: REDIRECT_PORTS slot {} has no interface; quarantined frames are dropped (occurrence {} on this CPU)",
            QUARANTINE_SLOT,
            n
        );
    }
}

/// A new flow could not be inserted (nor found after a racing insert): it goes unaccounted.
#[inline(never)]
pub fn flow_insert_failed() {
    if let Some(n) = occurrence_to_log(site::FLOW_INSERT_FAILED) {
        warn!(&(), "flow table insert failed; the flow is not accounted (occurrence {} on this CPU)", n);
    }
}

/// The event ring buffer was full: an event to userspace was lost.
#[inline(never)]
pub fn events_lost() {
    if let Some(n) = occurrence_to_log(site::EVENTS_LOST) {
        warn!(&(), "event ring buffer full; events to the controller are lost (occurrence {} on this CPU)", n);
    }
}

/// CONFIG holds a configuration of another ABI version: the program passes everything.
/// Version 0 is an unwritten CONFIG (no controller has configured the datapath yet), which
/// is expected at start-up and not logged.
#[inline(never)]
pub fn wrong_abi(found: u32, expected: u32) {
    if found == 0 {
        return;
    }
    if let Some(n) = occurrence_to_log(site::WRONG_ABI) {
        error!(
            &(),
            "CONFIG has ABI version {}, this program expects {}: passing every frame unchecked (occurrence {} on this CPU)",
            found,
            expected,
            n
        );
    }
}
