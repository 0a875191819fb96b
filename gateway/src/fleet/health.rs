//! The periodic health report (`ReportBody::Health` on `iotgw.<site>.<gateway>.health`, every
//! `fleet.health_secs`): version, the policy bundle enforced or refused, XDP mode and map fill,
//! the outbox backlog towards the broker, devices and uptime. A report is a state, not an
//! event: one the broker did not take is not retried, the next one supersedes it.
use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use super::{
    Published, Reporter, SharedBundleStatus,
    wire::{Health, MapFill, ReportBody},
};
use crate::{integrations::ConsumerState, shutdown::Shutdown};

/// Reads the BPF maps' fill (entries and capacity per map).
pub type MapFillSource = Box<dyn Fn() -> Vec<MapFill> + Send + Sync>;

/// What the health report reads from the rest of the gateway.
pub struct Sources {
    /// Written by the bundle watcher.
    pub bundle: SharedBundleStatus,
    /// XDP attach mode (`driver`, `skb`), `None` when no program is attached.
    pub xdp_mode: Option<String>,
    pub map_fill: MapFillSource,
}

/// The health task's parts.
pub struct HealthReports {
    pub reporter: Reporter,
    pub every: Duration,
    pub sources: Sources,
    /// The publisher's outbox consumer: its backlog is what the broker has not taken.
    pub outbox: ConsumerState,
    pub store: PathBuf,
    pub published: Arc<Published>,
    pub shutdown: Shutdown,
}

impl HealthReports {
    /// Reports every `every` until shutdown, the first at once.
    pub async fn run(mut self) {
        let started = Instant::now();
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.shutdown.wait() => break,
            }
            let health = self.health(started).await;
            let mut shutdown = self.shutdown.clone();
            let (taken, failure) = tokio::select! {
                sent = self.reporter.send_all(vec![ReportBody::Health { health }]) => sent,
                _ = shutdown.wait() => break,
            };
            self.published.health.fetch_add(taken as u64, Ordering::Relaxed);
            if let Some(why) = failure {
                tracing::debug!(%why, "fleet health report not taken; the next one follows");
            }
        }
    }

    async fn health(&self, started: Instant) -> Health {
        let bundle = self.sources.bundle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let outbox_backlog = self.outbox.pending().await.map_or(0, |pending| pending.events);
        let store = self.store.clone();
        let devices = tokio::task::spawn_blocking(move || device_count(&store)).await.unwrap_or(Ok(0));
        Health {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            policy_version: bundle.enforced,
            policy_refused: bundle.refused,
            xdp_mode: self.sources.xdp_mode.clone(),
            map_fill: (self.sources.map_fill)(),
            outbox_backlog,
            devices: devices.unwrap_or_else(|error| {
                tracing::warn!(%error, "health report: cannot count devices");
                0
            }),
            uptime_secs: started.elapsed().as_secs(),
        }
    }
}

fn device_count(store: &std::path::Path) -> Result<u64, crate::store::StoreError> {
    let conn = crate::store::open(store, &[crate::inventory::MIGRATIONS])?;
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM inventory_devices", [], |r| r.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}
