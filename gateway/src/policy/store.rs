//! The running policy and its atomic reload. `reload` reads and compiles a whole folder and
//! either returns the new `CompiledPolicy` or every error; `PolicyStore` swaps in a new
//! policy only when that succeeded, so a bad file leaves the running policy as it was.
//! `watch` turns file changes in the folder into debounced reload requests.
//! Reads the policy folder; writes nothing (the caller syncs the maps).
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{
    compile::{CompiledPolicy, compile},
    error::PolicyError,
    load::load_paths,
};

/// Quiet time after the last change in the folder before a reload is asked for: editors
/// write a file in several steps (truncate, write, rename), and one reload should see them
/// all. Short enough that a change reaches the maps well within a second.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);
/// Pending raw file events between the watcher thread and the debounce task.
const WATCH_QUEUE: usize = 256;

/// Loads and compiles `paths` (files, or folders of `*.toml`): what `iotgw policy check`
/// and `reload` run.
pub fn check<P: AsRef<Path>>(paths: &[P]) -> Result<CompiledPolicy, Vec<PolicyError>> {
    let policy = load_paths(paths)?;
    compile(&policy)
}

/// Loads and compiles every `*.toml` file of `dir`.
pub fn reload(dir: &Path) -> Result<CompiledPolicy, Vec<PolicyError>> {
    check(&[dir])
}

/// The policy in force. Only a fully checked and compiled policy ever replaces it.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    current: Arc<CompiledPolicy>,
}

impl PolicyStore {
    /// Loads `dir`; at startup a bad folder is an error (there is nothing to keep running).
    pub fn open(dir: &Path) -> Result<Self, Vec<PolicyError>> {
        let current = Arc::new(reload(dir)?);
        Ok(Self { dir: dir.to_owned(), current })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<CompiledPolicy> {
        Arc::clone(&self.current)
    }

    /// Re-reads the folder. On success the new policy is in force and returned; on failure
    /// the running policy is untouched and the errors say why.
    pub fn reload(&mut self) -> Result<Arc<CompiledPolicy>, Vec<PolicyError>> {
        let next = Arc::new(reload(&self.dir)?);
        self.current = Arc::clone(&next);
        Ok(next)
    }
}

/// A request to reload the policy folder, sent by `watch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadRequest {
    /// Files that changed since the previous request (may be empty if the watcher lost
    /// track, which still warrants a reload).
    pub paths: Vec<PathBuf>,
}

/// Watches the folder and the handle that keeps it watched: dropping `PolicyWatcher` stops it.
pub struct PolicyWatcher {
    pub requests: mpsc::Receiver<ReloadRequest>,
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `dir` (must be called inside a tokio runtime). Every burst of changes to
/// `*.toml` files becomes one `ReloadRequest` after `WATCH_DEBOUNCE` of quiet.
pub fn watch(dir: &Path) -> notify::Result<PolicyWatcher> {
    let (raw_tx, mut raw_rx) = mpsc::channel::<Vec<PathBuf>>(WATCH_QUEUE);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let paths = match event {
            Ok(event) if event.kind.is_access() => return,
            Ok(event) => event.paths,
            // A lost event still means "something changed": reload to be sure.
            Err(_) => Vec::new(),
        };
        let relevant = paths.is_empty()
            || paths.iter().any(|path| path.extension().is_some_and(|ext| ext == "toml"));
        if relevant {
            // A full queue already holds a pending change, which triggers the same reload.
            let _ = raw_tx.try_send(paths);
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let (tx, requests) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(first) = raw_rx.recv().await {
            let mut paths = first;
            loop {
                match tokio::time::timeout(WATCH_DEBOUNCE, raw_rx.recv()).await {
                    Ok(Some(more)) => paths.extend(more),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            paths.sort();
            paths.dedup();
            if tx.send(ReloadRequest { paths }).await.is_err() {
                return;
            }
        }
    });
    Ok(PolicyWatcher { requests, _watcher: watcher })
}
