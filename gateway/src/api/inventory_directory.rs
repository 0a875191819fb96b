//! `DeviceDirectory` over the real inventory (`crate::inventory::Inventory`, SQLite). Reads
//! the inventory's queries and the baseline store (`baseline_devices`) and turns their
//! records into the API's model; writes access changes with `Inventory::set_access`, which
//! stores the new access and its audit entry in one transaction. Every call blocks on SQLite: the handlers run them on the blocking pool.
//!
//! The inventory audits an access change as `access_changed` with the detail
//! `"<from> -> <to>: <reason>"`; `audit_entry` reads `from` and `to` back out of it, which is
//! what release uses to find the access to restore.
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use time::OffsetDateTime;

use super::{
    device_pages::{BaselineView, Destination, TrafficPoint},
    directory::{AccessChange, DeviceDirectory, DirectoryError, Page},
    model::{AuditEntry, DeviceRecord, DeviceSummary, Fingerprint, FlowRecord},
};
use crate::{
    baseline,
    datapath::DeviceAccess,
    device::{Access, Mac},
    inventory::{
        self, FingerprintKind, Inventory, InventoryError,
        search::{self, AuditQuery, DeviceCounts, DeviceQuery},
    },
};

/// The audit action the inventory records for access changes.
const ACCESS_CHANGED: &str = "access_changed";
/// Who the audit names when the inventory catches up with the datapath's device table.
const ACTOR_DATAPATH: &str = "datapath";
const DATAPATH_SYNC_REASON: &str = "found in the datapath's device table";

/// The inventory, shared with whoever else holds it.
pub struct InventoryDirectory {
    inventory: Arc<Mutex<Inventory>>,
}

impl From<InventoryError> for DirectoryError {
    fn from(error: InventoryError) -> Self {
        DirectoryError::Store(error.to_string())
    }
}

impl InventoryDirectory {
    /// Over an inventory shared with the controller (its pipeline thread takes the same lock).
    pub fn new(inventory: Arc<Mutex<Inventory>>) -> Self {
        Self { inventory }
    }

    /// Over an inventory of the API's own, with its own connection to the store at `path`:
    /// API reads then never wait for the pipeline's batches (WAL lets readers run beside the
    /// writer), and writes wait at most the store's busy timeout.
    pub fn open(path: &Path) -> Result<Self, crate::store::StoreError> {
        // The baseline's tables too: the device page shows what it learnt.
        let conn = crate::store::open(path, &[inventory::MIGRATIONS, baseline::MIGRATIONS])?;
        // Vendors and the classifier only matter for devices first seen through this handle,
        // and actions refuse devices the inventory does not hold.
        let inventory = Inventory::new(conn, inventory::Vendors::empty(), None);
        Ok(Self::new(Arc::new(Mutex::new(inventory))))
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inventory>, DirectoryError> {
        // A panic while holding the inventory may have left it mid-change: refuse rather than
        // serve or write on top of it.
        self.inventory.lock().map_err(|_| DirectoryError::Store("inventory lock poisoned by a panic".into()))
    }
}

/// Reads `"<from> -> <to>: <reason>"` back; `None` for other shapes.
fn access_change(detail: &str) -> Option<(Access, Access)> {
    let (from, rest) = detail.split_once(" -> ")?;
    let to = rest.split_once(':').map_or(rest, |(to, _)| to);
    Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
}

fn audit_entry(entry: inventory::AuditEntry) -> AuditEntry {
    let change = (entry.action == ACCESS_CHANGED).then(|| access_change(&entry.detail)).flatten();
    AuditEntry {
        time: entry.time,
        mac: entry.mac,
        actor: entry.actor,
        action: entry.action,
        from: change.map(|(from, _)| from),
        to: change.map(|(_, to)| to),
        detail: entry.detail,
    }
}

impl DeviceDirectory for InventoryDirectory {
    fn devices(&self, query: &DeviceQuery) -> Result<Page<DeviceSummary>, DirectoryError> {
        let page = search::devices(self.lock()?.connection(), query)?;
        Ok(Page { items: page.items.iter().map(DeviceSummary::from).collect(), next: page.next.map(|c| c.encode()) })
    }

