//! Vendor releases and target storage: the vendor side signs a release (`prepare_release`),
//! the gateway checks it against the delegation and stores its image (`accept`).
//!
//! Writes `targets/{path}`, `metadata/{N}.{vendor}.json`, and their `ota_metadata` and
//! `ota_targets` rows.
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    path::Path,
};

use rusqlite::Connection;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use super::{RepoError, Repository, io, rfc3339};
use crate::{
    fsutil,
    ota::{
        db,
        metadata::{
            self, FirmwareVersion, Hashes, MetadataError, Signed, SigningKey, TargetCustom, TargetFile, Targets,
        },
    },
};

/// Buffer size for hashing and copying images (streamed, never whole in memory).
const COPY_CHUNK: usize = 64 * 1024;

/// A target accepted by `accept`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub role: String,
    pub role_version: u64,
    pub path: String,
    pub firmware_version: String,
}

impl Repository {
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
    hash_stream(path, |_, _| Ok(()))
}

/// Copies `from` to `to` (fsynced), refusing it unless length and sha256 match `file`.
fn copy_verified(from: &Path, to: &Path, target: &str, file: &TargetFile) -> Result<(), RepoError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut output = std::fs::File::create(to).map_err(io(to))?;
    let (length, sha256) = hash_stream(from, |length, chunk| {
        // Stop early on an oversized image: it cannot match and may be huge.
        if length > file.length {
            return Err(RepoError::TamperedImage { path: target.to_owned() });
        }
        output.write_all(chunk).map_err(io(to))
    })?;
    if length < file.length {
        return Err(RepoError::TruncatedImage { path: target.to_owned(), expected: file.length, found: length });
    }
    if sha256 != file.hashes.sha256 {
        return Err(RepoError::TamperedImage { path: target.to_owned() });
    }
    output.sync_all().map_err(io(to))?;
    Ok(())
}

/// Reads `path` in chunks of `COPY_CHUNK` (never whole in memory), handing each chunk with
/// the length read so far to `each`; returns the length and hex sha256 of what was read.
fn hash_stream(
    path: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), RepoError>,
) -> Result<(u64, String), RepoError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut length = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        length += n as u64;
        each(length, &buf[..n])?;
        hasher.update(&buf[..n]);
    }
    Ok((length, hex::encode(hasher.finalize())))
}
