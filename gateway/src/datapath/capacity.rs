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
//! | `DEVICES` (hash) | 120 B | `devices_capacity` |
//! | `DEVICE_IPV4` (hash) | 80 B | `devices_capacity` |
//! | `DEVICE_STATS` (array, an element per slot and CPU) | 216 B per CPU | `devices_capacity` × CPUs |
//! | `DEVICE_SLOTS` (hash) | 80 B | `devices_capacity` |
//! | `UNKNOWN_DEVICE_STATS` (LRU per-CPU hash) | 80 B + 216 B per CPU | `devices_capacity` |
//! | `CHANGED_DEVICES` (ring buffer) | 16 B (a 24 B record for half the devices) | `devices_capacity` |
//! | `BUDGETS` (array, by slot) | 48 B | `devices_capacity` |
//! | `SOURCE_BINDINGS_V4` (hash) | 80 B | `devices_capacity` |
//! | `SOURCE_BINDINGS_V6` (hash) | 88 B | `devices_capacity` × 4 |
//! | `SOURCE_VIOLATIONS` (LRU per-CPU hash) | 80 B + 24 B per CPU | `devices_capacity` / 16 (≥ 64) |
//! | `FLOWS_V4` (LRU hash) | 170 B | `flows_capacity` |
//! | `FLOWS_V6` (LRU hash) | 194 B | `flows_v6_capacity` |
//! | `EVENTS` (ring buffer) | 1 B | `events_ring_bytes` |
//! | `POLICY_V4`, `POLICY_V6` (LPM tries) | allocated per rule written | the policy compiler's bound |
//!
//! (per-entry costs of the maps new in ABI 8 estimated from their key and value sizes as the
//! kernel lays them out, not yet measured with `bpftool`; `DEVICE_STATS` since ABI 9 has no
//! per-CPU pointer table, 8 B a slot less.) So a device costs 928 B + 432 B per CPU (2,656 B on
//! 4 CPUs, 352 B of it four IPv6 source bindings; the unknown devices' table,
//! sized like the others so a site whose devices all stay unknown keeps counting them, is half
//! of it), an IPv4 flow 170 B, an IPv6 flow 194 B (flows measured at 1,310,720 entries,
//! bench/xdp; the one table of 48-byte keys before the split cost 194 B for every flow). The
//! IPv4 binding table holds one address per device on average (a DHCP lease); the IPv6 one four
//! (a link-local, a stable and two temporary addresses, RFC 8981;
//! `source_guard.max_addresses_per_device` caps what one device claims). Their alarm at 90 %
//! says when to raise the capacity. Only spoofing devices enter the violation map, an LRU, so a
//! sixteenth of the devices suffices. The policy tries allocate only the rules they hold, so
//! their bound (`gateway_ebpf::maps::POLICY_CAPACITY`, which the policy compiler enforces)
//! costs nothing unused and is not configured here.
use std::path::Path;

use gateway_ebpf::maps as abi;

use super::DatapathConfig;

/// Default `datapath.devices_capacity`: a small router's site (≈ 10.4 MiB on 4 CPUs, 1.4 MiB of it
/// the IPv6 source bindings).
pub const DEFAULT_DEVICES: u32 = 4_096;
/// Default `datapath.flows_capacity`: 16 live IPv4 flows per device at the default (10.6 MiB).
pub const DEFAULT_FLOWS: u32 = 65_536;
/// Default `datapath.flows_v6_capacity`: IoT devices talk IPv4 mostly (3.0 MiB).
pub const DEFAULT_FLOWS_V6: u32 = 16_384;
/// Default `datapath.events_ring_bytes`: the object's own size (`EVENTS_BYTES`, 4 MiB).
pub const DEFAULT_EVENTS_RING_BYTES: u32 = abi::EVENTS_BYTES;
/// Smallest `datapath.events_ring_bytes`: one sample event takes 560 bytes.
pub const MIN_EVENTS_RING_BYTES: u32 = 1 << 16;

/// IPv6 addresses a device holds on average: its `SOURCE_BINDINGS_V6` share.
pub const SOURCE_BINDINGS_V6_PER_DEVICE: u32 = 4;

/// Smallest `SOURCE_VIOLATIONS`: room for a burst of spoofers on a small site.
pub const MIN_SOURCE_VIOLATIONS: u32 = 64;

