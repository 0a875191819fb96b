//! inventory (to be filled in by its issue).

/// Schema of the inventory tables.
pub const MIGRATIONS: &[crate::store::Migration] = &[];
