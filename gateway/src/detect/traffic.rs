//! Detectors over the per-device counters: a packet flood (packets per second over the last
//! second, against the learnt maximum or an absolute limit) and an unusual volume sent over
//! the window (against the learnt mean, spread and maximum). The same limits are the budgets
//! XDP holds devices to between counter sweeps (`budget`).
use super::*;

impl Detector {
    pub(super) fn check_traffic(&mut self, sample: &TrafficSample) -> Vec<Trigger> {
        let window = self.config.window();
        let end = sample.interval_start + sample.interval;
        let state = self.devices.entry(sample.mac).or_default();
        while state.traffic.front().is_some_and(|t| apart(end, t.end) >= window) {
            state.traffic.pop_front();
        }
        state.traffic.push_back(TrafficSpan {
            start: sample.interval_start,
            end,
            tx_bytes: sample.counters.tx_bytes,
            tx_packets: sample.counters.tx_packets,
        });
        let mut triggers = Vec::new();
        // A device still learning is held to its type's rates once that type has a baseline.
        let reference = self.baselines.rate_reference(sample.mac);
        // Packets of the samples that began within the last second (this one always counts),
        // per second of that span or of this sample if it is longer.
        let in_span = |t: &&TrafficSpan| apart(end, t.start) <= RATE_SPAN + RATE_SLACK;
        let recent_packets: u64 = state.traffic.iter().rev().skip(1).filter(in_span).map(|t| t.tx_packets).sum();
        let seconds = RATE_SPAN.max(sample.interval).as_secs_f64();
        let pps = (sample.counters.tx_packets + recent_packets) as f64 / seconds;
        let flood = flood_limit(&self.config, reference);
        if pps > flood.value {
            triggers.push(rate_trigger(
                DetectorKind::Flood,
                Measure::PacketsPerSecond,
                pps,
                flood,
                format!("{pps:.0} packets/s sent"),
            ));
        }
        if let Some(reference) = reference {
            let sent: u64 = state.traffic.iter().map(|t| t.tx_bytes).sum();
            let volume = volume_limit(&self.config, reference);
            if sent as f64 > volume.value {
                let what = format!("{sent} bytes sent in the last {} s", window.as_secs());
                triggers.push(rate_trigger(DetectorKind::Volume, Measure::BytesSent, sent as f64, volume, what));
            }
        }
        triggers
    }
}

/// A rate limit, and how it came about in an alert's words.
pub(super) struct Limit {
    pub value: f64,
    pub expected: String,
}

/// Packets per second beyond which a device floods: from its rate reference (its baseline,
/// or its type's while it learns), or the absolute limit without one.
pub(super) fn flood_limit(config: &Config, reference: Option<(&Profile, Option<&str>)>) -> Limit {
    match reference {
        Some((profile, class)) => {
            let learnt = profile.windows.max[feature::TX_PACKETS];
            let value = (config.flood_factor * learnt).max(config.flood_min_pps);
            let expected = format!(
                "at most {value:.0} packets/s ({}× {} maximum of {learnt:.0} packets in a window, at least {:.0})",
                config.flood_factor,
                learnt_by(class),
                config.flood_min_pps
            );
            Limit { value, expected }
        }
        None => Limit {
            value: config.flood_pps,
            expected: format!("at most {:.0} packets/s (absolute limit, no baseline yet)", config.flood_pps),
        },
    }
}

/// Bytes a device may send per window (`Config::window`), from its rate reference.
pub(super) fn volume_limit(config: &Config, (profile, class): (&Profile, Option<&str>)) -> Limit {
    let max = profile.windows.max[feature::TX_BYTES];
    let mean = profile.windows.mean[feature::TX_BYTES];
    let sigma = profile.windows.std_dev()[feature::TX_BYTES];
    let value =
        (config.volume_factor * max).max(mean + config.volume_sigmas * sigma).max(config.volume_min_bytes as f64);
    let expected = format!(
        "at most {value:.0} bytes sent per {} s ({}: mean {mean:.0}, σ {sigma:.0}, max {max:.0}; limit = max({}×max, mean+{}σ, {}))",
        config.window().as_secs(),
        learnt_by(class),
        config.volume_factor,
        config.volume_sigmas,
        config.volume_min_bytes
    );
    Limit { value, expected }
}

/// A rate detector's trigger: `seen` (described by `what`) above `limit`.
pub(super) fn rate_trigger(detector: DetectorKind, measure: Measure, seen: f64, limit: Limit, what: String) -> Trigger {
    let threshold = limit.value;
    let score = alert::ratio_score(seen, threshold);
    Trigger {
        detector,
        score,
        expected: limit.expected,
        observed: format!("{what}; score = 1 − ½·{threshold:.0}/{seen:.0} = {score:.2}"),
        flows: Vec::new(),
        observation: Some(Observation::Rate { measure, observed: seen, limit: threshold }),
    }
}

/// Whose baseline a rate limit comes from, in an alert's words.
pub(super) fn learnt_by(class: Option<&str>) -> String {
    match class {
        Some(class) => format!("the baselined {class} devices'"),
        None => "the learnt".to_owned(),
    }
}
