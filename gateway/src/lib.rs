//! iotgw's userspace controller. A packet's path through it, one module per step:
//!
//! `datapath` (load XDP, read the ring buffer) → `inventory` (who is this device) →
//! `fingerprint` (what kind of device) → `baseline` (what it normally does) → `detect`
//! (is this abnormal) → `respond` (what to do) → `datapath::maps` (the only writer of BPF maps).
//!
//! Beside that path: `policy` (the files ops edit), `identity` (certificates and enrollment),
//! `ota` (signed firmware), `integrations` (SIEM/SOAR/ITSM), `alerts` (every alert as a record
//! an analyst works through), `api` (local HTTP status and actions), `console` (the web
//! console the API serves), `store` (the SQLite file; `schema` lists every component's tables), `config` (the
//! gateway's own configuration), `untrusted` (how text from devices and callers is escaped
//! before it is stored or rendered), `domain` (registrable domains by the public suffix
//! list), `toml_error` (where a TOML error points, for every file the gateway reads),
//! `fsutil` (crash-safe file replacement).
// `deny`, not `forbid`: `datapath::batch` alone allows it, for the `bpf(2)` batch calls aya lacks.
#![deny(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod baseline;
pub mod cli;
pub mod config;
pub mod console;
pub mod controller;
pub mod datapath;
pub mod detect;
pub mod device;
pub mod domain;
pub mod error_chain;
pub mod event;
pub mod fingerprint;
pub mod fleet;
pub mod fsutil;
pub mod hub;
pub mod identity;
pub mod integrations;
pub mod inventory;
pub mod mud;
pub mod ota;
pub mod pipeline;
pub mod policy;
pub mod respond;
pub mod schema;
pub mod shutdown;
pub mod source_guard;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_datasets;
pub mod toml_error;
pub mod untrusted;
