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

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::{
        device::Mac,
        inventory::mud::{MudFile, MudOutcome, record},
    };

    /// Waits for the next change of `devices`, bounded in time.
    async fn next(devices: &mut MudDevices) -> Vec<MudDevice> {
        tokio::time::timeout(MUD_DEVICES_INTERVAL * 5, devices.changed())
            .await
            .expect("the watch changes within a few intervals")
            .expect("the task runs");
        devices.borrow_and_update().to_vec()
    }

    #[tokio::test]
    async fn a_device_getting_a_mud_class_moving_and_leaving_reaches_the_policy_step() {
        let scratch = iotgw_test_support::services::scratch("mud-devices");
        let path = scratch.join("mud-devices.db");
        let writer = crate::schema::open(&path).expect("store");
        let (trigger, shutdown) = crate::shutdown::channel();
        let (mut devices, task) = run(&path, Vec::new(), shutdown).expect("starts");
        let task = tokio::spawn(task);
        let mac = Mac([2, 0, 0, 0, 0, 0x40]);
        let url = "https://lighting.example.com/bulb";
        let file = MudFile {
            url: url.into(),
            class: "mud-49152".into(),
            class_id: 49_152,
            sha256: "aa".into(),
            valid_until: time::OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time"),
            signer: "CN=signer".into(),
        };
        record(&writer, mac, url, "dhcpv4", &MudOutcome::Applied(file), "applied").expect("recorded");
        let seen = |ip: &str, at: i64| {
            writer
                .execute(
                    "INSERT INTO inventory_addresses (mac, ip, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
                    params![mac.to_string(), ip, at],
                )
                .expect("address");
        };
        seen("10.77.0.40", 1);
        let device = |ip: &str| MudDevice { addr: ip.parse().expect("addr"), mud_url: url.into() };
        assert_eq!(next(&mut devices).await, [device("10.77.0.40")]);
        seen("10.77.0.41", 2);
        assert_eq!(next(&mut devices).await, [device("10.77.0.41")]);
        writer.execute("DELETE FROM inventory_devices WHERE mac = ?1", [mac.to_string()]).expect("removed");
        assert_eq!(next(&mut devices).await, []);
        trigger.trigger();
        iotgw_test_support::wait::within("the task's end at shutdown", MUD_DEVICES_INTERVAL * 5, task)
            .await
            .expect("the task runs");
        drop(writer);
    }
}
