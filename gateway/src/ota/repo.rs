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
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
};

use rusqlite::Connection;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use super::{
    db, fsutil,
    keys::{self, KeyError},
    metadata::{
        self, DelegatedRole, Delegations, FirmwareVersion, Hashes, Meta, MetaFile, MetadataError, RoleKeys, Root,
        Signed, SigningKey, Snapshot, TargetCustom, TargetFile, Targets, Timestamp,
    },
};

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
/// Buffer size for hashing and copying images (streamed, never whole in memory).
const COPY_CHUNK: usize = 64 * 1024;

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

/// How `init` builds the first root.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub root_keys: usize,
    pub root_threshold: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self { root_keys: 1, root_threshold: 1 }
    }
}

/// What devices may see: the version of the top-level targets role and of each vendor role.
/// A role absent from the map is not offered to the device at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct View {
    pub targets_version: u64,
    pub roles: BTreeMap<String, u64>,
}

/// A device view signed for one generation.
#[derive(Clone, Debug)]
pub struct SignedView {
    pub snapshot: Vec<u8>,
    pub timestamp: Vec<u8>,
}

/// A target accepted by `accept`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub role: String,
    pub role_version: u64,
    pub path: String,
    pub firmware_version: String,
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

    /// Creates keys for the four top-level roles, root v1 and an empty targets v1.
    pub fn init(&self, conn: &Connection, options: &InitOptions) -> Result<Root, RepoError> {
        if db::role(conn, "root")?.is_some() || self.metadata_path("root", 1).exists() {
            return Err(RepoError::AlreadyInitialised(self.dir.clone()));
        }
        if options.root_keys == 0 || options.root_threshold == 0 || options.root_threshold as usize > options.root_keys
        {
            return Err(RepoError::Invalid(format!(
                "root threshold {} must be between 1 and the number of root keys {}",
                options.root_threshold, options.root_keys
            )));
        }
        std::fs::create_dir_all(&self.keys_dir).map_err(io(&self.keys_dir))?;
        let root_keys: Vec<SigningKey> = (0..options.root_keys).map(|_| SigningKey::generate()).collect();
        for key in &root_keys {
            keys::save_new(&self.root_key_path(key), key)?;
        }
        for role in ["targets", "snapshot", "timestamp"] {
            keys::save_new(&self.keys_dir.join(format!("{role}.pem")), &SigningKey::generate())?;
        }
        let root = Root {
            kind: "root".into(),
            spec_version: metadata::SPEC_VERSION.into(),
            consistent_snapshot: true,
            version: 1,
            expires: metadata::header_now(ROOT_LIFETIME),
            keys: BTreeMap::new(),
            roles: BTreeMap::new(),
        };
        let root = self.with_role_keys(root, &root_keys, options.root_threshold)?;
        let refs: Vec<&SigningKey> = root_keys.iter().collect();
        self.write_root(conn, &Signed::sign(root.clone(), &refs))?;
        let targets = Targets {
            kind: "targets".into(),
            spec_version: metadata::SPEC_VERSION.into(),
            version: 1,
            expires: metadata::header_now(TARGETS_LIFETIME),
            targets: BTreeMap::new(),
            delegations: Some(Delegations::default()),
        };
        self.write_targets(conn, &targets)?;
        db::bump_generation(conn)?;
        Ok(root)
    }

    /// Fills keys and roles of a root with `root_keys` and the current online role keys.
    fn with_role_keys(&self, mut root: Root, root_keys: &[SigningKey], threshold: u32) -> Result<Root, RepoError> {
        root.keys.clear();
        root.roles.clear();
        let root_ids = root_keys.iter().map(|k| k.keyid()).collect();
        for key in root_keys {
            root.keys.insert(key.keyid(), key.public());
        }
        root.roles.insert("root".into(), RoleKeys { keyids: root_ids, threshold });
        for role in ["targets", "snapshot", "timestamp"] {
            let key = keys::load_public(&keys::public_path(&self.keys_dir.join(format!("{role}.pem"))))?;
            root.keys.insert(key.keyid(), key.clone());
            root.roles.insert(role.into(), RoleKeys { keyids: vec![key.keyid()], threshold: 1 });
        }
        Ok(root)
    }

    fn root_key_path(&self, key: &SigningKey) -> PathBuf {
        self.keys_dir.join(format!("root-{}.pem", &key.keyid().0[..16]))
    }

    fn write_root(&self, conn: &Connection, signed: &Signed<Root>) -> Result<(), RepoError> {
        let bytes = signed.to_bytes();
        let version = signed.signed.version;
        let path = self.metadata_path("root", version);
        fsutil::write_atomic(&path, &bytes).map_err(io(&path))?;
        let latest = self.dir.join("metadata").join("root.json");
        fsutil::write_atomic(&latest, &bytes).map_err(io(&latest))?;
        db::set_role(conn, "root", version, &rfc3339(signed.signed.expires), &metadata::sha256_hex(&bytes))?;
        Ok(())
    }

    fn write_targets(&self, conn: &Connection, targets: &Targets) -> Result<(), RepoError> {
        let key = keys::load_private(&self.keys_dir.join("targets.pem"))?;
        let bytes = Signed::sign(targets.clone(), &[&key]).to_bytes();
        // Check against the root before committing: a targets key that root does not list
        // would publish metadata no device accepts.
        let root = self.root(conn)?;
        metadata::verify::<Targets>(&bytes, "targets", &root.keys, metadata::root_role(&root, "targets")?)?;
        let path = self.metadata_path("targets", targets.version);
        fsutil::write_atomic(&path, &bytes).map_err(io(&path))?;
        db::set_role(conn, "targets", targets.version, &rfc3339(targets.expires), &metadata::sha256_hex(&bytes))?;
        Ok(())
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

    /// Delegates `paths` to a vendor role signed by `keys` with `threshold`. Re-signs targets.
    pub fn delegate(
        &self,
        conn: &Connection,
        name: &str,
        vendor_keys: &[metadata::PublicKey],
        threshold: u32,
        paths: &[String],
    ) -> Result<u64, RepoError> {
        if TOP_ROLES.contains(&name)
            || name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(RepoError::Invalid(format!("{name:?} is not a usable role name (letters, digits, - and _)")));
        }
        if threshold == 0 || threshold as usize > vendor_keys.len() || paths.is_empty() {
            return Err(RepoError::Invalid("a delegation needs paths, and 1 <= threshold <= number of keys".into()));
        }
        for path in paths {
            check_target_path(path.trim_end_matches('*').trim_end_matches('/'))?;
        }
        let mut targets = self.targets(conn)?;
        let delegations = targets.delegations.get_or_insert_with(Delegations::default);
        for key in vendor_keys {
            delegations.keys.insert(key.keyid(), key.clone());
        }
        delegations.roles.retain(|r| r.name != name);
        delegations.roles.push(DelegatedRole {
            name: name.to_owned(),
            keyids: vendor_keys.iter().map(|k| k.keyid()).collect(),
            threshold,
            paths: paths.to_vec(),
            terminating: true,
        });
        targets.version += 1;
        targets.expires = metadata::header_now(TARGETS_LIFETIME);
        self.write_targets(conn, &targets)?;
        db::bump_generation(conn)?;
        Ok(targets.version)
    }

    /// Vendor side of a release: the next version of `role` listing every target it had plus
    /// `image` at `path`, signed by `vendor_keys`. The result goes to `accept`.
    #[expect(clippy::too_many_arguments, reason = "each is one field of the release")]
    pub fn prepare_release(
        &self,
        conn: &Connection,
        vendor_keys: &[&SigningKey],
        role: &str,
        image: &Path,
        path: &str,
        version: &str,
        device_classes: &[String],
        lifetime: Duration,
    ) -> Result<Vec<u8>, RepoError> {
        version.parse::<FirmwareVersion>()?;
        let (length, sha256) = hash_file(image)?;
        let previous = self.vendor_role(conn, role)?;
        let mut release = previous.unwrap_or_else(|| Targets {
            kind: "targets".into(),
            spec_version: metadata::SPEC_VERSION.into(),
            version: 0,
            expires: OffsetDateTime::now_utc(),
            targets: BTreeMap::new(),
            delegations: None,
        });
        release.version += 1;
        release.expires = metadata::header_now(lifetime);
        release.targets.insert(
            path.to_owned(),
            TargetFile {
                length,
                hashes: Hashes { sha256 },
                custom: TargetCustom { version: version.to_owned(), device_classes: device_classes.to_vec() },
            },
        );
        Ok(Signed::sign(release, vendor_keys).to_bytes())
    }

    /// Accepts a vendor upload: `role_bytes` (the vendor role's next version, vendor-signed)
    /// and the one new image it lists. Verifies signatures against the delegation, expiry,
    /// role version, path coverage, image length and sha256, and firmware version per class;
    /// then stores the image and metadata (temp + fsync + rename) and records the new version.
    pub fn accept(&self, conn: &mut Connection, role_bytes: &[u8], image: &Path) -> Result<Accepted, RepoError> {
        let probe: Signed<serde_json::Value> = serde_json::from_slice(role_bytes)
            .map_err(|e| MetadataError::Malformed { role: "upload".into(), detail: e.to_string() })?;
        // The role name is not inside TUF targets metadata; find the delegation whose keys
        // verify it. Unknown signers match no delegation.
        let targets = self.targets(conn)?;
        let delegations = targets.delegations.unwrap_or_default();
        if probe.signatures.is_empty() {
            return Err(MetadataError::Threshold { role: "upload".into(), valid: 0, threshold: 1 }.into());
        }
        let mut last_error = None;
        let mut found = None;
        for delegation in &delegations.roles {
            let signs = probe.signatures.iter().any(|s| delegation.keyids.contains(&s.keyid));
            if !signs {
                continue;
            }
            match metadata::verify::<Targets>(role_bytes, &delegation.name, &delegations.keys, &delegation.role_keys())
            {
                Ok(release) => {
                    found = Some((delegation.clone(), release));
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let (delegation, release) = match (found, last_error) {
            (Some(found), _) => found,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => {
                return Err(MetadataError::Threshold {
                    role: "upload (no delegated vendor key signed it)".into(),
                    valid: 0,
                    threshold: 1,
                }
                .into());
            }
        };
        let role = delegation.name.clone();
        metadata::check_expiry(&release, &role, OffsetDateTime::now_utc())?;
        let accepted = db::role(conn, &role)?.map_or(0, |r| r.version);
        if release.version <= accepted {
            return Err(RepoError::StaleRole { role, accepted, offered: release.version });
        }
        let previous = self.vendor_role(conn, &role)?.map(|t| t.targets).unwrap_or_default();
        let mut new = Vec::new();
        for (path, file) in &release.targets {
            check_target_path(path)?;
            if !delegation.covers(path) {
                return Err(RepoError::NotCovered { role, path: path.clone() });
            }
            file.custom.version.parse::<FirmwareVersion>()?;
            match previous.get(path) {
                Some(old) if old == file => {}
                Some(_) => return Err(RepoError::ChangedTarget(path.clone())),
                None => new.push((path.clone(), file.clone())),
            }
        }
        // Dropping a published target would strand devices mid-download; refuse.
        if let Some(gone) = previous.keys().find(|p| !release.targets.contains_key(*p)) {
            return Err(RepoError::ChangedTarget(gone.clone()));
        }
        let [(path, file)] = <[_; 1]>::try_from(new).map_err(|v: Vec<_>| RepoError::NewTargetCount(v.len()))?;
        if file.custom.device_classes.is_empty() {
            return Err(RepoError::Invalid(format!("target {path} names no device class")));
        }
        // Another role may already publish this path (overlapping delegations): never replace it.
        if db::target(conn, &path)?.is_some() {
            return Err(RepoError::ChangedTarget(path));
        }
        let offered: FirmwareVersion = file.custom.version.parse()?;
        let published = db::targets(conn)?;
        for class in &file.custom.device_classes {
            let current = published
                .iter()
                .filter(|t| t.device_classes.contains(class))
                .filter_map(|t| t.firmware_version.parse::<FirmwareVersion>().ok())
                .max();
            if let Some(current) = current.filter(|c| offered <= *c) {
                return Err(RepoError::FirmwareRollback {
                    class: class.clone(),
                    offered: offered.to_string(),
                    current: current.to_string(),
                });
            }
        }
        // Copy while hashing into a temp file beside the destination; rename only if it matches.
        let dest = self.target_path(&path);
        let tmp = fsutil::temp_path(&dest);
        if let Err(e) = copy_verified(image, &tmp, &path, &file) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // IMMEDIATE takes the store's write lock before any file is renamed into place, so a
        // concurrent upload of the same role version (another CLI process) can neither commit
        // in between nor overwrite the files this one records.
        let locked = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate);
        let tx = match locked {
            Ok(tx) => tx,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        let now_accepted = db::role(&tx, &role)?.map_or(0, |r| r.version);
        if release.version <= now_accepted {
            let _ = std::fs::remove_file(&tmp);
            return Err(RepoError::StaleRole { role, accepted: now_accepted, offered: release.version });
        }
        fsutil::rename_durable(&tmp, &dest).map_err(io(&dest))?;
        let meta_path = self.metadata_path(&role, release.version);
        fsutil::write_atomic(&meta_path, role_bytes).map_err(io(&meta_path))?;
        db::set_role(&tx, &role, release.version, &rfc3339(release.expires), &metadata::sha256_hex(role_bytes))?;
        db::insert_target(
            &tx,
            &db::TargetRow {
                path: path.clone(),
                role: role.clone(),
                role_version: release.version,
                firmware_version: file.custom.version.clone(),
                device_classes: file.custom.device_classes.clone(),
                length: file.length,
                sha256: file.hashes.sha256.clone(),
            },
        )?;
        db::bump_generation(&tx)?;
        tx.commit()?;
        Ok(Accepted { role, role_version: release.version, path, firmware_version: file.custom.version })
    }

    /// Writes root N+1 with `new_keys` root keys and `threshold`, signed by a threshold of the
    /// current root keys AND a threshold of the new ones (TUF 5.3.4). Old root keys not in the
    /// new root move to `keys/retired/`.
    pub fn rotate_root(&self, conn: &Connection, new_keys: usize, threshold: u32) -> Result<Root, RepoError> {
        if new_keys == 0 || threshold == 0 || threshold as usize > new_keys {
            return Err(RepoError::Invalid(format!("root threshold {threshold} must be between 1 and {new_keys}")));
        }
        let old = self.root(conn)?;
        let old_role = metadata::root_role(&old, "root")?.clone();
        let old_keys: Vec<(PathBuf, SigningKey)> =
            self.root_key_files()?.into_iter().filter(|(_, k)| old_role.keyids.contains(&k.keyid())).collect();
        if old_keys.len() < old_role.threshold as usize {
            return Err(RepoError::NotEnoughKeys {
                role: "root".into(),
                have: old_keys.len(),
                threshold: old_role.threshold,
            });
        }
        let fresh: Vec<SigningKey> = (0..new_keys).map(|_| SigningKey::generate()).collect();
        let mut root = old.clone();
        root.version += 1;
        root.expires = metadata::header_now(ROOT_LIFETIME);
        let root = self.with_role_keys(root, &fresh, threshold)?;
        let signers: Vec<&SigningKey> = old_keys.iter().map(|(_, k)| k).chain(fresh.iter()).collect();
        let signed = Signed::sign(root.clone(), &signers);
        let bytes = signed.to_bytes();
        // Self-check exactly as a device will: old threshold, then new threshold.
        metadata::verify::<Root>(&bytes, "root", &old.keys, &old_role)?;
        metadata::verify::<Root>(&bytes, "root", &root.keys, metadata::root_role(&root, "root")?)?;
        for key in &fresh {
            keys::save_new(&self.root_key_path(key), key)?;
        }
        self.write_root(conn, &signed)?;
        let retired = self.keys_dir.join("retired");
        std::fs::create_dir_all(&retired).map_err(io(&retired))?;
        for (path, _) in &old_keys {
            for file in [path.clone(), keys::public_path(path)] {
                if let Some(name) = file.file_name() {
                    let _ = std::fs::rename(&file, retired.join(name));
                }
            }
        }
        db::bump_generation(conn)?;
        Ok(root)
    }

    fn root_key_files(&self) -> Result<Vec<(PathBuf, SigningKey)>, RepoError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.keys_dir).map_err(io(&self.keys_dir))? {
            let path = entry.map_err(io(&self.keys_dir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with("root-") && name.ends_with(".pem") && !name.ends_with(".pub.pem") {
                let key = keys::load_private(&path)?;
                out.push((path, key));
            }
        }
        Ok(out)
    }

    /// Signs the snapshot and timestamp of `view` for `generation`. Deterministic (Ed25519,
    /// canonical JSON, expiry from the generation's issue time), so re-signing a view for the
    /// same generation gives the same bytes and the hash in its timestamp stays valid.
    pub fn sign_view(&self, view: &View, generation: db::Generation) -> Result<SignedView, RepoError> {
        let issued = OffsetDateTime::from_unix_timestamp(generation.issued_at)
            .map_err(|e| RepoError::Invalid(format!("bad generation time: {e}")))?;
        let mut meta = BTreeMap::new();
        meta.insert("targets.json".to_owned(), MetaFile { version: view.targets_version, length: None, hashes: None });
        for (role, version) in &view.roles {
            meta.insert(format!("{role}.json"), MetaFile { version: *version, length: None, hashes: None });
        }
        let snapshot = Snapshot(Meta {
            kind: "snapshot".into(),
            spec_version: metadata::SPEC_VERSION.into(),
            version: generation.number,
            expires: issued + SNAPSHOT_LIFETIME,
            meta,
        });
        let snapshot_key = keys::load_private(&self.keys_dir.join("snapshot.pem"))?;
        let snapshot = Signed::sign(snapshot, &[&snapshot_key]).to_bytes();
        let timestamp = Timestamp(Meta {
            kind: "timestamp".into(),
            spec_version: metadata::SPEC_VERSION.into(),
            version: generation.number,
            expires: issued + TIMESTAMP_LIFETIME,
            meta: BTreeMap::from([(
                "snapshot.json".to_owned(),
                MetaFile {
                    version: generation.number,
                    length: Some(snapshot.len() as u64),
                    hashes: Some(Hashes { sha256: metadata::sha256_hex(&snapshot) }),
                },
            )]),
        });
        let timestamp_key = keys::load_private(&self.keys_dir.join("timestamp.pem"))?;
        let timestamp = Signed::sign(timestamp, &[&timestamp_key]).to_bytes();
        Ok(SignedView { snapshot, timestamp })
    }
}

/// Target paths are relative, `/`-separated names of letters, digits, `.`, `-`, `_`; no `..`.
pub fn check_target_path(path: &str) -> Result<(), RepoError> {
    let ok = !path.is_empty()
        && path.len() <= 200
        && path.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && !part.starts_with('.')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        });
    if ok { Ok(()) } else { Err(RepoError::Invalid(format!("{path:?} is not a valid target path"))) }
}

