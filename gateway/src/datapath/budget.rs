//! Per-device budgets, the controller's side of gateway-ebpf's `budget` step: what a device
//! may send per window before XDP reports it (`Budget`, derived by `detect::budget` from the
//! device's baseline), written as limits into the device's `DEVICES` record (`limits`; XDP
//! counts the windows in `BUDGETS` at the device's slot), and what XDP reports when a window
//! goes over (`BudgetCrossing`, decoded by `events`). Reporting only: the policy, and the
//! responses to the alerts a crossing raises, decide what happens to the device.
use std::time::{Duration, SystemTime};

use gateway_ebpf::{BudgetLimit, BudgetWindow, BudgetWindows, DeviceBudget, budget_measure};

use crate::device::Mac;

/// What a device may send before XDP reports it: `packets` frames per `packet_window`, and
/// `bytes` per `byte_window` (`None`: no byte budget, as for a device without a baseline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub packets: u64,
    pub packet_window: Duration,
    pub bytes: Option<u64>,
    pub byte_window: Duration,
}

/// Which budget a crossing is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    Packets,
    Bytes,
}

impl Measure {
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            budget_measure::PACKETS => Some(Self::Packets),
            budget_measure::BYTES => Some(Self::Bytes),
            _ => None,
        }
    }
}

/// XDP saw a device take one of its budget windows over its limit (one report per window).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetCrossing {
    pub time: SystemTime,
    pub mac: Mac,
    pub measure: Measure,
    /// The window's limit and length when it was crossed.
    pub limit: u64,
    pub window: Duration,
    /// Counted in the window, the crossing frame included, and how long after the window
    /// began that frame came.
    pub counted: u64,
    pub elapsed: Duration,
}

/// The limits XDP holds a device to for `budget` (`DeviceRecord::budget`).
pub fn limits(budget: &Budget) -> DeviceBudget {
    let window_ns = |window: Duration| u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    DeviceBudget {
        packets: BudgetLimit { limit: budget.packets, window_ns: window_ns(budget.packet_window) },
        bytes: BudgetLimit {
            limit: budget.bytes.unwrap_or(BudgetLimit::NONE.limit),
            window_ns: window_ns(budget.byte_window),
        },
    }
}

/// One budget as XDP holds it: the controller's limit and XDP's count in the window under way
/// (host order; times are `bpf_ktime_get_coarse_ns`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowState {
    pub limit: u64,
    pub window_ns: u64,
    pub start_ns: u64,
    pub counted: u64,
    /// The start of the last window XDP reported crossed (0: none yet).
    pub reported_start_ns: u64,
}

/// A device's budgets as XDP holds them (`Maps::budget`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetState {
    pub packets: WindowState,
    pub bytes: WindowState,
}

impl BudgetState {
    /// The limits of a device's record with the windows of its slot.
    pub fn new(limits: &DeviceBudget, windows: &BudgetWindows) -> Self {
        let state = |limit: &BudgetLimit, window: &BudgetWindow| WindowState {
            limit: limit.limit,
            window_ns: limit.window_ns,
            start_ns: window.start_ns,
            counted: window.counted,
            reported_start_ns: window.reported_start_ns,
        };
        Self { packets: state(&limits.packets, &windows.packets), bytes: state(&limits.bytes, &windows.bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_without_bytes_never_crosses_its_byte_window() {
        let budget = Budget {
            packets: 300,
            packet_window: Duration::from_secs(1),
            bytes: None,
            byte_window: Duration::from_secs(10),
        };
        let written = limits(&budget);
        assert_eq!(written.packets, BudgetLimit { limit: 300, window_ns: 1_000_000_000 });
        assert_eq!(written.bytes.limit, u64::MAX, "no byte budget: never crossed");
        assert_eq!(written.bytes.window_ns, 10_000_000_000);
        assert_ne!(written, DeviceBudget::default(), "a budget is not the record's \"no budget\"");
    }
}
