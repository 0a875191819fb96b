//! Where the API reads devices and records changes: the `DeviceDirectory` trait, implemented
//! over the inventory (SQLite). Calls block (they hit the store), so handlers run them with
//! `spawn_blocking`, off the async runtime.
//!
//! Also where the running policy is read from: `PolicySource`, which the policy component
//! updates on every reload.
use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
};

use super::model::{AuditEntry, DeviceRecord, DeviceSummary, FlowRecord, PolicySnapshot};
use crate::device::{Access, Mac};

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

/// The inventory as the API sees it.
pub trait DeviceDirectory: Send + Sync + 'static {
    /// Every device, in MAC order.
    fn devices(&self) -> Result<Vec<DeviceSummary>, DirectoryError>;
    /// Number of devices by lifecycle state.
    fn devices_by_state(&self) -> Result<HashMap<Access, u64>, DirectoryError> {
        let mut counts = HashMap::new();
        for device in self.devices()? {
            *counts.entry(device.state).or_insert(0) += 1;
        }
        Ok(counts)
    }
    fn device(&self, mac: Mac) -> Result<Option<DeviceRecord>, DirectoryError>;
    /// The device's most recent flows, newest first, at most `limit`.
    fn flows(&self, mac: Mac, limit: usize) -> Result<Vec<FlowRecord>, DirectoryError>;
    /// The device's audit log, newest first, at most `limit` entries.
    fn audit_log(&self, mac: Mac, limit: usize) -> Result<Vec<AuditEntry>, DirectoryError>;
    /// Records the device's new state and the audit entry, in one transaction.
    fn record_access_change(&self, change: &AccessChange) -> Result<(), DirectoryError>;
}

/// The running policy as the API shows it.
pub trait PolicySource: Send + Sync + 'static {
    fn snapshot(&self) -> PolicySnapshot;
}

/// A `PolicySource` the policy component sets after every reload (accepted or refused).
#[derive(Debug, Default)]
pub struct SharedPolicy(RwLock<PolicySnapshot>);

impl SharedPolicy {
    pub fn set(&self, snapshot: PolicySnapshot) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    /// Records a refused reload, keeping the running policy.
    pub fn refused(&self, why: String) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).last_refused = Some(why);
    }
}

impl PolicySource for SharedPolicy {
    fn snapshot(&self) -> PolicySnapshot {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
