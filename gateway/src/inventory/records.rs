//! What the inventory's read queries return. These structs are the JSON the API serves
//! (`/api/v1/devices`, `/devices/{mac}`, `/devices/{mac}/flows`): fields are only ever added,
//! never renamed or removed. Times are RFC 3339 (UTC), MACs `aa:bb:cc:dd:ee:ff`.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::device::{Access, Mac};

/// One device, as listed by `Inventory::devices`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub mac: Mac,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Organisation of the MAC's IEEE assignment; `None` when unknown or locally administered.
    pub vendor: Option<String>,
    /// The MAC is locally administered (random or set by software): it names no vendor.
    pub locally_administered: bool,
    /// Last host name the device gave in DHCP (option 12).
    pub hostname: Option<String>,
    /// Device-type guess of the fingerprint classifier (a product, or `unknown` when the device
    /// is unlike every known one) and its confidence (0..=1).
    pub device_type: Option<String>,
    pub type_confidence: Option<f64>,
    /// The guess's vendor and generic type (`ip-camera`, `smart-plug`, ... or `unknown`), each
    /// with its confidence (`fingerprint::taxonomy`).
    #[serde(default)]
    pub type_vendor: Option<String>,
    #[serde(default)]
    pub type_vendor_confidence: Option<f64>,
    #[serde(default)]
    pub generic_type: Option<String>,
    #[serde(default)]
    pub generic_confidence: Option<f64>,
    /// What the datapath enforces for it.
    pub access: Access,
    /// Identity lifecycle state, as set by the identity component (`enrolled`, `revoked`...).
    pub lifecycle: Option<String>,
    /// Device class (and so policy) it is assigned to.
    pub class: Option<String>,
    pub firmware_version: Option<String>,
    /// Subject of its client certificate, once enrolled.
    pub cert_subject: Option<String>,
    /// Identity's device id, once enrolled.
    pub device_id: Option<String>,
    /// Addresses seen as its source, most recent first.
    pub ips: Vec<IpAddr>,
    /// Flows it opened since first seen (the retained ones are in `flows`).
    pub flows_total: u64,
    /// Traffic since first seen.
    pub traffic: TrafficTotals,
}

/// Sums of a device's traffic rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficTotals {
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub rx_packets: u64,
}

/// One device with everything known about it (`Inventory::device`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceRecord,
    pub addresses: Vec<AddressRecord>,
    pub fingerprints: Vec<FingerprintRecord>,
}

/// An address seen as the device's source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    pub ip: IpAddr,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

/// Kinds of passive fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FingerprintKind {
    /// DHCP option 55, comma-separated codes in the client's order.
    DhcpParameterList,
    /// DHCP option 60.
    DhcpVendorClass,
    /// DHCP option 12.
    DhcpHostname,
    /// p0f-style TCP SYN signature (`fingerprint::syn::signature`).
    TcpSyn,
    /// A name the device asked DNS for.
    DnsName,
    /// JA3 hash of a TLS ClientHello; `detail` holds the JA3 text.
    TlsJa3,
    /// TLS server name indication.
    TlsServerName,
}

impl FingerprintKind {
    pub const ALL: [FingerprintKind; 7] = [
        FingerprintKind::DhcpParameterList,
        FingerprintKind::DhcpVendorClass,
        FingerprintKind::DhcpHostname,
        FingerprintKind::TcpSyn,
        FingerprintKind::DnsName,
        FingerprintKind::TlsJa3,
        FingerprintKind::TlsServerName,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FingerprintKind::DhcpParameterList => "dhcp_parameter_list",
            FingerprintKind::DhcpVendorClass => "dhcp_vendor_class",
            FingerprintKind::DhcpHostname => "dhcp_hostname",
            FingerprintKind::TcpSyn => "tcp_syn",
            FingerprintKind::DnsName => "dns_name",
            FingerprintKind::TlsJa3 => "tls_ja3",
            FingerprintKind::TlsServerName => "tls_server_name",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One fingerprint value of a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintRecord {
    pub kind: FingerprintKind,
    pub value: String,
    pub detail: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Times it was seen.
    pub count: u64,
}

/// A flow the device opened (its first packet), as the datapath reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    pub frame_bytes: u32,
    /// `pass`, `drop` or `redirect`.
    pub verdict: String,
    /// Drop reason name (`gateway_ebpf::reason::NAMES`), `none` when passed.
    pub reason: String,
}

/// A device's traffic in one bucket `[start, start + seconds)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub seconds: u32,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub rx_packets: u64,
}

/// One audit-log entry: a state change and who or what caused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// `inventory`, `fingerprint`, `api:alice`, `detector:scan`, `policy-file`...
    pub actor: String,
    pub mac: Option<Mac>,
    /// `device_added`, `access_changed`, `type_changed`, `hostname_changed`...
    pub action: String,
    pub detail: String,
}

/// Where a device connects (`destinations`): its flows to one address, port and protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationRecord {
    pub dst: IpAddr,
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Names the address was the answer to, in the DNS answers the device received.
    pub names: Vec<String>,
    /// Flows among the retained ones (`Config::flows_per_device`).
    pub flows: u64,
    /// Sum of the flows' first frames (the datapath counts bytes per device, not per flow).
    pub bytes: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The latest flow's verdict: `pass`, `drop` or `redirect`.
    pub verdict: String,
}
