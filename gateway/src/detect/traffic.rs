//! Detectors over the per-device counters: a packet flood (packets per second over the last
//! second, against the learnt maximum or an absolute limit) and an unusual volume sent over
//! the window (against the learnt mean, spread and maximum).
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
        let profile = reference.map(|(p, _)| p);
        let learnt_by = learnt_by(reference.and_then(|(_, class)| class));
        // Packets of the samples that began within the last second (this one always counts),
        // per second of that span or of this sample if it is longer.
        let in_span = |t: &&TrafficSpan| apart(end, t.start) <= RATE_SPAN + RATE_SLACK;
        let recent_packets: u64 = state.traffic.iter().rev().skip(1).filter(in_span).map(|t| t.tx_packets).sum();
        let seconds = RATE_SPAN.max(sample.interval).as_secs_f64();
        let pps = (sample.counters.tx_packets + recent_packets) as f64 / seconds;
        let (threshold, expected) = match profile {
            Some(p) => {
                let learnt = p.windows.max[feature::TX_PACKETS];
                let t = (self.config.flood_factor * learnt).max(self.config.flood_min_pps);
                (
                    t,
                    format!(
                        "at most {t:.0} packets/s ({}× {learnt_by} maximum of {learnt:.0} packets in a window, at least {:.0})",
                        self.config.flood_factor, self.config.flood_min_pps
                    ),
                )
            }
            None => (
                self.config.flood_pps,
                format!("at most {:.0} packets/s (absolute limit, no baseline yet)", self.config.flood_pps),
            ),
        };
        if pps > threshold {
            let score = alert::ratio_score(pps, threshold);
            triggers.push(Trigger {
                detector: DetectorKind::Flood,
                score,
                expected,
                observed: format!("{pps:.0} packets/s sent; score = 1 − ½·{threshold:.0}/{pps:.0} = {score:.2}"),
                flows: Vec::new(),
                observation: Some(Observation::Rate {
                    measure: Measure::PacketsPerSecond,
                    observed: pps,
                    limit: threshold,
                }),
            });
        }
        if let Some(p) = profile {
            let sent: u64 = state.traffic.iter().map(|t| t.tx_bytes).sum();
            let max = p.windows.max[feature::TX_BYTES];
            let mean = p.windows.mean[feature::TX_BYTES];
            let sigma = p.windows.std_dev()[feature::TX_BYTES];
            let threshold = (self.config.volume_factor * max)
                .max(mean + self.config.volume_sigmas * sigma)
                .max(self.config.volume_min_bytes as f64);
            if sent as f64 > threshold {
                let score = alert::ratio_score(sent as f64, threshold);
                triggers.push(Trigger {
                    detector: DetectorKind::Volume,
                    score,
                    expected: format!(
                        "at most {threshold:.0} bytes sent per {} s ({learnt_by}: mean {mean:.0}, σ {sigma:.0}, max {max:.0}; limit = max({}×max, mean+{}σ, {}))",
                        window.as_secs(),
                        self.config.volume_factor,
                        self.config.volume_sigmas,
                        self.config.volume_min_bytes
                    ),
                    observed: format!(
                        "{sent} bytes sent in the last {} s; score = 1 − ½·{threshold:.0}/{sent} = {score:.2}",
                        window.as_secs()
                    ),
                    flows: Vec::new(),
                    observation: Some(Observation::Rate {
                        measure: Measure::BytesSent,
                        observed: sent as f64,
                        limit: threshold,
                    }),
                });
            }
        }
        triggers
    }
}

/// Whose baseline a rate limit comes from, in an alert's words.
pub(super) fn learnt_by(class: Option<&str>) -> String {
    match class {
        Some(class) => format!("the baselined {class} devices'"),
        None => "the learnt".to_owned(),
    }
}
