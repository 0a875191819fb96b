//! Per-device budgets, the controller's side of gateway-ebpf's `budget` step: what a device
//! may send per window before XDP reports it (`Budget`, derived by `detect::budget` from the
//! device's baseline), written into `BUDGETS` (`write`), and what XDP reports when a window
//! goes over (`BudgetCrossing`, decoded by `events`). Reporting only: the policy, and the
//! responses to the alerts a crossing raises, decide what happens to the device.
use std::time::{Duration, SystemTime};

use aya::maps::{HashMap, MapData, MapError};
use gateway_ebpf::{BudgetWindow, DeviceBudget, MacKey, budget_measure};

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

/// Writes `budget` for `mac` (`None` removes it), keeping the windows XDP is counting: a new
/// limit applies to the window under way.
pub fn write(
    map: &mut HashMap<MapData, MacKey, DeviceBudget>,
    mac: Mac,
    budget: Option<Budget>,
) -> Result<(), MapError> {
    let Some(budget) = budget else {
        return match map.remove(&mac.key()) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e),
        };
    };
    let counting = match map.get(&mac.key(), 0) {
        Ok(entry) => entry,
        Err(MapError::KeyNotFound) => DeviceBudget::default(),
        Err(e) => return Err(e),
    };
    map.insert(mac.key(), entry(&budget, &counting), 0)
}

/// The map entry for `budget`, with the windows of `counting`.
fn entry(budget: &Budget, counting: &DeviceBudget) -> DeviceBudget {
    let limit = |limit: u64, window: Duration, counting: &BudgetWindow| BudgetWindow {
        limit,
        window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
        ..*counting
    };
    DeviceBudget {
        packets: limit(budget.packets, budget.packet_window, &counting.packets),
        bytes: limit(budget.bytes.unwrap_or(u64::MAX), budget.byte_window, &counting.bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_limit_keeps_the_window_under_way() {
        let counting = DeviceBudget {
            packets: BudgetWindow { limit: 10, window_ns: 1, start_ns: 5, counted: 7, reported_start_ns: 3 },
            bytes: BudgetWindow::default(),
        };
        let budget = Budget {
            packets: 300,
            packet_window: Duration::from_secs(1),
            bytes: None,
            byte_window: Duration::from_secs(10),
        };
        let written = entry(&budget, &counting);
        assert_eq!(
            written.packets,
            BudgetWindow { limit: 300, window_ns: 1_000_000_000, start_ns: 5, counted: 7, reported_start_ns: 3 }
        );
        assert_eq!(written.bytes.limit, u64::MAX, "no byte budget: never crossed");
        assert_eq!(written.bytes.window_ns, 10_000_000_000);
    }
}
