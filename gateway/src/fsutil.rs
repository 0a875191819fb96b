//! Crash-safe file replacement (OTA repository and device client, policy bundles): write a temp
//! file in the same folder, fsync it, rename it over the target, fsync the folder. A crash leaves
//! either the old file or the new one, never a mix.
use std::{fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

/// Replaces `path` with `bytes` atomically (mode 0644).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// Replaces `path` with `bytes` atomically, creating it with `mode`.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        rename_durable(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames `from` onto `to` and fsyncs `to`'s folder so the rename survives a power loss.
pub fn rename_durable(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(dir) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
        fs::rename(from, to)?;
        fs::File::open(dir)?.sync_all()
    } else {
        fs::rename(from, to)
    }
}

/// A unique temp name beside `path` (same filesystem, so rename is atomic).
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{:08x}.tmp", std::process::id(), rand::random::<u32>()))
}
