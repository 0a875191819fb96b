//! The counter step: every `datapath.counter_interval_ms`, each device's counters as deltas
//! since the last read (`TrafficSample`): the inventory's traffic series, the volume
//! baselines and the rate detectors. Then a tick, so incidents resolve when inputs stop.
//! The read costs what the devices that changed cost (`datapath::sweep`).
use std::{
    sync::{Arc, Mutex, mpsc::SyncSender},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc::Sender;

use super::inventory::InventoryInput;
use crate::{
    datapath::{maps::Maps, sweep::CounterSweep, traffic::TrafficSample},
    pipeline,
    shutdown::Shutdown,
};

/// Where the samples go.
pub(super) struct Outputs {
    pub inventory: SyncSender<InventoryInput>,
    pub pipeline: Sender<pipeline::Command>,
}

/// Runs until shutdown.
pub(super) async fn run(maps: Arc<Maps>, every: Duration, out: Outputs, mut shutdown: Shutdown) {
    let sweep = {
        let maps = maps.clone();
        match tokio::task::spawn_blocking(move || CounterSweep::start(&maps)).await {
            Ok(sweep) => Arc::new(Mutex::new(sweep)),
            Err(_) => return,
        }
    };
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = ticker.tick() => {}
        }
        let now = SystemTime::now();
        // The real span since the last read: a late tick must not inflate rates.
        let interval = last_read.elapsed().max(Duration::from_millis(1));
        last_read = Instant::now();
        let deltas = {
            let (maps, sweep) = (maps.clone(), sweep.clone());
            let read = move || sweep.lock().unwrap_or_else(std::sync::PoisonError::into_inner).deltas(&maps);
            match tokio::task::spawn_blocking(read).await {
                Ok(deltas) => deltas,
                Err(_) => continue,
            }
        };
        for (mac, counters) in deltas {
            let sample = TrafficSample { mac, interval_start: now - interval, interval, counters };
            let _ = out.inventory.try_send(InventoryInput::Traffic(sample));
            let _ = out.pipeline.send(pipeline::Command::from(sample)).await;
        }
        let _ = out.pipeline.send(pipeline::Command::Tick(now)).await;
    }
}
