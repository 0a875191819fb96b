//! Step 2: which device sent the frame, and what may it do. A MAC absent from `DEVICES` is
//! an unknown device (`DeviceEntry::UNKNOWN`, without a counter slot).
use gateway_ebpf::{DeviceEntry, MacKey};

use crate::{DEVICES, budget};

/// `mac`'s entry, copied out.
#[inline(always)]
pub fn device(mac: &MacKey) -> DeviceEntry {
    // SAFETY: the entry is copied out at once. The controller replaces a record whole, and
    // never changes the slot of a device it keeps in the table.
    match unsafe { DEVICES.get(mac) } {
        Some(record) => record.entry,
        None => DeviceEntry::UNKNOWN,
    }
}

/// The sending device's entry (LAN program), its frame of `frame_bytes` counted against its
/// budgets while its record is at hand: the budget limits are read in place, not copied.
#[inline(always)]
pub fn sender(mac: &MacKey, frame_bytes: u64, now: u64) -> DeviceEntry {
    match DEVICES.get_ptr(mac) {
        Some(record) => {
            // Checked here, not in `account`: a device without budgets pays no call.
            if budget::any(record) {
                budget::account(mac, record, frame_bytes, now);
            }
            // SAFETY: a live map value (RCU), copied out at once (see `device`).
            unsafe { (*record).entry }
        }
        None => DeviceEntry::UNKNOWN,
    }
}
