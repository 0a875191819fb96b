//! The roles the gateway signs itself: root (created, rotated) and the top-level targets
//! role with its vendor delegations.
//!
//! Writes key files under the keys folder, `metadata/{N}.root.json`, `metadata/root.json`,
//! `metadata/{N}.targets.json` and their `ota_metadata` rows.
use std::{collections::BTreeMap, path::PathBuf};

use rusqlite::Connection;

use super::{ROOT_LIFETIME, RepoError, Repository, TARGETS_LIFETIME, TOP_ROLES, check_target_path, io, rfc3339};
use crate::{
    fsutil,
    ota::{
        db, keys,
        metadata::{self, DelegatedRole, Delegations, RoleKeys, Root, Signed, SigningKey, Targets},
    },
};

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

impl Repository {
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
}
