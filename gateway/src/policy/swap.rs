//! Replaces the whole set of policy files in the folder with a staged set, so that no reload
//! ever reads a mix of old and new files, even across a crash (fleet policy bundles).
//!
//! The staged set is written (and fsynced) into `<dir>/.staged/` beforehand: a hidden
//! sub-folder, so neither the loader (`*.toml` files of `dir` only) nor the folder watcher
//! (not recursive) sees it. `swap_in` first writes a journal, `<dir>/.swap.json`, naming every
//! staged file, then renames each into `dir` and removes the `*.toml` files the set does not
//! name. A crash part-way leaves the journal; `finish_interrupted` (run before every load by
//! `PolicyStore`) completes the swap, so the folder holds the old set or the new one, never
//! both. Reads and writes only `dir`.
use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::fsutil;

/// The staging sub-folder of a policy folder.
pub const STAGING: &str = ".staged";
/// The journal of a swap in progress.
const JOURNAL: &str = ".swap.json";

/// Where a staged set is written before `swap_in`.
pub fn staging_dir(dir: &Path) -> PathBuf {
    dir.join(STAGING)
}

/// An empty staging folder, replacing whatever an earlier, unfinished staging left.
pub fn fresh_staging(dir: &Path) -> std::io::Result<PathBuf> {
    let staging = staging_dir(dir);
    if let Err(error) = fs::remove_dir_all(&staging)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        return Err(error);
    }
    fs::create_dir(&staging)?;
    Ok(staging)
}

/// Moves every file of the staging folder into `dir` and removes the `*.toml` files of `dir`
/// the staged set does not hold. Crash-safe: see the module doc.
pub fn swap_in(dir: &Path) -> std::io::Result<()> {
    let staging = staging_dir(dir);
    let mut names = Vec::new();
    for entry in fs::read_dir(&staging)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let journal = serde_json::to_vec(&names).map_err(std::io::Error::other)?;
    fsutil::write_atomic(&dir.join(JOURNAL), &journal)?;
    finish(dir, &names)
}

/// Completes a swap a crash interrupted, if there is one; `true` when there was.
pub fn finish_interrupted(dir: &Path) -> std::io::Result<bool> {
    let journal = match fs::read(dir.join(JOURNAL)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    let names: Vec<String> = serde_json::from_slice(&journal)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{JOURNAL}: {e}")))?;
    finish(dir, &names)?;
    Ok(true)
}

/// The part of a swap after the journal, idempotent: a file already moved is not staged any
/// more, a file already removed is gone.
fn finish(dir: &Path, names: &[String]) -> std::io::Result<()> {
    let staging = staging_dir(dir);
    for name in names {
        // A journal is only ever written by `swap_in`, from file names of the staging folder;
        // one naming a path is not ours and is refused rather than followed.
        if name.contains('/') || name == ".." || name == "." {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad name {name:?} in {JOURNAL}"),
            ));
        }
        if let Err(error) = fs::rename(staging.join(name), dir.join(name))
            && error.kind() != std::io::ErrorKind::NotFound
        {
            return Err(error);
        }
    }
    for file in super::load::toml_files(dir)? {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !names.contains(&name) {
            fs::remove_file(&file)?;
        }
    }
    fs::File::open(dir)?.sync_all()?;
    fs::remove_file(dir.join(JOURNAL))?;
    let _ = fs::remove_dir_all(&staging);
    fs::File::open(dir)?.sync_all()
}

/// Writes one file of a staged set, durably.
pub fn stage_file(staging: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(staging.join(name))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the staged files' names durable, before `swap_in` relies on them.
pub fn sync_staging(staging: &Path) -> std::io::Result<()> {
    fs::File::open(staging)?.sync_all()
}

#[cfg(test)]
mod tests {
    use iotgw_test_support::services::Scratch;

    use super::*;

    fn scratch(name: &str) -> Scratch {
        iotgw_test_support::services::scratch(&format!("swap-{name}"))
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).expect("read").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_swap_replaces_the_whole_set_and_leaves_other_files() {
        let dir = scratch("whole");
        fs::write(dir.join("a.toml"), "old a").unwrap();
        fs::write(dir.join("gone.toml"), "old").unwrap();
        fs::write(dir.join("README"), "kept").unwrap();
        let staging = fresh_staging(&dir).unwrap();
        stage_file(&staging, "a.toml", b"new a").unwrap();
        stage_file(&staging, "b.toml", b"new b").unwrap();
        sync_staging(&staging).unwrap();
        swap_in(&dir).unwrap();
        assert_eq!(listing(&dir), ["README", "a.toml", "b.toml"]);
        assert_eq!(fs::read_to_string(dir.join("a.toml")).unwrap(), "new a");
        assert!(!finish_interrupted(&dir).unwrap(), "nothing left to finish");
    }

    #[test]
    fn a_swap_a_crash_interrupted_is_finished_at_the_next_load() {
        let dir = scratch("crash");
        fs::write(dir.join("a.toml"), "old a").unwrap();
        fs::write(dir.join("gone.toml"), "old").unwrap();
        let staging = fresh_staging(&dir).unwrap();
        stage_file(&staging, "a.toml", b"new a").unwrap();
        stage_file(&staging, "b.toml", b"new b").unwrap();
        // Crashed after the journal and the first rename.
        fsutil::write_atomic(&dir.join(JOURNAL), br#"["a.toml","b.toml"]"#).unwrap();
        fs::rename(staging.join("a.toml"), dir.join("a.toml")).unwrap();
        assert!(finish_interrupted(&dir).unwrap());
        assert_eq!(listing(&dir), ["a.toml", "b.toml"]);
        assert_eq!(fs::read_to_string(dir.join("b.toml")).unwrap(), "new b");
    }
}
