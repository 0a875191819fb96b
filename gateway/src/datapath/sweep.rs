//! The counter step's read of the per-device counters, at a cost that grows with the devices
//! that changed rather than with all of them (issue 19: a full read of 100,000 devices' per-CPU
//! counters four times a second takes a third of a core).
//!
//! Each sweep starts a new epoch (`GatewayConfig::sweep_epoch`). XDP stamps a device's per-CPU
//! counters with the epoch it last counted them in; the first frame of a device on a CPU in an
//! epoch writes the device (its MAC and counter slot) to the `CHANGED_DEVICES` ring. The sweep
//! then reads, one batch read each (a slot's CPUs are consecutive elements), the devices the
//! ring named since the last sweep *and* those it named the sweep before: a
//! program that read the old epoch just before the switch may add its counts just after the
//! read that followed, and the next sweep must still see them (an XDP run lasts microseconds,
//! a sweep interval 250 ms). Every device is read in one batched pass instead when the set is
//! not known to be complete (first sweeps, a ring that overflowed, an epoch someone else moved)
//! or when it is so large that the batched pass is cheaper (`FULL_READ_SHARE`).
//!
//! So the deltas equal those of reading every device every time: a device whose counters moved
//! is always read, and an unchanged one has no delta.
//!
//! Deltas are taken per counter source (`maps::CounterSource`: a device's slot, or its entry
//! as an unknown MAC) and summed per device. A source that went back (a slot freed and given to
//! the device again, an unknown entry evicted and created again) counts from zero; a full read
//! forgets the sources it no longer finds. There is one sweep per gateway (the
//! counter step's): a second reader of the ring would take records meant for it.
use std::collections::HashMap;

use gateway_ebpf::counter;

use super::{
    maps::{CounterSource, Maps},
    traffic::TrafficCounters,
};
use crate::device::Mac;

/// Above this share of the known devices, one batched read of every device costs less than a
/// lookup per changed device (scale-bench: a lookup costs about four times a batched entry).
pub const FULL_READ_SHARE: f64 = 0.25;

/// How a sweep read the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// Only the devices that changed, this many lookups.
    Changed(usize),
    /// Every device, in batches.
    Full,
}

/// The sweep's state between reads.
pub struct CounterSweep {
    /// Each source's cumulative traffic as last read: deltas are taken against it.
    last: HashMap<CounterSource, TrafficCounters>,
    /// The sources the ring named at the last sweep (sorted); `None` when not known complete.
    named_last: Option<Vec<CounterSource>>,
    /// The epoch this sweep last started: another value in `CONFIG` means another writer.
    epoch: u32,
    /// `CHANGED_DEVICES_LOST` at the last sweep.
    lost: u64,
}

impl CounterSweep {
    /// Reads every device once, as the base the first deltas are taken from.
    pub fn start(maps: &Maps) -> Self {
        let mut sweep = Self { last: HashMap::new(), named_last: None, epoch: 0, lost: 0 };
        sweep.read(maps);
        // What a previous controller left: the epoch it ended may have counts landing after
        // this read, of devices it already took from the ring. The next sweep reads all again.
        sweep.named_last = None;
        sweep
    }

    /// Each device's traffic since the last sweep, devices without traffic left out.
    pub fn deltas(&mut self, maps: &Maps) -> Vec<(Mac, TrafficCounters)> {
        self.read(maps).0
    }

    /// `deltas`, with how the counters were read (for the benchmark).
    pub fn read(&mut self, maps: &Maps) -> (Vec<(Mac, TrafficCounters)>, ReadKind) {
        let epoch_kept = match maps.next_sweep_epoch() {
            Ok((ended, started)) => {
                let kept = ended == self.epoch;
                self.epoch = started;
                kept
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start a sweep epoch; reading every device");
                false
            }
        };
        let mut named = Vec::new();
        maps.drain_changed_devices(&mut named);
        named.sort_unstable();
        named.dedup();
        let lost = maps.global_counter(counter::CHANGED_DEVICES_LOST);
        let complete = epoch_kept && lost == self.lost;
        self.lost = lost;

        let to_read = match (&self.named_last, complete) {
            (Some(before), true) => Some(union(&named, before)),
            _ => None,
        };
        let full_above = (self.last.len() as f64 * FULL_READ_SHARE) as usize;
        let (current, kind) = match to_read {
            Some(sources) if sources.len() <= full_above => {
                (maps.traffic_of(&sources), ReadKind::Changed(sources.len()))
            }
            _ => (maps.traffic_by_source(), ReadKind::Full),
        };
        self.named_last = complete.then_some(named);
        if kind == ReadKind::Full {
            let found: std::collections::HashSet<CounterSource> = current.iter().map(|(source, _)| *source).collect();
            self.last.retain(|source, _| found.contains(source));
        }

        let mut deltas: HashMap<Mac, TrafficCounters> = HashMap::new();
        for (source, traffic) in current {
            let before = self.last.insert(source, traffic).unwrap_or_default();
            let delta = if went_back(&traffic, &before) { traffic } else { traffic.since(&before) };
            if !delta.is_idle() {
                deltas.entry(source.mac).or_default().add(&delta);
            }
        }
        (deltas.into_iter().collect(), kind)
    }
}

/// Whether counters read lower than before: the source was zeroed since (a slot handed back
/// to the device, an evicted entry created again), so all they hold is new.
fn went_back(now: &TrafficCounters, before: &TrafficCounters) -> bool {
    now.tx_packets < before.tx_packets || now.rx_packets < before.rx_packets
}

/// The sorted union of two sorted, deduplicated lists.
fn union(a: &[CounterSource], b: &[CounterSource]) -> Vec<CounterSource> {
    let mut all = Vec::with_capacity(a.len() + b.len());
    all.extend_from_slice(a);
    all.extend_from_slice(b);
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(tx_packets: u64, rx_packets: u64) -> TrafficCounters {
        TrafficCounters { tx_bytes: tx_packets * 100, tx_packets, rx_bytes: rx_packets * 100, rx_packets }
    }

    #[test]
    fn counters_that_went_back_were_zeroed_and_hold_only_new_traffic() {
        assert!(!went_back(&traffic(10, 5), &traffic(10, 5)));
        assert!(!went_back(&traffic(12, 5), &traffic(10, 5)));
        assert!(went_back(&traffic(3, 0), &traffic(10, 5)), "a slot handed back to the device: zeroed");
        assert!(went_back(&traffic(10, 1), &traffic(10, 5)));
    }

    #[test]
    fn the_union_of_two_sweeps_names_each_source_once() {
        let source = |n: u8, slot: u32| CounterSource { mac: Mac([2, 0, 0, 0, 0, n]), slot };
        let (a, b) = ([source(1, 0), source(2, 7)], [source(1, 0), source(1, u32::MAX), source(3, 2)]);
        assert_eq!(union(&a, &b), [source(1, 0), source(1, u32::MAX), source(2, 7), source(3, 2)]);
    }
}
