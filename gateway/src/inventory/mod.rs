//! The device inventory: every device seen, with its addresses, vendor, fingerprints,
//! device-type guess, access and lifecycle state, class, firmware, identity, recent flows,
//! traffic over time, and an audit log of every state change with who or what caused it.
//!
//! Reads `DatapathEvent`s (live from the ring buffer, or from `replay` offline) and calls
//! from other components (`set_access`, `set_identity`, ...); writes the `inventory_*` tables
//! of the store. `Inventory` is a sync core over one `rusqlite::Connection`: run it on a
//! thread of its own (SQLite calls block), feed it, and publish the `InventoryChange`s it
//! returns.
//!
//! - `records`: the serde structs the read queries return (the API's JSON);
//! - `vendor`: IEEE OUI registry lookups;
//! - `replay`: captures → the events and counters XDP would have produced.
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    datapath::{
        DeviceAccess,
        events::{DatapathEvent, FlowObservation, PacketSample},
    },
    device::{Access, Mac},
    fingerprint::{
        Classifier, DeviceFeatures, Guess,
        sample::{self, Parsed},
        syn,
    },
};

pub mod query;
pub mod records;
pub mod replay;
pub mod vendor;

pub use records::*;
use replay::{IntervalCounters, TrafficCounters};
pub use vendor::Vendors;

/// Schema of the inventory tables. Times are Unix milliseconds; MACs and IPs are text.
pub const MIGRATIONS: &[crate::store::Migration] = &[
    crate::store::Migration {
        component: "inventory",
        version: 1,
        sql: "
CREATE TABLE inventory_devices (
    mac TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    vendor TEXT,
    locally_administered INTEGER NOT NULL,
    hostname TEXT,
    device_type TEXT,
    type_confidence REAL,
    access TEXT NOT NULL DEFAULT 'unknown',
    lifecycle TEXT,
    class TEXT,
    firmware_version TEXT,
    cert_subject TEXT,
    device_id TEXT,
    flows_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE inventory_addresses (
    mac TEXT NOT NULL REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    ip TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (mac, ip)
);
CREATE TABLE inventory_fingerprints (
    mac TEXT NOT NULL REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    detail TEXT,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (mac, kind, value)
);
CREATE TABLE inventory_flows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mac TEXT NOT NULL REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    time INTEGER NOT NULL,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    src_port INTEGER NOT NULL,
    dst_port INTEGER NOT NULL,
    proto INTEGER NOT NULL,
    frame_bytes INTEGER NOT NULL,
    verdict INTEGER NOT NULL,
    reason INTEGER NOT NULL
);
CREATE INDEX inventory_flows_by_mac ON inventory_flows (mac, id);
CREATE TABLE inventory_traffic (
    mac TEXT NOT NULL REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    seconds INTEGER NOT NULL,
    tx_bytes INTEGER NOT NULL,
    tx_packets INTEGER NOT NULL,
    rx_bytes INTEGER NOT NULL,
    rx_packets INTEGER NOT NULL,
    PRIMARY KEY (mac, start)
);
CREATE TABLE inventory_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    actor TEXT NOT NULL,
    mac TEXT,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX inventory_audit_by_mac ON inventory_audit (mac, id);
",
    },
    // What the datapath enforces beyond the access state: the store is the device table's
    // source of truth, rebuilt from these columns at every start (`query::enforced`).
    crate::store::Migration {
        component: "inventory",
        version: 2,
        sql: "
ALTER TABLE inventory_devices ADD COLUMN policy_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inventory_devices ADD COLUMN class_id INTEGER NOT NULL DEFAULT 0;
",
    },
];

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
        device_type: String,
        confidence: f64,
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
    guess: Option<Guess>,
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

fn check_text(field: &'static str, value: &str) -> Result<(), InventoryError> {
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

/// Whether `ip` can be the device's own address (never broadcast, multicast, unspecified).
fn is_device_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || v4.is_loopback()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast() || v6.is_loopback()),
    }
}

