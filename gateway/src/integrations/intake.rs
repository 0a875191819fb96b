//! The intake: every bus event some outbox consumer wants goes into the outbox, through the
//! aggregator (a flood becomes a few counted records and an `event_flood` alert).
//!
//! It reads a bounded queue of the bus (`EventBus::subscribe_queue`), not the broadcast: a burst
//! faster than the outbox writer takes waits in the queue instead of being lost, up to
//! `QUEUE_CAPACITY` events (a few MB). Beyond that the bus counts what it could not queue
//! rather than grow, and the intake raises an `event_flood` alert saying how many were lost (at
//! most one per `LOSS_ALERT_EVERY`). Its own alerts go to the bus's recorders (the alert store)
//! with `publish_to_recorders`, which never feeds the queue, so it never reads them back.
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{aggregate, config::Filter, outbox};
use crate::{
    event::{EventBus, EventKind, GatewayEvent, Severity},
    shutdown::Shutdown,
};

/// Events waiting for the intake before the bus counts further ones as lost instead. With the
/// outbox writer's own queue (`outbox::WRITE_QUEUE_CAPACITY`) it bounds what a burst holds in
/// memory; the worst flood (8,276 events in a second) fits with room to spare.
pub const QUEUE_CAPACITY: usize = 16_384;
/// Loss alerts come at most this often; each counts every event lost since the last.
pub const LOSS_ALERT_EVERY: Duration = Duration::from_secs(10);
/// How often loss is checked when aggregation is off (otherwise on the aggregator's tick).
const LOSS_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Who the loss alert names.
const ACTOR: &str = "integrations:intake";

/// What the intake task owns.
pub(super) struct Intake {
    pub events: mpsc::Receiver<GatewayEvent>,
    pub bus: EventBus,
    pub writer: outbox::Writer,
    /// One per consumer; an event goes into the outbox when any accepts it.
    pub filters: Vec<Filter>,
    pub aggregator: aggregate::Aggregator,
    pub shutdown: Shutdown,
}

/// Events the bus could not queue, and when they were last alerted on.
struct Losses {
    alerted: u64,
    last_alert: Option<Instant>,
}

impl Losses {
    /// The alert for the events lost since the last one, unless one went out too recently.
    fn alert(&mut self, lost_total: u64, now: Instant) -> Option<GatewayEvent> {
        let lost = lost_total.saturating_sub(self.alerted);
        if lost == 0 || self.last_alert.is_some_and(|at| now.duration_since(at) < LOSS_ALERT_EVERY) {
            return None;
        }
        self.alerted = lost_total;
        self.last_alert = Some(now);
        tracing::error!(lost, "events arrived faster than the outbox takes them; events lost before the outbox");
        Some(GatewayEvent::new(
            Severity::High,
            None,
            ACTOR,
            EventKind::Alert {
                incident_id: format!("{}:intake", aggregate::FLOOD_DETECTOR),
                detector: aggregate::FLOOD_DETECTOR.into(),
                score: 0.9,
                expected: format!("at most {QUEUE_CAPACITY} events waiting for the outbox"),
                observed: format!("{lost} events lost before the outbox ({lost_total} since start)"),
                flows: Vec::new(),
                resolved: false,
            },
        ))
    }
}

impl Intake {
    /// Runs until shutdown, then stores what is already queued and what the aggregator counts,
    /// so a clean shutdown stores everything the bus queued.
    pub async fn run(mut self) {
        let mut losses = Losses { alerted: self.bus.queue_overflows(), last_alert: None };
        let tick = if self.aggregator.enabled() { self.aggregator.tick_interval() } else { LOSS_CHECK_EVERY };
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = self.shutdown.clone();
        loop {
            let records = tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.take(event),
                    None => break,
                },
                _ = ticks.tick() => {
                    let now = Instant::now();
                    let mut records = if self.aggregator.enabled() { self.aggregator.close_due(now) } else { Vec::new() };
                    records.extend(losses.alert(self.bus.queue_overflows(), now));
                    records
                }
                _ = shutdown.wait() => break,
            };
            if !self.store(records).await {
                return;
            }
        }
        while let Ok(event) = self.events.try_recv() {
            let records = self.take(event);
            if !self.store(records).await {
                return;
            }
        }
        let mut records = self.aggregator.flush();
        records.extend(losses.alert(self.bus.queue_overflows(), Instant::now()));
        self.store(records).await;
    }

    fn wanted(&self, event: &GatewayEvent) -> bool {
        self.filters.iter().any(|f| f.accepts(event))
    }

    /// What to store now for one bus event.
    fn take(&mut self, event: GatewayEvent) -> Vec<GatewayEvent> {
        if self.wanted(&event) { self.aggregator.handle(event, Instant::now()) } else { Vec::new() }
    }

    /// Hands the intake's own alerts to the recorders and queues what some consumer wants;
    /// false once the writer is gone.
    async fn store(&self, records: Vec<GatewayEvent>) -> bool {
        for flood in records.iter().filter(|record| aggregate::is_flood_alert(record)) {
            self.bus.publish_to_recorders(flood);
        }
        for record in records.into_iter().filter(|record| self.wanted(record)) {
            if self.writer.append(record).await.is_err() {
                tracing::error!("outbox writer stopped; events are no longer stored");
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_alerted_at_most_once_per_period_and_each_counted_once() {
        let mut losses = Losses { alerted: 0, last_alert: None };
        let start = Instant::now();
        assert!(losses.alert(0, start).is_none(), "nothing lost, nothing said");
        let first = losses.alert(5, start).expect("an alert");
        assert!(matches!(&first.kind, EventKind::Alert { observed, .. } if observed.starts_with("5 events lost")));
        assert!(aggregate::is_flood_alert(&first));
        assert!(losses.alert(9, start + LOSS_ALERT_EVERY / 2).is_none(), "too soon");
        let second = losses.alert(9, start + LOSS_ALERT_EVERY).expect("a second alert");
        assert!(matches!(&second.kind, EventKind::Alert { observed, .. } if observed.starts_with("4 events lost")));
    }
}
