//! MUD at run time (RFC 8520): devices announce where their Manufacturer Usage Description
//! is; the gateway fetches it, checks it and makes it the device's class.
//!
//! - `announce`: the MUD URL in a DHCPv4, DHCPv6 or LLDP sample;
//! - `url`: which URLs may be fetched (`https`, `[mud] authorities`, length bounds);
//! - `fetch`: HTTPS with timeouts, a size cap and checked redirects;
//! - `signature`: the detached CMS signature, its signer chained to `[mud] trust_anchors`;
//! - `resolve`: every check in order, from announced URL to imported class;
//! - `store`: the accepted files as classes (`mud_files`): the cache and the class ids;
//! - `step`: one announcement from URL to class in force, recorded in the inventory;
//! - `config`: the `[mud]` section.
//!
//! Reads samples, the network and the store; writes `mud_files` and, through
//! `inventory::mud`, the devices' MUD records and audit. The controller runs `step` as a task
//! (`controller/mud.rs`) with the policy step as its gate.
pub mod announce;
pub mod config;
pub mod fetch;
pub mod resolve;
pub mod signature;
pub mod step;
pub mod store;
pub mod url;

pub use config::Config;
pub use resolve::{MudError, Resolved, Resolver};
pub use store::MIGRATIONS;
