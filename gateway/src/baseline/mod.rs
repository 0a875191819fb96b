//! baseline (to be filled in by its issue).

/// Schema of the baseline tables.
pub const MIGRATIONS: &[crate::store::Migration] = &[];
