//! Tests only: where the shared captures are (`../shared/datasets`, see its README).
//!
//! `$IOTGW_DATASETS`, else `shared/datasets` beside the repository root, as the developers'
//! machines and CI lay it. A test that needs a dataset fails with this message when it is
//! missing, CI or not: a test that skips is a test that never ran.
use std::path::{Path, PathBuf};

/// Environment variable naming the shared captures folder.
pub const DATASETS_ENV: &str = "IOTGW_DATASETS";

/// The shared captures folder; panics with what to do when it is missing.
pub fn root() -> PathBuf {
    let dir = match std::env::var_os(DATASETS_ENV) {
        Some(dir) => PathBuf::from(dir),
        // gateway/ is one level below the repository root.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"),
    };
    assert!(
        dir.is_dir(),
        "the shared datasets are missing at {}: lay shared/ beside the repository or set {DATASETS_ENV}",
        dir.display()
    );
    dir
}

/// One dataset of the shared folder (`iot-sentinel`, `uq-iot-attacks`, ...); panics when missing.
pub fn dataset(name: &str) -> PathBuf {
    let dir = root().join(name);
    assert!(dir.is_dir(), "the shared dataset {name} is missing at {}", dir.display());
    dir
}
