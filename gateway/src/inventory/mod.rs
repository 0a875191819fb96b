//! The device inventory: every device seen, with its addresses, vendor, fingerprints,
//! device-type guess, access and lifecycle state, class, firmware, identity, recent flows,
//! traffic over time, and an audit log of every state change with who or what caused it.
//!
//! Reads `DatapathEvent`s (live from the ring buffer, or from `datapath::replay` offline) and
//! calls from other components (`record_access`, `set_identity`, ...); writes the
//! `inventory_*` tables of the store. `Inventory` is a sync core over one
//! `rusqlite::Connection`: run it on a thread of its own (SQLite calls block), feed it, and
//! publish the `InventoryChange`s it returns.
//!
//! - `schema`: the tables;
//! - `ingest`: events and counters → devices, addresses, fingerprints, flows, traffic;
//! - `classify`: the device-type guess;
//! - `ledger`: what the datapath enforces and the audit trail, the one path every component
//!   writes them through;
//! - `query` and `records`: the read queries and the serde structs they return (the API's JSON);
//! - `search`: the console's filtered, sorted and paged reads, and the overview's counts;
//! - `destinations`: where a device connects, busiest first, with the names it resolved;
//! - `mud`: the MUD URL a device announced, the last check's outcome and the file in force;
//! - `vendor`: IEEE OUI registry lookups.
use std::{collections::HashMap, net::IpAddr, time::Duration, time::SystemTime};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    device::Mac,
    fingerprint::{Classifier, DeviceFeatures},
};

mod classify;
pub mod destinations;
mod ingest;
pub mod ledger;
pub mod mud;
pub mod query;
pub mod records;
mod schema;
pub mod search;
pub mod vendor;

pub use ledger::Ledger;
pub use records::*;
pub use schema::MIGRATIONS;
pub use vendor::Vendors;

/// Actor recorded for changes the inventory makes from traffic.
pub const ACTOR_INVENTORY: &str = "inventory";
/// Actor recorded for device-type changes.
pub const ACTOR_FINGERPRINT: &str = "fingerprint";
/// Flows kept per device; older ones are deleted as new ones arrive.
pub const DEFAULT_FLOWS_PER_DEVICE: usize = 1_000;
/// Traffic rows are kept per bucket of this length (counters are added into it).
pub const DEFAULT_TRAFFIC_BUCKET: Duration = Duration::from_secs(60);
/// Traffic rows older than this (relative to the device's newest) are deleted.
pub const DEFAULT_TRAFFIC_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Addresses kept per device: a device spoofing sources must not grow the table.
pub const MAX_ADDRESSES_PER_DEVICE: usize = 32;
/// Distinct values kept per device and fingerprint kind (DNS names of a DGA, say).
pub const MAX_FINGERPRINTS_PER_KIND: usize = 256;
/// Address-to-name resolutions kept per device (the least recently answered go first).
pub const MAX_RESOLUTIONS_PER_DEVICE: usize = 1_024;
/// Longest text accepted from callers (firmware versions, subjects, actors, details).
pub const MAX_TEXT: usize = 1_024;
/// A new type confidence is written when it moved at least this much.
const CONFIDENCE_STEP: f64 = 0.05;

/// The inventory's section of the gateway configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the IEEE registry CSVs (Debian's `ieee-data`).
    pub ieee_data_dir: std::path::PathBuf,
    /// Flows kept per device.
    pub flows_per_device: usize,
    /// Traffic bucket, seconds.
    pub traffic_bucket_secs: u64,
    /// Traffic kept, seconds.
    pub traffic_retention_secs: u64,
    /// Device-type model file; the shipped model when absent.
    pub model: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ieee_data_dir: vendor::DEFAULT_IEEE_DATA_DIR.into(),
            flows_per_device: DEFAULT_FLOWS_PER_DEVICE,
            traffic_bucket_secs: DEFAULT_TRAFFIC_BUCKET.as_secs(),
            traffic_retention_secs: DEFAULT_TRAFFIC_RETENTION.as_secs(),
            model: None,
        }
    }
}

/// Why an inventory operation failed. A failed call changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    #[error("inventory store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A caller passed a value the inventory refuses (empty, too long, control characters).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A stored row does not decode (a hand-edited or corrupted store).
    #[error("corrupt inventory row for {mac}: {reason}")]
    Corrupt { mac: String, reason: String },
}

/// What changed in the inventory because of a datapath event or traffic counters. (Changes
/// made through `set_*` calls are audited in the store; their callers publish their own
/// events, e.g. `respond`'s quarantine actions.)
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum InventoryChange {
    NewDevice {
        mac: Mac,
        vendor: Option<String>,
    },
    NewAddress {
        mac: Mac,
        ip: IpAddr,
    },
    HostnameChanged {
        mac: Mac,
        hostname: String,
        previous: Option<String>,
    },
    /// A fingerprint value not seen before for this device.
    NewFingerprint {
        mac: Mac,
        kind: FingerprintKind,
        value: String,
    },
    TypeChanged {
        mac: Mac,
        /// The product, or `unknown`.
        device_type: String,
        confidence: f64,
        /// The generic type (`smart-plug`, `ip-camera`, ...), or `unknown`.
        generic_type: String,
        previous: Option<String>,
    },
}

impl InventoryChange {
    /// The device it concerns.
    pub fn mac(&self) -> Mac {
        match self {
            InventoryChange::NewDevice { mac, .. }
            | InventoryChange::NewAddress { mac, .. }
            | InventoryChange::HostnameChanged { mac, .. }
            | InventoryChange::NewFingerprint { mac, .. }
            | InventoryChange::TypeChanged { mac, .. } => *mac,
        }
    }

