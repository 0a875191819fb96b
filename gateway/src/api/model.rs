//! What the API shows and accepts, as JSON. These types are the API's contract: storage
//! (`inventory`) and enforcement (`datapath`) map into them, so a schema change there does not
//! silently change what clients see. Each type also describes itself for the OpenAPI document.
use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::device::{Access, Mac};

/// One device, as listed by `GET /api/v1/devices`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceSummary {
    #[schema(value_type = String, example = "98:90:96:9a:86:df")]
    pub mac: Mac,
    /// Every IP address the device was seen using.
    #[schema(value_type = Vec<String>)]
    pub ips: Vec<IpAddr>,
    /// Vendor from the IEEE OUI registry; absent for locally administered MACs.
    pub vendor: Option<String>,
    /// Device-type guess from passive fingerprinting: a product (`EdimaxPlug1101W`), or
    /// `unknown` when the device is unlike every product the model knows.
    pub device_type: Option<String>,
    /// Confidence of `device_type`, 0.0 ..= 1.0.
    pub type_confidence: Option<f64>,
    /// The guess's generic type (`ip-camera`, `smart-plug`, `hub`, ... or `unknown`).
    #[serde(default)]
    pub generic_type: Option<String>,
    /// Confidence of `generic_type`, 0.0 ..= 1.0.
    #[serde(default)]
    pub generic_confidence: Option<f64>,
    /// Lifecycle state as the inventory records it.
    #[schema(value_type = String, example = "enrolled")]
    pub state: Access,
    /// Name of the policy class applied, when classified.
    pub policy: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: OffsetDateTime,
    /// Bytes sent and received, all time.
    pub bytes: u64,
}

/// One passive fingerprint of a device (DHCP options, TCP SYN signature, TLS hello, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Fingerprint {
    /// `dhcp_parameter_list`, `dhcp_vendor_class`, `dhcp_hostname`, `tcp_syn`, `tls_ja3`,
    /// `tls_server_name` (DNS names are listed apart, in `dns_names`).
    pub kind: String,
    pub value: String,
}

/// Traffic of a device since first seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrafficTotals {
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub rx_packets: u64,
}

/// What the inventory knows of one device beyond its summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceRecord {
    #[serde(flatten)]
    pub summary: DeviceSummary,
    /// Last host name the device gave in DHCP.
    pub hostname: Option<String>,
    /// Identity lifecycle (`enrolled`, `revoked`, ...), as the identity component set it.
    pub lifecycle: Option<String>,
    pub firmware_version: Option<String>,
    /// Subject of its client certificate, once enrolled.
    pub cert_subject: Option<String>,
    pub device_id: Option<String>,
    /// Flows it opened since first seen.
    pub flows_total: u64,
    pub traffic: TrafficTotals,
    pub fingerprints: Vec<Fingerprint>,
    /// DNS names the device resolved.
    pub dns_names: Vec<String>,
}

impl From<&crate::inventory::DeviceRecord> for DeviceSummary {
    fn from(device: &crate::inventory::DeviceRecord) -> Self {
        Self {
            mac: device.mac,
            ips: device.ips.clone(),
            vendor: device.vendor.clone(),
            device_type: device.device_type.clone(),
            type_confidence: device.type_confidence,
            generic_type: device.generic_type.clone(),
            generic_confidence: device.generic_confidence,
            state: device.access,
            policy: device.class.clone(),
            first_seen: device.first_seen,
            last_seen: device.last_seen,
            bytes: device.traffic.tx_bytes.saturating_add(device.traffic.rx_bytes),
        }
    }
}

/// The record alone, without fingerprints nor DNS names (which the inventory keeps apart).
impl From<&crate::inventory::DeviceRecord> for DeviceRecord {
    fn from(device: &crate::inventory::DeviceRecord) -> Self {
        let traffic = &device.traffic;
        Self {
            summary: DeviceSummary::from(device),
            hostname: device.hostname.clone(),
            lifecycle: device.lifecycle.clone(),
            firmware_version: device.firmware_version.clone(),
            cert_subject: device.cert_subject.clone(),
            device_id: device.device_id.clone(),
            flows_total: device.flows_total,
            traffic: TrafficTotals {
                tx_bytes: traffic.tx_bytes,
                tx_packets: traffic.tx_packets,
                rx_bytes: traffic.rx_bytes,
                rx_packets: traffic.rx_packets,
            },
            fingerprints: Vec::new(),
            dns_names: Vec::new(),
        }
    }
}

/// What the datapath enforces for a device right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Enforcement {
    #[schema(value_type = String, example = "quarantined")]
    pub access: Access,
    pub policy_id: u32,
    pub class_id: u16,
}

