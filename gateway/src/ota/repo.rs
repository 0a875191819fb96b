//! The firmware repository on disk: TUF metadata files, images, and the keys the gateway holds.
//!
//! Layout under the repository folder:
//! - `metadata/{N}.root.json`, `metadata/{N}.targets.json`, `metadata/{N}.{vendor}.json`
//!   (consistent snapshots: every version stays, so devices can fetch exactly what a snapshot
//!   names), plus `root.json` as a copy of the newest root;
//! - `targets/{path}`: the images, named by their target path;
//! - keys (default `keys/`, may live elsewhere): `root-*.pem` (several, threshold),
//!   `targets.pem`, `snapshot.pem`, `timestamp.pem`, each with its `.pub.pem`.
//!
//! Writes go to a temp file, fsync, rename; the accepted version of each role is recorded in
//! SQLite (`ota_metadata`) only after its files are in place, so that record is the commit
//! point: a refused or interrupted upload leaves what was served before. Snapshot and
//! timestamp are not files: they are signed per device view by `sign_view` (see `rollout`).
//!
//! This module holds the layout and reads what was accepted; `signing` writes the roles the
//! gateway signs (root, targets, delegations), `uploads` takes vendor releases and stores
//! their images, `views` signs each device view's snapshot and timestamp.
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use time::{Duration, OffsetDateTime};

use super::{
    db,
    keys::KeyError,
    metadata::{self, DelegatedRole, MetadataError, Root, Signed, Targets},
};

mod signing;
mod uploads;
mod views;

pub use signing::InitOptions;
pub use uploads::{Accepted, check_target_path, hash_file};
pub use views::{SignedView, View};

/// Default lifetime of root metadata.
pub const ROOT_LIFETIME: Duration = Duration::days(365);
/// Default lifetime of the top-level targets metadata.
pub const TARGETS_LIFETIME: Duration = Duration::days(365);
/// Default lifetime of a vendor's release metadata.
pub const VENDOR_LIFETIME: Duration = Duration::days(90);
/// Lifetime of each signed snapshot view.
pub const SNAPSHOT_LIFETIME: Duration = Duration::days(7);
/// Lifetime of each signed timestamp view; the service re-signs at half of it.
pub const TIMESTAMP_LIFETIME: Duration = Duration::days(1);
/// Names of the top-level roles.
pub const TOP_ROLES: [&str; 4] = ["root", "targets", "snapshot", "timestamp"];

/// Why a repository operation was refused. Nothing stored changes when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// Signature, threshold, type, expiry or version problem of a metadata document.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("ota store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// `init` on a repository that already has a root.
    #[error("{0} already holds a repository")]
    AlreadyInitialised(PathBuf),
    /// Any operation on a folder without `init`.
    #[error("no repository initialised in {0} (run `iotgw ota init`)")]
    NotInitialised(PathBuf),
    /// The upload names a role that the targets role does not delegate.
    #[error("role {0:?} is not delegated by the targets role (run `iotgw ota delegate`)")]
    UnknownRole(String),
    /// The role lists a path outside its delegated patterns.
    #[error("role {role:?} may not sign for {path:?}")]
    NotCovered { role: String, path: String },
    /// The image is shorter than the signed length.
    #[error("image for {path} is truncated: {found} bytes, signed length is {expected}")]
    TruncatedImage { path: String, expected: u64, found: u64 },
    /// The image's bytes differ from the signed length or sha256.
    #[error("image for {path} is tampered: its sha256/length does not match the signed metadata")]
    TamperedImage { path: String },
    /// A target already published changed length or hash.
    #[error("target {0} is already published with other contents; publish a new path")]
    ChangedTarget(String),
    /// The upload adds no target, or more than one (one image per upload).
    #[error("the upload must add exactly one new target, it adds {0}")]
    NewTargetCount(usize),
    /// Same role version as accepted, or older: replay or rollback.
    #[error("{role} metadata version {offered} is not newer than the accepted version {accepted} (rollback or replay)")]
    StaleRole { role: String, accepted: u64, offered: u64 },
    /// The firmware version is not above what is already published for a class.
    #[error("firmware {offered} for class {class:?} is not newer than the published {current} (rollback)")]
    FirmwareRollback { class: String, offered: String, current: String },
    /// Too few private keys on hand to reach a role's threshold.
    #[error("{role}: {have} key(s) available, threshold is {threshold}")]
    NotEnoughKeys { role: String, have: usize, threshold: u32 },
    /// Bad arguments (threshold above the key count, empty class list, ...).
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io { path: path.to_owned(), source }
}

