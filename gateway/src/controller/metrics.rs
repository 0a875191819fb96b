//! The metrics step: datapath counters, integration backlogs, events the outbox intake could
//! not queue and the fleet link every second, the maps' fill every `FILL_INTERVAL` (with the
//! `map_capacity` alert when a table that must not fill reaches 90 %), alerts and actions as
//! they are published (and logged, so an operator tailing the journal sees them).
use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast::error::RecvError;

use crate::{
    api::metrics::{DatapathCounters, Metrics},
    datapath::{
        fill::{ALARM_SHARE, AlarmChange, FillAlarm},
        maps::Maps,
    },
    event::{EventBus, EventKind, GatewayEvent, Severity},
    fleet::Link,
    integrations::BacklogSource,
    shutdown::Shutdown,
};

/// How often datapath counters and integration backlogs are exported.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// How often the maps' fill is read: counting a million flows copies them out of the kernel
/// (about half a second of CPU, bench/xdp RESULTS), too much for every second, and tables
/// fill over minutes, not seconds.
pub const FILL_INTERVAL: Duration = Duration::from_secs(30);
/// The alert's detector name, and its incidents' prefix (`map_capacity:DEVICES`).
pub const MAP_CAPACITY_DETECTOR: &str = "map_capacity";
const ACTOR: &str = "datapath:fill";

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
    let mut fill_ticker = tokio::time::interval(FILL_INTERVAL);
    let mut alarm = FillAlarm::default();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = fill_ticker.tick() => {
                let read = { let maps = maps.clone(); tokio::task::spawn_blocking(move || maps.fill_levels()).await };
                match read {
                    Ok(Ok(fills)) => {
                        for change in alarm.check(&fills) {
                            bus.publish(capacity_alert(change));
                        }
                        metrics.set_map_fill(fills);
                    }
                    Ok(Err(error)) => tracing::warn!(%error, "cannot read the maps' fill"),
                    Err(_) => {}
                }
            }
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

/// The `map_capacity` alert for a table that must not fill, raised or resolved (and logged).
fn capacity_alert(change: AlarmChange) -> GatewayEvent {
    let (fill, resolved) = match change {
        AlarmChange::Raised(fill) => (fill, false),
        AlarmChange::Cleared(fill) => (fill, true),
    };
    let observed =
        format!("{} holds {} of {} entries ({:.0} %)", fill.map, fill.entries, fill.capacity, fill.share() * 100.0);
    if resolved {
        tracing::info!(
            map = fill.map,
            entries = fill.entries,
            capacity = fill.capacity,
            "map below its capacity alarm again"
        );
    } else {
        tracing::error!(
            map = fill.map,
            entries = fill.entries,
            capacity = fill.capacity,
            "map nearly full: raise datapath.devices_capacity (devices) or shrink the policy (rules) before entries are refused"
        );
    }
    GatewayEvent::new(
        Severity::High,
        None,
        ACTOR,
        EventKind::Alert {
            incident_id: format!("{MAP_CAPACITY_DETECTOR}:{}", fill.map),
            detector: MAP_CAPACITY_DETECTOR.into(),
            score: fill.share(),
            expected: format!("below {:.0} % of {} entries", ALARM_SHARE * 100.0, fill.capacity),
            observed,
            flows: Vec::new(),
            resolved,
        },
    )
}
