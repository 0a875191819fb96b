//! Traffic counters as the controller steps use them: a device's bytes and packets each way,
//! cumulative in the datapath's per-device counters (`maps::DeviceCounters`), as deltas over
//! one interval live (`TrafficSample`, from the counter step) and offline (`replay`, from
//! captures). One type for all three, so live and offline results come from the same code.
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::device::Mac;

/// A device's traffic. `tx` is what the device sent (source MAC), `rx` what was sent to it
/// (unicast destination MAC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrafficCounters {
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub rx_packets: u64,
}

impl TrafficCounters {
    pub fn add(&mut self, other: &TrafficCounters) {
        self.tx_bytes += other.tx_bytes;
        self.tx_packets += other.tx_packets;
        self.rx_bytes += other.rx_bytes;
        self.rx_packets += other.rx_packets;
    }

    /// What was counted since `before` (cumulative counters; a counter that went back, as
    /// when the map was recreated, counts from zero rather than wrapping).
    pub fn since(&self, before: &TrafficCounters) -> TrafficCounters {
        TrafficCounters {
            tx_bytes: self.tx_bytes.saturating_sub(before.tx_bytes),
            tx_packets: self.tx_packets.saturating_sub(before.tx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(before.rx_bytes),
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
        }
    }

    /// No packet either way.
    pub fn is_idle(&self) -> bool {
        self.tx_packets == 0 && self.rx_packets == 0
    }
}

/// One device's traffic over one interval (the counter step produces them from the XDP
/// per-device counters; `analyze` from captures).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrafficSample {
    pub mac: Mac,
    pub interval_start: SystemTime,
    pub interval: Duration,
    pub counters: TrafficCounters,
}
