//! The class step: every second, enrolled devices go onto the policy of the class the policy
//! files match them to (certificate subject, MAC, the MUD file the device announced, OUI,
//! fingerprint type), recorded in the store. Identity decides *whether* a device is enrolled; the policy files decide *what* an
//! enrolled device may reach.
//!
//! At 100,000 devices a pass costs seconds of CPU (issue 19), so it reads what it matches by
//! for every device in three queries, and a tick whose inputs are as the last pass left them
//! (the policy in force, the device table, the store as other connections wrote it) is skipped.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use rusqlite::Connection;

use super::ACTOR_POLICY;
use crate::{
    datapath::{DeviceControl as _, maps::Maps},
    device::Mac,
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
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The inputs the last pass that changed nothing saw.
    let mut settled: Option<Inputs> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = ticker.tick() => {}
        }
        let (maps, ledger, policy) = (maps.clone(), ledger.clone(), policy.borrow().clone());
        let last = settled.take();
        let pass = tokio::task::spawn_blocking(move || {
            let mut ledger = ledger.lock().unwrap_or_else(PoisonError::into_inner);
            let inputs = Inputs::now(&maps, &ledger, &policy);
            if inputs.is_some() && inputs == last {
                return inputs;
            }
            let changed = assign_classes(&maps, &mut ledger, &policy);
            inputs.filter(|_| changed == 0)
        });
        settled = pass.await.ok().flatten();
    }
}

/// What a pass's outcome depends on: the policy in force (by identity), the writes to the
/// device table, and the store's `data_version` (which moves when another connection commits;
/// this step's own connection writes only what it decided).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inputs {
    policy: usize,
    device_writes: u64,
    store_version: i64,
}

impl Inputs {
    /// None when the store cannot say its version: the pass then always runs.
    fn now(maps: &Maps, ledger: &Ledger, policy: &Arc<CompiledPolicy>) -> Option<Self> {
        let store_version = ledger.connection().query_row("PRAGMA data_version", [], |row| row.get(0)).ok()?;
        Some(Self { policy: Arc::as_ptr(policy) as usize, device_writes: maps.device_table_writes(), store_version })
    }
}

/// Puts every enrolled device on the policy of its class and records it in the store (the
/// device table's source of truth). Returns how many devices changed class.
pub(super) fn assign_classes(maps: &Maps, ledger: &mut Ledger, policy: &CompiledPolicy) -> usize {
    let mut changed = 0;
    let known = match class_inputs(ledger.connection()) {
        Ok(known) => known,
        Err(error) => {
            tracing::warn!(%error, "cannot read what devices are matched to classes by");
            return 0;
        }
    };
    for (mac, entry) in maps.devices() {
        if !takes_class_policy(entry.state, entry.policy_id) {
            continue;
        }
        let device = known.get(&mac).cloned().unwrap_or_default();
        let fingerprint: Vec<(&str, f64)> =
            device.levels.iter().map(|(name, confidence)| (name.as_str(), *confidence)).collect();
        let Some(class) = policy.classify(mac, &fingerprint, device.subject.as_deref(), device.mud.map(ClassId)) else {
            continue;
        };
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

/// What the policy files match one device by.
#[derive(Clone, Debug, Default)]
struct ClassInputs {
    /// The type guess the inventory holds, as (name, confidence) per level: product,
    /// vendor, generic type.
    levels: Vec<(String, f64)>,
    /// The subject of its newest valid certificate.
    subject: Option<String>,
    /// The class of the MUD file it announced.
    mud: Option<u16>,
}

/// `ClassInputs` of every device the store knows, in three queries (a device missing from
/// them has none: no type guess, certificate or MUD class), each from the table's owner.
fn class_inputs(conn: &Connection) -> anyhow::Result<HashMap<Mac, ClassInputs>> {
    let mut all: HashMap<Mac, ClassInputs> = HashMap::new();
    for (mac, levels) in crate::inventory::query::type_levels(conn)? {
        all.entry(mac).or_default().levels = levels;
    }
    for (mac, subject) in crate::identity::registry::valid_subjects_by_mac(conn)? {
        all.entry(mac).or_default().subject = Some(subject);
    }
    for (mac, class_id) in crate::inventory::mud::class_ids(conn)? {
        all.entry(mac).or_default().mud = Some(class_id);
    }
    Ok(all)
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