/// Whether a flow's source address is taken as the device's own. A router on the LAN
/// forwards traffic from the whole internet under its own MAC, so from flows only addresses
/// of local scope count (private, shared, link-local, unique-local IPv4/IPv6), plus global
/// IPv6 addresses whose interface id is the device's EUI-64. Other addresses come from ARP,
/// where a device states its own.
fn is_flow_source_address(mac: &Mac, ip: &IpAddr) -> bool {
    if !is_device_address(ip) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            v4.is_private() || v4.is_link_local() || shared
        }
        IpAddr::V6(v6) => {
            let m = mac.0;
            let eui64 = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
            v6.is_unicast_link_local() || v6.is_unique_local() || v6.octets()[8..] == eui64
        }
    }
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
        let result = work(self).and_then(|value| {
            self.conn.execute_batch("COMMIT")?;
            Ok(value)
        });
        if result.is_err() {
            // Already rolled back if COMMIT itself failed; the error that matters is `result`.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result
    }

    /// The connection, for callers that share it (read-only queries of other components).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Takes in one datapath event; returns what changed.
    pub fn handle(&mut self, event: &DatapathEvent) -> Result<Vec<InventoryChange>, InventoryError> {
        self.in_transaction(|inventory| {
            let mut changes = Vec::new();
            inventory.handle_in(event, &mut changes)?;
            Ok(changes)
        })
    }

    /// Takes in a batch of events in one transaction (much cheaper than one by one on a file).
    pub fn handle_batch(&mut self, events: &[DatapathEvent]) -> Result<Vec<InventoryChange>, InventoryError> {
        self.in_transaction(|inventory| {
            let mut changes = Vec::new();
            for event in events {
                inventory.handle_in(event, &mut changes)?;
            }
            Ok(changes)
        })
    }

    fn handle_in(&mut self, event: &DatapathEvent, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        match event {
            DatapathEvent::Flow(flow) => self.flow(flow, changes)?,
            DatapathEvent::Sample(sample) => self.sample(sample, changes)?,
        }
        Ok(())
    }

    fn flow(&mut self, flow: &FlowObservation, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        let time = millis(flow.time);
        self.touch(flow.mac, time, changes)?;
        self.conn.execute(
            "UPDATE inventory_devices SET flows_total = flows_total + 1 WHERE mac = ?1",
            [flow.mac.to_string()],
        )?;
        self.conn.execute(
            "INSERT INTO inventory_flows (mac, time, src, dst, src_port, dst_port, proto, frame_bytes, verdict, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                flow.mac.to_string(),
                time,
                flow.src.to_string(),
                flow.dst.to_string(),
                flow.src_port,
                flow.dst_port,
                flow.proto,
                flow.frame_bytes,
                flow.verdict,
                flow.reason
            ],
        )?;
        // Keep the newest `flows_per_device` flows of this device.
        self.conn.execute(
            "DELETE FROM inventory_flows WHERE mac = ?1 AND id <= (
                SELECT id FROM inventory_flows WHERE mac = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![flow.mac.to_string(), self.flows_per_device as i64],
        )?;
        if is_flow_source_address(&flow.mac, &flow.src) {
            self.address(flow.mac, flow.src, time, changes)?;
        }
        if let Some(fingerprint) = &flow.syn {
            self.fingerprint(flow.mac, FingerprintKind::TcpSyn, &syn::signature(fingerprint), None, time, changes)?;
        }
        self.tracked.entry(flow.mac).or_default().features.add_flow(flow);
        self.classify(flow.mac, changes)
    }

    fn sample(&mut self, sample: &PacketSample, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        let parsed = match sample::parse(sample) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.stats.unparsed_samples += 1;
                tracing::debug!(mac = %sample.mac, %error, "ignored sample");
                return Ok(());
            }
        };
        let mac = sample.mac;
        let time = millis(sample.time);
        self.touch(mac, time, changes)?;
        match &parsed {
            Parsed::Dhcp(dhcp) if dhcp.from_client => {
                if !dhcp.parameter_request_list.is_empty() {
                    self.fingerprint(
                        mac,
                        FingerprintKind::DhcpParameterList,
                        &dhcp.parameter_list_text(),
                        None,
                        time,
                        changes,
                    )?;
                }
                if let Some(vendor_class) = &dhcp.vendor_class {
                    self.fingerprint(
                        mac,
                        FingerprintKind::DhcpVendorClass,
                        &sanitize(vendor_class),
                        None,
                        time,
                        changes,
                    )?;
                }
                if let Some(hostname) = dhcp.hostname.as_deref().map(sanitize).filter(|h| !h.is_empty()) {
                    self.fingerprint(mac, FingerprintKind::DhcpHostname, &hostname, None, time, changes)?;
                    self.hostname(mac, &hostname, time, changes)?;
                }
            }
            Parsed::Dns(dns) if !dns.is_response => {
                for name in &dns.queries {
                    self.fingerprint(mac, FingerprintKind::DnsName, &sanitize(name), None, time, changes)?;
                }
            }
            Parsed::Tls(hello) => {
                self.fingerprint(mac, FingerprintKind::TlsJa3, &hello.ja3_hash, Some(&hello.ja3), time, changes)?;
                if let Some(name) = &hello.server_name {
                    self.fingerprint(mac, FingerprintKind::TlsServerName, &sanitize(name), None, time, changes)?;
                }
            }
            Parsed::Arp(arp) => {
                // Only what a device says about itself: its own MAC as the ARP sender.
                let ip = IpAddr::V4(arp.sender_ip);
                if arp.sender_mac == mac && is_device_address(&ip) {
                    self.address(mac, ip, time, changes)?;
                }
            }
            // Server replies (DHCP offers, DNS answers) describe the server's clients, not the
            // server; the policy's DNS tracker reads answers itself.
            _ => {}
        }
        self.tracked.entry(mac).or_default().features.add_sample(&parsed);
        self.classify(mac, changes)
    }

    /// Records one interval of replayed or live per-device counters.
    pub fn record_interval(&mut self, interval: &IntervalCounters) -> Result<Vec<InventoryChange>, InventoryError> {
        self.in_transaction(|inventory| {
            let mut changes = Vec::new();
            for (mac, counters) in &interval.devices {
                // Counters alone (a MAC only ever seen as a destination) do not create a device.
                if inventory.device_exists(*mac)? {
                    inventory.record_traffic_in(*mac, interval.start, counters)?;
                    inventory.tracked.entry(*mac).or_default().features.add_traffic(counters);
                    inventory.classify(*mac, &mut changes)?;
                }
            }
            Ok(changes)
        })
    }

    /// Adds a device's counters for the interval starting at `interval_start` into its traffic
    /// bucket. Creates the device if needed.
    pub fn record_traffic(
        &mut self,
        mac: Mac,
        interval_start: SystemTime,
        counters: &TrafficCounters,
    ) -> Result<(), InventoryError> {
        self.in_transaction(|inventory| {
            inventory.touch(mac, millis(interval_start), &mut Vec::new())?;
            inventory.record_traffic_in(mac, interval_start, counters)
        })
    }

    fn record_traffic_in(
        &mut self,
        mac: Mac,
        interval_start: SystemTime,
        counters: &TrafficCounters,
    ) -> Result<(), InventoryError> {
        let bucket_ms = i64::try_from(self.traffic_bucket.as_millis()).unwrap_or(i64::MAX).max(1);
        let start = millis(interval_start).div_euclid(bucket_ms) * bucket_ms;
        let as_i64 = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        self.conn.execute(
            "INSERT INTO inventory_traffic (mac, start, seconds, tx_bytes, tx_packets, rx_bytes, rx_packets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (mac, start) DO UPDATE SET
                tx_bytes = tx_bytes + excluded.tx_bytes, tx_packets = tx_packets + excluded.tx_packets,
                rx_bytes = rx_bytes + excluded.rx_bytes, rx_packets = rx_packets + excluded.rx_packets",
            params![
                mac.to_string(),
                start,
                self.traffic_bucket.as_secs(),
                as_i64(counters.tx_bytes),
                as_i64(counters.tx_packets),
                as_i64(counters.rx_bytes),
                as_i64(counters.rx_packets)
            ],
        )?;
        let retention_ms = i64::try_from(self.traffic_retention.as_millis()).unwrap_or(i64::MAX);
        self.conn.execute(
            "DELETE FROM inventory_traffic WHERE mac = ?1 AND start < ?2",
            params![mac.to_string(), start.saturating_sub(retention_ms)],
        )?;
        Ok(())
    }

    /// Sets what the datapath enforces for a device (the caller has changed the device table;
    /// this records it), keeping the stored policy and class. Creates the device if needed.
    /// Returns the previous access.
    pub fn set_access(
        &mut self,
        mac: Mac,
        access: Access,
        actor: &str,
        reason: &str,
    ) -> Result<Access, InventoryError> {
        self.store_access(mac, access, None, actor, reason)
    }

    /// The one audited path for device-table changes: records what the datapath now enforces
    /// for `mac` (access, policy and class) after the caller changed the device table, and
    /// audits an access change as `access_changed` (`"<from> -> <to>: <reason>"`). The
    /// controller rebuilds the device table from these rows at every start
    /// (`query::enforced`). Creates the device if needed. Returns the previous access.
    pub fn record_access(
        &mut self,
        mac: Mac,
        enforced: DeviceAccess,
        actor: &str,
        reason: &str,
    ) -> Result<Access, InventoryError> {
        self.store_access(mac, enforced.access, Some((enforced.policy_id, enforced.class_id)), actor, reason)
    }

    fn store_access(
        &mut self,
        mac: Mac,
        access: Access,
        policy_class: Option<(u32, u16)>,
        actor: &str,
        reason: &str,
    ) -> Result<Access, InventoryError> {
        check_text("actor", actor)?;
        check_text("reason", reason)?;
        self.in_transaction(|inventory| {
            inventory.touch_by(mac, millis(SystemTime::now()), actor, &mut Vec::new())?;
            let previous: String = inventory.conn.query_row(
                "SELECT access FROM inventory_devices WHERE mac = ?1",
                [mac.to_string()],
                |row| row.get(0),
            )?;
            let previous: Access =
                previous.parse().map_err(|reason| InventoryError::Corrupt { mac: mac.to_string(), reason })?;
            if let Some((policy_id, class_id)) = policy_class {
                inventory.conn.execute(
                    "UPDATE inventory_devices SET policy_id = ?2, class_id = ?3 WHERE mac = ?1",
                    params![mac.to_string(), policy_id, class_id],
                )?;
            }
            if previous != access {
                inventory.conn.execute(
                    "UPDATE inventory_devices SET access = ?2 WHERE mac = ?1",
                    params![mac.to_string(), access.as_str()],
                )?;
                inventory.audit_in(actor, Some(mac), "access_changed", &format!("{previous} -> {access}: {reason}"))?;
            }
            Ok(previous)
        })
    }

    /// What the store says the datapath must enforce: every device with an access other
    /// than `unknown`, with its policy and class.
    pub fn enforced(&self) -> Result<Vec<(Mac, DeviceAccess)>, InventoryError> {
        query::enforced(&self.conn)
    }

    /// Records the identity the device enrolled with. Creates the device if needed.
    pub fn set_identity(
        &mut self,
        mac: Mac,
        cert_subject: &str,
        device_id: &str,
        actor: &str,
    ) -> Result<(), InventoryError> {
        check_text("certificate subject", cert_subject)?;
        check_text("device id", device_id)?;
        self.set_columns(mac, actor, "identity_changed", &[("cert_subject", cert_subject), ("device_id", device_id)])
    }

    /// Records the firmware version the device runs (from OTA). Creates the device if needed.
    pub fn set_firmware(&mut self, mac: Mac, version: &str, actor: &str) -> Result<(), InventoryError> {
        check_text("firmware version", version)?;
        self.set_columns(mac, actor, "firmware_changed", &[("firmware_version", version)])
    }

    /// Records the class (and so the policy) the device is assigned to.
    pub fn set_class(&mut self, mac: Mac, class: &str, actor: &str) -> Result<(), InventoryError> {
        check_text("class", class)?;
        self.set_columns(mac, actor, "class_changed", &[("class", class)])
    }

    /// Records the device's identity lifecycle state (`enrolled`, `revoked`, ...).
    pub fn set_lifecycle(&mut self, mac: Mac, lifecycle: &str, actor: &str) -> Result<(), InventoryError> {
        check_text("lifecycle", lifecycle)?;
        self.set_columns(mac, actor, "lifecycle_changed", &[("lifecycle", lifecycle)])
    }

    /// Writes text columns; audits only when a value actually changes.
    fn set_columns(
        &mut self,
        mac: Mac,
        actor: &str,
        action: &str,
        columns: &[(&'static str, &str)],
    ) -> Result<(), InventoryError> {
        check_text("actor", actor)?;
        self.in_transaction(|inventory| {
            inventory.touch_by(mac, millis(SystemTime::now()), actor, &mut Vec::new())?;
            let mut details = Vec::new();
            for (column, value) in columns {
                // Column names come from the callers' fixed lists, never from input.
                let previous: Option<String> = inventory.conn.query_row(
                    &format!("SELECT {column} FROM inventory_devices WHERE mac = ?1"),
                    [mac.to_string()],
                    |row| row.get(0),
                )?;
                if previous.as_deref() != Some(*value) {
                    inventory.conn.execute(
                        &format!("UPDATE inventory_devices SET {column} = ?2 WHERE mac = ?1"),
                        params![mac.to_string(), value],
                    )?;
                    details.push(format!("{column}: {} -> {value}", previous.as_deref().unwrap_or("-")));
                }
            }
            if !details.is_empty() {
                inventory.audit_in(actor, Some(mac), action, &details.join("; "))?;
            }
            Ok(())
        })
    }

    /// Appends an audit record (for changes made elsewhere: policy reloads, enrollment...).
    pub fn audit(&mut self, actor: &str, mac: Option<Mac>, action: &str, detail: &str) -> Result<(), InventoryError> {
        check_text("actor", actor)?;
        check_text("action", action)?;
        if detail.len() > MAX_TEXT {
            return Err(InventoryError::Invalid { field: "detail", reason: format!("longer than {MAX_TEXT} bytes") });
        }
        self.audit_in(actor, mac, action, detail)
    }

    fn audit_in(&self, actor: &str, mac: Option<Mac>, action: &str, detail: &str) -> Result<(), InventoryError> {
        self.conn.execute(
            "INSERT INTO inventory_audit (time, actor, mac, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![millis(SystemTime::now()), actor, mac.map(|m| m.to_string()), action, sanitize(detail)],
        )?;
        Ok(())
    }

    fn device_exists(&self, mac: Mac) -> Result<bool, InventoryError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM inventory_devices WHERE mac = ?1", [mac.to_string()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Creates the device if new (audited as seen by the inventory), and moves `last_seen`.
    fn touch(&mut self, mac: Mac, time: i64, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        self.touch_by(mac, time, ACTOR_INVENTORY, changes)
    }

    fn touch_by(
        &mut self,
        mac: Mac,
        time: i64,
        actor: &str,
        changes: &mut Vec<InventoryChange>,
    ) -> Result<(), InventoryError> {
        let updated = self.conn.execute(
            "UPDATE inventory_devices SET last_seen = MAX(last_seen, ?2) WHERE mac = ?1",
            params![mac.to_string(), time],
        )?;
        if updated > 0 {
            return Ok(());
        }
        let vendor = self.vendors.lookup(&mac).map(str::to_owned);
        self.conn.execute(
            "INSERT INTO inventory_devices (mac, first_seen, last_seen, vendor, locally_administered) VALUES (?1, ?2, ?2, ?3, ?4)",
            params![mac.to_string(), time, vendor, mac.is_locally_administered()],
        )?;
        let detail = match (&vendor, mac.is_locally_administered()) {
            (Some(vendor), _) => format!("vendor {vendor}"),
            (None, true) => "locally administered MAC (no vendor)".to_owned(),
            (None, false) => "vendor unknown".to_owned(),
        };
        self.audit_in(actor, Some(mac), "device_added", &detail)?;
        changes.push(InventoryChange::NewDevice { mac, vendor });
        Ok(())
    }

    fn address(
        &mut self,
        mac: Mac,
        ip: IpAddr,
        time: i64,
        changes: &mut Vec<InventoryChange>,
    ) -> Result<(), InventoryError> {
        let updated = self.conn.execute(
            "UPDATE inventory_addresses SET last_seen = MAX(last_seen, ?3) WHERE mac = ?1 AND ip = ?2",
            params![mac.to_string(), ip.to_string(), time],
        )?;
        if updated > 0 {
            return Ok(());
        }
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM inventory_addresses WHERE mac = ?1",
            [mac.to_string()],
            |row| row.get(0),
        )?;
        if count >= MAX_ADDRESSES_PER_DEVICE as i64 {
            self.stats.capped += 1;
            return Ok(());
        }
        self.conn.execute(
            "INSERT INTO inventory_addresses (mac, ip, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
            params![mac.to_string(), ip.to_string(), time],
        )?;
        self.audit_in(ACTOR_INVENTORY, Some(mac), "address_added", &ip.to_string())?;
        changes.push(InventoryChange::NewAddress { mac, ip });
        Ok(())
    }

    fn fingerprint(
        &mut self,
        mac: Mac,
        kind: FingerprintKind,
        value: &str,
        detail: Option<&str>,
        time: i64,
        changes: &mut Vec<InventoryChange>,
    ) -> Result<(), InventoryError> {
        if value.is_empty() {
            return Ok(());
        }
        let updated = self.conn.execute(
            "UPDATE inventory_fingerprints SET last_seen = MAX(last_seen, ?4), count = count + 1
             WHERE mac = ?1 AND kind = ?2 AND value = ?3",
            params![mac.to_string(), kind.as_str(), value, time],
        )?;
        if updated > 0 {
            return Ok(());
        }
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM inventory_fingerprints WHERE mac = ?1 AND kind = ?2",
            params![mac.to_string(), kind.as_str()],
            |row| row.get(0),
        )?;
        if count >= MAX_FINGERPRINTS_PER_KIND as i64 {
            self.stats.capped += 1;
            return Ok(());
        }
        self.conn.execute(
            "INSERT INTO inventory_fingerprints (mac, kind, value, detail, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![mac.to_string(), kind.as_str(), value, detail, time],
        )?;
        changes.push(InventoryChange::NewFingerprint { mac, kind, value: value.to_owned() });
        Ok(())
    }

    fn hostname(
        &mut self,
        mac: Mac,
        hostname: &str,
        _time: i64,
        changes: &mut Vec<InventoryChange>,
    ) -> Result<(), InventoryError> {
        let previous: Option<String> =
            self.conn.query_row("SELECT hostname FROM inventory_devices WHERE mac = ?1", [mac.to_string()], |row| {
                row.get(0)
            })?;
        if previous.as_deref() == Some(hostname) {
            return Ok(());
        }
        self.conn
            .execute("UPDATE inventory_devices SET hostname = ?2 WHERE mac = ?1", params![mac.to_string(), hostname])?;
        self.audit_in(
            ACTOR_INVENTORY,
            Some(mac),
            "hostname_changed",
            &format!("{} -> {hostname}", previous.as_deref().unwrap_or("-")),
        )?;
        changes.push(InventoryChange::HostnameChanged { mac, hostname: hostname.to_owned(), previous });
        Ok(())
    }

    /// Re-runs the classifier when the device's features changed; writes the guess when the
    /// type changes (audited) or the confidence moved by `CONFIDENCE_STEP`.
    fn classify(&mut self, mac: Mac, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        let Some(classifier) = &self.classifier else { return Ok(()) };
        let Some(tracked) = self.tracked.get_mut(&mac) else { return Ok(()) };
        if !tracked.features.take_changed() {
            return Ok(());
        }
        let Some(guess) = classifier.guess(&tracked.features) else { return Ok(()) };
        let previous = match tracked.guess.take() {
            Some(previous) => Some(previous),
            // First guess since start: compare with what the store holds.
            None => self
                .conn
                .query_row(
                    "SELECT device_type, type_confidence FROM inventory_devices WHERE mac = ?1",
                    [mac.to_string()],
                    |row| Ok((row.get::<_, Option<String>>(0)?, row.get::<_, Option<f64>>(1)?)),
                )?
                .0
                .zip(Some(0.0))
                .map(|(device_type, confidence)| Guess { device_type, confidence }),
        };
        let type_changed = previous.as_ref().is_none_or(|p| p.device_type != guess.device_type);
        let moved = previous.as_ref().is_none_or(|p| (p.confidence - guess.confidence).abs() >= CONFIDENCE_STEP);
        if type_changed || moved {
            self.conn.execute(
                "UPDATE inventory_devices SET device_type = ?2, type_confidence = ?3 WHERE mac = ?1",
                params![mac.to_string(), guess.device_type, guess.confidence],
            )?;
        }
        if type_changed {
            let was = previous.as_ref().map(|p| p.device_type.clone());
            self.audit_in(
                ACTOR_FINGERPRINT,
                Some(mac),
                "type_changed",
                &format!(
                    "{} -> {} ({:.0}%)",
                    was.as_deref().unwrap_or("-"),
                    guess.device_type,
                    100.0 * guess.confidence
                ),
            )?;
            changes.push(InventoryChange::TypeChanged {
                mac,
                device_type: guess.device_type.clone(),
                confidence: guess.confidence,
                previous: was,
            });
        }
        // Remember what is stored, so small moves accumulate against the stored value.
        let stored = if type_changed || moved { guess } else { previous.unwrap_or(guess) };
        if let Some(tracked) = self.tracked.get_mut(&mac) {
            tracked.guess = Some(stored);
        }
        Ok(())
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

    /// Audit entries, newest first, at most `limit`: of one device, or all (`None`).
    pub fn audit_log(&self, mac: Option<Mac>, limit: usize) -> Result<Vec<AuditEntry>, InventoryError> {
        query::audit_log(&self.conn, mac, limit)
    }
}

