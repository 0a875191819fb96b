//! Device views: the snapshot and timestamp the gateway signs for what one device may see
//! (see `rollout` for how a view is chosen). Nothing is stored: a view is re-signed on demand.
use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::{RepoError, Repository, SNAPSHOT_LIFETIME, TIMESTAMP_LIFETIME};
use crate::ota::{
    db, keys,
    metadata::{self, Hashes, Meta, MetaFile, Signed, Snapshot, Timestamp},
};

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

impl Repository {
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
