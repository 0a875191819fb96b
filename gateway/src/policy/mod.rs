//! The policy files ops edit (`policies/*.toml`) and what they become in the datapath.
//!
//! - `schema`: the TOML as serde reads it (every value with its span);
//! - `load`: reads files into a checked `Policy`, collecting every error with
//!   `file:line:column` (`error`);
//! - `compile`: `Policy` → `CompiledPolicy`, the LPM entries `datapath::maps` writes, the
//!   default verdicts and the DNS-name rules;
//! - `classify`: device → class (MAC, OUI, fingerprint type, certificate subject);
//! - `dns`: `DnsTracker`, which keeps DNS-name rules true from the answers devices receive;
//! - `mud`: RFC 8520 MUD files → policy TOML;
//! - `store`: atomic reload (`PolicyStore`) and the folder watcher;
//! - `view`: the policy in force as JSON (`CompiledPolicy::view`, for the API).
//!
//! Reads policy files and DNS messages; writes nothing itself: the controller hands
//! `CompiledPolicy` to `datapath::maps`.
//!
//! Extension point: `[[response]]` tables are kept raw in `CompiledPolicy::responses` for
//! `crate::respond` to parse; `check` (so `policy check`, `iotgw run` and every reload) has
//! `crate::respond::rules` check them with the rest. Every other unknown top-level table is
//! an error.

pub mod classify;
pub mod compile;
pub mod dns;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod load;
pub mod mud;
pub mod schema;
pub mod store;
pub mod view;

pub use classify::{ClassRef, MatchedBy};
pub use compile::{AbiEntry, CompiledClass, CompiledPolicy, CompiledRule, DnsRule, PortRangeKey, Verdicts, compile};
pub use dns::{DnsBinding, DnsError, DnsTracker, DnsUpdate, policies_in_force};
pub use error::{ErrorKind, Location, PolicyError};
pub use load::{ClassId, Policy, PolicyId, load_paths, parse_sources};
pub use store::{PolicyStore, PolicyWatcher, ReloadRequest, WATCH_DEBOUNCE, WatchError, check, reload, watch};

/// Checks and compiles one policy text (`t.toml`), panicking on errors: for tests.
#[cfg(test)]
pub(crate) fn check_text(text: &str) -> CompiledPolicy {
    let policy = parse_sources(&[(std::path::PathBuf::from("t.toml"), text.to_owned())])
        .unwrap_or_else(|errors| panic!("test policy refused: {errors:#?}"));
    compile(&policy).unwrap_or_else(|errors| panic!("test policy does not compile: {errors:#?}"))
}
