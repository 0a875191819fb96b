//! The ring-buffer step: drains the datapath's `EVENTS` ring into the fan-out's queue. When
//! the queue is full it waits; the ring then fills and XDP counts lost events, never blocking
//! packets.
use tokio::sync::mpsc::Sender;

use crate::{
    datapath::events::{DatapathEvent, RingReader},
    shutdown::Shutdown,
};

/// Runs until shutdown, a read error, or the fan-out is gone.
pub(super) async fn run(mut ring: RingReader, events: Sender<DatapathEvent>, mut shutdown: Shutdown) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            result = ring.next_batch(&mut batch) => {
                if let Err(error) = result {
                    tracing::error!(%error, "ring buffer read failed");
                    break;
                }
                for event in batch.drain(..) {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
