//! The operator actions (quarantine, release, block) as a sync core: given what the datapath
//! enforces now and the device's audit history, decide the access to set. Reads nothing and
//! writes nothing itself; the handler enforces the plan through `datapath::Control` and records
//! it through the `DeviceDirectory`.
//!
//! Release restores the access the device had before it was isolated. That access is not
//! stored separately: the audit log already says it (the `from` of the entry that first moved
//! the device into quarantine or block), so the history and the restore target cannot drift.
//!
//! `apply` runs a whole action (read, decide, enforce, record) synchronously; the API calls it
//! on the blocking pool, and other callers (SOAR, `respond`) can call it the same way, so
//! every quarantine lands in the same audit log and release finds it.
use std::{fmt, str::FromStr};

use gateway_ebpf::lane;

use super::{
    directory::{AccessChange, DeviceDirectory, DirectoryError},
    model::AuditEntry,
};
use crate::{
    datapath::{ControlError, DeviceAccess, DeviceControl},
    device::{Access, Mac},
};

/// Audit entries searched for the isolating change when releasing. A device collects a few
/// entries while isolated; beyond this many, release falls back to `fallback_restore`.
pub const AUDIT_SCAN_LIMIT: usize = 10_000;

/// An action an operator may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quarantine,
    Release,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Quarantine => "quarantine",
            Action::Release => "release",
            Action::Block => "block",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "quarantine" => Ok(Action::Quarantine),
            "release" => Ok(Action::Release),
            "block" => Ok(Action::Block),
            other => Err(format!("unknown action {other:?} (quarantine, release or block)")),
        }
    }
}

/// Why an action cannot apply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionError {
    /// Release of a device that is neither quarantined nor blocked.
    #[error("device is {0}, not quarantined or blocked: nothing to release")]
    NotIsolated(Access),
}

/// What an action does to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub from: Access,
    pub to: Access,
}

impl Plan {
    /// False when the device already has the access asked for.
    pub fn changes(&self) -> bool {
        self.from != self.to
    }
}

/// Quarantine or block: the device is cut off from its normal policy.
pub fn is_isolated(access: Access) -> bool {
    matches!(access, Access::Quarantined | Access::Blocked)
}

/// The access a release restores, from the audit log (newest first): the `from` of the most
/// recent entry that moved the device from a normal state into isolation.
pub fn restore_access(audit: &[AuditEntry]) -> Option<Access> {
    audit.iter().find_map(|entry| match (entry.from, entry.to) {
        (Some(from), Some(to)) if is_isolated(to) && !is_isolated(from) => Some(from),
        _ => None,
    })
}

/// When the audit log does not say (the device was isolated before the log existed, or by a
/// writer that did not record it): a device with a class policy in the datapath was enrolled;
/// anything else goes back to onboarding, never to more access than it could have had.
pub fn fallback_restore(policy_id: u32) -> Access {
    if policy_id >= lane::FIRST_CLASS_POLICY { Access::Enrolled } else { Access::Onboarding }
}

/// Decides the access to set. `current` is what the datapath enforces now; `restore` is what
/// a release goes back to.
pub fn plan(action: Action, current: Access, restore: Access) -> Result<Plan, ActionError> {
    let to = match action {
        Action::Quarantine => Access::Quarantined,
        Action::Block => Access::Blocked,
        Action::Release if is_isolated(current) => restore,
        Action::Release => return Err(ActionError::NotIsolated(current)),
    };
    Ok(Plan { from: current, to })
}

/// Why `apply` did not change the device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error("no device {0} in the inventory")]
    UnknownDevice(Mac),
    #[error(transparent)]
    Refused(#[from] ActionError),
    /// The datapath refused the change; nothing was recorded.
    #[error("the datapath refused the change: {0}")]
    Datapath(#[from] ControlError),
    /// The change could not be recorded; the datapath change was undone.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// What `apply` does with a device neither the inventory nor the datapath holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownDevices {
    /// Refuse (`ApplyError::UnknownDevice`): an operator names devices the API lists.
    Refuse,
    /// Act and add the device to the inventory: a playbook may isolate a MAC its SIEM saw
    /// elsewhere before the device sends its first frame here.
    Admit,
}

/// What `apply` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub plan: Plan,
    /// False when the device already had that access (nothing enforced or recorded).
    pub changed: bool,
}

