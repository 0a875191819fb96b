//! The MUD files the gateway accepted, as the classes they became: the cache RFC 8520's
//! `cache-validity` asks for, and the one place MUD class ids are allocated. Reads and writes
//! `mud_files`.
//!
//! A MUD URL names a device model, so all devices announcing one URL share its class. The
//! class keeps its id for as long as the URL is known, and a changed file at that URL replaces
//! the class's rules in place: every device on it moves to the new rules at the next policy
//! load. Ids come from `GENERATED_CLASS_IDS`, a range the policy files' classes cannot use
//! (`policy::store` refuses them there), so a MUD class never collides with a file's.
use std::{path::PathBuf, time::SystemTime};

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::policy::store::GENERATED_CLASS_IDS as CLASS_IDS;

/// Schema of the MUD cache.
pub const MIGRATIONS: &[crate::store::Migration] = &[crate::store::Migration {
    component: "mud",
    version: 1,
    sql: "
CREATE TABLE mud_files (
    url TEXT PRIMARY KEY,
    class_id INTEGER NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    signer TEXT NOT NULL,
    fetched INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    policy TEXT NOT NULL
);
",
}];

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Every id of `CLASS_IDS` is taken.
    #[error("no free MUD class id (all {} are taken)", CLASS_IDS.len())]
    NoClassId,
}

/// An accepted MUD file as its class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedFile {
    pub url: String,
    pub class_id: u16,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    pub signer: String,
    /// Unix milliseconds.
    pub fetched: i64,
    pub valid_until: i64,
    /// The class as policy TOML (`policy::mud::import`).
    pub policy: String,
}

impl CachedFile {
    /// The class's name: `mud-<id>`.
    pub fn class_name(&self) -> String {
        class_name(self.class_id)
    }
}

/// The name of MUD class `id`.
pub fn class_name(id: u16) -> String {
    format!("mud-{id}")
}

/// Unix milliseconds.
pub fn millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const SELECT: &str = "SELECT url, class_id, sha256, signer, fetched, valid_until, policy FROM mud_files";

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CachedFile> {
    Ok(CachedFile {
        url: row.get(0)?,
        class_id: row.get(1)?,
        sha256: row.get(2)?,
        signer: row.get(3)?,
        fetched: row.get(4)?,
        valid_until: row.get(5)?,
        policy: row.get(6)?,
    })
}

/// The file cached for `url`, valid or not.
pub fn file(conn: &Connection, url: &str) -> Result<Option<CachedFile>, StoreError> {
    Ok(conn.query_row(&format!("{SELECT} WHERE url = ?1"), [url], row).optional()?)
}

/// Every cached file, by class id.
pub fn files(conn: &Connection) -> Result<Vec<CachedFile>, StoreError> {
    let mut statement = conn.prepare(&format!("{SELECT} ORDER BY class_id"))?;
    let files = statement.query_map([], row)?.collect::<Result<_, _>>()?;
    Ok(files)
}

/// The class id of `url`: its own if it has one, else the lowest free one.
pub fn class_id_for(conn: &Connection, url: &str) -> Result<u16, StoreError> {
    if let Some(id) = conn.query_row("SELECT class_id FROM mud_files WHERE url = ?1", [url], |r| r.get(0)).optional()? {
        return Ok(id);
    }
    let mut statement = conn.prepare("SELECT class_id FROM mud_files ORDER BY class_id")?;
    let taken: Vec<u16> = statement.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    CLASS_IDS.clone().find(|id| taken.binary_search(id).is_err()).ok_or(StoreError::NoClassId)
}

/// Stores (or replaces) the file of `file.url`.
pub fn save(conn: &Connection, file: &CachedFile) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO mud_files (url, class_id, sha256, signer, fetched, valid_until, policy)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (url) DO UPDATE SET class_id = ?2, sha256 = ?3, signer = ?4, fetched = ?5,
             valid_until = ?6, policy = ?7",
        params![file.url, file.class_id, file.sha256, file.signer, file.fetched, file.valid_until, file.policy],
    )?;
    Ok(())
}

/// The classes as policy sources for `policy::PolicyStore`: each file's TOML, under the
/// name `mud:<url>` (what policy messages and the API's `file:line` show).
pub fn policy_sources(files: &[CachedFile]) -> Vec<(PathBuf, String)> {
    files.iter().map(|file| (PathBuf::from(format!("mud:{}", file.url)), file.policy.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(url: &str, class_id: u16) -> CachedFile {
        CachedFile {
            url: url.into(),
            class_id,
            sha256: "00".into(),
            signer: "CN=s".into(),
            fetched: 1,
            valid_until: 2,
            policy: String::new(),
        }
    }

    #[test]
    fn class_ids_are_kept_per_url_and_reused_when_free() {
        let conn = crate::store::open_in_memory(&[MIGRATIONS]).unwrap();
        let first = class_id_for(&conn, "https://a.example/x.json").unwrap();
        assert_eq!(first, *CLASS_IDS.start());
        save(&conn, &cached("https://a.example/x.json", first)).unwrap();
        assert_eq!(class_id_for(&conn, "https://a.example/x.json").unwrap(), first, "its own id");
        let second = class_id_for(&conn, "https://b.example/y.json").unwrap();
        assert_eq!(second, first + 1);
        save(&conn, &cached("https://b.example/y.json", second)).unwrap();
        conn.execute("DELETE FROM mud_files WHERE class_id = ?1", [first]).unwrap();
        assert_eq!(class_id_for(&conn, "https://c.example/z.json").unwrap(), first, "a freed id is reused");
        assert_eq!(files(&conn).unwrap().len(), 1);
        let mut changed = cached("https://b.example/y.json", second);
        changed.sha256 = "11".into();
        save(&conn, &changed).unwrap();
        assert_eq!(file(&conn, "https://b.example/y.json").unwrap(), Some(changed));
    }
}
