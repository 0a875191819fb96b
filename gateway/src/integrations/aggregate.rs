//! Aggregation of repeated events before the outbox, so a flood cannot push real events out
//! of it: the intake hands every event to `Aggregator::handle` and stores what comes back.
//!
//! Events of one key (kind, actor, device, action and severity) are stored one by one for the
//! first `burst` of a window; the rest of that window become one record, a copy of the first
//! counted event carrying `Repeat { count, first_seen, last_seen }`, emitted when the window
//! closes (by `close_due` on the intake's tick, by the next event of the key after it, or by
//! `flush` at shutdown). The sum of `GatewayEvent::count` over the records equals the events
//! handed in. A key that reaches `flood_alert_events` in a window raises one `event_flood`
//! alert, at most one per window per source (actor and device).
//!
//! Alerts and actions are never aggregated: each is a decision someone must see. Counts held
//! in memory are lost by a crash (at most one window's repeats; the burst is stored).
//! Reads and writes nothing but its own maps: a sync core, driven by `integrations::intake`.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use time::OffsetDateTime;

use crate::{
    device::Mac,
    event::{EventKind, GatewayEvent, Repeat, Severity},
};

use super::config::AggregationConfig;

/// Keys followed at once at most. Beyond it (a flood of distinct spoofed sources), events of
/// new keys are stored one by one rather than growing memory without bound; the outbox cap
/// still drops such audit events before any alert or action.
pub const MAX_KEYS: usize = 16_384;
/// Detector name of the flood alert.
pub const FLOOD_DETECTOR: &str = "event_flood";

/// What events are grouped on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: &'static str,
    actor: String,
    device: Option<Mac>,
    action: String,
    severity: Severity,
}

/// Who a flood alert is about: one alert per window per source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Source {
    actor: String,
    device: Option<Mac>,
}

/// One key's open window.
struct Window {
    opened: Instant,
    /// Events of the key seen in this window (stored and counted).
    seen: u64,
    /// The record standing for the events beyond the burst, if any yet.
    held: Option<GatewayEvent>,
}

/// The last flood alert of a source.
struct Alerted {
    at: Instant,
    incident_id: String,
}

/// The sync core (see the module doc).
pub struct Aggregator {
    config: AggregationConfig,
    windows: HashMap<Key, Window>,
    alerted: HashMap<Source, Alerted>,
}

impl Aggregator {
    pub fn new(config: AggregationConfig) -> Self {
        Self { config, windows: HashMap::new(), alerted: HashMap::new() }
    }

    /// Whether aggregation is on (`window_ms` above 0).
    pub fn enabled(&self) -> bool {
        self.config.window_ms > 0
    }

    /// How often the intake should call `close_due`: a quarter window, so a window's record
    /// leaves at most a quarter window late.
    pub fn tick_interval(&self) -> Duration {
        (self.config.window() / 4).max(Duration::from_millis(10))
    }

    /// Takes one event; returns what to store now, in order (nothing while it is counted).
    pub fn handle(&mut self, event: GatewayEvent, now: Instant) -> Vec<GatewayEvent> {
        if !self.enabled() || matches!(event.kind, EventKind::Alert { .. } | EventKind::Action { .. }) {
            return vec![event];
        }
        let key = Key {
            kind: event.kind_name(),
            actor: event.actor.clone(),
            device: event.device,
            action: event.action_name(),
            severity: event.severity,
        };
        let mut out = Vec::new();
        let window = self.config.window();
        if let Some(open) = self.windows.get(&key)
            && now.duration_since(open.opened) >= window
            && let Some(closed) = self.windows.remove(&key)
        {
            out.extend(closed.held);
        }
        if !self.windows.contains_key(&key) && self.windows.len() >= MAX_KEYS {
            out.push(event);
            return out;
        }
        let open = self.windows.entry(key.clone()).or_insert(Window { opened: now, seen: 0, held: None });
        open.seen += 1;
        let seen = open.seen;
        if seen <= self.config.burst {
            out.push(event);
        } else {
            match &mut open.held {
                Some(held) => {
                    if let Some(repeat) = &mut held.repeat {
                        repeat.count += event.count();
                        repeat.last_seen = event.time;
                    }
                }
                None => {
                    let mut held = event;
                    held.id = uuid::Uuid::new_v4().to_string();
                    held.repeat = Some(Repeat { count: held.count(), first_seen: held.time, last_seen: held.time });
                    open.held = Some(held);
                }
            }
        }
        if self.config.flood_alert_events > 0 && seen == self.config.flood_alert_events {
            out.extend(self.flood_alert(&key, seen, now));
        }
        out
    }