/// A map's configured size: (map name, `max_entries`).
pub type Capacity = (&'static str, u32);

/// `CHANGED_DEVICES`'s bytes: a record for half the devices. A sweep that finds more than a
/// quarter of them changed (`sweep::FULL_READ_SHARE`) reads every device anyway, and one that
/// overflows the ring does too, so more room would buy nothing.
pub fn changed_devices_bytes(devices_capacity: u32) -> u32 {
    let records = u64::from(devices_capacity).div_ceil(2);
    let bytes = (records * u64::from(abi::CHANGED_DEVICES_RECORD_BYTES)).next_power_of_two();
    bytes.clamp(u64::from(MIN_CHANGED_DEVICES_BYTES), 1 << 30) as u32
}
/// The smallest ring the kernel takes: one page.
const MIN_CHANGED_DEVICES_BYTES: u32 = 4_096;

/// `DEVICE_STATS`'s elements for `slots` slots on `cpus` possible CPUs: one per slot and CPU
/// (saturated: a size the kernel cannot make fails the load, `maps::Maps` says why).
pub fn device_stats_entries(slots: u32, cpus: u32) -> u32 {
    slots.saturating_mul(cpus)
}

/// The size of every map `[datapath]` sizes, on a machine of `cpus` possible CPUs.
pub fn capacities(config: &DatapathConfig, cpus: u32) -> [Capacity; 13] {
    [
        (abi::DEVICES, config.devices_capacity),
        (abi::DEVICE_IPV4, config.devices_capacity),
        // One slot per device entry, an element per slot and CPU.
        (abi::DEVICE_STATS, device_stats_entries(config.devices_capacity, cpus)),
        (abi::DEVICE_SLOTS, config.devices_capacity),
        (abi::UNKNOWN_DEVICE_STATS, config.devices_capacity),
        (abi::CHANGED_DEVICES, changed_devices_bytes(config.devices_capacity)),
        (abi::BUDGETS, config.devices_capacity),
        (abi::SOURCE_BINDINGS_V4, config.devices_capacity),
        (abi::SOURCE_BINDINGS_V6, config.devices_capacity.saturating_mul(SOURCE_BINDINGS_V6_PER_DEVICE)),
        (abi::SOURCE_VIOLATIONS, (config.devices_capacity / 16).max(MIN_SOURCE_VIOLATIONS)),
        (abi::FLOWS_V4, config.flows_capacity),
        (abi::FLOWS_V6, config.flows_v6_capacity),
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
    let sizes = [
        ("devices_capacity", config.devices_capacity),
        ("flows_capacity", config.flows_capacity),
        ("flows_v6_capacity", config.flows_v6_capacity),
    ];
    for (name, value) in sizes {
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
        let config = DatapathConfig {
            devices_capacity: 100_000,
            flows_capacity: 1_000_000,
            flows_v6_capacity: 50_000,
            ..Default::default()
        };
        let sizes = capacities(&config, 3);
        assert!(sizes.contains(&(abi::DEVICE_STATS, 300_000)), "an element per slot and CPU");
        for map in [
            abi::DEVICES,
            abi::DEVICE_IPV4,
            abi::DEVICE_SLOTS,
            abi::UNKNOWN_DEVICE_STATS,
            abi::SOURCE_BINDINGS_V4,
            abi::BUDGETS,
        ] {
            assert!(sizes.contains(&(map, 100_000)), "{map}: {sizes:?}");
        }
        assert!(sizes.contains(&(abi::SOURCE_VIOLATIONS, 6_250)));
        assert!(sizes.contains(&(abi::SOURCE_BINDINGS_V6, 400_000)), "four IPv6 addresses per device");
        let small = DatapathConfig { devices_capacity: 100, ..Default::default() };
        assert!(capacities(&small, 3).contains(&(abi::SOURCE_VIOLATIONS, MIN_SOURCE_VIOLATIONS)));
        assert!(sizes.contains(&(abi::FLOWS_V4, 1_000_000)));
        assert!(sizes.contains(&(abi::FLOWS_V6, 50_000)));
        assert!(sizes.contains(&(abi::EVENTS, DEFAULT_EVENTS_RING_BYTES)));
        assert!(sizes.contains(&(abi::CHANGED_DEVICES, 2 << 20)), "50,000 records of 24 B: 1.2 MB, so 2 MiB");
    }

    #[test]
    fn the_changed_devices_ring_is_a_power_of_two_of_at_least_a_page() {
        assert_eq!(changed_devices_bytes(1), 4_096);
        assert_eq!(changed_devices_bytes(DEFAULT_DEVICES), 65_536);
        assert_eq!(changed_devices_bytes(u32::MAX), 1 << 30);
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
        let dir = iotgw_test_support::services::scratch("capacity-test");
        assert_eq!(mismatch(&dir, &capacities(&DatapathConfig::default(), 2)), None);
    }
}
