//! The metrics step: datapath counters, integration backlogs, events the outbox intake could
//! not queue and the fleet link every second, alerts and actions as they are published (and
//! logged, so an operator tailing the journal sees them).
use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast::error::RecvError;

use crate::{
    api::metrics::{DatapathCounters, Metrics},
    datapath::maps::Maps,
    event::{EventBus, EventKind},
    fleet::Link,
    integrations::BacklogSource,
    shutdown::Shutdown,
};

/// How often datapath counters and integration backlogs are exported.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until shutdown.
pub(super) async fn run(
    maps: Arc<Maps>,
    metrics: Arc<Metrics>,
    backlog: BacklogSource,
    fleet: Option<Link>,
    bus: EventBus,
    mut shutdown: Shutdown,
) {
    let mut events = bus.subscribe();
    let mut intake_lost = bus.queue_overflows();
    let mut ticker = tokio::time::interval(COUNTER_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = ticker.tick() => {
                metrics.set_datapath_counters(DatapathCounters::from_maps(&maps));
                for sink in backlog.backlog().await {
                    metrics.set_integration_backlog(&sink.sink, sink.pending);
                }
                let lost = bus.queue_overflows();
                metrics.record_events_lost("outbox_intake", lost - intake_lost);
                intake_lost = lost;
                if let Some(fleet) = &fleet {
                    metrics.set_fleet(fleet.counters().await);
                }
            }
            event = events.recv() => match event {
                Ok(event) => match &event.kind {
                    EventKind::Alert { detector, score, observed, resolved, .. } => {
                        if !resolved {
                            tracing::warn!(detector = %detector, device = ?event.device, score, %observed, "alert raised");
                        }
                        metrics.record_alert(detector, event.severity);
                    }
                    // The API counts its own actions.
                    EventKind::Action { action, reason } if !event.actor.starts_with("api:") => {
                        tracing::warn!(action = %action, device = ?event.device, actor = %event.actor, %reason, "response applied");
                        metrics.record_action(action, &event.actor);
                    }
                    _ => {}
                },
                Err(RecvError::Lagged(n)) => metrics.record_events_lost("event_bus", n),
                Err(RecvError::Closed) => break,
            },
        }
    }
}