    fn devices_by_state(&self) -> Result<HashMap<Access, u64>, DirectoryError> {
        // One aggregate instead of every device with its addresses and traffic: this runs on
        // each scrape.
        Ok(search::counts_by_access(self.lock()?.connection())?)
    }

    fn counts(&self) -> Result<DeviceCounts, DirectoryError> {
        Ok(search::counts(self.lock()?.connection())?)
    }

    fn device(&self, mac: Mac) -> Result<Option<DeviceRecord>, DirectoryError> {
        let Some(detail) = self.lock()?.device(mac)? else { return Ok(None) };
        let device = &detail.device;
        let (dns, others): (Vec<_>, Vec<_>) =
            detail.fingerprints.iter().partition(|f| f.kind == FingerprintKind::DnsName);
        Ok(Some(DeviceRecord {
            fingerprints: others
                .into_iter()
                .map(|f| Fingerprint { kind: f.kind.as_str().to_owned(), value: f.value.clone() })
                .collect(),
            dns_names: dns.into_iter().map(|f| f.value.clone()).collect(),
            ..DeviceRecord::from(device)
        }))
    }

    fn flows(&self, mac: Mac, limit: usize) -> Result<Vec<FlowRecord>, DirectoryError> {
        Ok(self
            .lock()?
            .flows(mac, limit)?
            .into_iter()
            .map(|f| FlowRecord {
                time: f.time,
                src: f.src,
                src_port: f.src_port,
                dst: f.dst,
                dst_port: f.dst_port,
                proto: f.proto,
                frame_bytes: f.frame_bytes,
                verdict: f.verdict,
                reason: f.reason,
            })
            .collect())
    }

    fn mud(&self, mac: Mac) -> Result<Option<crate::inventory::mud::MudRecord>, DirectoryError> {
        Ok(crate::inventory::mud::device(self.lock()?.connection(), mac)?)
    }

    fn audit_log(&self, mac: Mac, limit: usize) -> Result<Vec<AuditEntry>, DirectoryError> {
        Ok(self.lock()?.audit_log(Some(mac), limit)?.into_iter().map(audit_entry).collect())
    }

