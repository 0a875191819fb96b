//! Events to the fleet: one more outbox consumer (`integrations::Consumer`, cursor `fleet` in
//! `integration_cursors`), so the outbox's reading, ordering, backoff and pruning serve it as
//! they serve sinks, and it runs whether or not any sink is configured.
//!
//! Each outbox event becomes a `Report` with `ReportBody::Event { seq, event }` on
//! `iotgw.<site>.<gateway>.event`, with `Nats-Msg-Id = Report::msg_id()`. A batch is published
//! pipelined, then its acknowledgements are awaited in order; the cursor moves past the
//! acknowledged prefix only, so after a broker outage, a reconnect or `kill -9` of the gateway
//! the unacknowledged tail is published again under the same ids and the stream stores it once
//! (within its duplicate window; beyond it the hub's upsert on (gateway, seq) does). While the
//! broker is down the backlog stays in the outbox, bounded by `max_outbox_events`.
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::future::BoxFuture;

use super::{Published, Reporter, wire::ReportBody};
use crate::integrations::{
    self,
    config::Filter,
    delivery::{Destination, Pacing},
    outbox::Record,
    transport::Progress,
};

/// The publisher's cursor name in `integration_cursors` (a sink may not be named so).
pub const CONSUMER: &str = "fleet";

/// Events read and published per round.
const BATCH: usize = 256;
/// How long one publish acknowledgement may take; a round gets four times this.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry pacing while the broker is away: quick at first (a reconnect), then every 30 s at most.
const RETRY_INITIAL: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Publishes outbox events as this gateway's event reports.
pub struct Publisher {
    reporter: Reporter,
    published: Arc<Published>,
}

impl Publisher {
    /// The outbox consumer that publishes through `reporter`, counting into `published`.
    pub fn consumer(reporter: Reporter, published: Arc<Published>) -> integrations::Consumer {
        integrations::Consumer {
            name: CONSUMER.to_owned(),
            filter: Filter::default(),
            pacing: Pacing {
                batch_size: BATCH,
                retry_initial: RETRY_INITIAL,
                retry_max: RETRY_MAX,
                timeout: ACK_TIMEOUT,
            },
            destination: Box::new(Self { reporter, published }),
        }
    }

    async fn publish(&self, batch: &[Record]) -> Progress {
        let bodies =
            batch.iter().map(|record| ReportBody::Event { seq: record.seq.0, event: record.event.clone() }).collect();
        let (taken, failure) = self.reporter.send_all(bodies).await;
        self.published.events.fetch_add(taken as u64, Ordering::Relaxed);
        match failure {
            Some(why) => Progress::transient(taken, format!("fleet broker: {why}")),
            None => Progress::all(taken),
        }
    }
}

impl Destination for Publisher {
    fn deliver<'a>(&'a mut self, batch: &'a [Record]) -> BoxFuture<'a, Progress> {
        Box::pin(self.publish(batch))
    }
}
