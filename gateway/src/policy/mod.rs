//! The policy files ops edit (`policies/*.toml`) and what they become in the datapath.
//!
//! - `load`: finds and reads the files and parses their TOML, recovering after errors;
//! - `schema`: the TOML as serde reads it (every value with its span);
//! - `checks`: schema → the checked `model` (`Policy`), merging files and refusing what
//!   contradicts itself; `values` parses single values (networks, ports, DNS names...);
//! - `error`: every problem with its `file:line:column`;
//! - `model`: the checked policy; `verdict`: the default verdicts and their datapath codes;
//! - `compile`: `Policy` → `CompiledPolicy`: the `entries` `datapath::maps` writes (merged
//!   so each answers alone), the default verdicts and the DNS-name rules;
//! - `classify`: device → class (MAC, OUI, fingerprint type, certificate subject);
//! - `dns`: `DnsTracker`, which keeps DNS-name rules true from the answers devices receive
//!   to the queries they sent (`[policy.dns]` bounds the wait, the memory and the TTLs);
//! - `mud`: RFC 8520 MUD files → policy TOML;
//! - `remote`: rule remotes only the gateway can resolve (LAN prefixes, its own address,
//!   a class's controllers, devices by MUD URL), as entries merged like DNS-derived ones;
//! - `config`: the `[policy]` section of the gateway configuration (folder, watch, `dns`,
//!   what `remote` rules resolve against);
//! - `store`: atomic reload (`PolicyStore`) and the folder watcher;
//! - `swap`: replaces the folder's whole set of files with a staged one (fleet bundles);
//! - `view`: the policy in force as JSON (`CompiledPolicy::view`, for the API).
//!
//! Reads policy files and DNS messages; writes nothing itself: the controller hands
//! `CompiledPolicy` to `datapath::maps`.
//!
//! Extension point: `[[response]]` tables are kept raw in `CompiledPolicy::responses` for
//! `crate::respond` to parse; `check` (so `policy check`, `iotgw run` and every reload) runs
//! the `Extension` check its caller passes (`respond::rules::policy_errors`) with the rest. Every other unknown top-level table is
//! an error.

mod checks;
pub mod classify;
pub mod compile;
pub mod config;
pub mod dns;
pub mod entries;
pub mod error;
pub mod load;
pub mod model;
pub mod mud;
#[cfg(test)]
mod property_tests;
pub mod remote;
pub mod schema;
pub mod store;
pub mod swap;
pub mod values;
pub mod verdict;
pub mod view;

pub use classify::{ClassRef, MatchedBy};
pub use compile::{CompiledClass, CompiledPolicy, DnsRule, compile};
pub use config::Config;
pub use dns::{DnsBinding, DnsError, DnsTracker, DnsUpdate, policies_in_force};
pub use entries::{CompiledRule, PortMatchKey, PortRangeKey};
pub use error::{ErrorKind, Location, PolicyError};
pub use load::{load_paths, parse_sources};
pub use model::{ClassId, Policy, PolicyId};
pub use store::{
    Extension, PolicyStore, PolicyWatcher, ReloadRequest, WATCH_DEBOUNCE, WatchError, check, check_sources,
    no_extension, reload, watch,
};
pub use verdict::{Verdict, Verdicts};

/// Checks and compiles one policy text (`t.toml`), panicking on errors: for tests.
#[cfg(test)]
pub(crate) fn check_text(text: &str) -> CompiledPolicy {
    let policy = parse_sources(&[(std::path::PathBuf::from("t.toml"), text.to_owned())])
        .unwrap_or_else(|errors| panic!("test policy refused: {errors:#?}"));
    compile(&policy).unwrap_or_else(|errors| panic!("test policy does not compile: {errors:#?}"))
}

/// The errors of policy files `(name, text)` as `(line, column, kind)`; none when they load.
#[cfg(test)]
pub(crate) fn located_errors(files: &[(&str, &str)]) -> Vec<(usize, usize, ErrorKind)> {
    let sources: Vec<(std::path::PathBuf, String)> =
        files.iter().map(|(name, text)| (std::path::PathBuf::from(name), (*text).to_owned())).collect();
    match parse_sources(&sources) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| (e.at.line, e.at.column, e.kind)).collect(),
    }
}
