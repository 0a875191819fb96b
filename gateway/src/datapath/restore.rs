//! Rebuilding the device table from the store at start-up, before any program is attached.
//! The store (`Inventory::record_access`) is the device table's source of truth: pins lost to
//! a reboot, or never shared with the host (a private bpffs), must not lift a block or a
//! quarantine. Reads what the store recorded and what the (possibly pinned) table holds;
//! writes the table through `DeviceControl`.
//!
//! Where both hold an entry for a device, the stricter access wins (blocked, then
//! quarantined, then the rest): a controller killed between its map write and its store
//! write fails closed, and the caller records what the table kept back into the store.
use super::{ControlError, DeviceAccess, DeviceControl};
use crate::device::{Access, Mac};

/// What `restore` did.
#[derive(Debug, Default)]
pub struct Restored {
    /// Entries written from the store (missing from the table, or less strict there).
    pub written: Vec<(Mac, DeviceAccess)>,
    /// Entries the table already held as recorded.
    pub unchanged: usize,
    /// Entries the table held stricter than the store: kept, for the caller to record.
    pub stricter_in_table: Vec<(Mac, DeviceAccess)>,
    /// Entries the table refused (full map...).
    pub failed: Vec<(Mac, ControlError)>,
}

/// How much an access isolates a device: a restore never lowers it.
fn strictness(access: Access) -> u8 {
    match access {
        Access::Unknown => 0,
        Access::Onboarding | Access::Enrolled => 1,
        Access::Quarantined => 2,
        Access::Blocked => 3,
    }
}

/// A stored entry as the datapath needs it: rows recorded before the store kept policies
/// (policy 0) get the lane or the default class policy of their access.
fn with_policy(stored: DeviceAccess, enrolled_policy: u32) -> DeviceAccess {
    if stored.policy_id != 0 {
        return stored;
    }
    let policy_id = match stored.access {
        Access::Enrolled => enrolled_policy,
        Access::Onboarding => gateway_ebpf::lane::ONBOARDING,
        // Isolation does not read the policy; release restores it from the audit log.
        Access::Unknown | Access::Quarantined | Access::Blocked => 0,
    };
    DeviceAccess { policy_id, ..stored }
}

/// Writes every stored entry into the device table unless the table already holds it, or
/// holds something stricter. `enrolled_policy` is the policy of an enrolled device whose
/// row has none (`identity.enrolled_policy_id`).
pub fn restore(control: &dyn DeviceControl, stored: &[(Mac, DeviceAccess)], enrolled_policy: u32) -> Restored {
    let mut restored = Restored::default();
    let mut to_write = Vec::new();
    for &(mac, entry) in stored {
        if entry.access == Access::Unknown {
            continue;
        }
        let entry = with_policy(entry, enrolled_policy);
        let current = match control.access(mac) {
            Ok(current) => current,
            Err(error) => {
                restored.failed.push((mac, error));
                continue;
            }
        };
        match current {
            Some(current) if current == entry => restored.unchanged += 1,
            Some(current) if strictness(current.access) > strictness(entry.access) => {
                restored.stricter_in_table.push((mac, current));
            }
            _ => to_write.push((mac, entry)),
        }
    }
    for (&(mac, entry), result) in to_write.iter().zip(control.set_accesses(&to_write)) {
        match result {
            Ok(()) => restored.written.push((mac, entry)),
            Err(error) => restored.failed.push((mac, error)),
        }
    }
    restored
}

#[cfg(test)]
mod tests {
    use gateway_ebpf::lane;

    use super::*;
    use crate::datapath::MemoryDatapath;

    fn mac(last: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, last])
    }

    fn entry(access: Access, policy_id: u32, class_id: u16) -> DeviceAccess {
        DeviceAccess { access, policy_id, class_id }
    }

    #[test]
    fn an_empty_table_gets_every_recorded_entry_back() {
        let table = MemoryDatapath::default();
        let stored = [
            (mac(1), entry(Access::Blocked, 36, 20)),
            (mac(2), entry(Access::Quarantined, 36, 20)),
            (mac(3), entry(Access::Enrolled, 40, 24)),
            (mac(4), entry(Access::Unknown, 0, 0)),
        ];
        let restored = restore(&table, &stored, lane::FIRST_CLASS_POLICY);
        assert_eq!(restored.written.len(), 3);
        for (mac, entry) in &stored[..3] {
            assert_eq!(table.access(*mac).unwrap(), Some(*entry));
        }
        assert_eq!(table.access(mac(4)).unwrap(), None, "unknown devices stay out of the table");
        let again = restore(&table, &stored, lane::FIRST_CLASS_POLICY);
        assert!(again.written.is_empty());
        assert_eq!(again.unchanged, 3);
    }

    #[test]
    fn a_stricter_table_entry_is_kept_and_a_weaker_one_replaced() {
        let table = MemoryDatapath::default();
        // Killed after writing the map, before the store: the table's block stands.
        table.set_access(mac(1), entry(Access::Blocked, 36, 20)).unwrap();
        // Released by hand in the table only: the store's quarantine comes back.
        table.set_access(mac(2), entry(Access::Enrolled, 36, 20)).unwrap();
        let stored = [(mac(1), entry(Access::Enrolled, 36, 20)), (mac(2), entry(Access::Quarantined, 36, 20))];
        let restored = restore(&table, &stored, lane::FIRST_CLASS_POLICY);
        assert_eq!(restored.stricter_in_table, vec![(mac(1), entry(Access::Blocked, 36, 20))]);
        assert_eq!(table.access(mac(1)).unwrap().unwrap().access, Access::Blocked);
        assert_eq!(restored.written, vec![(mac(2), entry(Access::Quarantined, 36, 20))]);
        assert_eq!(table.access(mac(2)).unwrap().unwrap().access, Access::Quarantined);
    }

    #[test]
    fn rows_recorded_without_a_policy_get_their_lane_or_the_default_class_policy() {
        let table = MemoryDatapath::default();
        let stored = [(mac(1), entry(Access::Enrolled, 0, 0)), (mac(2), entry(Access::Onboarding, 0, 0))];
        restore(&table, &stored, 40);
        assert_eq!(table.access(mac(1)).unwrap(), Some(entry(Access::Enrolled, 40, 0)));
        assert_eq!(table.access(mac(2)).unwrap(), Some(entry(Access::Onboarding, lane::ONBOARDING, 0)));
    }
}
