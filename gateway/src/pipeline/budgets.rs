//! Keeps the budgets XDP holds devices to (`datapath::budget`) in step with the detector's
//! limits (`Detector::budget`): after each input, its device's budget is written when it
//! changed (a device's first input, the end of its learning, a new baseline of its type).
use std::collections::HashMap;

use crate::{
    datapath::{Control, budget::Budget},
    device::Mac,
};

pub struct BudgetSync {
    control: Control,
    /// What the datapath holds, per device.
    written: HashMap<Mac, Budget>,
    /// Writes the datapath refused; only the first is logged as a warning.
    failures: u64,
}

impl BudgetSync {
    pub fn new(control: Control) -> Self {
        Self { control, written: HashMap::new(), failures: 0 }
    }

    /// Writes `budget` for `mac` unless the datapath already holds it. A refused write is
    /// tried again at the device's next input.
    pub fn sync(&mut self, mac: Mac, budget: Option<Budget>) {
        if self.written.get(&mac) == budget.as_ref() {
            return;
        }
        match self.control.set_budget(mac, budget) {
            Ok(()) => {
                tracing::debug!(device = %mac, ?budget, "budget written");
                match budget {
                    Some(budget) => self.written.insert(mac, budget),
                    None => self.written.remove(&mac),
                };
            }
            Err(error) => {
                self.failures += 1;
                if self.failures == 1 {
                    tracing::warn!(%error, device = %mac, "cannot write a device's budget; floods wait for the counter sweep");
                } else {
                    tracing::debug!(%error, device = %mac, failures = self.failures, "cannot write a device's budget");
                }
            }
        }
    }
}