impl crate::datapath::AccessLedger for Inventory {
    fn record_change(&mut self, mac: Mac, enforced: DeviceAccess, actor: &str, reason: &str) -> Result<(), String> {
        self.record_access(mac, enforced, actor, reason).map(|_| ()).map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::PathBuf};

    use dhcproto::{Encodable as _, Encoder, v4};
    use gateway_ebpf::SynFingerprint;

    use super::*;
    use crate::datapath::events::SampleKind;

    const HUE: &str = "00:17:88:24:76:ff";

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("iotgw-inventory-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn vendors(dir: &std::path::Path) -> Vendors {
        std::fs::write(
            dir.join("oui.csv"),
            "Registry,Assignment,Organization Name,Organization Address\nMA-L,001788,Philips Lighting BV,Eindhoven NL\n",
        )
        .unwrap();
        Vendors::load(dir).unwrap()
    }

    fn t(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn flow(mac: Mac, dst_port: u16, seconds: u64) -> DatapathEvent {
        let mut syn = SynFingerprint {
            window: 14_600,
            mss: 1460,
            ttl: 64,
            window_scale: 4,
            option_count: 3,
            dont_fragment: 1,
            ..Default::default()
        };
        syn.option_kinds[..3].copy_from_slice(&[2, 1, 3]);
        DatapathEvent::Flow(FlowObservation {
            time: t(seconds),
            mac,
            src: IpAddr::V4(Ipv4Addr::new(10, 10, 10, 6)),
            dst: IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)),
            src_port: 40_000,
            dst_port,
            proto: gateway_ebpf::proto::TCP,
            frame_bytes: 74,
            tcp_flags: 0x02,
            syn: Some(syn),
            verdict: gateway_ebpf::verdict::PASS,
            reason: gateway_ebpf::reason::NONE,
            access: Access::Unknown,
        })
    }

    fn dhcp_request(mac: Mac, hostname: &str) -> DatapathEvent {
        let mut message = v4::Message::default();
        message.set_chaddr(&mac.0);
        let opts = message.opts_mut();
        opts.insert(v4::DhcpOption::MessageType(v4::MessageType::Request));
        opts.insert(v4::DhcpOption::ParameterRequestList(vec![v4::OptionCode::SubnetMask, v4::OptionCode::Router]));
        opts.insert(v4::DhcpOption::Hostname(hostname.into()));
        let mut data = Vec::new();
        message.encode(&mut Encoder::new(&mut data)).unwrap();
        DatapathEvent::Sample(PacketSample {
            time: t(1),
            mac,
            kind: SampleKind::Dhcp,
            data,
            payload_offset: 0,
            frame_bytes: 342,
        })
    }

    #[test]
    fn inventory_survives_reopen_with_devices_fingerprints_and_audit() {
        let dir = TempDir::new("reopen");
        let path = dir.0.join("store.db");
        let mac: Mac = HUE.parse().unwrap();
        {
            let mut inventory = Inventory::new(crate::store::open(&path).unwrap(), vendors(&dir.0), None);
            let changes = inventory.handle(&flow(mac, 443, 0)).unwrap();
            assert!(changes.contains(&InventoryChange::NewDevice { mac, vendor: Some("Philips Lighting BV".into()) }));
            assert!(changes.contains(&InventoryChange::NewAddress { mac, ip: "10.10.10.6".parse().unwrap() }));
            assert!(
                changes
                    .iter()
                    .any(|c| matches!(c, InventoryChange::NewFingerprint { kind: FingerprintKind::TcpSyn, .. }))
            );
            let changes = inventory.handle(&dhcp_request(mac, "Philips-hue")).unwrap();
            assert!(changes.contains(&InventoryChange::HostnameChanged {
                mac,
                hostname: "Philips-hue".into(),
                previous: None
            }));
            // The same flow again is no news.
            assert!(inventory.handle(&flow(mac, 443, 2)).unwrap().is_empty());
        }
        let inventory = Inventory::new(crate::store::open(&path).unwrap(), Vendors::empty(), None);
        let devices = inventory.devices().unwrap();
        assert_eq!(devices.len(), 1);
        let device = &devices[0];
        assert_eq!(device.vendor.as_deref(), Some("Philips Lighting BV"));
        assert_eq!(device.hostname.as_deref(), Some("Philips-hue"));
        assert_eq!(device.ips, vec!["10.10.10.6".parse::<IpAddr>().unwrap()]);
        assert_eq!(device.flows_total, 2);
        assert_eq!(device.first_seen, datetime(millis(t(0))));
        assert_eq!(device.last_seen, datetime(millis(t(2))));
        let detail = inventory.device(mac).unwrap().unwrap();
        let kinds: Vec<_> = detail.fingerprints.iter().map(|f| (f.kind, f.value.as_str())).collect();
        assert!(kinds.contains(&(FingerprintKind::DhcpParameterList, "1,3")));
        assert!(kinds.contains(&(FingerprintKind::TcpSyn, "64:14600:1460:4:mss,nop,ws:df")));
        let syn = detail.fingerprints.iter().find(|f| f.kind == FingerprintKind::TcpSyn).unwrap();
        assert_eq!(syn.count, 2);
        let actions: Vec<_> = inventory.audit_log(Some(mac), 100).unwrap().into_iter().map(|a| a.action).collect();
        assert_eq!(actions, vec!["hostname_changed", "address_added", "device_added"]);
        // JSON as the API will serve it.
        let json = serde_json::to_value(&detail).unwrap();
        assert_eq!(json["mac"], HUE);
        assert_eq!(json["access"], "unknown");
        assert!(json["first_seen"].as_str().unwrap().starts_with("2023-11-14T"));
    }

    #[test]
    fn dhcp_hostname_with_a_forged_line_is_stored_escaped_and_renders_on_one_line() {
        let dir = TempDir::new("forged-hostname");
        let mut inventory =
            Inventory::new(crate::store::open(&dir.0.join("store.db")).unwrap(), Vendors::empty(), None);
        let mac: Mac = HUE.parse().unwrap();
        let hostile = "cam\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - forged\u{2028}x\u{202e}gpj.exe";
        let escaped = "cam\\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - forged\\u2028x\\u202egpj.exe";
        let changes = inventory.handle(&dhcp_request(mac, hostile)).unwrap();
        let change = changes
            .iter()
            .find(|c| matches!(c, InventoryChange::HostnameChanged { .. }))
            .expect("the host name was recorded");
        assert_eq!(change, &InventoryChange::HostnameChanged { mac, hostname: escaped.into(), previous: None });
        assert_eq!(inventory.devices().unwrap()[0].hostname.as_deref(), Some(escaped));
        let audit = inventory.audit_log(Some(mac), 10).unwrap();
        assert!(audit.iter().all(|a| crate::untrusted::is_safe(&a.detail)), "{audit:?}");
        let event = change.to_gateway_event().expect("host name changes are published");
        crate::integrations::render::fixtures::assert_renders_safely(&event, escaped);
    }

    #[test]
    fn a_second_connection_reads_what_the_inventory_writes() {
        let dir = TempDir::new("reader");
        let path = dir.0.join("store.db");
        let mut inventory = Inventory::new(crate::store::open(&path).unwrap(), Vendors::empty(), None);
        let reader = crate::store::open(&path).unwrap();
        let mac: Mac = HUE.parse().unwrap();
        assert!(query::devices(&reader).unwrap().is_empty());
        inventory.handle(&flow(mac, 443, 0)).unwrap();
        assert_eq!(query::devices(&reader).unwrap()[0].mac, mac);
        assert_eq!(query::flows(&reader, mac, 10).unwrap().len(), 1);
        assert_eq!(query::audit_log(&reader, Some(mac), 10).unwrap().len(), 2);
    }

    #[test]
    fn recorded_access_with_policy_and_class_is_what_a_restart_enforces() {
        let dir = TempDir::new("enforced");
        let path = dir.0.join("store.db");
        let (blocked, quarantined, seen): (Mac, Mac, Mac) =
            ("02:00:00:00:00:01".parse().unwrap(), "02:00:00:00:00:02".parse().unwrap(), HUE.parse().unwrap());
        {
            let mut inventory = Inventory::new(crate::store::open(&path).unwrap(), Vendors::empty(), None);
            inventory.handle(&flow(seen, 443, 0)).unwrap();
            let enrolled = DeviceAccess { access: Access::Enrolled, policy_id: 36, class_id: 20 };
            assert_eq!(inventory.record_access(blocked, enrolled, "identity", "enrolled").unwrap(), Access::Unknown);
            let block = DeviceAccess { access: Access::Blocked, ..enrolled };
            assert_eq!(inventory.record_access(blocked, block, "api:alice", "stolen").unwrap(), Access::Enrolled);
            let quarantine = DeviceAccess { access: Access::Quarantined, policy_id: 17, class_id: 1 };
            inventory.record_access(quarantined, quarantine, "respond:scan", "incident 7").unwrap();
            // `set_access` keeps the recorded policy and class.
            inventory.set_access(quarantined, Access::Quarantined, "api:bob", "again").unwrap();
        }
        let inventory = Inventory::new(crate::store::open(&path).unwrap(), Vendors::empty(), None);
        assert_eq!(
            inventory.enforced().unwrap(),
            vec![
                (blocked, DeviceAccess { access: Access::Blocked, policy_id: 36, class_id: 20 }),
                (quarantined, DeviceAccess { access: Access::Quarantined, policy_id: 17, class_id: 1 }),
            ],
            "devices only seen are not in the device table"
        );
        let trail: Vec<_> = inventory
            .audit_log(Some(blocked), 10)
            .unwrap()
            .into_iter()
            .filter(|a| a.action == "access_changed")
            .map(|a| (a.actor, a.detail))
            .collect();
        assert_eq!(
            trail,
            vec![
                ("api:alice".to_owned(), "enrolled -> blocked: stolen".to_owned()),
                ("identity".to_owned(), "unknown -> enrolled: enrolled".to_owned()),
            ]
        );
    }

    #[test]
    fn set_access_records_who_and_previous_state_and_refuses_bad_input() {
        let dir = TempDir::new("access");
        let mut inventory =
            Inventory::new(crate::store::open(&dir.0.join("store.db")).unwrap(), Vendors::empty(), None);
        let mac: Mac = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(
            inventory.set_access(mac, Access::Quarantined, "detector:scan", "incident 7").unwrap(),
            Access::Unknown
        );
        assert_eq!(inventory.set_access(mac, Access::Quarantined, "api:alice", "again").unwrap(), Access::Quarantined);
        assert_eq!(inventory.set_access(mac, Access::Enrolled, "api:alice", "released").unwrap(), Access::Quarantined);
        let before = inventory.audit_log(None, 100).unwrap();
        assert!(matches!(
            inventory.set_access(mac, Access::Blocked, "", "x"),
            Err(InventoryError::Invalid { field: "actor", .. })
        ));
        assert!(matches!(inventory.set_firmware(mac, "1.0\n", "ota"), Err(InventoryError::Invalid { .. })));
        assert!(matches!(
            inventory.set_firmware(mac, &"9".repeat(MAX_TEXT + 1), "ota"),
            Err(InventoryError::Invalid { .. })
        ));
        assert_eq!(inventory.audit_log(None, 100).unwrap(), before, "refused calls change nothing");
        inventory.set_identity(mac, "CN=plug-17,O=Acme", "dev-17", "enrollment").unwrap();
        inventory.set_firmware(mac, "2.4.1", "ota").unwrap();
        inventory.set_class(mac, "smart-plug", "policy-file").unwrap();
        inventory.set_lifecycle(mac, "enrolled", "enrollment").unwrap();
        inventory.audit("policy-file", None, "policy_reloaded", "3 classes").unwrap();
        let device = inventory.device(mac).unwrap().unwrap().device;
        assert_eq!(device.access, Access::Enrolled);
        assert!(device.locally_administered);
        assert_eq!(device.vendor, None);
        assert_eq!(device.cert_subject.as_deref(), Some("CN=plug-17,O=Acme"));
        assert_eq!(device.firmware_version.as_deref(), Some("2.4.1"));
        assert_eq!(device.class.as_deref(), Some("smart-plug"));
        assert_eq!(device.lifecycle.as_deref(), Some("enrolled"));
        let log = inventory.audit_log(Some(mac), 100).unwrap();
        let summary: Vec<_> = log.iter().rev().map(|a| (a.actor.as_str(), a.action.as_str())).collect();
        assert_eq!(
            summary,
            vec![
                ("detector:scan", "device_added"),
                ("detector:scan", "access_changed"),
                ("api:alice", "access_changed"),
                ("enrollment", "identity_changed"),
                ("ota", "firmware_changed"),
                ("policy-file", "class_changed"),
                ("enrollment", "lifecycle_changed"),
            ]
        );
        assert!(log.iter().any(|a| a.actor == "detector:scan" && a.detail == "unknown -> quarantined: incident 7"));
        assert!(log.iter().any(|a| a.detail == "quarantined -> enrolled: released"));
        assert_eq!(inventory.audit_log(None, 100).unwrap()[0].action, "policy_reloaded");
    }

    #[test]
    fn changes_become_audit_events_except_fingerprint_values() {
        let mac: Mac = HUE.parse().unwrap();
        let event =
            InventoryChange::NewDevice { mac, vendor: Some("Philips Lighting BV".into()) }.to_gateway_event().unwrap();
        assert_eq!(event.device, Some(mac));
        assert_eq!(event.actor, ACTOR_INVENTORY);
        assert_eq!(event.kind_name(), "audit");
        let kind = FingerprintKind::DnsName;
        assert!(InventoryChange::NewFingerprint { mac, kind, value: "a.example".into() }.to_gateway_event().is_none());
    }

    #[test]
    fn flows_are_kept_per_device_up_to_the_bound() {
        let config = Config { flows_per_device: 5, ..Config::default() };
        let mut inventory =
            Inventory::new(crate::store::open_in_memory().unwrap(), Vendors::empty(), None).with_config(&config);
        let mac: Mac = HUE.parse().unwrap();
        let events: Vec<_> = (0..12).map(|i| flow(mac, 1000 + i, u64::from(i))).collect();
        inventory.handle_batch(&events).unwrap();
        let flows = inventory.flows(mac, 100).unwrap();
        assert_eq!(flows.iter().map(|f| f.dst_port).collect::<Vec<_>>(), vec![1011, 1010, 1009, 1008, 1007]);
        assert_eq!(flows[0].verdict, "pass");
        assert_eq!(flows[0].reason, "none");
        assert_eq!(inventory.flows(mac, 2).unwrap().len(), 2);
        assert_eq!(inventory.device(mac).unwrap().unwrap().device.flows_total, 12);
    }

    #[test]
    fn traffic_adds_up_per_bucket_and_in_totals() {
        let mut inventory = Inventory::new(crate::store::open_in_memory().unwrap(), Vendors::empty(), None);
        let mac: Mac = HUE.parse().unwrap();
        let counters = TrafficCounters { tx_bytes: 100, tx_packets: 2, rx_bytes: 50, rx_packets: 1 };
        inventory.record_traffic(mac, t(0), &counters).unwrap();
        inventory.record_traffic(mac, t(30), &counters).unwrap();
        inventory.record_traffic(mac, t(60), &counters).unwrap();
        let rows = inventory.traffic(mac, 10).unwrap();
        assert_eq!(rows.len(), 2, "two one-minute buckets");
        assert_eq!(rows.iter().map(|r| r.tx_bytes).sum::<u64>(), 300);
        let totals = inventory.device(mac).unwrap().unwrap().device.traffic;
        assert_eq!(totals, TrafficTotals { tx_bytes: 300, tx_packets: 6, rx_bytes: 150, rx_packets: 3 });
    }

    #[test]
    fn malformed_sample_changes_nothing() {
        let mut inventory = Inventory::new(crate::store::open_in_memory().unwrap(), Vendors::empty(), None);
        let mac: Mac = HUE.parse().unwrap();
        for kind in [SampleKind::Dhcp, SampleKind::Dns, SampleKind::Tls, SampleKind::Arp] {
            let garbage = DatapathEvent::Sample(PacketSample {
                time: t(0),
                mac,
                kind,
                data: vec![0x16, 0x03, 0xff],
                payload_offset: 0,
                frame_bytes: 60,
            });
            assert!(inventory.handle(&garbage).unwrap().is_empty());
        }
        assert!(inventory.devices().unwrap().is_empty());
        assert!(inventory.audit_log(None, 10).unwrap().is_empty());
        assert_eq!(inventory.stats().unparsed_samples, 4);
    }

    #[test]
    fn router_forwarded_public_sources_are_not_device_addresses() {
        let mac: Mac = HUE.parse().unwrap();
        assert!(is_flow_source_address(&mac, &"192.168.1.20".parse().unwrap()));
        assert!(is_flow_source_address(&mac, &"fe80::1".parse().unwrap()));
        assert!(is_flow_source_address(&mac, &"2001:db8::217:88ff:fe24:76ff".parse().unwrap()), "EUI-64 of the MAC");
        assert!(!is_flow_source_address(&mac, &"2001:db8::1".parse().unwrap()));
        assert!(!is_flow_source_address(&mac, &"93.184.216.34".parse().unwrap()));
        assert!(!is_flow_source_address(&mac, &"0.0.0.0".parse().unwrap()));
    }
}