    /// The change as an audit event for the `EventBus` (SIEM, API), or `None` for changes
    /// too frequent to forward one by one (new fingerprint values, such as DNS names).
    pub fn to_gateway_event(&self) -> Option<crate::event::GatewayEvent> {
        use crate::event::{EventKind, GatewayEvent, Severity};
        let (actor, action, detail) = match self {
            InventoryChange::NewDevice { vendor, .. } => {
                (ACTOR_INVENTORY, "device_added", format!("vendor {}", vendor.as_deref().unwrap_or("unknown")))
            }
            InventoryChange::NewAddress { ip, .. } => (ACTOR_INVENTORY, "address_added", ip.to_string()),
            InventoryChange::HostnameChanged { hostname, previous, .. } => {
                (ACTOR_INVENTORY, "hostname_changed", format!("{} -> {hostname}", previous.as_deref().unwrap_or("-")))
            }
            InventoryChange::TypeChanged { device_type, confidence, previous, .. } => (
                ACTOR_FINGERPRINT,
                "type_changed",
                format!("{} -> {device_type} ({:.0}%)", previous.as_deref().unwrap_or("-"), 100.0 * confidence),
            ),
            InventoryChange::NewFingerprint { .. } => return None,
        };
        let kind = EventKind::Audit { action: action.to_owned(), detail };
        Some(GatewayEvent::new(Severity::Info, Some(self.mac()), actor, kind))
    }
}

/// Counters of what the inventory ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InventoryStats {
    /// Samples that did not parse: hostile packets, but mostly server TLS records (only
    /// ClientHellos are read) and DNS answers cut at `SAMPLE_BYTES`.
    pub unparsed_samples: u64,
    /// Addresses or fingerprint values dropped by the per-device caps.
    pub capped: u64,
}

/// Per-device state kept in memory: the classifier's inputs and last answer.
#[derive(Default)]
struct Tracked {
    features: DeviceFeatures,
    guess: Option<classify::Stored>,
}

/// The inventory core. See the module documentation.
pub struct Inventory {
    conn: Connection,
    vendors: Vendors,
    classifier: Option<Classifier>,
    tracked: HashMap<Mac, Tracked>,
    flows_per_device: usize,
    traffic_bucket: Duration,
    traffic_retention: Duration,
    stats: InventoryStats,
}

fn millis(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn datetime(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Refuses text the store would not keep as given: empty, too long, or with unsafe characters.
pub fn check_text(field: &'static str, value: &str) -> Result<(), InventoryError> {
    let invalid = |reason: &str| Err(InventoryError::Invalid { field, reason: reason.to_owned() });
    if value.trim().is_empty() {
        return invalid("empty");
    }
    if value.len() > MAX_TEXT {
        return invalid(&format!("longer than {MAX_TEXT} bytes"));
    }
    if let Err(unsafe_text) = crate::untrusted::check(field, value) {
        return invalid(&format!("contains a control, line-separator or bidi character: {}", unsafe_text.escaped));
    }
    Ok(())
}

/// Text for the store and logs: device-supplied strings (host names...) may hold anything.
/// Unsafe characters are escaped (`untrusted`), so a host name of `a\nb` is stored and shown
/// as the text `a\nb`, never as two lines; at most `MAX_TEXT` bytes are kept.
fn sanitize(value: &str) -> String {
    crate::untrusted::escape_bounded(value, MAX_TEXT)
}

impl Inventory {
    /// An inventory over `conn` (opened by `crate::store`, so the schema is current).
    /// `classifier` is `None` to leave device types alone.
    pub fn new(conn: Connection, vendors: Vendors, classifier: Option<Classifier>) -> Self {
        Self {
            conn,
            vendors,
            classifier,
            tracked: HashMap::new(),
            flows_per_device: DEFAULT_FLOWS_PER_DEVICE,
            traffic_bucket: DEFAULT_TRAFFIC_BUCKET,
            traffic_retention: DEFAULT_TRAFFIC_RETENTION,
            stats: InventoryStats::default(),
        }
    }

    /// Applies the configured retention (flows per device, traffic bucket and retention).
    pub fn with_config(mut self, config: &Config) -> Self {
        self.flows_per_device = config.flows_per_device.max(1);
        self.traffic_bucket = Duration::from_secs(config.traffic_bucket_secs.max(1));
        self.traffic_retention = Duration::from_secs(config.traffic_retention_secs.max(1));
        self
    }

    pub fn stats(&self) -> InventoryStats {
        self.stats
    }

    /// Runs `work` in one SQLite transaction: all of it is stored, or none.
    fn in_transaction<T>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, InventoryError>,
    ) -> Result<T, InventoryError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = work(self);
        ledger::finish(&self.conn, result)
    }

    /// The connection, for callers that share it (read-only queries of other components).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Every device, most recently seen first.
    pub fn devices(&self) -> Result<Vec<DeviceRecord>, InventoryError> {
        query::devices(&self.conn)
    }

    /// One device with its addresses and fingerprints, or `None` if never seen.
    pub fn device(&self, mac: Mac) -> Result<Option<DeviceDetail>, InventoryError> {
        query::device(&self.conn, mac)
    }

    /// The device's most recent flows, newest first, at most `limit`.
    pub fn flows(&self, mac: Mac, limit: usize) -> Result<Vec<FlowRecord>, InventoryError> {
        query::flows(&self.conn, mac, limit)
    }

    /// The device's traffic buckets, newest first, at most `limit`.
    pub fn traffic(&self, mac: Mac, limit: usize) -> Result<Vec<TrafficRecord>, InventoryError> {
        query::traffic(&self.conn, mac, limit)
    }
}

#[cfg(test)]
mod tests;
