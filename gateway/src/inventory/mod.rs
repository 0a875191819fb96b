//! inventory (being built).
pub mod replay;

/// Schema of the inventory tables.
pub const MIGRATIONS: &[crate::store::Migration] = &[];
