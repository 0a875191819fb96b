//! Where the API reads devices and records changes: the `DeviceDirectory` trait, implemented
//! over the inventory (SQLite). Calls block (they hit the store), so handlers run them with
//! `spawn_blocking`, off the async runtime.
//!
//! Also where the running policy is read from: `PolicySource`, which the policy component
//! updates on every reload.
use std::{collections::HashMap, sync::Arc};

use time::OffsetDateTime;

use super::{
    device_pages::{BaselineView, Destination, TrafficPoint},
    model::{AuditEntry, DeviceRecord, DeviceSummary, FlowRecord, PolicySnapshot},
};
use crate::{
    device::{Access, Mac},
    inventory::search::{self, AuditQuery, DeviceCounts, DeviceQuery},
};

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The store failed (I/O, corruption, locked for too long).
    #[error("inventory store: {0}")]
    Store(String),
    /// A change concerns a device the inventory does not hold.
    #[error("no device {0} in the inventory")]
    UnknownDevice(Mac),
}

/// A change of what a device may do, with who asked and why: one audit entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessChange {
    pub mac: Mac,
    /// `quarantine`, `release` or `block`.
    pub action: String,
    pub from: Access,
    pub to: Access,
    /// Policy and class the device entry keeps (the store records them with the access, so
    /// a restart restores them).
    pub policy_id: u32,
    pub class_id: u16,
    /// `api:<token name>`.
    pub actor: String,
    pub reason: String,
}

/// One page of a list and the cursor of the next (`None` on the last page).
pub type Page<T> = search::Page<T, String>;

/// The inventory as the API sees it.
pub trait DeviceDirectory: Send + Sync + 'static {
    /// One page of devices (`search::devices`).
    fn devices(&self, query: &DeviceQuery) -> Result<Page<DeviceSummary>, DirectoryError>;
    /// Number of devices by lifecycle state.
    fn devices_by_state(&self) -> Result<HashMap<Access, u64>, DirectoryError>;
    /// Device counts by state, type and class.
    fn counts(&self) -> Result<DeviceCounts, DirectoryError>;
    fn device(&self, mac: Mac) -> Result<Option<DeviceRecord>, DirectoryError>;
    /// The device's most recent flows, newest first, at most `limit`.
    fn flows(&self, mac: Mac, limit: usize) -> Result<Vec<FlowRecord>, DirectoryError>;
    /// The MUD URL the device announced and what came of it; `None` if it never announced one.
    fn mud(&self, mac: Mac) -> Result<Option<crate::inventory::mud::MudRecord>, DirectoryError>;
    /// The device's audit log, newest first, at most `limit` entries.
    fn audit_log(&self, mac: Mac, limit: usize) -> Result<Vec<AuditEntry>, DirectoryError>;
    /// One page of the audit log of every device, newest first (`search::audit`).
    fn audit(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, DirectoryError>;
    /// Records the device's new state and the audit entry, in one transaction.
    fn record_access_change(&self, change: &AccessChange) -> Result<(), DirectoryError>;
    /// The device's traffic buckets starting in `[since, until)`, oldest first: the newest
    /// `limit` when there are more.
    fn traffic(
        &self,
        mac: Mac,
        since: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<TrafficPoint>, DirectoryError>;
    /// Where the device connects, busiest first, at most `limit`.
    fn destinations(&self, mac: Mac, limit: usize) -> Result<Vec<Destination>, DirectoryError>;
    /// What the baseline stored for the device; `None` when nothing yet.
    fn baseline(&self, mac: Mac) -> Result<Option<BaselineView>, DirectoryError>;
    /// Records an audit entry about no device (console sign-in, sign-out, revocation).
    fn record_audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), DirectoryError>;
}

/// The running policy as the API shows it (`policy_view::SharedPolicy`).
pub trait PolicySource: Send + Sync + 'static {
    /// Shared, not copied: a view of 10,000 rules is large. May be built on the call, so
    /// handlers call it on the blocking pool.
    fn snapshot(&self) -> Arc<PolicySnapshot>;
    /// The running policy's version alone (`/status` asks for it on every call).
    fn version(&self) -> Option<String> {
        self.snapshot().version.clone()
    }
}