/// Runs `action` on `mac` (known to the inventory or the datapath, or any MAC with
/// `UnknownDevices::Admit`): reads what the datapath enforces and the audit log, decides,
/// enforces through `control`, then records the change with `actor` and `reason`. If the
/// record fails, the datapath change is undone, so no enforcement goes unaudited. Blocks on
/// the store: call it off the async runtime. Callers serialize actions on one device.
pub fn apply(
    directory: &dyn DeviceDirectory,
    control: &dyn DeviceControl,
    mac: Mac,
    action: Action,
    actor: &str,
    reason: &str,
    unknown: UnknownDevices,
) -> Result<Outcome, ApplyError> {
    let enforced = control.access(mac)?;
    // A device is known when the inventory or the datapath holds it: a playbook or the identity
    // service may have put it in the device table before the inventory saw its first frame.
    if unknown == UnknownDevices::Refuse && enforced.is_none() && directory.device(mac)?.is_none() {
        return Err(ApplyError::UnknownDevice(mac));
    }
    let current = enforced.map_or(Access::Unknown, |e| e.access);
    // Isolation keeps the class policy and class id in the device entry, so release can give
    // them back.
    let (policy_id, class_id) = enforced.map_or((0, 0), |e| (e.policy_id, e.class_id));
    let restore = if is_isolated(current) {
        restore_access(&directory.audit_log(mac, AUDIT_SCAN_LIMIT)?).unwrap_or_else(|| fallback_restore(policy_id))
    } else {
        current
    };
    let plan = plan(action, current, restore)?;
    if !plan.changes() {
        return Ok(Outcome { plan, changed: false });
    }
    control.set_access(mac, DeviceAccess { access: plan.to, policy_id, class_id })?;
    let change = AccessChange {
        mac,
        action: action.as_str().to_owned(),
        from: plan.from,
        to: plan.to,
        policy_id,
        class_id,
        actor: actor.to_owned(),
        reason: reason.to_owned(),
    };
    if let Err(error) = directory.record_access_change(&change) {
        let previous = enforced.unwrap_or(DeviceAccess { access: Access::Unknown, policy_id, class_id });
        if let Err(undo) = control.set_access(mac, previous) {
            tracing::error!(device = %mac, error = %undo, "cannot undo an unrecorded datapath change");
        }
        return Err(error.into());
    }
    Ok(Outcome { plan, changed: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(from: Access, to: Access) -> AuditEntry {
        AuditEntry {
            time: time::OffsetDateTime::UNIX_EPOCH,
            mac: None,
            actor: "api:test".into(),
            action: "x".into(),
            from: Some(from),
            to: Some(to),
            detail: String::new(),
        }
    }

    #[test]
    fn release_after_quarantine_then_block_restores_the_state_before_quarantine() {
        // Newest first: enrolled -> quarantined -> blocked.
        let audit = [entry(Access::Quarantined, Access::Blocked), entry(Access::Enrolled, Access::Quarantined)];
        assert_eq!(restore_access(&audit), Some(Access::Enrolled));
    }

    #[test]
    fn restore_follows_the_latest_isolation() {
        let audit = [
            entry(Access::Onboarding, Access::Quarantined),
            entry(Access::Quarantined, Access::Onboarding),
            entry(Access::Enrolled, Access::Quarantined),
        ];
        assert_eq!(restore_access(&audit), Some(Access::Onboarding));
        assert_eq!(restore_access(&[]), None);
    }

    #[test]
    fn release_of_a_device_not_isolated_is_refused() {
        assert_eq!(
            plan(Action::Release, Access::Enrolled, Access::Enrolled),
            Err(ActionError::NotIsolated(Access::Enrolled))
        );
    }

    #[test]
    fn quarantine_twice_changes_nothing_the_second_time() {
        let first = plan(Action::Quarantine, Access::Enrolled, Access::Enrolled).unwrap();
        assert!(first.changes());
        let second = plan(Action::Quarantine, first.to, Access::Enrolled).unwrap();
        assert!(!second.changes());
    }

    #[test]
    fn fallback_never_grants_enrollment_without_a_class_policy() {
        assert_eq!(fallback_restore(0), Access::Onboarding);
        assert_eq!(fallback_restore(lane::QUARANTINE), Access::Onboarding);
        assert_eq!(fallback_restore(lane::FIRST_CLASS_POLICY), Access::Enrolled);
    }
}
