//! Step 2: which device sent the frame, and what may it do. A MAC absent from `DEVICES` is
//! an unknown device.
use gateway_ebpf::{DeviceEntry, MacKey, device_state};

use crate::DEVICES;

#[inline(always)]
pub fn device(mac: &MacKey) -> DeviceEntry {
    // SAFETY: the value is copied out at once; a concurrent update by the controller
    // replaces the whole 8-byte entry.
    match unsafe { DEVICES.get(mac) } {
        Some(entry) => *entry,
        None => DeviceEntry { state: device_state::UNKNOWN, ..Default::default() },
    }
}
