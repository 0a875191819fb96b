//! From desired access to datapath changes: the identity component's enforcement plan.
//!
//! A sync core: `plan` takes what the registry says each MAC deserves and what the datapath
//! holds now, and returns the `set_access` calls to make. It remembers what it enforced, so
//! it changes only what moved, and it never lifts a quarantine or block that another
//! component (respond, an operator) put in place — it only ever adds its own block.
use std::collections::HashMap;

use gateway_ebpf::lane;

use crate::{
    datapath::DeviceAccess,
    device::{Access, Mac},
};

/// One datapath change, with what it replaces (for the event trail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub mac: Mac,
    pub from: Option<Access>,
    pub to: DeviceAccess,
}

/// Remembers what identity enforced per MAC.
pub struct Enforcer {
    enforced: HashMap<Mac, Access>,
    /// Policy applied to an enrolled device whose class policy is not known yet.
    enrolled_policy: u32,
}

impl Enforcer {
    pub fn new(enrolled_policy: u32) -> Self {
        Enforcer { enforced: HashMap::new(), enrolled_policy }
    }

    /// The changes that make the datapath match `desired`. `current` reads the datapath.
    /// Call `applied` for each change that took effect.
    pub fn plan(&mut self, desired: &[(Mac, Access)], current: impl Fn(Mac) -> Option<DeviceAccess>) -> Vec<Change> {
        let mut changes = Vec::new();
        for &(mac, want) in desired {
            if self.enforced.get(&mac) == Some(&want) {
                continue;
            }
            let now = current(mac);
            let now_access = now.map_or(Access::Unknown, |d| d.access);
            if now_access == want {
                self.enforced.insert(mac, want);
                continue;
            }
            let set_by_others = matches!(now_access, Access::Quarantined | Access::Blocked) && self.enforced.get(&mac) != Some(&now_access);
            if set_by_others && want != Access::Blocked {
                continue;
            }
            let keep_class = now.map_or(0, |d| d.class_id);
            let to = match want {
                Access::Enrolled => DeviceAccess {
                    access: want,
                    // A class policy chosen elsewhere (policy, fingerprint) survives re-enrollment.
                    policy_id: now.map(|d| d.policy_id).filter(|p| *p >= lane::FIRST_CLASS_POLICY).unwrap_or(self.enrolled_policy),
                    class_id: keep_class,
                },
                Access::Blocked => DeviceAccess { access: want, policy_id: now.map_or(lane::ONBOARDING, |d| d.policy_id), class_id: keep_class },
                _ => DeviceAccess { access: want, policy_id: lane::ONBOARDING, class_id: keep_class },
            };
            changes.push(Change { mac, from: now.map(|d| d.access), to });
        }
        changes
    }

    /// Records that `change` is now in force.
    pub fn applied(&mut self, change: &Change) {
        self.enforced.insert(change.mac, change.to.access);
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, last])
    }

    fn entry(access: Access, policy_id: u32) -> DeviceAccess {
        DeviceAccess { access, policy_id, class_id: 3 }
    }

    #[test]
    fn enrolled_keeps_a_class_policy_and_onboarding_uses_the_lane() {
        let mut enforcer = Enforcer::new(lane::FIRST_CLASS_POLICY);
        let plan = enforcer.plan(&[(mac(1), Access::Enrolled)], |_| Some(entry(Access::Onboarding, 40)));
        assert_eq!(plan[0].to, DeviceAccess { access: Access::Enrolled, policy_id: 40, class_id: 3 });
        let plan = enforcer.plan(&[(mac(1), Access::Enrolled)], |_| None);
        assert_eq!(plan[0].to.policy_id, lane::FIRST_CLASS_POLICY);
        let plan = enforcer.plan(&[(mac(1), Access::Onboarding)], |_| Some(entry(Access::Enrolled, 40)));
        assert_eq!(plan[0].to, DeviceAccess { access: Access::Onboarding, policy_id: lane::ONBOARDING, class_id: 3 });
    }

    #[test]
    fn unchanged_desires_make_no_calls() {
        let mut enforcer = Enforcer::new(lane::FIRST_CLASS_POLICY);
        let plan = enforcer.plan(&[(mac(1), Access::Enrolled)], |_| None);
        enforcer.applied(&plan[0]);
        assert!(enforcer.plan(&[(mac(1), Access::Enrolled)], |_| None).is_empty());
    }

    #[test]
    fn quarantine_by_others_is_not_lifted_but_clone_block_applies() {
        let mut enforcer = Enforcer::new(lane::FIRST_CLASS_POLICY);
        let quarantined = |_| Some(entry(Access::Quarantined, lane::QUARANTINE));
        assert!(enforcer.plan(&[(mac(1), Access::Enrolled)], quarantined).is_empty());
        assert_eq!(enforcer.plan(&[(mac(1), Access::Blocked)], quarantined)[0].to.access, Access::Blocked);
    }

    #[test]
    fn own_block_is_lifted_when_the_hold_clears() {
        let mut enforcer = Enforcer::new(lane::FIRST_CLASS_POLICY);
        let plan = enforcer.plan(&[(mac(1), Access::Blocked)], |_| None);
        enforcer.applied(&plan[0]);
        let plan = enforcer.plan(&[(mac(1), Access::Unknown)], |_| Some(entry(Access::Blocked, 1)));
        assert_eq!(plan[0].to.access, Access::Unknown);
    }

    #[test]
    fn unknown_mac_absent_from_table_needs_nothing() {
        let mut enforcer = Enforcer::new(lane::FIRST_CLASS_POLICY);
        assert!(enforcer.plan(&[(mac(1), Access::Unknown)], |_| None).is_empty());
    }
}