/// One recorded state change or other audit event of a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: OffsetDateTime,
    /// The device it concerns; absent for gateway-wide entries (policy reloads, ...).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "98:90:96:9a:86:df")]
    pub mac: Option<Mac>,
    /// Who or what caused it: `api:alice`, `detector:scan`, `enrollment`, ...
    pub actor: String,
    /// `access_changed`, `device_added`, `type_changed`, `class_changed`, ...
    pub action: String,
    /// For access changes: the access before.
    #[schema(value_type = Option<String>)]
    pub from: Option<Access>,
    /// For access changes: the access after.
    #[schema(value_type = Option<String>)]
    pub to: Option<Access>,
    /// What changed and why, in words.
    pub detail: String,
}

/// `GET /api/v1/devices/{mac}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub record: DeviceRecord,
    /// What the datapath enforces now; absent when the device has no entry in the device
    /// table (it is on the onboarding lane).
    pub enforcement: Option<Enforcement>,
    /// The access a release restores, while the device is quarantined or blocked.
    #[schema(value_type = Option<String>)]
    pub restore_access: Option<Access>,
    /// Most recent audit entries, newest first.
    pub audit: Vec<AuditEntry>,
    /// The MUD URL the device announced (DHCP, LLDP), the last check's outcome and the MUD
    /// file its class comes from; absent if it never announced one.
    pub mud: Option<crate::inventory::mud::MudRecord>,
}

/// A flow a device opened (`GET /api/v1/devices/{mac}/flows`), as XDP reported its first
/// packet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowRecord {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: OffsetDateTime,
    #[schema(value_type = String)]
    pub src: IpAddr,
    pub src_port: u16,
    #[schema(value_type = String)]
    pub dst: IpAddr,
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub proto: u8,
    /// Size of the first frame.
    pub frame_bytes: u32,
    /// `pass`, `drop` or `redirect`.
    pub verdict: String,
    /// Drop reason name (`none` when passed).
    pub reason: String,
}

/// Optional body of the quarantine, release and block actions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Why, kept in the audit log (at most 512 bytes).
    pub reason: Option<String>,
}

/// What an action did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ActionResponse {
    #[schema(value_type = String)]
    pub mac: Mac,
    /// `quarantine`, `release` or `block`.
    pub action: String,
    /// Access enforced before the call.
    #[schema(value_type = String)]
    pub previous: Access,
    /// Access enforced now.
    #[schema(value_type = String)]
    pub access: Access,
    /// False when the device already had that access (nothing was changed or recorded).
    pub changed: bool,
    /// Who asked, as recorded in the audit log (`api:<token name>`).
    pub actor: String,
}

/// An interface the XDP programs are attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttachedInterface {
    pub name: String,
    /// `lan`, `wan` or `quarantine`.
    pub role: String,
    /// `native` or `generic`.
    pub mode: String,
}

/// Datapath counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CountersSummary {
    pub lan_packets: u64,
    pub wan_packets: u64,
    pub redirected: u64,
    /// Ring-buffer records XDP could not reserve (the controller fell behind).
    pub events_lost: u64,
    pub flow_insert_failed: u64,
    /// Frames not passed, by reason name (`gateway_ebpf::reason::NAMES`).
    pub drops: BTreeMap<String, u64>,
}

/// The datapath part of the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatapathStatus {
    pub interfaces: Vec<AttachedInterface>,
    /// Absent until the datapath published its first counters.
    pub counters: Option<CountersSummary>,
}

/// `GET /api/v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// `gateway`: this one gateway (the fleet hub answers `fleet`), so the console knows
    /// which pages it can show.
    #[schema(example = "gateway")]
    pub scope: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub datapath: DatapathStatus,
    /// Devices in the inventory, by lifecycle state.
    pub devices: BTreeMap<String, u64>,
    /// The running policy's version, absent before the first successful load.
    pub policy_version: Option<String>,
    /// Events waiting in the integrations outbox, by sink.
    pub integration_backlog: BTreeMap<String, u64>,
}

/// `GET /api/v1/summary`: device counts for the console's overview.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventorySummary {
    /// Devices in the inventory.
    pub total: u64,
    /// By access state, every state listed (zeros included).
    pub by_state: BTreeMap<String, u64>,
    /// By device-type guess; devices without one are counted in `untyped`.
    pub by_type: BTreeMap<String, u64>,
    pub untyped: u64,
    /// By policy class; devices on none are counted in `unclassified`.
    pub by_class: BTreeMap<String, u64>,
    pub unclassified: u64,
}

/// One device class of the running policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyClass {
    pub name: String,
    /// The class's policy id in the datapath (16 and up).
    pub policy_id: u32,
    /// How devices are matched to it, in words (`oui 98:90:96`, `type camera`, ...).
    pub matches: Vec<String>,
    /// Number of allow rules.
    pub rules: usize,
    #[serde(default)]
    pub description: Option<String>,
    /// Its own allow rules, as written (what `include` and `update_lane` add is not repeated).
    #[serde(default)]
    pub allow: Vec<PolicyRule>,
    /// Classes whose allow rules it also gets.
    #[serde(default)]
    pub include: Vec<String>,
    /// It also gets the update lane's rules while enrolled.
    #[serde(default)]
    pub update_lane: bool,
    /// Where the class is written, `file:line:column`.
    #[serde(default)]
    pub at: String,
}

