//! Ingest's writers: `[ingest] writers` tasks, each storing the reports of its own sites in its
//! own transactions, so that PostgreSQL works on several batches at once (one transaction at a
//! time kept one backend busy at most, and waiting on its round trips and the CPU it was given
//! most of the time: bench/fleet/RESULTS.md).
//!
//! A site's reports all go to one writer (`writer_of`), in the order the consumer gave them, and
//! each writer stores its batches one after the other: one gateway's reports are stored in order,
//! as with one writer. Partitioned by site rather than by gateway because every batch's
//! statement triggers lock its sites' counter rows (`fleet_device_counts`, `open_alert_counts`,
//! hub migration 5) until the commit: writers sharing sites would wait on each other there, and
//! could deadlock over two sites' rows locked by two statements in either order. What writers
//! can still share is a fleet device seen at two sites (its `fleet_devices` row); a transaction
//! that meets a deadlock or a serialization failure there is run again (`mod.rs`).
//!
//! Each writer decodes its messages and encodes their statements itself, while its batch before
//! is stored (this process's work in parallel too), and acknowledges each batch after its
//! commit.
use tokio::{sync::mpsc, task::JoinSet};

/// The writer that stores the reports of `site` (the site its subject names, which decoding
/// checks the report's own), of `writers`: FNV-1a of the site's name, so that
/// the same site goes to the same writer for as long as the hub runs.
pub fn writer_of(site: &str, writers: usize) -> usize {
    let hash = site
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    // `writers` is at most `Settings`' limit: the remainder fits.
    (hash % writers.max(1) as u64) as usize
}

/// The writers' queues: each takes one part while its writer decodes and stores the ones
/// before, and the consumer's task waits when a writer is behind.
pub struct Writers<B> {
    queues: Vec<mpsc::Sender<B>>,
    tasks: JoinSet<()>,
}

impl<B: Send + 'static> Writers<B> {
    /// Starts `count` writers, each `run` with its number and its queue: it takes the parts
    /// given to it in order, and ends when the queue closes (`finish`).
    pub fn start<F, Fut>(count: usize, run: F) -> Self
    where
        F: Fn(usize, mpsc::Receiver<B>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        let queues = (0..count.max(1))
            .map(|writer| {
                let (queue, parts) = mpsc::channel::<B>(1);
                tasks.spawn(run(writer, parts));
                queue
            })
            .collect();
        Writers { queues, tasks }
    }

    pub fn count(&self) -> usize {
        self.queues.len()
    }

    /// Hands `part` to writer `writer`, waiting while its queue is full; `false` when that
    /// writer has stopped (it panicked), and its sites would no longer be stored.
    pub async fn send(&self, writer: usize, part: B) -> bool {
        self.queues[writer].send(part).await.is_ok()
    }

    /// Lets every writer store what it has been given, then waits until all have.
    pub async fn finish(self) {
        let Writers { queues, mut tasks } = self;
        drop(queues);
        while let Some(ended) = tasks.join_next().await {
            if let Err(error) = ended {
                // Unacknowledged, its reports are redelivered after `ack_wait_secs`.
                tracing::error!(%error, "an ingest writer failed unexpectedly; its batch will be redelivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_site_always_goes_to_the_same_writer_and_sites_spread_over_all() {
        assert_eq!(writer_of("anything", 1), 0);
        let mut used = [0_usize; 4];
        for n in 0..400 {
            let site = format!("site-{n:04}");
            let writer = writer_of(&site, 4);
            assert_eq!(writer, writer_of(&site, 4));
            used[writer] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "400 sites over 4 writers: {used:?}");
    }

    #[tokio::test]
    async fn each_writer_stores_its_batches_in_order_and_finish_waits_for_all() {
        let stored = Arc::new(Mutex::new(Vec::new()));
        let writers = Writers::start(3, |writer, mut parts: mpsc::Receiver<u32>| {
            let stored = stored.clone();
            async move {
                while let Some(n) = parts.recv().await {
                    // Later parts finish faster: the order must come from the queue.
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(10 - n % 10))).await;
                    stored.lock().unwrap().push((writer, n));
                }
            }
        });
        for n in 0..30 {
            assert!(writers.send((n % 3) as usize, n).await);
        }
        writers.finish().await;
        let stored = stored.lock().unwrap();
        assert_eq!(stored.len(), 30);
        for writer in 0..3 {
            let order: Vec<u32> = stored.iter().filter(|(w, _)| *w == writer).map(|(_, n)| *n).collect();
            assert!(order.is_sorted(), "writer {writer}: {order:?}");
        }
    }
}
