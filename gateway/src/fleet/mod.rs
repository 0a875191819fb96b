//! The gateway's side of the fleet: it reports to the hub over NATS JetStream and takes policy
//! bundles and commands from it. Gateways connect outbound only (they sit behind NAT).
//!
//! What travels, and on which subject (`subjects`), is `wire`; `config` is the `[fleet]`
//! section. The hub's side is `crate::hub`; both sides share these three modules so the wire
//! format has one definition.
pub mod config;
pub mod subjects;
pub mod wire;

pub use config::Config;
