//! Signed firmware updates (OTA) through the gateway.
//!
//! - `metadata`: TUF roles, canonical-JSON Ed25519 signing and verification.
//! - `keys`, `fsutil`: key files and crash-safe writes.
//! - `repo`: the repository on disk (root, targets, vendor delegations, images); accepts vendor
//!   uploads only when signatures, hashes, expiry and versions check out.
//! - `db`: the `ota_*` tables (component `ota` in the store).
//!
//! Reads the repository folder, its keys and the store; writes the same.
pub mod db;
pub mod fsutil;
pub mod keys;
pub mod metadata;
pub mod repo;
pub mod rollout;

/// Schema of the ota tables.
pub const MIGRATIONS: &[crate::store::Migration] = db::MIGRATIONS;

/// This component's section of the gateway config file.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}
