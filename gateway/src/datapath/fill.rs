//! How full each map is and how many entries its LRU evicted (`Maps::fill_levels`), for
//! `/metrics` and the fleet's health report, and the alarm on the tables that must not fill:
//! a full device table refuses the next device's entry (so it stays unknown, under the
//! onboarding lane), a full binding table the next address (which stays unbound, unchecked),
//! a full policy trie refuses rules. The LRU maps (flows, unknown devices'
//! counters) evict their oldest entries instead, which costs history, not enforcement: they
//! are counted, not alarmed on.
use std::collections::BTreeSet;

use gateway_ebpf::maps as abi;

/// One map's fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
    /// Entries the LRU evicted since the map was created (`None` for maps that never evict).
    pub evictions: Option<u64>,
}

impl MapFill {
    /// Share of the capacity in use, 0.0 ..= 1.0.
    pub fn share(&self) -> f64 {
        if self.capacity == 0 { 0.0 } else { self.entries as f64 / self.capacity as f64 }
    }
}

/// Maps whose entries are enforcement: alarmed on at `ALARM_SHARE`.
pub const MUST_NOT_FILL: [&str; 6] =
    [abi::DEVICES, abi::DEVICE_IPV4, abi::SOURCE_BINDINGS_V4, abi::SOURCE_BINDINGS_V6, abi::POLICY_V4, abi::POLICY_V6];
/// The alarm is raised at this share of a `MUST_NOT_FILL` map...
pub const ALARM_SHARE: f64 = 0.9;
/// ...and cleared below this one, so a table hovering at the threshold does not flap.
pub const CLEAR_SHARE: f64 = 0.85;

/// A change of a map's alarm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AlarmChange {
    Raised(MapFill),
    Cleared(MapFill),
}

/// Which maps are alarmed on now.
#[derive(Debug, Default)]
pub struct FillAlarm {
    raised: BTreeSet<&'static str>,
}

impl FillAlarm {
    /// The alarms `fills` raise or clear.
    pub fn check(&mut self, fills: &[MapFill]) -> Vec<AlarmChange> {
        let mut changes = Vec::new();
        for fill in fills.iter().filter(|fill| MUST_NOT_FILL.contains(&fill.map)) {
            if fill.share() >= ALARM_SHARE && self.raised.insert(fill.map) {
                changes.push(AlarmChange::Raised(*fill));
            } else if fill.share() < CLEAR_SHARE && self.raised.remove(fill.map) {
                changes.push(AlarmChange::Cleared(*fill));
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(map: &'static str, entries: u64) -> MapFill {
        MapFill { map, entries, capacity: 100, evictions: None }
    }

    #[test]
    fn the_alarm_rises_at_ninety_percent_once_and_clears_below_eighty_five() {
        let mut alarm = FillAlarm::default();
        assert!(alarm.check(&[fill(abi::DEVICES, 89)]).is_empty());
        assert_eq!(alarm.check(&[fill(abi::DEVICES, 90)]), [AlarmChange::Raised(fill(abi::DEVICES, 90))]);
        assert!(alarm.check(&[fill(abi::DEVICES, 95)]).is_empty(), "raised once");
        assert!(alarm.check(&[fill(abi::DEVICES, 86)]).is_empty(), "no flapping between the thresholds");
        assert_eq!(alarm.check(&[fill(abi::DEVICES, 84)]), [AlarmChange::Cleared(fill(abi::DEVICES, 84))]);
    }

    #[test]
    fn maps_that_evict_raise_no_alarm() {
        let mut alarm = FillAlarm::default();
        assert!(
            alarm
                .check(&[fill(abi::FLOWS_V4, 100), fill(abi::FLOWS_V6, 100), fill(abi::UNKNOWN_DEVICE_STATS, 100)])
                .is_empty()
        );
        assert_eq!(alarm.check(&[fill(abi::POLICY_V6, 99)]).len(), 1);
    }
}
