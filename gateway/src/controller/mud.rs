//! The MUD step's task: the MUD URLs the fan-out finds in DHCP, DHCPv6 and LLDP samples go,
//! one at a time, through `mud::step::MudStep`; the policy step is its `PolicyGate`.
use std::path::Path;

use anyhow::Context as _;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{
    mud::{
        self, Resolver,
        announce::Announcement,
        step::{MudStep, PolicyGate},
    },
    policy::store::Sources,
    shutdown::Shutdown,
};

/// A new set of MUD classes for the policy step to put in force; the reply says whether it did,
/// or why not.
pub(super) struct GeneratedClasses {
    pub sources: Sources,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// The policy step, asked over its queue.
struct PolicyStep(mpsc::Sender<GeneratedClasses>);

impl PolicyGate for PolicyStep {
    async fn put_in_force(&self, sources: Sources) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.0.send(GeneratedClasses { sources, reply }).await.map_err(|_| "the policy step is gone".to_owned())?;
        answer.await.map_err(|_| "the policy step is gone".to_owned())?
    }
}

/// The MUD classes stored at the last run, as policy sources (put in force before attaching).
pub(super) fn stored_classes(conn: &Connection) -> anyhow::Result<Sources> {
    mud::step::stored_classes(conn).context("reading the MUD classes")
}

/// Opens the step's store connection and builds the checks now (a bad `[mud]` section fails
/// the start); the returned task runs until shutdown or until the fan-out is gone.
pub(super) fn run(
    config: mud::Config,
    store_path: &Path,
    mut announcements: mpsc::Receiver<Announcement>,
    classes: mpsc::Sender<GeneratedClasses>,
    mut shutdown: Shutdown,
) -> anyhow::Result<impl std::future::Future<Output = ()> + use<>> {
    let conn = crate::store::open(store_path, &[crate::inventory::MIGRATIONS, mud::MIGRATIONS])
        .context("opening the store for MUD")?;
    let resolver = if config.enabled() {
        Some(Resolver::new(&config).map_err(|error| anyhow::anyhow!("[mud]: {error}"))?)
    } else {
        None
    };
    let mut step = MudStep::new(resolver, conn, PolicyStep(classes), mud::step::RECHECK_AFTER);
    Ok(async move {
        loop {
            let announcement = tokio::select! {
                _ = shutdown.wait() => break,
                announcement = announcements.recv() => announcement,
            };
            let Some(announcement) = announcement else { break };
            step.handle(announcement).await;
        }
    })
}
