//! The threat-intelligence step: loads the `[[detect.threat_intel]]` lists at start-up, then
//! reloads a list whenever its file changes (its folder is watched, so an editor's or a
//! feed downloader's rename into place counts) and hands the lists to the pipeline. A list
//! that no longer loads keeps the version in force, with a warning; refused lines are
//! counted in the log.
use std::{collections::BTreeSet, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::{
    detect::intel::{self, IntelList, IntelSource, ThreatIntel},
    pipeline,
    shutdown::Shutdown,
};

/// Quiet time after a change before reloading (a download writes in several steps).
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);
/// File changes waiting for the step; a full queue already holds one that reloads.
const CHANGE_QUEUE: usize = 64;

/// A changed file, or `None` when the watcher lost track (reload every list).
type Change = Option<PathBuf>;

/// Loads the lists and puts them in force; returns the reload task, or `None` without lists.
pub(super) async fn start(
    sources: &[IntelSource],
    pipeline_tx: mpsc::Sender<pipeline::Command>,
    shutdown: Shutdown,
) -> anyhow::Result<Option<impl Future<Output = ()> + use<>>> {
    if sources.is_empty() {
        return Ok(None);
    }
    // notify reports absolute paths.
    let sources = sources
        .iter()
        .map(|s| Ok(IntelSource { path: std::path::absolute(&s.path)?, ..s.clone() }))
        .collect::<std::io::Result<Vec<_>>>()
        .context("resolving the threat-intelligence paths")?;
    let intel = intel::load_all(&sources).context("loading the threat-intelligence lists")?;
    intel.lists().iter().for_each(report);
    let (changes_tx, changes) = mpsc::channel::<Change>(CHANGE_QUEUE);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if event.kind.is_access() => {}
        Ok(event) => event.paths.into_iter().for_each(|path| {
            let _ = changes_tx.try_send(Some(path));
        }),
        Err(_) => {
            let _ = changes_tx.try_send(None);
        }
    })
    .context("starting the threat-intelligence watcher")?;
    let folders: BTreeSet<PathBuf> = sources.iter().filter_map(|s| s.path.parent().map(PathBuf::from)).collect();
    for folder in &folders {
        watcher
            .watch(folder, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {} for threat-intelligence changes", folder.display()))?;
    }
    pipeline_tx
        .send(pipeline::Command::SetThreatIntel(Arc::new(intel.clone())))
        .await
        .context("the pipeline stopped before the threat-intelligence lists were in force")?;
    let step = Reloader { sources, intel, pipeline: pipeline_tx };
    Ok(Some(async move {
        // Watching stops when the task ends.
        let _watcher = watcher;
        step.run(changes, shutdown).await;
    }))
}

struct Reloader {
    sources: Vec<IntelSource>,
    intel: ThreatIntel,
    pipeline: mpsc::Sender<pipeline::Command>,
}

impl Reloader {
    async fn run(mut self, mut changes: mpsc::Receiver<Change>, mut shutdown: Shutdown) {
        loop {
            let first = tokio::select! {
                _ = shutdown.wait() => return,
                change = changes.recv() => match change {
                    Some(change) => change,
                    None => return,
                },
            };
            let mut changed = vec![first];
            while let Ok(Some(more)) = tokio::time::timeout(RELOAD_DEBOUNCE, changes.recv()).await {
                changed.push(more);
            }
            if self.reload(&changed)
                && self.pipeline.send(pipeline::Command::SetThreatIntel(Arc::new(self.intel.clone()))).await.is_err()
            {
                return;
            }
        }
    }

    /// Reloads the sources among `changed`; true when a list changed.
    fn reload(&mut self, changed: &[Change]) -> bool {
        let everything = changed.iter().any(Option::is_none);
        let mut reloaded = false;
        for source in &self.sources {
            if !everything && !changed.contains(&Some(source.path.clone())) {
                continue;
            }
            match intel::load(source) {
                Ok(list) => {
                    report(&list);
                    self.intel.replace(list);
                    reloaded = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "threat-intelligence list not reloaded; the previous one stays in force")
                }
            }
        }
        reloaded
    }
}

/// One log line per loaded list, with what it refused.
fn report(list: &IntelList) {
    tracing::info!(
        list = %list.path.display(),
        entries = list.entries(),
        refused = list.refused,
        examples = ?list.refused_examples,
        "threat-intelligence list in force"
    );
}

#[cfg(test)]
mod tests {
    use iotgw_test_support::wait;

    use super::*;
    use crate::detect::intel::IntelFormat;

    /// Longest wait for the lists to reach the pipeline.
    const RELOAD_WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_list_is_in_force_at_start_and_reloaded_when_its_file_changes() {
        let dir = iotgw_test_support::services::scratch("intel-watch");
        let path = dir.join("c2.txt");
        std::fs::write(&path, "203.0.113.7\n").unwrap();
        let (pipeline_tx, mut commands) = mpsc::channel(8);
        let (trigger, shutdown) = crate::shutdown::channel();
        let sources = [IntelSource { path: path.clone(), format: IntelFormat::Ip, column: None }];
        let task = start(&sources, pipeline_tx, shutdown).await.unwrap().expect("a reload task");
        let task = tokio::spawn(task);
        let in_force = |command: Option<pipeline::Command>| match command {
            Some(pipeline::Command::SetThreatIntel(intel)) => intel,
            other => panic!("expected lists, got {other:?}"),
        };
        let first = in_force(wait::within("the lists at start", RELOAD_WAIT, commands.recv()).await);
        assert!(first.lookup("203.0.113.7".parse().unwrap(), None).is_some());
        // Written elsewhere, renamed into place, as feed downloaders do; one line refused.
        let staged = dir.join("c2.txt.part");
        std::fs::write(&staged, "203.0.113.8\nbogus\n").unwrap();
        std::fs::rename(&staged, &path).unwrap();
        let reloaded = wait::within("the lists reloaded", RELOAD_WAIT, commands.recv()).await;
        // An unreadable list afterwards keeps the reloaded one: nothing more is sent.
        std::fs::write(&path, [0xff_u8; 4]).unwrap();
        trigger.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        let reloaded = in_force(reloaded);
        assert!(reloaded.lookup("203.0.113.7".parse().unwrap(), None).is_none());
        assert!(reloaded.lookup("203.0.113.8".parse().unwrap(), None).is_some());
        assert_eq!(reloaded.lists()[0].refused, 1);
    }

    #[tokio::test]
    async fn a_missing_list_stops_the_start() {
        let (pipeline_tx, _commands) = mpsc::channel(8);
        let (_trigger, shutdown) = crate::shutdown::channel();
        let sources = [IntelSource { path: "/nonexistent/iotgw/c2.txt".into(), format: IntelFormat::Ip, column: None }];
        let error = start(&sources, pipeline_tx, shutdown).await.err().expect("an error");
        assert!(format!("{error:#}").contains("/nonexistent/iotgw/c2.txt"), "{error:#}");
    }
}
