//! Device snapshots to the fleet: every device that changed, as it is now
//! (`ReportBody::Inventory { changed_ms, device }` on `iotgw.<site>.<gateway>.inventory`).
//!
//! The store says what changed: the inventory's triggers give each changed device the next
//! `change_seq` (inventory schema migration 6), and this feed keeps the last sequence the broker
//! acknowledged in `fleet_positions`. Every `COALESCE` it reads the devices changed since, each
//! once however often it changed (so at most one snapshot per device per period), publishes
//! them with their message ids and moves its position past the acknowledged prefix only. A
//! broker outage or a restart loses nothing and holds nothing in memory: the changes wait in
//! the store, and a device that changed ten times meanwhile is sent once, as it is.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{Published, Reporter, wire::ReportBody};
use crate::{
    integrations::{delivery::Backoff, outbox::now_ms},
    inventory::query::{Change, changed_since},
    shutdown::Shutdown,
};

/// How often changes are read: a device gets at most one snapshot per period.
pub const COALESCE: Duration = Duration::from_secs(2);
/// Devices read and published per round.
const BATCH: usize = 256;
/// Its row in `fleet_positions`.
pub const FEED: &str = "inventory";

/// The feed task's parts.
pub struct InventoryFeed {
    pub reporter: Reporter,
    pub store: PathBuf,
    pub published: Arc<Published>,
    pub shutdown: Shutdown,
}

#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
    #[error("store task: {0}")]
    Task(String),
}

/// The feed's connection, used off the async runtime.
#[derive(Clone)]
struct Store(Arc<Mutex<Connection>>);

impl Store {
    async fn open(path: PathBuf) -> Result<Self, FeedError> {
        let conn = tokio::task::spawn_blocking(move || {
            crate::store::open(&path, &[crate::inventory::MIGRATIONS, super::MIGRATIONS])
        })
        .await
        .map_err(|e| FeedError::Task(e.to_string()))??;
        Ok(Self(Arc::new(Mutex::new(conn))))
    }

    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, FeedError> + Send + 'static,
    ) -> Result<T, FeedError> {
        let conn = self.0.clone();
        tokio::task::spawn_blocking(move || work(&conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())))
            .await
            .map_err(|e| FeedError::Task(e.to_string()))?
    }
}

/// Where the feed got to (0: nothing sent yet, so every device known goes out once).
pub fn position(conn: &Connection, feed: &str) -> Result<i64, rusqlite::Error> {
    Ok(conn
        .query_row("SELECT position FROM fleet_positions WHERE feed = ?1", [feed], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn set_position(conn: &Connection, feed: &str, position: i64) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO fleet_positions (feed, position, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(feed) DO UPDATE SET position = MAX(position, excluded.position), updated_ms = excluded.updated_ms",
        params![feed, position, now_ms()],
    )?;
    Ok(())
}

impl InventoryFeed {
    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut store = None;
        let mut backoff = Backoff::new(COALESCE, Duration::from_secs(60));
        let mut ticks = tokio::time::interval(COALESCE);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.shutdown.wait() => break,
            }
            // Cancelling a round is safe: the position moves only past acknowledged snapshots.
            let mut shutdown = self.shutdown.clone();
            let sent = tokio::select! {
                sent = self.send_changes(&mut store) => sent,
                _ = shutdown.wait() => break,
            };
            match sent {
                Ok(()) => backoff.reset(),
                Err(why) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%why, retry_in_ms = delay.as_millis() as u64, "fleet inventory snapshots not sent");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.wait() => break,
                    }
                }
            }
        }
    }

    /// Sends every change since the position, batch by batch, moving the position past what
    /// the broker acknowledged.
    async fn send_changes(&self, store: &mut Option<Store>) -> Result<(), String> {
        let store = match store {
            Some(store) => store,
            None => store.insert(Store::open(self.store.clone()).await.map_err(|e| e.to_string())?),
        };
        loop {
            let changes: Vec<Change> = store
                .with(|conn| {
                    let after = position(conn, FEED)?;
                    Ok(changed_since(conn, after, BATCH)?)
                })
                .await
                .map_err(|e| e.to_string())?;
            let full = changes.len() == BATCH;
            if changes.is_empty() {
                return Ok(());
            }
            let bodies = changes
                .iter()
                .map(|change| ReportBody::Inventory { changed_ms: change.changed_ms, device: change.device.clone() })
                .collect();
            let (taken, failure) = self.reporter.send_all(bodies).await;
            self.published.inventory.fetch_add(taken as u64, Ordering::Relaxed);
            if let Some(last) = taken.checked_sub(1).map(|i| changes[i].seq) {
                store.with(move |conn| Ok(set_position(conn, FEED, last)?)).await.map_err(|e| e.to_string())?;
            }
            if let Some(why) = failure {
                return Err(why);
            }
            if !full {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(conn: &Connection) -> Vec<(i64, i64, String)> {
        let after = position(conn, FEED).unwrap();
        changed_since(conn, after, BATCH)
            .unwrap()
            .into_iter()
            .map(|c| (c.seq, c.changed_ms, c.device.access.as_str().to_owned()))
            .collect()
    }

    #[test]
    fn a_change_is_read_once_and_traffic_alone_is_no_change_within_a_minute() {
        let conn = crate::schema::open_in_memory().unwrap();
        let now = now_ms();
        conn.execute(
            "INSERT INTO inventory_devices (mac, first_seen, last_seen, locally_administered) VALUES ('02:00:00:00:00:01', ?1, ?1, 1)",
            [now],
        )
        .unwrap();
        let first = changed(&conn);
        assert_eq!(first.len(), 1, "a new device is a change");
        set_position(&conn, FEED, first[0].0).unwrap();
        assert!(changed(&conn).is_empty(), "read once");

        conn.execute("UPDATE inventory_devices SET last_seen = ?1, flows_total = 3", [now + 1_000]).unwrap();
        assert!(changed(&conn).is_empty(), "traffic within the minute is no change");

        conn.execute("UPDATE inventory_devices SET access = 'quarantined'", []).unwrap();
        conn.execute("UPDATE inventory_devices SET access = 'quarantined'", []).unwrap();
        let second = changed(&conn);
        assert_eq!(second.len(), 1, "one device, once, however often it changed");
        let (seq, changed_ms, access) = &second[0];
        assert!(*seq > first[0].0 && *changed_ms > first[0].1, "{second:?} after {first:?}");
        assert_eq!(access, "quarantined");
        set_position(&conn, FEED, *seq).unwrap();
        set_position(&conn, FEED, 0).unwrap();
        assert_eq!(position(&conn, FEED).unwrap(), *seq, "the position never moves back");
    }
}