/// One allow rule of a class or a lane, as written in the policy files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyRule {
    pub description: Option<String>,
    /// Remote networks (CIDR).
    pub nets: Vec<String>,
    /// Remote DNS names, exact or `*.example.com`: their addresses are allowed once a DNS
    /// answer the device receives resolves them.
    pub names: Vec<String>,
    /// `any`, `tcp`, `udp` or `icmp`.
    pub protocol: String,
    /// The service port (the opener's destination: the remote's for `outbound`, the device's
    /// own for `inbound`), merged; `0-65535` when the rule names none.
    pub ports: Vec<PolicyPorts>,
    /// The opener's source port ranges, merged; `0-65535` when the rule names none.
    #[serde(default)]
    pub source_ports: Vec<PolicyPorts>,
    /// ICMP types, `T` or `T/C`; empty: every type.
    #[serde(default)]
    pub icmp_types: Vec<String>,
    /// Who opens: `outbound` (the device), `inbound` (the remote) or `both`.
    pub direction: String,
    /// `ipv4` or `ipv6` when the rule reaches that family only; absent: both.
    #[serde(default)]
    pub family: Option<String>,
    /// Where the rule is written, `file:line:column`.
    pub at: String,
}

/// A range of ports, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyPorts {
    pub first: u16,
    pub last: u16,
}

/// A lane of the running policy: what devices not on a class may reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyLane {
    /// `onboarding` (unknown and onboarding devices), `quarantine` (quarantined devices'
    /// allow-list) or `update` (added to the quarantine lane and to classes that ask for it).
    pub name: String,
    pub description: Option<String>,
    pub allow: Vec<PolicyRule>,
    /// Quarantine lane only: quarantined devices also get the update lane's rules.
    pub includes_update: bool,
    /// Where the lane is written; absent when no file defines it (it allows nothing).
    pub at: Option<String>,
}

/// The verdicts for traffic no rule decides: `pass`, `drop` or `redirect` (to the quarantine
/// port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyVerdicts {
    /// Frames the datapath cannot parse.
    pub malformed: String,
    /// Unknown or onboarding devices outside the onboarding lane.
    pub unknown_device: String,
    /// Enrolled devices outside their class's rules.
    pub policy_miss: String,
    /// Quarantined devices outside the quarantine lane.
    pub quarantine: String,
}

/// One `[[response]]` rule in force: what the gateway does on its own when a detector alerts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyResponse {
    pub name: String,
    /// Detector names; empty means every detector.
    pub detectors: Vec<String>,
    /// Alerts scoring below this are left alone.
    pub min_score: f64,
    /// `alert`, `update_lane`, `quarantine` or `block`.
    pub action: String,
    /// At most this many actions per device within `device_period_secs`.
    pub max_per_device: u32,
    pub device_period_secs: u64,
    /// At most this many actions over all devices within `global_period_secs`.
    pub max_global: u32,
    pub global_period_secs: u64,
    /// Devices and classes the rule never acts on, sorted.
    pub exempt_macs: Vec<String>,
    pub exempt_classes: Vec<String>,
    /// Where the rule is written, `file:line:column`.
    pub at: String,
}

/// `GET /api/v1/policies`: the running policy, as the policy component last loaded it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicySnapshot {
    /// Content hash or version of the running policy; absent before the first load.
    pub version: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub loaded_at: Option<OffsetDateTime>,
    /// Files the running policy was built from.
    pub files: Vec<String>,
    pub classes: Vec<PolicyClass>,
    /// Why the last reload was refused, if it was (the previous policy still runs); cleared
    /// by the next accepted reload.
    pub last_refused: Option<String>,
    /// When `last_refused` happened.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_refused_at: Option<OffsetDateTime>,
    /// The last load or reload, accepted or refused; absent before the first.
    #[serde(default)]
    pub last_reload: Option<PolicyReload>,
    /// The verdicts when no rule decides; absent before the first load.
    #[serde(default)]
    pub verdicts: Option<PolicyVerdicts>,
    /// The onboarding, quarantine and update lanes.
    #[serde(default)]
    pub lanes: Vec<PolicyLane>,
    /// The `[[response]]` rules in force, in file order.
    #[serde(default)]
    pub responses: Vec<PolicyResponse>,
}

/// A load or reload of the policy files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyReload {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// False when it was refused (whole or in part): `last_refused` says why.
    pub accepted: bool,
}

/// Body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// Set where a client must tell this refusal from others of its status: `csrf` (403: a
    /// session-cookie request without the right X-CSRF-Token, or from a foreign Origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}
