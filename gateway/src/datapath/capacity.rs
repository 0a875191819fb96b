//! How many entries each pinned map holds: from `[datapath]`, given to the loader
//! (`EbpfLoader::map_max_entries`) and compared with the pins a previous controller left.
//! A pin of another size is dropped and recreated like a pin of another layout
//! (`loader::forget_stale_pins`); the store then refills the device table (`restore`).
//!
//! Memory per entry, as the kernel accounts it (`bpftool map show` memlock, kernel 6.18;
//! hash maps are preallocated, so a map costs its full capacity from the start):
//!
//! | map | per entry | sized by |
//! |---|---:|---|
//! | `DEVICES` (hash) | 80 B | `devices_capacity` |
//! | `DEVICE_IPV4` (hash) | 80 B | `devices_capacity` |
//! | `DEVICE_STATS` (LRU per-CPU hash) | 80 B + 200 B per CPU | `devices_capacity` |
//! | `BUDGETS` (LRU hash) | 152 B | `devices_capacity` |
//! | `FLOWS` (LRU hash) | 208 B | `flows_capacity` |
//! | `EVENTS` (ring buffer) | 1 B | `events_ring_bytes` |
//! | `POLICY_V4`, `POLICY_V6` (LPM tries) | allocated per rule written | the policy compiler's bound |
//!
//! So a device costs 392 B + 200 B per CPU (1,192 B on 4 CPUs), a flow 208 B. The policy tries
//! allocate only the rules they hold, so their bound (`gateway_ebpf::maps::POLICY_CAPACITY`,
//! which the policy compiler enforces) costs nothing unused and is not configured here.
use std::path::Path;

use gateway_ebpf::maps as abi;

use super::DatapathConfig;

/// Default `datapath.devices_capacity`: a small router's site (≈ 4.7 MiB on 4 CPUs).
pub const DEFAULT_DEVICES: u32 = 4_096;
/// Default `datapath.flows_capacity`: 16 live flows per device at the default (13 MiB).
pub const DEFAULT_FLOWS: u32 = 65_536;
/// Default `datapath.events_ring_bytes`: the object's own size (`EVENTS_BYTES`, 4 MiB).
pub const DEFAULT_EVENTS_RING_BYTES: u32 = abi::EVENTS_BYTES;
/// Smallest `datapath.events_ring_bytes`: one sample event takes 560 bytes.
pub const MIN_EVENTS_RING_BYTES: u32 = 1 << 16;

/// A map's configured size: (map name, `max_entries`).
pub type Capacity = (&'static str, u32);

/// The size of every map `[datapath]` sizes.
pub fn capacities(config: &DatapathConfig) -> [Capacity; 6] {
    [
        (abi::DEVICES, config.devices_capacity),
        (abi::DEVICE_IPV4, config.devices_capacity),
        (abi::DEVICE_STATS, config.devices_capacity),
        (abi::BUDGETS, config.devices_capacity),
        (abi::FLOWS, config.flows_capacity),
        (abi::EVENTS, config.events_ring_bytes),
    ]
}

/// The first pin under `pin_path` whose size is not the configured one, said in words.
/// Missing pins are not a mismatch: the load creates them at the configured size.
pub fn mismatch(pin_path: &Path, capacities: &[Capacity]) -> Option<String> {
    capacities.iter().find_map(|&(name, wanted)| {
        let pinned = aya::maps::MapInfo::from_pin(pin_path.join(name)).ok()?.max_entries();
        (pinned != wanted).then(|| format!("{name} holds {pinned} entries, the configuration asks for {wanted}"))
    })
}

/// The configuration's problems with capacities (for `DatapathConfig::problems`).
pub fn problems(config: &DatapathConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in [("devices_capacity", config.devices_capacity), ("flows_capacity", config.flows_capacity)] {
        if value == 0 {
            problems.push(format!("datapath.{name} must be above 0"));
        }
    }
    let ring = config.events_ring_bytes;
    // The kernel takes a power of two, at least a page; the floor keeps room for a burst.
    if !ring.is_power_of_two() || ring < MIN_EVENTS_RING_BYTES {
        problems.push(format!(
            "datapath.events_ring_bytes = {ring} must be a power of two of at least {MIN_EVENTS_RING_BYTES}"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_map_follows_devices_capacity() {
        let config = DatapathConfig { devices_capacity: 100_000, flows_capacity: 1_000_000, ..Default::default() };
        let sizes = capacities(&config);
        for map in [abi::DEVICES, abi::DEVICE_IPV4, abi::DEVICE_STATS, abi::BUDGETS] {
            assert!(sizes.contains(&(map, 100_000)), "{map}: {sizes:?}");
        }
        assert!(sizes.contains(&(abi::FLOWS, 1_000_000)));
        assert!(sizes.contains(&(abi::EVENTS, DEFAULT_EVENTS_RING_BYTES)));
    }

    #[test]
    fn zero_sizes_and_odd_ring_sizes_are_refused() {
        assert!(problems(&DatapathConfig::default()).is_empty());
        let zero = DatapathConfig { devices_capacity: 0, ..Default::default() };
        assert_eq!(problems(&zero), ["datapath.devices_capacity must be above 0"]);
        for ring in [3 << 16, 1 << 12] {
            let odd = DatapathConfig { events_ring_bytes: ring, ..Default::default() };
            assert_eq!(problems(&odd).len(), 1, "{ring}");
        }
    }

    #[test]
    fn missing_pins_are_no_mismatch() {
        let dir = std::env::temp_dir().join(format!("iotgw-capacity-test-{}", std::process::id()));
        assert_eq!(mismatch(&dir, &capacities(&DatapathConfig::default())), None);
    }
}