    fn audit(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, DirectoryError> {
        let page = search::audit(self.lock()?.connection(), query)?;
        Ok(Page { items: page.items.into_iter().map(audit_entry).collect(), next: page.next.map(|c| c.encode()) })
    }

    fn record_access_change(&self, change: &AccessChange) -> Result<(), DirectoryError> {
        let mut inventory = self.lock()?;
        // A device the datapath holds but the inventory has not seen yet (enrolled before its
        // first flow was recorded) is added, so the API shows what was done to it.
        let known = inventory.device(change.mac)?.map_or(Access::Unknown, |detail| detail.device.access);
        // `change.from` is what the datapath enforced. Another writer of the device table
        // (enrollment, a tool on the router) may have changed it without telling the
        // inventory: record that first, so the isolating entry names the access that release
        // must restore rather than the inventory's stale one.
        if known != change.from {
            inventory.set_access(change.mac, change.from, ACTOR_DATAPATH, DATAPATH_SYNC_REASON)?;
        }
        // The inventory wants a reason; the action names itself when the caller gave none.
        let reason = if change.reason.trim().is_empty() {
            change.action.clone()
        } else {
            format!("{}: {}", change.action, change.reason)
        };
        let enforced = DeviceAccess { access: change.to, policy_id: change.policy_id, class_id: change.class_id };
        inventory.record_access(change.mac, enforced, &change.actor, &reason)?;
        Ok(())
    }

    fn traffic(
        &self,
        mac: Mac,
        since: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<TrafficPoint>, DirectoryError> {
        let rows = inventory::query::traffic_between(self.lock()?.connection(), mac, since, until, limit)?;
        Ok(rows
            .into_iter()
            .map(|t| TrafficPoint {
                start: t.start,
                seconds: t.seconds,
                tx_bytes: t.tx_bytes,
                tx_packets: t.tx_packets,
                rx_bytes: t.rx_bytes,
                rx_packets: t.rx_packets,
            })
            .collect())
    }

    fn destinations(&self, mac: Mac, limit: usize) -> Result<Vec<Destination>, DirectoryError> {
        let rows = inventory::destinations::destinations(self.lock()?.connection(), mac, limit)?;
        Ok(rows
            .into_iter()
            .map(|d| Destination {
                dst: d.dst,
                dst_port: d.dst_port,
                proto: d.proto,
                names: d.names,
                flows: d.flows,
                bytes: d.bytes,
                last_seen: d.last_seen,
                verdict: d.verdict,
            })
            .collect())
    }

    fn baseline(&self, mac: Mac) -> Result<Option<BaselineView>, DirectoryError> {
        let store_error = |error: &dyn std::fmt::Display| DirectoryError::Store(error.to_string());
        let inventory = self.lock()?;
        let stored =
            baseline::store::load_device_stamped(inventory.connection(), mac).map_err(|error| store_error(&error))?;
        let learned: Vec<serde_json::Value> = baseline::learned::load_device(inventory.connection(), mac)
            .map_err(|error| store_error(&error))?
            .into_iter()
            .map(|exception| {
                serde_json::json!({
                    "alert_id": exception.alert_id,
                    "description": baseline::learned::describe(&exception.observation),
                    "observation": exception.observation,
                })
            })
            .collect();
        let Some((record, updated_at)) = stored else {
            return Ok((!learned.is_empty()).then(|| BaselineView { learned, ..BaselineView::none() }));
        };
        let profile = serde_json::to_value(record.baseline.profile()).map_err(|error| store_error(&error))?;
        Ok(Some(BaselineView {
            state: record.baseline.state_name().to_owned(),
            class: record.class,
            // Written by SQLite's strftime: a bad value is a hand-edited row, shown as unknown.
            updated_at: OffsetDateTime::parse(&updated_at, &time::format_description::well_known::Rfc3339).ok(),
            profile: Some(profile),
            learned,
        }))
    }

    fn record_audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), DirectoryError> {
        Ok(self.lock()?.audit(actor, None, action, detail)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_on_a_device_enrolled_behind_the_inventorys_back_audits_the_enforced_access() {
        let scratch = iotgw_test_support::services::scratch("invdir");
        let path = scratch.join("invdir.db");
        let directory = InventoryDirectory::open(&path).expect("store");
        let mac: Mac = "00:17:88:12:34:56".parse().expect("mac");
        // Seen by the inventory as unknown; the datapath meanwhile enrolled it.
        directory.lock().expect("lock").set_access(mac, Access::Unknown, "test", "seen").expect("device");
        let change = AccessChange {
            mac,
            action: "quarantine".into(),
            from: Access::Enrolled,
            to: Access::Quarantined,
            policy_id: 36,
            class_id: 20,
            actor: "api:otto".into(),
            reason: "incident".into(),
        };
        directory.record_access_change(&change).expect("recorded");
        let audit = directory.audit_log(mac, 10).expect("audit");
        assert_eq!(super::super::actions::restore_access(&audit), Some(Access::Enrolled), "{audit:?}");
        assert_eq!(
            (audit[0].actor.as_str(), audit[0].from, audit[0].to),
            ("api:otto", Some(Access::Enrolled), Some(Access::Quarantined))
        );
        assert_eq!(
            (audit[1].actor.as_str(), audit[1].from, audit[1].to),
            (ACTOR_DATAPATH, Some(Access::Unknown), Some(Access::Enrolled))
        );
        assert_eq!(directory.device(mac).expect("read").expect("device").summary.state, Access::Quarantined);
        let enforced = directory.lock().expect("lock").enforced().expect("enforced");
        assert_eq!(enforced, vec![(mac, DeviceAccess { access: Access::Quarantined, policy_id: 36, class_id: 20 })]);
    }

    #[test]
    fn access_change_details_are_read_back() {
        assert_eq!(
            access_change("enrolled -> quarantined: quarantine: INC-1"),
            Some((Access::Enrolled, Access::Quarantined))
        );
        assert_eq!(access_change("blocked -> unknown: release"), Some((Access::Blocked, Access::Unknown)));
        assert_eq!(access_change("vendor Arlo"), None);
        assert_eq!(access_change("class: - -> camera"), None);
    }
}
