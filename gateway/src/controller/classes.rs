//! The class step: every second, enrolled devices go onto the policy of the class the policy
//! files match them to (certificate subject, MAC, the MUD file the device announced, OUI,
//! fingerprint type), recorded in the store. Identity decides *whether* a device is enrolled; the policy files decide *what* an
//! enrolled device may reach.
use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use super::ACTOR_POLICY;
use crate::{
    datapath::{DeviceControl as _, maps::Maps},
    inventory::Ledger,
    policy::{ClassId, CompiledPolicy},
    shutdown::Shutdown,
};

/// How often enrolled devices are matched to their class again, so an enrollment or a new
/// type guess reaches the device table.
pub const CLASSIFY_INTERVAL: Duration = Duration::from_secs(1);

/// Runs `assign_classes` every `CLASSIFY_INTERVAL` with the policy in force, until shutdown.
pub(super) async fn run(
    maps: Arc<Maps>,
    ledger: Ledger,
    policy: tokio::sync::watch::Receiver<Arc<CompiledPolicy>>,
    mut shutdown: Shutdown,
) {
    let ledger = Arc::new(Mutex::new(ledger));
    let mut ticker = tokio::time::interval(CLASSIFY_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = ticker.tick() => {}
        }
        let (maps, ledger, policy) = (maps.clone(), ledger.clone(), policy.borrow().clone());
        let _ = tokio::task::spawn_blocking(move || {
            let mut ledger = ledger.lock().unwrap_or_else(PoisonError::into_inner);
            assign_classes(&maps, &mut ledger, &policy)
        })
        .await;
    }
}

/// Puts every enrolled device on the policy of its class and records it in the store (the
/// device table's source of truth). Returns how many devices changed class.
pub(super) fn assign_classes(maps: &Maps, ledger: &mut Ledger, policy: &CompiledPolicy) -> usize {
    let mut changed = 0;
    for (mac, entry) in maps.devices() {
        if !takes_class_policy(entry.state, entry.policy_id) {
            continue;
        }
        let conn = ledger.connection();
        let record = crate::inventory::query::device(conn, mac).ok().flatten().map(|d| d.device);
        let levels = record.as_ref().map(type_levels).unwrap_or_default();
        let fingerprint: Vec<(&str, f64)> =
            levels.iter().map(|(name, confidence)| (name.as_str(), *confidence)).collect();
        let subject = crate::identity::registry::valid_subject_by_mac(conn, mac).ok().flatten();
        let mud = crate::inventory::mud::class_id(conn, mac).ok().flatten().map(ClassId);
        let Some(class) = policy.classify(mac, &fingerprint, subject.as_deref(), mud) else { continue };
        if (entry.policy_id, entry.class_id) == (class.policy_id.0, class.class_id.0) {
            continue;
        }
        let access = crate::datapath::DeviceAccess {
            access: crate::device::Access::Enrolled,
            policy_id: class.policy_id.0,
            class_id: class.class_id.0,
        };
        match maps.set_access(mac, access) {
            Ok(()) => {
                tracing::info!(device = %mac, class = %class.name, matched_by = ?class.matched_by, "enrolled device put on its class policy");
                let reason = format!("class {} ({:?})", class.name, class.matched_by);
                if let Err(error) = ledger.record_access(mac, access, ACTOR_POLICY, &reason) {
                    tracing::error!(%error, device = %mac, "class policy applied but not recorded in the store");
                }
                changed += 1;
            }
            Err(error) => tracing::warn!(%error, device = %mac, "cannot set the class policy"),
        }
    }
    changed
}

/// The type guess the inventory holds, as (name, confidence) per level: product, vendor,
/// generic type.
fn type_levels(device: &crate::inventory::DeviceRecord) -> Vec<(String, f64)> {
    [
        (&device.device_type, device.type_confidence),
        (&device.type_vendor, device.type_vendor_confidence),
        (&device.generic_type, device.generic_confidence),
    ]
    .into_iter()
    .filter_map(|(name, confidence)| Some((name.clone()?, confidence.unwrap_or(0.0))))
    .collect()
}

/// Whether the class step may (re)assign a device entry's class policy: enrolled devices
/// only, and not one a response put on the quarantine lane's allow-list (`update_lane`),
/// which stays there until an operator releases it.
fn takes_class_policy(state: u8, policy_id: u32) -> bool {
    state == gateway_ebpf::device_state::ENROLLED && policy_id != gateway_ebpf::lane::QUARANTINE
}

#[cfg(test)]
mod tests {
    use gateway_ebpf::{device_state, lane};

    use super::*;

    #[test]
    fn the_class_task_leaves_isolated_and_update_lane_devices_alone() {
        assert!(takes_class_policy(device_state::ENROLLED, lane::FIRST_CLASS_POLICY));
        assert!(takes_class_policy(device_state::ENROLLED, 0), "an enrolled device without a policy yet");
        assert!(!takes_class_policy(device_state::ENROLLED, lane::QUARANTINE), "held on the update lane");
        for state in [device_state::QUARANTINED, device_state::BLOCKED, device_state::ONBOARDING] {
            assert!(!takes_class_policy(state, lane::FIRST_CLASS_POLICY));
        }
    }
}
