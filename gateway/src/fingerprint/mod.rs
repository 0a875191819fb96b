//! Passive device-type fingerprinting. Reads `DatapathEvent`s (DHCP, DNS, SSDP and TLS
//! samples, new flows with their SYN fingerprint) and per-interval traffic counters; writes
//! nothing.
//!
//! - `dhcp`, `dns`, `ssdp`, `tls`, `syn`: one parser per protocol, each hostile-input safe (an
//!   error, never a panic);
//! - `sample`: reads a `PacketSample` into one of those (once, shared by inventory and features);
//! - `features`: accumulates what one device showed into a fixed-length feature vector;
//! - `forest`: a random forest over those vectors giving a device type and a confidence;
//! - `taxonomy`: product → vendor → generic type (`gateway/models/taxonomy.toml`);
//! - `openset`: calibrated confidence, novelty and the gates that answer `unknown`;
//! - `model`: the model as the gateway runs it (shipped in `gateway/models/device-types.json`);
//! - `training`: labelled captures → model, gates fitted on held-out folds of the training data;
//! - `evaluation`: nested cross-validation, leave-one-unit-out, unseen products.

pub mod dhcp;
pub mod dns;
pub mod evaluation;
pub mod features;
pub mod forest;
pub mod model;
pub mod openset;
pub mod sample;
pub mod ssdp;
pub mod syn;
pub mod taxonomy;
pub mod tls;
pub mod training;

pub use features::DeviceFeatures;
pub use model::{Classifier, Guess, TypeLevel};

/// Why a sampled packet could not be read. The packet is ignored; nothing stored changes.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FingerprintError {
    /// Not a DHCPv4 message, or truncated.
    #[error("malformed DHCP message: {0}")]
    Dhcp(String),
    /// Not a DNS message, or truncated.
    #[error("malformed DNS message: {0}")]
    Dns(String),
    /// Not a TLS ClientHello, or cut before its cipher list.
    #[error("malformed TLS ClientHello: {0}")]
    Tls(String),
    /// Not an SSDP announcement, search or search answer.
    #[error("malformed SSDP message: {0}")]
    Ssdp(String),
    /// Not Ethernet/IPv4 ARP, or truncated.
    #[error("malformed ARP packet: {0}")]
    Arp(&'static str),
    /// A sample taken for another step (DHCPv6 and LLDP: MUD announcements, `crate::mud`).
    #[error("{0:?} samples carry no fingerprint")]
    NotFingerprinted(crate::datapath::events::SampleKind),
}
