//! The XDP datapath seen from userspace: `config` is its `[datapath]` section (`capacity`
//! the maps' sizes and what they cost), `interface` reads the host's interfaces, `loader`
//! loads and attaches the programs and pins the maps (`lan_egress` attaches the TC program
//! that sees the gateway's own DNS answers), `events` decodes the ring buffer,
//! `maps` is the only writer of BPF maps (`batch` reads whole maps in chunks and carries the
//! policy sync's batched writes, `fill` says how full they are, `slots` hands out the devices'
//! counter slots, `sweep` reads the counters of the devices that changed), `budget`
//! writes the per-device budgets XDP reports crossings of,
//! `xdp_log` forwards the programs' own (rare) log lines into `tracing`, `restore` rebuilds the
//! device table from the store at start-up, `traffic` counts bytes and packets per device, and
//! `replay` imitates the LAN program over captures (offline analysis, training, tests).
//!
//! Controller steps never touch maps: they ask through `DeviceControl`, which `maps::Maps`
//! implements over the pinned maps (and `MemoryDatapath` in memory, for unit tests and
//! offline analysis).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::device::{Access, Mac};

pub mod batch;
pub mod budget;
pub mod capacity;
pub mod capture;
pub mod config;
pub mod events;
pub mod fill;
pub mod interface;
pub mod lan_egress;
pub mod loader;
pub mod maps;
pub mod replay;
pub mod restore;
pub mod slots;
pub mod sweep;
pub mod traffic;
pub mod xdp_log;

pub use config::{AttachMode, DatapathConfig};

/// Why a datapath change failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The kernel refused a map update (full map, missing pin, ...).
    #[error("map {map}: {message}")]
    Map { map: &'static str, message: String },
}

/// What a device may do, as the datapath enforces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceAccess {
    pub access: Access,
    /// Policy id (`gateway_ebpf::lane::FIRST_CLASS_POLICY` and up) applied when enrolled.
    pub policy_id: u32,
    /// Device class id, 0 when unclassified.
    pub class_id: u16,
}

/// The datapath operations the controller steps need. Takes effect in XDP as soon as the
/// call returns.
pub trait DeviceControl: Send + Sync {
    /// Sets what `mac` may do. `Access::Unknown` removes the device from the table.
    fn set_access(&self, mac: Mac, access: DeviceAccess) -> Result<(), ControlError>;
    /// `set_access` for each of `entries` (the restore at start-up writes the whole store): a
    /// datapath may settle once at the end what every write needs. One result per entry.
    fn set_accesses(&self, entries: &[(Mac, DeviceAccess)]) -> Vec<Result<(), ControlError>> {
        entries.iter().map(|&(mac, access)| self.set_access(mac, access)).collect()
    }
    /// What the datapath enforces for `mac` now.
    fn access(&self, mac: Mac) -> Result<Option<DeviceAccess>, ControlError>;
    /// Records which device holds an IPv4 address, so upstream traffic towards it is checked.
    fn set_device_ipv4(&self, mac: Mac, addr: std::net::Ipv4Addr) -> Result<(), ControlError>;
    /// Sets what `mac` may send before XDP reports it (`None`: no budget).
    fn set_budget(&self, mac: Mac, budget: Option<budget::Budget>) -> Result<(), ControlError>;
}

/// Shared handle to the datapath.
pub type Control = Arc<dyn DeviceControl>;

/// Where a component records the device-table changes it made: the store, through
/// `Inventory::record_access`, the one audited path (`access_changed` entries) and the
/// source the controller rebuilds the table from at every start (`restore`).
pub trait AccessLedger: Send {
    /// Records that the datapath now enforces `enforced` for `mac`, because `actor` decided
    /// it for `reason`.
    fn record_change(&mut self, mac: Mac, enforced: DeviceAccess, actor: &str, reason: &str) -> Result<(), String>;
}

/// An in-memory datapath: for unit tests and offline analysis, where no XDP runs.
#[derive(Default)]
pub struct MemoryDatapath {
    devices: Mutex<HashMap<Mac, DeviceAccess>>,
    ipv4: Mutex<HashMap<std::net::Ipv4Addr, Mac>>,
    budgets: Mutex<HashMap<Mac, budget::Budget>>,
}

impl MemoryDatapath {
    /// The budget set for `mac`, as XDP would count against it.
    pub fn budget(&self, mac: Mac) -> Option<budget::Budget> {
        self.budgets.lock().expect("lock poisoned only by a panic elsewhere").get(&mac).copied()
    }
}

impl DeviceControl for MemoryDatapath {
    fn set_access(&self, mac: Mac, access: DeviceAccess) -> Result<(), ControlError> {
        let mut devices = self.devices.lock().expect("lock poisoned only by a panic elsewhere");
        if access.access == Access::Unknown {
            devices.remove(&mac);
        } else {
            devices.insert(mac, access);
        }
        Ok(())
    }

    fn access(&self, mac: Mac) -> Result<Option<DeviceAccess>, ControlError> {
        Ok(self.devices.lock().expect("lock poisoned only by a panic elsewhere").get(&mac).copied())
    }

    fn set_device_ipv4(&self, mac: Mac, addr: std::net::Ipv4Addr) -> Result<(), ControlError> {
        self.ipv4.lock().expect("lock poisoned only by a panic elsewhere").insert(addr, mac);
        Ok(())
    }

    fn set_budget(&self, mac: Mac, budget: Option<budget::Budget>) -> Result<(), ControlError> {
        let mut budgets = self.budgets.lock().expect("lock poisoned only by a panic elsewhere");
        match budget {
            Some(budget) => budgets.insert(mac, budget),
            None => budgets.remove(&mac),
        };
        Ok(())
    }
}
