//! The gateway's side of the fleet: it reports to the hub over NATS JetStream and takes policy
//! bundles and commands from it. Gateways connect outbound only (they sit behind NAT).
//!
//! What travels, and on which subject (`subjects`), is `wire`; `config` is the `[fleet]`
//! section. The hub's side is `crate::hub`; both sides share these three modules so the wire
//! format has one definition.
use std::sync::{Arc, Mutex};

pub mod commands;
pub mod config;
pub mod connect;
pub mod subjects;
pub mod wire;

pub use config::Config;

/// The policy bundle this gateway enforces, and the last one it refused: the bundle watcher
/// writes it, the health report reads it.
#[derive(Clone, Debug, Default)]
pub struct BundleStatus {
    pub enforced: Option<u64>,
    pub refused: Option<wire::BundleRefusal>,
}

pub type SharedBundleStatus = Arc<Mutex<BundleStatus>>;
