//! The recorder thread: takes every alert and action from its `EventBus` recorder queue (which
//! never lags, see `event::EventBus`) and records them in batches, one transaction each.
//! Writes the alert tables through `AlertStore::record`.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::Duration,
};

use super::{AlertStore, AlertsError};
use crate::event::{EventBus, EventKind, GatewayEvent};

/// Events recorded in one transaction at most.
pub const BATCH_MAX: usize = 1_024;
/// How often the thread looks whether it should stop while its queue is empty.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Attempts at a batch before it is given up (a locked or full store may recover).
const ATTEMPTS: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the recorder takes from the bus: alerts, and the actions taken for them.
pub fn wants(event: &GatewayEvent) -> bool {
    match event.kind {
        EventKind::Alert { .. } => true,
        EventKind::Action { .. } => event.responds_to.is_some(),
        _ => false,
    }
}

/// Handle on the recorder thread.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Recorder {
    /// Subscribes to `bus` (so every alert published from now on is recorded) and starts the
    /// thread over `store`.
    pub fn spawn(store: AlertStore, bus: &EventBus) -> Result<Self, AlertsError> {
        let queue = bus.subscribe_recorder(wants);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("iotgw-alerts".into())
            .spawn(move || run(store, queue, &stopping))
            .map_err(AlertsError::Thread)?;
        Ok(Self { stop, thread })
    }

    /// Records what is queued, then stops. Call it after the producers stopped.
    pub fn join(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::error!("the alert recorder thread panicked");
        }
    }
}

fn run(mut store: AlertStore, queue: Receiver<GatewayEvent>, stop: &AtomicBool) {
    loop {
        let first = match queue.recv_timeout(STOP_POLL) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => break,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(BATCH_MAX - 1));
        for attempt in 1..=ATTEMPTS {
            match store.record(&batch) {
                Ok(()) => break,
                // Given up: lost to the alert store (the outbox and the log still have them).
                Err(error) if attempt == ATTEMPTS => {
                    tracing::error!(%error, events = batch.len(), "cannot record alerts; given up")
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "cannot record alerts; retrying");
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    }
    tracing::info!("alert recorder stopped");
}