/// The repository folder and its keys.
#[derive(Clone, Debug)]
pub struct Repository {
    dir: PathBuf,
    keys_dir: PathBuf,
}

impl Repository {
    /// `keys_dir` defaults to `dir/keys`.
    pub fn open(dir: &Path, keys_dir: Option<&Path>) -> Self {
        Self { dir: dir.to_owned(), keys_dir: keys_dir.map_or_else(|| dir.join("keys"), Path::to_owned) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn metadata_path(&self, role: &str, version: u64) -> PathBuf {
        self.dir.join("metadata").join(format!("{version}.{role}.json"))
    }

    /// Where a target's image lives. `path` was checked by `check_target_path` on upload.
    pub fn target_path(&self, path: &str) -> PathBuf {
        self.dir.join("targets").join(path)
    }

    /// The accepted root, read from disk and checked against its own keys.
    pub fn root(&self, conn: &Connection) -> Result<Root, RepoError> {
        let row = db::role(conn, "root")?.ok_or_else(|| RepoError::NotInitialised(self.dir.clone()))?;
        let bytes = self.read_checked("root", row.version, &row.sha256)?;
        let unverified: Signed<Root> = serde_json::from_slice(&bytes)
            .map_err(|e| MetadataError::Malformed { role: "root".into(), detail: e.to_string() })?;
        let root = unverified.signed;
        Ok(metadata::verify::<Root>(&bytes, "root", &root.keys, metadata::root_role(&root, "root")?)?)
    }

    /// The accepted top-level targets role, verified against the root.
    pub fn targets(&self, conn: &Connection) -> Result<Targets, RepoError> {
        let root = self.root(conn)?;
        let row = db::role(conn, "targets")?.ok_or_else(|| RepoError::NotInitialised(self.dir.clone()))?;
        let bytes = self.read_checked("targets", row.version, &row.sha256)?;
        Ok(metadata::verify::<Targets>(&bytes, "targets", &root.keys, metadata::root_role(&root, "targets")?)?)
    }

    /// The accepted version of a vendor role, verified against its delegation.
    pub fn vendor_role(&self, conn: &Connection, name: &str) -> Result<Option<Targets>, RepoError> {
        let Some(row) = db::role(conn, name)? else { return Ok(None) };
        let delegation = self.delegation(conn, name)?;
        let bytes = self.read_checked(name, row.version, &row.sha256)?;
        let keys = self.targets(conn)?.delegations.unwrap_or_default().keys;
        Ok(Some(metadata::verify::<Targets>(&bytes, name, &keys, &delegation.role_keys())?))
    }

    fn delegation(&self, conn: &Connection, name: &str) -> Result<DelegatedRole, RepoError> {
        self.targets(conn)?
            .delegations
            .unwrap_or_default()
            .roles
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| RepoError::UnknownRole(name.to_owned()))
    }

    /// Reads a metadata file and checks it is the one recorded as accepted (a file changed on
    /// disk behind the gateway's back is refused, not served).
    fn read_checked(&self, role: &str, version: u64, sha256: &str) -> Result<Vec<u8>, RepoError> {
        let path = self.metadata_path(role, version);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if metadata::sha256_hex(&bytes) != sha256 {
            return Err(MetadataError::HashMismatch { what: path.display().to_string() }.into());
        }
        Ok(bytes)
    }

    /// Raw bytes of an accepted metadata version (for serving). Only versions up to the
    /// accepted one are served.
    pub fn metadata_bytes(&self, conn: &Connection, role: &str, version: u64) -> Result<Option<Vec<u8>>, RepoError> {
        let Some(row) = db::role(conn, role)? else { return Ok(None) };
        if version == 0 || version > row.version {
            return Ok(None);
        }
        if version == row.version {
            return self.read_checked(role, version, &row.sha256).map(Some);
        }
        let path = self.metadata_path(role, version);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests;
