//! identity (in progress).
pub mod ca;
pub mod check;
pub mod lifecycle;
pub mod names;

/// Schema of the identity tables.
pub const MIGRATIONS: &[crate::store::Migration] = &[];

/// This component's section of the gateway config file.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}