/// Length and hex sha256 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(u64, String), RepoError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut length = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        length += n as u64;
    }
    Ok((length, hex::encode(hasher.finalize())))
}

/// Copies `from` to `to` (fsynced), refusing it unless length and sha256 match `file`.
fn copy_verified(from: &Path, to: &Path, target: &str, file: &TargetFile) -> Result<(), RepoError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut input = std::fs::File::open(from).map_err(io(from))?;
    let mut output = std::fs::File::create(to).map_err(io(to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut length = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io(from))?;
        if n == 0 {
            break;
        }
        length += n as u64;
        // Stop early on an oversized image: it cannot match and may be huge.
        if length > file.length {
            return Err(RepoError::TamperedImage { path: target.to_owned() });
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(io(to))?;
    }
    if length < file.length {
        return Err(RepoError::TruncatedImage { path: target.to_owned(), expected: file.length, found: length });
    }
    if hex::encode(hasher.finalize()) != file.hashes.sha256 {
        return Err(RepoError::TamperedImage { path: target.to_owned() });
    }
    output.sync_all().map_err(io(to))?;
    Ok(())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) struct Fixture {
        pub dir: PathBuf,
        pub repo: Repository,
        pub conn: Connection,
        pub vendor: SigningKey,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub(crate) fn fixture() -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("iotgw-ota-repo-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let conn = crate::store::open(&dir.join("store.db"), &[crate::ota::MIGRATIONS]).unwrap();
        let repo = Repository::open(&dir.join("repo"), None);
        repo.init(&conn, &InitOptions { root_keys: 2, root_threshold: 2 }).unwrap();
        let vendor = SigningKey::generate();
        repo.delegate(&conn, "acme", &[vendor.public()], 1, &["acme/*".into()]).unwrap();
        Fixture { dir, repo, conn, vendor }
    }

    fn image(f: &Fixture, name: &str, bytes: &[u8]) -> PathBuf {
        let path = f.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn release(f: &Fixture, img: &Path, path: &str, version: &str) -> Vec<u8> {
        f.repo
            .prepare_release(&f.conn, &[&f.vendor], "acme", img, path, version, &["cam".into()], VENDOR_LIFETIME)
            .unwrap()
    }

    #[test]
    fn vendor_signed_image_is_accepted_and_listed() {
        let mut f = fixture();
        let img = image(&f, "a.bin", b"firmware one");
        let meta = release(&f, &img, "acme/cam-1.0.bin", "1.0");
        let accepted = f.repo.accept(&mut f.conn, &meta, &img).unwrap();
        assert_eq!(accepted.role_version, 1);
        assert_eq!(std::fs::read(f.repo.target_path("acme/cam-1.0.bin")).unwrap(), b"firmware one");
        assert_eq!(db::targets(&f.conn).unwrap().len(), 1);
    }

    #[test]
    fn refused_uploads_leave_the_repository_as_it_was() {
        let mut f = fixture();
        let img = image(&f, "a.bin", b"firmware one");
        let meta1 = release(&f, &img, "acme/cam-1.0.bin", "1.0");
        f.repo.accept(&mut f.conn, &meta1, &img).unwrap();
        let before = (db::roles(&f.conn).unwrap(), db::targets(&f.conn).unwrap());

        // Tampered: same length, other bytes.
        let img2 = image(&f, "b.bin", b"firmware two");
        let meta2 = release(&f, &img2, "acme/cam-2.0.bin", "2.0");
        let evil = image(&f, "evil.bin", b"firmware TWO");
        assert!(matches!(f.repo.accept(&mut f.conn, &meta2, &evil), Err(RepoError::TamperedImage { .. })));
        // Truncated.
        let short = image(&f, "short.bin", b"firmware");
        assert!(matches!(f.repo.accept(&mut f.conn, &meta2, &short), Err(RepoError::TruncatedImage { found: 8, .. })));
        // Unsigned.
        let mut unsigned: serde_json::Value = serde_json::from_slice(&meta2).unwrap();
        unsigned["signatures"] = serde_json::json!([]);
        let unsigned = serde_json::to_vec(&unsigned).unwrap();
        assert!(matches!(
            f.repo.accept(&mut f.conn, &unsigned, &img2),
            Err(RepoError::Metadata(MetadataError::Threshold { .. }))
        ));
        // Signed by a key nobody delegated.
        let stranger = SigningKey::generate();
        let forged = f
            .repo
            .prepare_release(
                &f.conn,
                &[&stranger],
                "acme",
                &img2,
                "acme/cam-2.0.bin",
                "2.0",
                &["cam".into()],
                VENDOR_LIFETIME,
            )
            .unwrap();
        assert!(matches!(
            f.repo.accept(&mut f.conn, &forged, &img2),
            Err(RepoError::Metadata(MetadataError::Threshold { .. }))
        ));
        // Expired.
        let expired = f
            .repo
            .prepare_release(
                &f.conn,
                &[&f.vendor],
                "acme",
                &img2,
                "acme/cam-2.0.bin",
                "2.0",
                &["cam".into()],
                Duration::seconds(-60),
            )
            .unwrap();
        assert!(matches!(
            f.repo.accept(&mut f.conn, &expired, &img2),
            Err(RepoError::Metadata(MetadataError::Expired { .. }))
        ));
        // Replay of the accepted version.
        assert!(matches!(f.repo.accept(&mut f.conn, &meta1, &img), Err(RepoError::StaleRole { .. })));
        // Firmware rollback: a new path with a lower version.
        let old = image(&f, "old.bin", b"firmware zero");
        let meta_old = release(&f, &old, "acme/cam-0.9.bin", "0.9");
        let err = f.repo.accept(&mut f.conn, &meta_old, &old).unwrap_err();
        assert!(matches!(err, RepoError::FirmwareRollback { .. }), "{err}");
        assert!(err.to_string().contains("rollback"), "{err}");

        assert_eq!((db::roles(&f.conn).unwrap(), db::targets(&f.conn).unwrap()), before);
        assert!(!f.repo.target_path("acme/cam-2.0.bin").exists());
        // And a good upload still goes through afterwards.
        f.repo.accept(&mut f.conn, &meta2, &img2).unwrap();
    }

    #[test]
    fn path_outside_delegation_is_refused() {
        let mut f = fixture();
        let img = image(&f, "a.bin", b"x");
        let meta = release(&f, &img, "other/cam.bin", "1.0");
        assert!(matches!(f.repo.accept(&mut f.conn, &meta, &img), Err(RepoError::NotCovered { .. })));
    }

    #[test]
    fn rotated_root_is_signed_by_old_and_new_thresholds() {
        let f = fixture();
        let old = f.repo.root(&f.conn).unwrap();
        let new = f.repo.rotate_root(&f.conn, 3, 2).unwrap();
        assert_eq!(new.version, 2);
        let bytes = std::fs::read(f.repo.metadata_path("root", 2)).unwrap();
        metadata::verify::<Root>(&bytes, "root", &old.keys, metadata::root_role(&old, "root").unwrap()).unwrap();
        metadata::verify::<Root>(&bytes, "root", &new.keys, metadata::root_role(&new, "root").unwrap()).unwrap();
        assert_eq!(f.repo.root(&f.conn).unwrap().version, 2);
        // The retired keys are no longer used: a second rotation signs with the new ones.
        assert_eq!(f.repo.rotate_root(&f.conn, 1, 1).unwrap().version, 3);
    }

    #[test]
    fn metadata_changed_on_disk_is_refused() {
        let f = fixture();
        let path = f.repo.metadata_path("targets", 2);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.push(b' ');
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(f.repo.targets(&f.conn), Err(RepoError::Metadata(MetadataError::HashMismatch { .. }))));
    }

    #[test]
    fn signed_views_are_deterministic_per_generation() {
        let f = fixture();
        let generation = db::current_generation(&f.conn).unwrap().unwrap();
        let view = View { targets_version: 2, roles: BTreeMap::new() };
        let a = f.repo.sign_view(&view, generation).unwrap();
        let b = f.repo.sign_view(&view, generation).unwrap();
        assert_eq!(a.timestamp, b.timestamp);
        assert_eq!(a.snapshot, b.snapshot);
    }
}
