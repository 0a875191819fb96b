//! Budgets: the flood and volume limits of `traffic`, handed to XDP (`datapath::budget`) so
//! it reports the frame that crosses one, and the alerts a crossing raises: the same
//! detectors, incidents and responses, without waiting for the next counter sweep. The
//! sweep's detectors still run: XDP counts fixed windows, the sweep slides over the last
//! second and window, so what straddles two of XDP's windows is still seen there.
use super::*;
use crate::datapath::budget::{Budget, BudgetCrossing, Measure as Budgeted};
use traffic::{flood_limit, rate_trigger, volume_limit};

/// Shortest span a crossing's rate is taken over: XDP's coarse clock moves by jiffies (4 ms
/// at 250 Hz), so a window may look as if it began with the crossing frame.
const MIN_RATE_SPAN: Duration = Duration::from_millis(4);

impl Detector {
    /// The budgets XDP holds `mac` to: its flood limit in packets per second, and, once it
    /// or its type has a baseline, its volume limit in bytes per window. `None` for the
    /// gateway's own MACs, whose traffic is forwarded, no device's.
    pub fn budget(&self, mac: Mac) -> Option<Budget> {
        if self.config.gateway_macs.contains(&mac) {
            return None;
        }
        let reference = self.baselines.rate_reference(mac);
        let packets = flood_limit(&self.config, reference).value * RATE_SPAN.as_secs_f64();
        let bytes = reference.map(|reference| volume_limit(&self.config, reference).value as u64);
        Some(Budget { packets: packets as u64, packet_window: RATE_SPAN, bytes, byte_window: self.config.window() })
    }

    /// The flood or volume trigger for a budget XDP saw crossed, judged against the limit in
    /// force now (a budget written before the device's baseline changed may be stale).
    pub(super) fn check_budget(&mut self, crossing: &BudgetCrossing) -> Vec<Trigger> {
        let reference = self.baselines.rate_reference(crossing.mac);
        let elapsed = crossing.elapsed.max(MIN_RATE_SPAN);
        let in_window = |unit: &str| {
            format!(
                "{} {unit} sent in the first {:.0} ms of a {} s window (XDP, crossing its budget of {})",
                crossing.counted,
                elapsed.as_secs_f64() * 1e3,
                crossing.window.as_secs_f64(),
                crossing.limit
            )
        };
        let (detector, measure, seen, limit, what) = match crossing.measure {
            Budgeted::Packets => {
                // Over the part of the window that had passed: the rate the crossing shows.
                let pps = crossing.counted as f64 / elapsed.as_secs_f64().min(RATE_SPAN.as_secs_f64());
                let what = format!("{pps:.0} packets/s: {}", in_window("packets"));
                (DetectorKind::Flood, Measure::PacketsPerSecond, pps, flood_limit(&self.config, reference), what)
            }
            Budgeted::Bytes => {
                let Some(reference) = reference else { return Vec::new() };
                let sent = crossing.counted as f64;
                let what = in_window("bytes");
                (DetectorKind::Volume, Measure::BytesSent, sent, volume_limit(&self.config, reference), what)
            }
        };
        if seen <= limit.value {
            return Vec::new();
        }
        vec![rate_trigger(detector, measure, seen, limit, what)]
    }
}
