//! The devices `manufacturer:` and `model:` remotes reach (RFC 8520 §8): every
//! `MUD_DEVICES_INTERVAL` the inventory's devices on a MUD class, with their MUD URL and latest
//! addresses (`inventory::mud::devices`), are read again and, when they changed, handed to the
//! policy step, which rewrites those remotes' entries. A device that leaves, moves or announces
//! another URL is followed within one interval. Reads the store; writes the watch.
use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::{policy::remote::MudDevice, shutdown::Shutdown};

/// How often the inventory is read for devices on MUD classes.
pub const MUD_DEVICES_INTERVAL: Duration = Duration::from_secs(2);

/// The devices as the policy step reads them.
pub(super) type MudDevices = watch::Receiver<Arc<Vec<MudDevice>>>;

/// Opens the step's store connection now (a store that cannot be opened fails the start) and
/// returns the watch, starting at `initial`, and the task that keeps it current until shutdown.
pub(super) fn run(
    store_path: &Path,
    initial: Vec<MudDevice>,
    mut shutdown: Shutdown,
) -> anyhow::Result<(MudDevices, impl std::future::Future<Output = ()> + use<>)> {
    let conn = crate::store::open(store_path, &[crate::inventory::MIGRATIONS])
        .context("opening the store for the devices on MUD classes")?;
    let conn = Arc::new(Mutex::new(conn));
    let (sender, receiver) = watch::channel(Arc::new(initial));
    let task = async move {
        let mut ticker = tokio::time::interval(MUD_DEVICES_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = ticker.tick() => {}
            }
            let conn = conn.clone();
            let read = tokio::task::spawn_blocking(move || {
                crate::inventory::mud::devices(&conn.lock().unwrap_or_else(PoisonError::into_inner))
            })
            .await;
            match read {
                Ok(Ok(devices)) => {
                    sender.send_if_modified(|known| {
                        let changed = **known != devices;
                        if changed {
                            *known = Arc::new(devices);
                        }
                        changed
                    });
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "devices on MUD classes not read; their remotes stay as they are")
                }
                Err(error) => tracing::error!(%error, "reading the devices on MUD classes failed"),
            }
        }
    };
    Ok((receiver, task))
}
