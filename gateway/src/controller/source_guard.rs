//! The source-guard step (`crate::source_guard`): ARP, DHCP, DHCPv6 and neighbour-discovery
//! samples from the fan-out become source-address bindings in `SOURCE_BINDINGS_V4` and
//! `SOURCE_BINDINGS_V6`; every `alert_interval_secs` the
//! lapsed bindings are removed and the violation counters read, and each device that sent
//! from another's address since the last read is alerted on through the pipeline (whose
//! response rules may then isolate it).
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc::{Receiver, Sender};

use crate::{
    datapath::{events::PacketSample, maps::Maps},
    pipeline,
    shutdown::Shutdown,
    source_guard::{
        Config,
        bindings::PROBE_WAIT,
        step::{Guard, Write},
    },
};

/// Samples waiting for the step; beyond this the fan-out skips them (the device's next ARP
/// or neighbour discovery claims the address again).
pub const SAMPLE_QUEUE: usize = 4_096;

/// Runs until shutdown or until the fan-out is gone.
pub(super) async fn run(
    config: Config,
    maps: Arc<Maps>,
    mut samples: Receiver<PacketSample>,
    pipeline: Sender<pipeline::Command>,
    mut shutdown: Shutdown,
) {
    let interval = Duration::from_secs(config.alert_interval_secs);
    let (mut guard, writes) = Guard::new(config, &maps.source_bindings(), Instant::now());
    apply(&maps, &writes);
    tracing::info!(bound = guard.bound(), "source guard started");
    let mut ticker = tokio::time::interval(interval);
    // Probed addresses bind once their probe went undefended, whether or not samples follow.
    let mut settle = tokio::time::interval(PROBE_WAIT);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            sample = samples.recv() => {
                let Some(sample) = sample else { break };
                apply(&maps, &guard.observe(&sample, Instant::now()));
            }
            _ = settle.tick() => apply(&maps, &guard.settle(Instant::now())),
            _ = ticker.tick() => {
                apply(&maps, &guard.expire(Instant::now()));
                for alert in guard.check(&maps.source_violations(), SystemTime::now()) {
                    if pipeline.send(pipeline::Command::Alert(alert)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Writes the changes to the binding maps; a refused write (a full map) is logged and leaves
/// the address unbound, so unchecked.
fn apply(maps: &Maps, writes: &[Write]) {
    for write in writes {
        let written = match *write {
            Write::Bind { address, mac } => maps.bind_source(address, mac),
            Write::Unbind { address } => maps.unbind_source(address),
        };
        if let Err(error) = written {
            tracing::warn!(%error, ?write, "cannot write a source-address binding");
        }
    }
}
