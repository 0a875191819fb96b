//! The whole store's schema: every component's migrations, for the processes that open the
//! store as a whole (the controller at start-up, the CLI, benchmarks). A component opening its
//! own connection passes only the lists of the tables it uses; `store` itself knows none.
use crate::store::Schema;

/// Every component that owns tables. Append a component here when it gains its first table.
pub const ALL: Schema<'static> = &[
    crate::inventory::MIGRATIONS,
    crate::identity::MIGRATIONS,
    crate::baseline::MIGRATIONS,
    crate::integrations::MIGRATIONS,
    crate::ota::MIGRATIONS,
    crate::alerts::MIGRATIONS,
    crate::fleet::MIGRATIONS,
    crate::fleet::commands::MIGRATIONS,
    crate::mud::MIGRATIONS,
];

/// Opens the store at `path` with every component's tables up to date.
pub fn open(path: &std::path::Path) -> Result<rusqlite::Connection, crate::store::StoreError> {
    crate::store::open(path, ALL)
}

/// An in-memory store with every component's tables.
pub fn open_in_memory() -> Result<rusqlite::Connection, crate::store::StoreError> {
    crate::store::open_in_memory(ALL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_has_its_own_name_and_versions_from_one_up() {
        let mut seen = std::collections::HashSet::new();
        for list in ALL {
            let component = list[0].component;
            assert!(seen.insert(component), "{component} listed twice");
            for (i, crate::store::Migration { component: c, version, .. }) in list.iter().enumerate() {
                assert_eq!((*c, *version as usize), (component, i + 1));
            }
        }
    }
}