    /// Closes every window older than the window length; returns their records.
    pub fn close_due(&mut self, now: Instant) -> Vec<GatewayEvent> {
        let window = self.config.window();
        let mut out = Vec::new();
        self.windows.retain(|_, open| {
            if now.duration_since(open.opened) < window {
                return true;
            }
            out.extend(open.held.take());
            false
        });
        // Forget sources quiet for two windows: a later flood is a new incident.
        self.alerted.retain(|_, alerted| now.duration_since(alerted.at) < 2 * window);
        sort_by_first_seen(&mut out);
        out
    }

    /// Closes every window now (shutdown): nothing counted is left behind.
    pub fn flush(&mut self) -> Vec<GatewayEvent> {
        let mut out: Vec<GatewayEvent> = self.windows.drain().filter_map(|(_, open)| open.held).collect();
        sort_by_first_seen(&mut out);
        out
    }

    /// The flood alert for `key`'s source, unless the source had one this window.
    fn flood_alert(&mut self, key: &Key, seen: u64, now: Instant) -> Option<GatewayEvent> {
        let window = self.config.window();
        let source = Source { actor: key.actor.clone(), device: key.device };
        let incident_id = match self.alerted.get(&source) {
            Some(last) if now.duration_since(last.at) < window => return None,
            // The same flood going on: its alerts share an incident (one ticket, updated).
            Some(last) if now.duration_since(last.at) < 2 * window => last.incident_id.clone(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        self.alerted.insert(source, Alerted { at: now, incident_id: incident_id.clone() });
        let device = key.device.map_or_else(|| "an unidentified device".to_owned(), |mac| format!("device {mac}"));
        let mut alert = GatewayEvent::new(
            Severity::Medium,
            key.device,
            format!("detector:{FLOOD_DETECTOR}"),
            EventKind::Alert {
                incident_id,
                detector: FLOOD_DETECTOR.into(),
                score: 0.6,
                expected: format!(
                    "fewer than {} {} events ({}) from {} by {} within {} s",
                    self.config.flood_alert_events,
                    key.kind,
                    key.action,
                    device,
                    key.actor,
                    window.as_secs_f64()
                ),
                observed: format!(
                    "{seen} within {:.1} s; further ones are counted into one record per {} s window",
                    now.duration_since(self.windows.get(key).map_or(now, |w| w.opened)).as_secs_f64(),
                    window.as_secs_f64()
                ),
                flows: Vec::new(),
                resolved: false,
            },
        );
        alert.time = OffsetDateTime::now_utc();
        Some(alert)
    }
}

/// Whether `event` is a flood alert this module raised (never one it was handed: alerts from
/// the bus pass through, and no other producer names this detector).
pub fn is_flood_alert(event: &GatewayEvent) -> bool {
    matches!(&event.kind, EventKind::Alert { detector, .. } if detector == FLOOD_DETECTOR)
}

fn sort_by_first_seen(records: &mut [GatewayEvent]) {
    records.sort_by_key(|r| r.repeat.map_or(r.time, |repeat| repeat.first_seen));
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn config() -> AggregationConfig {
        AggregationConfig { window_ms: WINDOW.as_millis() as u64, burst: 3, flood_alert_events: 100 }
    }

    fn refused(mac: u8) -> GatewayEvent {
        GatewayEvent::new(
            Severity::Low,
            Some(Mac([2, 0, 0, 0, 0, mac])),
            "enrollment",
            EventKind::Audit { action: "simpleenroll_refused".into(), detail: "unknown enrollment token".into() },
        )
    }

    fn total(records: &[GatewayEvent]) -> u64 {
        records.iter().filter(|r| r.kind_name() == "audit").map(GatewayEvent::count).sum()
    }

    fn alerts(records: &[GatewayEvent]) -> usize {
        records.iter().filter(|r| r.kind_name() == "alert").count()
    }

    #[test]
    fn flood_of_one_device_becomes_burst_plus_one_record_and_one_alert() {
        let mut aggregator = Aggregator::new(config());
        let start = Instant::now();
        let mut out = Vec::new();
        // 8,276 refusals in 10 s (the issue's flood), inside one window.
        for n in 0..8_276u32 {
            out.extend(aggregator.handle(refused(1), start + Duration::from_micros(u64::from(n) * 1_200)));
        }
        assert_eq!(out.len(), 3 + 1, "the burst and the alert so far: {out:#?}");
        out.extend(aggregator.close_due(start + WINDOW));
        assert_eq!(total(&out), 8_276, "every event counted once");
        assert_eq!(alerts(&out), 1);
        let aggregate = out.iter().find(|r| r.repeat.is_some()).unwrap();
        let repeat = aggregate.repeat.unwrap();
        assert_eq!(repeat.count, 8_276 - 3);
        assert!(repeat.first_seen <= repeat.last_seen);
        assert_eq!(aggregate.device, Some(Mac([2, 0, 0, 0, 0, 1])));
    }

    #[test]
    fn alerts_and_actions_pass_one_by_one() {
        let mut aggregator = Aggregator::new(config());
        let now = Instant::now();
        for _ in 0..500 {
            let action = GatewayEvent::new(
                Severity::Medium,
                Some(Mac([2, 0, 0, 0, 0, 1])),
                "api:alice",
                EventKind::Action { action: "quarantine".into(), reason: "r".into() },
            );
            assert_eq!(aggregator.handle(action, now).len(), 1);
        }
        assert!(aggregator.flush().is_empty());
    }

    #[test]
    fn keys_are_counted_apart_and_alerts_are_one_per_window_per_source() {
        let mut aggregator = Aggregator::new(config());
        let start = Instant::now();
        let mut out = Vec::new();
        for n in 0..300u64 {
            let at = start + Duration::from_millis(n);
            out.extend(aggregator.handle(refused(1), at));
            out.extend(aggregator.handle(refused(2), at));
            // The same device, another action: same source, no second alert this window.
            let mut renew = refused(1);
            renew.kind = EventKind::Audit { action: "simplereenroll_refused".into(), detail: "x".into() };
            out.extend(aggregator.handle(renew, at));
        }
        out.extend(aggregator.flush());
        assert_eq!(total(&out), 900);
        assert_eq!(alerts(&out), 2, "one per source (devices 1 and 2)");
        // Next window, flood goes on: another alert, same incident.
        let later = start + WINDOW + Duration::from_secs(1);
        let mut next = Vec::new();
        for _ in 0..100 {
            next.extend(aggregator.handle(refused(1), later));
        }
        let incidents = |records: &[GatewayEvent]| -> Vec<String> {
            records
                .iter()
                .filter_map(|r| match &r.kind {
                    EventKind::Alert { incident_id, .. } if r.device == Some(Mac([2, 0, 0, 0, 0, 1])) => {
                        Some(incident_id.clone())
                    }
                    _ => None,
                })
                .collect()
        };
        assert_eq!(incidents(&next).len(), 1);
        assert_eq!(incidents(&next), incidents(&out), "a flood going on keeps its incident");
    }

    #[test]
    fn closed_window_reopens_with_a_new_burst() {
        let mut aggregator = Aggregator::new(config());
        let start = Instant::now();
        let mut out = Vec::new();
        for _ in 0..5 {
            out.extend(aggregator.handle(refused(1), start));
        }
        assert_eq!(out.len(), 3);
        // The next event after the window closes the old one (its record first) and passes.
        out.extend(aggregator.handle(refused(1), start + WINDOW));
        assert_eq!(out.len(), 5);
        assert_eq!(out[3].count(), 2);
        assert_eq!(out[4].count(), 1);
        assert_eq!(total(&out), 6);
    }

    #[test]
    fn off_passes_everything() {
        let mut aggregator = Aggregator::new(AggregationConfig::off());
        let now = Instant::now();
        let out: Vec<_> = (0..1_000).flat_map(|_| aggregator.handle(refused(1), now)).collect();
        assert_eq!(out.len(), 1_000);
        assert!(out.iter().all(|r| r.repeat.is_none()));
    }

    #[test]
    fn too_many_keys_pass_one_by_one() {
        let mut aggregator = Aggregator::new(config());
        let now = Instant::now();
        let mut stored = 0;
        for n in 0..MAX_KEYS + 10 {
            let mut event = refused(1);
            event.actor = format!("source-{n}");
            stored += aggregator.handle(event, now).len();
        }
        assert_eq!(stored, MAX_KEYS + 10);
        assert_eq!(aggregator.windows.len(), MAX_KEYS);
    }
}
