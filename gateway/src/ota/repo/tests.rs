use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use rusqlite::Connection;
use time::Duration;

use super::*;
use crate::ota::metadata::SigningKey;

pub(crate) struct Fixture {
    /// Removed when the test ends (also when it fails).
    pub dir: iotgw_test_support::services::Scratch,
    pub repo: Repository,
    pub conn: Connection,
    pub vendor: SigningKey,
}

pub(crate) fn fixture() -> Fixture {
    let dir = iotgw_test_support::services::scratch("ota-repo");
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
    f.repo.prepare_release(&f.conn, &[&f.vendor], "acme", img, path, version, &["cam".into()], VENDOR_LIFETIME).unwrap()
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
