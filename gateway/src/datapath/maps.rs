//! The only writer of BPF maps. Holds the pinned maps taken out of the loaded object (or
//! opened from their pins, for tools) and turns controller decisions into map entries:
//! device states, device IPs, device budgets (`budget`), compiled policy rules, the datapath
//! configuration, the quarantine port and the source-address bindings (`crate::source_guard`).
//! Also reads the counters, the source-address violations and the flow table back.
//!
//! A device written into `DEVICES` gets a counter slot (`slots`) for as long as it stays there:
//! its record names the slot, and its counters (`DEVICE_STATS`, an element per CPU from
//! `slot × CPUs` on) and budget windows (`BUDGETS`) are that slot's, zeroed and stamped with
//! the device's MAC whenever the slot changes hands.
//! A MAC absent from `DEVICES` is counted in `UNKNOWN_DEVICE_STATS` instead, so a device's
//! counters are the sum of its slot's and its unknown entry's (`CounterSource`).
//!
//! Flows cache their decision in XDP (see gateway-ebpf's `flow`), valid while
//! `GatewayConfig::policy_generation` is unchanged: this module owns that counter and bumps
//! it *after* every write to the policy maps, `DEVICES` and `CONFIG` (after, so no packet can
//! cache a decision made from a half-written change under the new generation).
use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::maps::{
    Array, DevMap, HashMap, IterableMap as _, Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf,
    lpm_trie::{Key, LpmTrie},
};
use gateway_ebpf::{
    BudgetWindows, ChangedDevice, DeviceBudget, DeviceEntry, DeviceRecord, DeviceStats, FlowKey, FlowKeyV4, FlowStats,
    FromBytes as _, GatewayConfig, MacKey, POLICY_KEY_FIXED_BITS, PolicyKey, PolicyRule, QUARANTINE_SLOT,
    SourceViolation, counter, maps as abi,
};

use super::{
    ControlError, DeviceAccess, DeviceControl, batch,
    budget::{self, Budget, BudgetState},
    fill::MapFill,
    slots::Slots,
    traffic::TrafficCounters,
};
use crate::{
    device::{Access, Mac},
    source_guard::violations::Violation,
};

/// What a policy sync changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub inserted: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// One entry of `POLICY_V4` or `POLICY_V6`, in the ABI's types (`policy::CompiledRule::to_abi`
/// makes them from the policy files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiEntry {
    /// Key for `POLICY_V4` with its LPM prefix length (`POLICY_KEY_FIXED_BITS` + prefix).
    V4 {
        prefix_len: u32,
        key: PolicyKey<4>,
        rule: PolicyRule,
    },
    V6 {
        prefix_len: u32,
        key: PolicyKey<16>,
        rule: PolicyRule,
    },
}

/// Sums of a device's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceCounters {
    #[serde(flatten)]
    pub traffic: TrafficCounters,
    pub tcp_packets: u64,
    pub udp_packets: u64,
    pub icmp_packets: u64,
    pub other_packets: u64,
    pub drops: [u64; gateway_ebpf::reason::COUNT],
}

/// Where some of a device's counters are: its slot in `DEVICE_STATS`, or
/// (`DeviceEntry::NO_SLOT`) its entry in `UNKNOWN_DEVICE_STATS`. A device may have both (it
/// sent while unknown, then entered `DEVICES`); each is cumulative on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterSource {
    pub mac: Mac,
    pub slot: u32,
}

impl CounterSource {
    fn from_changed(changed: &ChangedDevice) -> Self {
        Self { mac: Mac(changed.mac.addr), slot: changed.slot }
    }
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> ControlError {
    move |e| ControlError::Map { map, message: e.to_string() }
}

/// The pinned maps.
pub struct Maps {
    /// Locked first by every write that changes a device's record or slot.
    devices: Mutex<HashMap<MapData, MacKey, DeviceRecord>>,
    device_ipv4: Mutex<HashMap<MapData, [u8; 4], MacKey>>,
    /// Per-CPU counters of the devices in `DEVICES`: an element per slot and CPU, a slot's
    /// `cpus` elements from `slot × cpus` on (`slot_elements`).
    device_stats: Mutex<Array<MapData, DeviceStats>>,
    /// Per-CPU counters of the MACs absent from `DEVICES`.
    unknown_device_stats: PerCpuHashMap<MapData, MacKey, DeviceStats>,
    slots: Mutex<Slots>,
    /// Possible CPUs: the copies of a per-CPU value, and a slot's elements in `DEVICE_STATS`.
    cpus: u32,
    /// MACs of the devices counted since the last sweep epoch (`sweep`).
    changed_devices: Mutex<RingBuf<MapData>>,
    flows_v4: HashMap<MapData, FlowKeyV4, FlowStats>,
    flows_v6: HashMap<MapData, FlowKey, FlowStats>,
    policy_v4: Mutex<PolicyTrie<4>>,
    policy_v6: Mutex<PolicyTrie<16>>,
    config: Mutex<Array<MapData, GatewayConfig>>,
    global: PerCpuArray<MapData, u64>,
    redirect: Mutex<DevMap<MapData>>,
    source_bindings: Mutex<HashMap<MapData, [u8; 4], MacKey>>,
    source_bindings_v6: Mutex<HashMap<MapData, [u8; 16], MacKey>>,
    source_violations: PerCpuHashMap<MapData, MacKey, SourceViolation>,
    /// Budget windows, by slot (the limits are in the device's record).
    budgets: Mutex<Array<MapData, BudgetWindows>>,
    /// Budgets of devices without a record, written into it when they get one.
    waiting_budgets: Mutex<StdHashMap<Mac, DeviceBudget>>,
    /// Entries the policy tries hold: counted where they are written anyway, so `fill_levels`
    /// need not read them again.
    policy_v4_entries: AtomicU64,
    policy_v6_entries: AtomicU64,
    /// Writes to `DEVICES` through this handle, so a step can tell the table changed.
    device_writes: AtomicU64,
}

impl Maps {
    /// Takes the maps out of a freshly loaded object (the ring buffer stays for `events`),
    /// and gives back the slots claimed for devices no longer in `DEVICES` (a writer that
    /// stopped between claiming a slot and writing the record): the loading controller is the
    /// one writer that may, as no other writes yet.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, ControlError> {
        let take = |name: &'static str| {
            ebpf.take_map(name).ok_or(ControlError::Map { map: name, message: "missing from the object".into() })
        };
        let maps = Self::from_maps(take)?;
        maps.check_device_stats_size()?;
        maps.release_orphan_slots()?;
        Ok(maps)
    }

    /// Opens the maps from their pins (for tools and tests that run beside a controller).
    pub fn open_pinned(pin_path: &Path) -> Result<Self, ControlError> {
        Self::from_maps(|name| {
            let data = MapData::from_pin(pin_path.join(name)).map_err(map_error(name))?;
            let info = data.info().map_err(map_error(name))?;
            let map_type = info.map_type().map_err(map_error(name))?;
            use aya::maps::MapType as T;
            Ok(match map_type {
                T::Hash => Map::HashMap(data),
                T::LruHash => Map::LruHashMap(data),
                T::LruPerCpuHash => Map::PerCpuLruHashMap(data),
                T::RingBuf => Map::RingBuf(data),
                T::LpmTrie => Map::LpmTrie(data),
                T::Array => Map::Array(data),
                T::PerCpuArray => Map::PerCpuArray(data),
                T::DevMap => Map::DevMap(data),
                other => {
                    return Err(ControlError::Map { map: name, message: format!("unexpected map type {other:?}") });
                }
            })
        })
    }

    fn from_maps(mut get: impl FnMut(&'static str) -> Result<Map, ControlError>) -> Result<Self, ControlError> {
        Ok(Self {
            devices: Mutex::new(HashMap::try_from(get(abi::DEVICES)?).map_err(map_error(abi::DEVICES))?),
            device_ipv4: Mutex::new(HashMap::try_from(get(abi::DEVICE_IPV4)?).map_err(map_error(abi::DEVICE_IPV4))?),
            device_stats: Mutex::new(Array::try_from(get(abi::DEVICE_STATS)?).map_err(map_error(abi::DEVICE_STATS))?),
            unknown_device_stats: PerCpuHashMap::try_from(get(abi::UNKNOWN_DEVICE_STATS)?)
                .map_err(map_error(abi::UNKNOWN_DEVICE_STATS))?,
            slots: Mutex::new(Slots::open(
                HashMap::try_from(get(abi::DEVICE_SLOTS)?).map_err(map_error(abi::DEVICE_SLOTS))?,
            )?),
            cpus: super::loader::possible_cpus()
                .map_err(|e| ControlError::Map { map: abi::DEVICE_STATS, message: e.to_string() })?,
            changed_devices: Mutex::new(
                RingBuf::try_from(get(abi::CHANGED_DEVICES)?).map_err(map_error(abi::CHANGED_DEVICES))?,
            ),
            flows_v4: HashMap::try_from(get(abi::FLOWS_V4)?).map_err(map_error(abi::FLOWS_V4))?,
            flows_v6: HashMap::try_from(get(abi::FLOWS_V6)?).map_err(map_error(abi::FLOWS_V6))?,
            policy_v4: Mutex::new(PolicyTrie::new(
                LpmTrie::try_from(get(abi::POLICY_V4)?).map_err(map_error(abi::POLICY_V4))?,
            )),
            policy_v6: Mutex::new(PolicyTrie::new(
                LpmTrie::try_from(get(abi::POLICY_V6)?).map_err(map_error(abi::POLICY_V6))?,
            )),
            config: Mutex::new(Array::try_from(get(abi::CONFIG)?).map_err(map_error(abi::CONFIG))?),
            global: PerCpuArray::try_from(get(abi::GLOBAL_STATS)?).map_err(map_error(abi::GLOBAL_STATS))?,
            redirect: Mutex::new(DevMap::try_from(get(abi::REDIRECT_PORTS)?).map_err(map_error(abi::REDIRECT_PORTS))?),
            source_bindings: Mutex::new(
                HashMap::try_from(get(abi::SOURCE_BINDINGS_V4)?).map_err(map_error(abi::SOURCE_BINDINGS_V4))?,
            ),
            source_bindings_v6: Mutex::new(
                HashMap::try_from(get(abi::SOURCE_BINDINGS_V6)?).map_err(map_error(abi::SOURCE_BINDINGS_V6))?,
            ),
            source_violations: PerCpuHashMap::try_from(get(abi::SOURCE_VIOLATIONS)?)
                .map_err(map_error(abi::SOURCE_VIOLATIONS))?,
            budgets: Mutex::new(Array::try_from(get(abi::BUDGETS)?).map_err(map_error(abi::BUDGETS))?),
            waiting_budgets: Mutex::new(StdHashMap::new()),
            policy_v4_entries: AtomicU64::new(0),
            policy_v6_entries: AtomicU64::new(0),
            device_writes: AtomicU64::new(0),
        })
    }

    /// Writes the datapath configuration; the programs enforce from this moment on.
    /// `config.policy_generation` is ignored: the written value is the live one bumped, since
    /// cached decisions may hold the verdicts this write changes.
    pub fn write_config(&self, config: &GatewayConfig) -> Result<(), ControlError> {
        let mut map = lock(&self.config);
        let live = map.get(&0, 0).map_err(map_error(abi::CONFIG))?;
        let next = GatewayConfig {
            policy_generation: live.policy_generation.wrapping_add(1),
            sweep_epoch: live.sweep_epoch,
            ..*config
        };
        map.set(0, next, 0).map_err(map_error(abi::CONFIG))
    }

    /// Writes `mac`'s device entry (`Access::Unknown` removes it), without the generation
    /// bump `set_access` adds. A device entering the table claims a slot (and takes the budget
    /// waiting for it); one leaving gives its slot back (and its budget waits again).
    fn write_device(&self, mac: Mac, access: DeviceAccess) -> Result<(), ControlError> {
        let mut devices = lock(&self.devices);
        let key = mac.key();
        let current = match devices.get(&key, 0) {
            Ok(record) => Some(record),
            Err(aya::maps::MapError::KeyNotFound) => None,
            Err(e) => return Err(map_error(abi::DEVICES)(e)),
        };
        if access.access == Access::Unknown {
            if let Some(record) = current {
                devices.remove(&key).map_err(map_error(abi::DEVICES))?;
                if record.budget != DeviceBudget::default() {
                    lock(&self.waiting_budgets).insert(mac, record.budget);
                }
                self.release_slot(record.entry.slot)?;
            }
        } else {
            let (slot, budget) = match current {
                Some(record) => (record.entry.slot, record.budget),
                None => (self.claim_slot(key)?, lock(&self.waiting_budgets).remove(&mac).unwrap_or_default()),
            };
            let entry = device_entry(access, slot);
            if let Err(e) = devices.insert(key, DeviceRecord { entry, budget }, 0) {
                if current.is_none() {
                    if budget != DeviceBudget::default() {
                        lock(&self.waiting_budgets).insert(mac, budget);
                    }
                    // The table refused the device (full): its slot goes back unused.
                    if let Err(error) = self.release_slot(slot) {
                        tracing::warn!(%error, slot, "cannot give back an unused counter slot");
                    }
                }
                return Err(map_error(abi::DEVICES)(e));
            }
        }
        self.device_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the devices of `entries` absent from `DEVICES` (and named once) in a few batches:
    /// their slots claimed (`Slots::claim_many`), zeroed and stamped, and their records
    /// written, each step one `BPF_MAP_UPDATE_BATCH` call per few thousand devices instead of a
    /// call per device (a device added alone costs five, `write_device`). Returns which entries
    /// it wrote; `set_accesses` writes the others one by one, so a failure here only costs
    /// speed (a device the table refused is written alone and gets its own error).
    fn add_devices(&self, entries: &[(Mac, DeviceAccess)]) -> Vec<bool> {
        let mut written = vec![false; entries.len()];
        let devices = lock(&self.devices);
        let mut named: StdHashMap<Mac, usize> = StdHashMap::new();
        for &(mac, _) in entries {
            *named.entry(mac).or_default() += 1;
        }
        let new: Vec<usize> = (0..entries.len())
            .filter(|&i| {
                let (mac, access) = entries[i];
                access.access != Access::Unknown
                    && named[&mac] == 1
                    && matches!(devices.get(&mac.key(), 0), Err(aya::maps::MapError::KeyNotFound))
            })
            .collect();
        if new.is_empty() {
            return written;
        }
        let keys: Vec<MacKey> = new.iter().map(|&i| entries[i].0.key()).collect();
        let Ok(slots) = lock(&self.slots).claim_many(&keys) else { return written };
        let mut elements = Vec::with_capacity(slots.len() * self.cpus as usize);
        for (&slot, &owner) in slots.iter().zip(&keys) {
            let zero = DeviceStats { owner, ..DeviceStats::ZERO };
            elements.extend(self.slot_elements(slot).map(|index| (index, zero)));
        }
        let windows: Vec<(u32, BudgetWindows)> = slots.iter().map(|&slot| (slot, BudgetWindows::default())).collect();
        let reset = batch::update(lock(&self.device_stats).map(), &elements)
            .and_then(|()| batch::update(lock(&self.budgets).map(), &windows));
        if let Err(error) = reset {
            tracing::warn!(error = %error.error, "cannot zero counter slots in a batch; writing the devices one by one");
            self.release_slots(&slots);
            return written;
        }
        let mut waiting = lock(&self.waiting_budgets);
        let records: Vec<(MacKey, DeviceRecord)> = new
            .iter()
            .zip(&slots)
            .map(|(&i, &slot)| {
                let (mac, access) = entries[i];
                let entry = device_entry(access, slot);
                (mac.key(), DeviceRecord { entry, budget: waiting.remove(&mac).unwrap_or_default() })
            })
            .collect();
        let done = match batch::update(devices.map(), &records) {
            Ok(()) => records.len(),
            Err(partial) => partial.done,
        };
        // Those the table did not take: their budgets wait again, their slots go back.
        for &(key, record) in &records[done..] {
            if record.budget != DeviceBudget::default() {
                waiting.insert(Mac(key.addr), record.budget);
            }
        }
        drop(waiting);
        self.release_slots(&slots[done..]);
        for &i in &new[..done] {
            written[i] = true;
        }
        self.device_writes.fetch_add(done as u64, Ordering::Relaxed);
        written
    }

    /// Gives back slots claimed for devices not written (logged: they stay claimed, orphans
    /// the next `take` gives back).
    fn release_slots(&self, slots: &[u32]) {
        for &slot in slots {
            if let Err(error) = self.release_slot(slot) {
                tracing::warn!(%error, slot, "cannot give back an unused counter slot");
            }
        }
    }

    /// Claims a slot for `mac`, its counters and budget windows zeroed and stamped as its.
    fn claim_slot(&self, mac: MacKey) -> Result<u32, ControlError> {
        let slot = lock(&self.slots).claim(mac)?;
        if let Err(e) = self.reset_slot(slot, mac) {
            // Unusable: given back, its counters as they were (nobody's).
            let _ = lock(&self.slots).release(slot);
            return Err(e);
        }
        Ok(slot)
    }

    /// Zeroes `slot` (its owner too) and gives it back.
    fn release_slot(&self, slot: u32) -> Result<(), ControlError> {
        self.reset_slot(slot, MacKey::default())?;
        lock(&self.slots).release(slot)
    }

    /// Zeroes `slot`'s counters (every CPU's element, in one batch) and budget windows,
    /// stamping the counters with `owner`.
    fn reset_slot(&self, slot: u32, owner: MacKey) -> Result<(), ControlError> {
        let zero = DeviceStats { owner, ..DeviceStats::ZERO };
        let elements: Vec<(u32, DeviceStats)> = self.slot_elements(slot).map(|index| (index, zero)).collect();
        batch::update(lock(&self.device_stats).map(), &elements)
            .map_err(|e| ControlError::Map { map: abi::DEVICE_STATS, message: e.error.to_string() })?;
        lock(&self.budgets).set(slot, BudgetWindows::default(), 0).map_err(map_error(abi::BUDGETS))
    }

    /// `slot`'s elements in `DEVICE_STATS`: one per CPU, consecutive (gateway-ebpf's `flow`).
    fn slot_elements(&self, slot: u32) -> std::ops::Range<u32> {
        let first = slot * self.cpus;
        first..first + self.cpus
    }

    /// Refuses a `DEVICE_STATS` without an element for every slot and CPU: XDP would count
    /// the slots beyond its end nowhere (an object not loaded through `loader::object_loader`).
    fn check_device_stats_size(&self) -> Result<(), ControlError> {
        let elements = lock(&self.device_stats).map().info().map_err(map_error(abi::DEVICE_STATS))?.max_entries();
        let slots = lock(&self.slots).capacity()?;
        let needed = slots * u64::from(self.cpus);
        if u64::from(elements) < needed {
            return Err(ControlError::Map {
                map: abi::DEVICE_STATS,
                message: format!(
                    "{elements} elements for {slots} slots on {} CPUs ({needed} needed): load the object through \
                     loader::object_loader",
                    self.cpus
                ),
            });
        }
        Ok(())
    }

    /// Gives back every slot claimed for a device whose record does not name it.
    fn release_orphan_slots(&self) -> Result<(), ControlError> {
        let held: StdHashMap<MacKey, u32> =
            self.devices_raw().into_iter().map(|(mac, record)| (mac.key(), record.entry.slot)).collect();
        let claimed = lock(&self.slots).claimed()?;
        for (slot, mac) in claimed {
            if held.get(&mac) != Some(&slot) {
                tracing::info!(slot, device = %Mac(mac.addr), "giving back a counter slot claimed for no device entry");
                self.release_slot(slot)?;
            }
        }
        Ok(())
    }

    /// Invalidates every flow's cached decision: their next packets are decided afresh.
    /// Called after each write the cached decisions depend on.
    pub fn bump_policy_generation(&self) -> Result<(), ControlError> {
        let mut map = lock(&self.config);
        let mut live = map.get(&0, 0).map_err(map_error(abi::CONFIG))?;
        live.policy_generation = live.policy_generation.wrapping_add(1);
        map.set(0, live, 0).map_err(map_error(abi::CONFIG))
    }

    /// Starts the next sweep epoch (never 0, the epoch of counters XDP just created): returns
    /// the epoch that ended and the one that starts.
    pub fn next_sweep_epoch(&self) -> Result<(u32, u32), ControlError> {
        let mut map = lock(&self.config);
        let mut live = map.get(&0, 0).map_err(map_error(abi::CONFIG))?;
        let ended = live.sweep_epoch;
        live.sweep_epoch = ended.wrapping_add(1).max(1);
        map.set(0, live, 0).map_err(map_error(abi::CONFIG))?;
        Ok((ended, live.sweep_epoch))
    }

    /// Appends to `into` the devices XDP wrote to `CHANGED_DEVICES` since the last call.
    pub fn drain_changed_devices(&self, into: &mut Vec<CounterSource>) {
        let mut ring = lock(&self.changed_devices);
        while let Some(record) = ring.next() {
            into.extend(ChangedDevice::from_bytes(&record).as_ref().map(CounterSource::from_changed));
        }
    }

    pub fn read_config(&self) -> Result<GatewayConfig, ControlError> {
        lock(&self.config).get(&0, 0).map_err(map_error(abi::CONFIG))
    }

    /// Sets the interface quarantined traffic is redirected to (`None` clears it).
    pub fn set_quarantine_port(&self, if_index: Option<u32>) -> Result<(), ControlError> {
        // A devmap slot cannot be deleted through aya; ifindex 0 is no interface and makes
        // the redirect fail, which the program turns into a counted drop.
        lock(&self.redirect)
            .set(QUARANTINE_SLOT, if_index.unwrap_or(0), None, 0)
            .map_err(|e| ControlError::Map { map: abi::REDIRECT_PORTS, message: e.to_string() })
    }

    /// Makes the policy maps hold exactly `entries` (unique per policy, protocol and prefix,
    /// as `policy::compile` makes them): new and changed entries first, stale ones after, so
    /// traffic allowed before and after never sees a gap (`PolicyTrie::sync`), then bumps the
    /// policy generation.
    pub fn sync_policy(&self, entries: impl IntoIterator<Item = AbiEntry>) -> Result<SyncReport, ControlError> {
        let mut v4 = Merged::<4>::new();
        let mut v6 = Merged::<16>::new();
        for entry in entries {
            match entry {
                AbiEntry::V4 { prefix_len, key, rule } => {
                    v4.insert(merged_key(prefix_len, &key), rule);
                }
                AbiEntry::V6 { prefix_len, key, rule } => {
                    v6.insert(merged_key(prefix_len, &key), rule);
                }
            }
        }
        let mut report = SyncReport::default();
        let written = lock(&self.policy_v4)
            .sync(v4, abi::POLICY_V4, &mut report, &self.policy_v4_entries)
            .and_then(|()| lock(&self.policy_v6).sync(v6, abi::POLICY_V6, &mut report, &self.policy_v6_entries));
        // Even a sync that failed half-way may have changed entries: flows must not keep
        // decisions made from the old ones.
        if written.is_err() || report.inserted + report.removed > 0 {
            self.bump_policy_generation()?;
        }
        written.map(|()| report)
    }

    /// Every entry the kernel's policy tries hold, read back key by key (for tools and tests:
    /// a sync diffs against what it wrote instead).
    pub fn policy_entries(&self) -> Vec<AbiEntry> {
        let v4 = lock(&self.policy_v4).read().into_iter().map(|(id, rule)| {
            let key = trie_key(&id);
            AbiEntry::V4 { prefix_len: key.prefix_len(), key: key.data(), rule }
        });
        let v6 = lock(&self.policy_v6).read().into_iter().map(|(id, rule)| {
            let key = trie_key(&id);
            AbiEntry::V6 { prefix_len: key.prefix_len(), key: key.data(), rule }
        });
        v4.chain(v6).collect()
    }

    /// Every device's counters, summed over CPUs and over its slot and unknown entry (for
    /// status and tools; the counter step reads only the traffic, `traffic_by_source`).
    pub fn device_counters(&self) -> Vec<(Mac, DeviceCounters)> {
        let mut all: BTreeMap<Mac, DeviceCounters> = BTreeMap::new();
        self.sweep_device_stats(|source, per_cpu| {
            let sum = all.entry(source.mac).or_default();
            sum.traffic.add(&traffic_sum(per_cpu));
            for s in per_cpu {
                sum.tcp_packets += s.tcp_packets;
                sum.udp_packets += s.udp_packets;
                sum.icmp_packets += s.icmp_packets;
                sum.other_packets += s.other_packets;
                // Only the first `reason::COUNT` slots are codes; the rest are padding.
                for (total, d) in sum.drops.iter_mut().zip(s.drops) {
                    *total += d;
                }
            }
        });
        all.into_iter().collect()
    }

    /// Every device's traffic, summed over CPUs and over its slot and unknown entry.
    pub fn device_traffic(&self) -> Vec<(Mac, TrafficCounters)> {
        let mut all: BTreeMap<Mac, TrafficCounters> = BTreeMap::new();
        for (source, traffic) in self.traffic_by_source() {
            all.entry(source.mac).or_default().add(&traffic);
        }
        all.into_iter().collect()
    }

    /// The traffic of every counter source, summed over CPUs (the counter step's full read,
    /// `sweep`).
    pub fn traffic_by_source(&self) -> Vec<(CounterSource, TrafficCounters)> {
        let mut all = Vec::new();
        self.sweep_device_stats(|source, per_cpu| all.push((source, traffic_sum(per_cpu))));
        all
    }

    /// The traffic of `sources`, summed over CPUs, one lookup each (the counter step's read of
    /// the devices that changed, `sweep`). Left out: sources without counters, and slots no
    /// longer the device's.
    pub fn traffic_of(&self, sources: &[CounterSource]) -> Vec<(CounterSource, TrafficCounters)> {
        let device_stats = lock(&self.device_stats);
        sources
            .iter()
            .filter_map(|source| {
                let read = if source.slot == DeviceEntry::NO_SLOT {
                    match self.unknown_device_stats.get(&source.mac.key(), 0) {
                        Ok(per_cpu) => Ok(Some(per_cpu.to_vec())),
                        // Evicted since.
                        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    // The slot's CPUs in one call; a slot handed on since XDP named it holds
                    // another device's counters.
                    let first = self.slot_elements(source.slot).start;
                    batch::read_range::<DeviceStats>(device_stats.map(), first, self.cpus)
                        .map(|per_cpu| per_cpu.first().is_some_and(|s| s.owner == source.mac.key()).then_some(per_cpu))
                        .map_err(|e| e.to_string())
                };
                match read {
                    Ok(per_cpu) => per_cpu.map(|per_cpu| (*source, traffic_sum(&per_cpu))),
                    Err(error) => {
                        tracing::warn!(%error, slot = source.slot, "cannot read a device's counters");
                        None
                    }
                }
            })
            .collect()
    }

    /// Reads `DEVICE_STATS` (the claimed slots) and `UNKNOWN_DEVICE_STATS` whole, in batches
    /// (`batch`: a few system calls for a whole map, not two per device), handing each
    /// source's per-CPU counters to `visit`. Reads nothing of a map (and logs why) if the
    /// kernel refuses the read.
    fn sweep_device_stats(&self, mut visit: impl FnMut(CounterSource, &[DeviceStats])) {
        let unclaimed = MacKey::default();
        // The array's elements come in index order: each run of `cpus` is one slot's.
        let (cpus, mut slot) = (self.cpus as usize, Vec::with_capacity(self.cpus as usize));
        let slots = batch::for_each::<u32, DeviceStats>(lock(&self.device_stats).map(), 1, |index, element| {
            slot.extend_from_slice(element);
            if slot.len() < cpus {
                return;
            }
            if let Some(owner) = slot.first().map(|s| s.owner).filter(|owner| *owner != unclaimed) {
                visit(CounterSource { mac: Mac(owner.addr), slot: index / cpus as u32 }, &slot);
            }
            slot.clear();
        });
        if let Err(error) = slots {
            tracing::warn!(%error, map = abi::DEVICE_STATS, "cannot read the per-device counters");
        }
        let unknown = batch::for_each::<MacKey, DeviceStats>(self.unknown_device_stats.map(), cpus, |mac, per_cpu| {
            visit(CounterSource { mac: Mac(mac.addr), slot: DeviceEntry::NO_SLOT }, per_cpu);
        });
        if let Err(error) = unknown {
            tracing::warn!(%error, map = abi::UNKNOWN_DEVICE_STATS, "cannot read the unknown devices' counters");
        }
    }

    /// The budgets of `mac` and XDP's count against them (`None`: it has none in XDP, as a
    /// device without a `DEVICES` record).
    pub fn budget(&self, mac: Mac) -> Result<Option<BudgetState>, ControlError> {
        let record = match lock(&self.devices).get(&mac.key(), 0) {
            Ok(record) => record,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(map_error(abi::DEVICES)(e)),
        };
        if record.budget == DeviceBudget::default() {
            return Ok(None);
        }
        let windows = lock(&self.budgets).get(&record.entry.slot, 0).map_err(map_error(abi::BUDGETS))?;
        Ok(Some(BudgetState::new(&record.budget, &windows)))
    }

    /// A global counter (`gateway_ebpf::counter`), summed over CPUs.
    pub fn global_counter(&self, index: u32) -> u64 {
        self.global.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Drops by reason, summed over CPUs and devices (unknown MACs included).
    pub fn drops_by_reason(&self) -> [u64; gateway_ebpf::reason::COUNT] {
        let mut drops = [0; gateway_ebpf::reason::COUNT];
        for (reason, total) in drops.iter_mut().enumerate() {
            *total = self.global_counter(counter::DROPS_BASE + reason as u32);
        }
        drops
    }

    /// The flow tables, IPv4 then IPv6, optionally only one device's flows (read in batches;
    /// a table the kernel refuses to read is left out, and logged).
    pub fn flows(&self, mac: Option<Mac>) -> Vec<(FlowKey, FlowStats)> {
        let mut flows = Vec::new();
        let mut keep = |key: FlowKey, stats: &[FlowStats]| {
            if mac.is_none_or(|m| key.mac.addr == m.0) {
                flows.extend(stats.first().map(|stats| (key, *stats)));
            }
        };
        let v4 = batch::for_each::<FlowKeyV4, FlowStats>(self.flows_v4.map(), 1, |key, stats| keep(key.widen(), stats));
        if let Err(error) = v4 {
            tracing::warn!(%error, map = abi::FLOWS_V4, "cannot read the flow table");
        }
        if let Err(error) = batch::for_each::<FlowKey, FlowStats>(self.flows_v6.map(), 1, keep) {
            tracing::warn!(%error, map = abi::FLOWS_V6, "cannot read the flow table");
        }
        flows
    }

    /// How full every sized map is (`fill`): the device, counter and flow tables counted in
    /// batches, the policy tries as the last sync left them. LRU evictions are what XDP
    /// inserted less what the map holds.
    pub fn fill_levels(&self) -> Result<Vec<MapFill>, ControlError> {
        let capacity =
            |map: &MapData, name| map.info().map(|info| u64::from(info.max_entries())).map_err(map_error(name));
        let count = |map: &MapData, name| {
            batch::count(map).map(|n| n as u64).map_err(|e| ControlError::Map { map: name, message: e.to_string() })
        };
        let evicted = |inserted: u32, entries: u64| Some(self.global_counter(inserted).saturating_sub(entries));
        // Each handle locked only for its own count: the device table's lock is the one the
        // API's lookups and the class step take, and counting the flows holds it for 100s of ms.
        let (devices, devices_capacity) = {
            let devices = lock(&self.devices);
            (count(devices.map(), abi::DEVICES)?, capacity(devices.map(), abi::DEVICES)?)
        };
        let (device_ipv4, device_ipv4_capacity) = {
            let device_ipv4 = lock(&self.device_ipv4);
            (count(device_ipv4.map(), abi::DEVICE_IPV4)?, capacity(device_ipv4.map(), abi::DEVICE_IPV4)?)
        };
        let (source_bindings, source_bindings_capacity) = {
            let bindings = lock(&self.source_bindings);
            (count(bindings.map(), abi::SOURCE_BINDINGS_V4)?, capacity(bindings.map(), abi::SOURCE_BINDINGS_V4)?)
        };
        let (source_bindings_v6, source_bindings_v6_capacity) = {
            let bindings = lock(&self.source_bindings_v6);
            (count(bindings.map(), abi::SOURCE_BINDINGS_V6)?, capacity(bindings.map(), abi::SOURCE_BINDINGS_V6)?)
        };
        let flows_v4 = count(self.flows_v4.map(), abi::FLOWS_V4)?;
        let flows_v6 = count(self.flows_v6.map(), abi::FLOWS_V6)?;
        let unknown_device_stats = count(self.unknown_device_stats.map(), abi::UNKNOWN_DEVICE_STATS)?;
        let (slots_claimed, slot_capacity) = {
            let slots = lock(&self.slots);
            (slots.count()?, slots.capacity()?)
        };
        Ok(vec![
            MapFill { map: abi::DEVICES, entries: devices, capacity: devices_capacity, evictions: None },
            MapFill { map: abi::DEVICE_IPV4, entries: device_ipv4, capacity: device_ipv4_capacity, evictions: None },
            MapFill {
                map: abi::SOURCE_BINDINGS_V4,
                entries: source_bindings,
                capacity: source_bindings_capacity,
                evictions: None,
            },
            // The slots claimed: one per `DEVICES` entry, never evicted.
            MapFill { map: abi::DEVICE_STATS, entries: slots_claimed, capacity: slot_capacity, evictions: None },
            MapFill {
                map: abi::SOURCE_BINDINGS_V6,
                entries: source_bindings_v6,
                capacity: source_bindings_v6_capacity,
                evictions: None,
            },
            MapFill {
                map: abi::UNKNOWN_DEVICE_STATS,
                entries: unknown_device_stats,
                capacity: capacity(self.unknown_device_stats.map(), abi::UNKNOWN_DEVICE_STATS)?,
                evictions: evicted(counter::UNKNOWN_DEVICE_STATS_INSERTED, unknown_device_stats),
            },
            MapFill {
                map: abi::FLOWS_V4,
                entries: flows_v4,
                capacity: capacity(self.flows_v4.map(), abi::FLOWS_V4)?,
                evictions: evicted(counter::FLOWS_V4_INSERTED, flows_v4),
            },
            MapFill {
                map: abi::FLOWS_V6,
                entries: flows_v6,
                capacity: capacity(self.flows_v6.map(), abi::FLOWS_V6)?,
                evictions: evicted(counter::FLOWS_V6_INSERTED, flows_v6),
            },
            MapFill {
                map: abi::POLICY_V4,
                entries: self.policy_v4_entries.load(Ordering::Relaxed),
                capacity: capacity(lock(&self.policy_v4).map.map(), abi::POLICY_V4)?,
                evictions: None,
            },
            MapFill {
                map: abi::POLICY_V6,
                entries: self.policy_v6_entries.load(Ordering::Relaxed),
                capacity: capacity(lock(&self.policy_v6).map.map(), abi::POLICY_V6)?,
                evictions: None,
            },
        ])
    }

    /// Every device entry (for start-up reconciliation, the class step and status), read in
    /// batches; empty, and logged, if the kernel refuses the read.
    pub fn devices(&self) -> Vec<(Mac, DeviceEntry)> {
        self.devices_raw().into_iter().map(|(mac, record)| (mac, record.entry)).collect()
    }

    /// Every device record, read in batches; empty, and logged, if the kernel refuses the read.
    fn devices_raw(&self) -> Vec<(Mac, DeviceRecord)> {
        let mut all = Vec::new();
        let read = batch::for_each::<MacKey, DeviceRecord>(lock(&self.devices).map(), 1, |mac, record| {
            all.extend(record.first().map(|record| (Mac(mac.addr), *record)));
        });
        if let Err(error) = read {
            tracing::warn!(%error, map = abi::DEVICES, "cannot read the device table");
        }
        all
    }

    /// How many writes to `DEVICES` this handle made: unchanged, the table is as it was.
    pub fn device_table_writes(&self) -> u64 {
        self.device_writes.load(Ordering::Relaxed)
    }

    /// Binds `address` to `mac`: from now on only `mac` may send from it (`source_guard`).
    pub fn bind_source(&self, address: IpAddr, mac: Mac) -> Result<(), ControlError> {
        match address {
            IpAddr::V4(v4) => lock(&self.source_bindings)
                .insert(v4.octets(), mac.key(), 0)
                .map_err(map_error(abi::SOURCE_BINDINGS_V4)),
            IpAddr::V6(v6) => lock(&self.source_bindings_v6)
                .insert(v6.octets(), mac.key(), 0)
                .map_err(map_error(abi::SOURCE_BINDINGS_V6)),
        }
    }

    /// Unbinds `address` (any device may send from it again).
    pub fn unbind_source(&self, address: IpAddr) -> Result<(), ControlError> {
        let (removed, map) = match address {
            IpAddr::V4(v4) => (lock(&self.source_bindings).remove(&v4.octets()), abi::SOURCE_BINDINGS_V4),
            IpAddr::V6(v6) => (lock(&self.source_bindings_v6).remove(&v6.octets()), abi::SOURCE_BINDINGS_V6),
        };
        match removed {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_error(map)(e)),
        }
    }

    /// Every source-address binding, IPv4 then IPv6 (a restarted controller takes them over).
    pub fn source_bindings(&self) -> Vec<(IpAddr, Mac)> {
        let v4 = lock(&self.source_bindings)
            .iter()
            .filter_map(Result::ok)
            .map(|(address, mac)| (IpAddr::from(Ipv4Addr::from(address)), Mac(mac.addr)))
            .collect::<Vec<_>>();
        let v6 = lock(&self.source_bindings_v6)
            .iter()
            .filter_map(Result::ok)
            .map(|(address, mac)| (IpAddr::from(Ipv6Addr::from(address)), Mac(mac.addr)))
            .collect::<Vec<_>>();
        v4.into_iter().chain(v6).collect()
    }

    /// Every device's source-address violations, summed over CPUs (read in batches; empty,
    /// and logged, if the kernel refuses the read). Holds only devices that spoofed.
    pub fn source_violations(&self) -> Vec<Violation> {
        let mut all = Vec::new();
        let read = aya::util::nr_cpus().map_err(|(_, e)| e).and_then(|cpus| {
            batch::for_each::<MacKey, SourceViolation>(self.source_violations.map(), cpus, |mac, per_cpu| {
                let frames = per_cpu.iter().map(|v| v.frames).sum();
                let last_source = per_cpu.iter().find(|v| v.frames > 0).map_or([0; 16], |v| v.last_source);
                // IPv4 comes mapped into IPv6 (`SourceViolation`).
                let last_source = Ipv6Addr::from(last_source).to_canonical();
                all.push(Violation { mac: Mac(mac.addr), frames, last_source });
            })
        });
        if let Err(error) = read {
            tracing::warn!(%error, map = abi::SOURCE_VIOLATIONS, "cannot read the source-address violations");
        }
        all
    }
}

impl DeviceControl for Maps {
    fn set_access(&self, mac: Mac, access: DeviceAccess) -> Result<(), ControlError> {
        self.write_device(mac, access)?;
        // XDP already compares each flow's cached state and policy id with the live entry; the
        // bump also retires a decision two CPUs raced to cache across this write.
        self.bump_policy_generation()
    }

    /// One bump after all the writes retires what each write's own bump would (at 100,000
    /// devices the per-write bumps took 2.6 s of the start-up, bench/scale).
    fn set_accesses(&self, entries: &[(Mac, DeviceAccess)]) -> Vec<Result<(), ControlError>> {
        let batched = self.add_devices(entries);
        let mut results: Vec<_> = entries
            .iter()
            .zip(batched)
            .map(|(&(mac, access), written)| if written { Ok(()) } else { self.write_device(mac, access) })
            .collect();
        if results.iter().any(Result::is_ok)
            && let Err(ControlError::Map { map, message }) = self.bump_policy_generation()
        {
            for result in results.iter_mut().filter(|result| result.is_ok()) {
                *result = Err(ControlError::Map { map, message: message.clone() });
            }
        }
        results
    }

    fn access(&self, mac: Mac) -> Result<Option<DeviceAccess>, ControlError> {
        match lock(&self.devices).get(&mac.key(), 0) {
            Ok(DeviceRecord { entry, .. }) => Ok(Some(DeviceAccess {
                access: Access::from_code(entry.state).unwrap_or(Access::Unknown),
                policy_id: entry.policy_id,
                class_id: entry.class_id,
            })),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(abi::DEVICES)(e)),
        }
    }

    fn set_device_ipv4(&self, mac: Mac, addr: Ipv4Addr) -> Result<(), ControlError> {
        lock(&self.device_ipv4).insert(addr.octets(), mac.key(), 0).map_err(map_error(abi::DEVICE_IPV4))
    }

    /// Writes the limits into the device's record, where XDP counts against them from its next
    /// frame on (the windows under way kept). A device without a record has no slot to count
    /// in: its budget waits in this handle until the device enters the table through it.
    fn set_budget(&self, mac: Mac, budget: Option<Budget>) -> Result<(), ControlError> {
        let limits = budget.as_ref().map(budget::limits).unwrap_or_default();
        let mut devices = lock(&self.devices);
        match devices.get(&mac.key(), 0) {
            Ok(record) => {
                devices.insert(mac.key(), DeviceRecord { budget: limits, ..record }, 0).map_err(map_error(abi::DEVICES))
            }
            Err(aya::maps::MapError::KeyNotFound) => {
                let mut waiting = lock(&self.waiting_budgets);
                match budget {
                    Some(_) => waiting.insert(mac, limits),
                    None => waiting.remove(&mac),
                };
                Ok(())
            }
            Err(e) => Err(map_error(abi::DEVICES)(e)),
        }
    }
}

/// A device's traffic counters summed over its per-CPU copies.
fn traffic_sum(per_cpu: &[DeviceStats]) -> TrafficCounters {
    let mut sum = TrafficCounters::default();
    for s in per_cpu {
        sum.add(&TrafficCounters {
            tx_bytes: s.tx_bytes,
            tx_packets: s.tx_packets,
            rx_bytes: s.rx_bytes,
            rx_packets: s.rx_packets,
        });
    }
    sum
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a map handle leaves the kernel map consistent (every update is
    // one syscall), so a poisoned lock is safe to reuse.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Trie entries by (policy id, protocol, address, prefix length).
type Merged<const N: usize> = BTreeMap<(u32, u8, [u8; N], u8), PolicyRule>;

/// An entry's place in `Merged`: policy, protocol, address, then prefix length, so a
/// policy's entries sort together.
fn merged_key<const N: usize>(prefix_len: u32, key: &PolicyKey<N>) -> (u32, u8, [u8; N], u8) {
    (u32::from_be_bytes(key.policy_id), key.proto, key.addr, (prefix_len - POLICY_KEY_FIXED_BITS) as u8)
}

fn trie_key<const N: usize>(&(policy_id, proto, addr, prefix): &(u32, u8, [u8; N], u8)) -> Key<PolicyKey<N>> {
    Key::new(
        POLICY_KEY_FIXED_BITS + u32::from(prefix),
        PolicyKey { policy_id: policy_id.to_be_bytes(), proto, _pad: [0; 3], addr },
    )
}

/// A policy trie and what it holds as far as this handle knows: the only writer of the tries
/// is `sync_policy` (this module writes every map, and one controller holds one `Maps`), so
/// after a sync the trie holds exactly what it wrote, and the next sync diffs against that
/// instead of reading 10,000 entries back key by key (150 ms in a debug build, bench/scale).
struct PolicyTrie<const N: usize> {
    map: LpmTrie<MapData, PolicyKey<N>, PolicyRule>,
    /// `None` until the first sync reads the kernel's entries (a restarted controller finds
    /// its pins filled) and after a sync that failed part-way.
    held: Option<Merged<N>>,
}

impl<const N: usize> PolicyTrie<N> {
    fn new(map: LpmTrie<MapData, PolicyKey<N>, PolicyRule>) -> Self {
        Self { map, held: None }
    }

    /// Makes the trie hold exactly `wanted`: new and changed entries first, stale ones after,
    /// each in one batch (`batch::update`, `batch::delete`), so traffic allowed before and
    /// after never sees a gap. `entries` says what the trie holds, also after a failure.
    fn sync(
        &mut self,
        wanted: Merged<N>,
        name: &'static str,
        report: &mut SyncReport,
        entries: &AtomicU64,
    ) -> Result<(), ControlError> {
        // Taken: a sync that fails leaves it unknown, and the next one reads the kernel's.
        let held = match self.held.take() {
            Some(held) => held,
            None => self.read(),
        };
        entries.store(held.len() as u64, Ordering::Relaxed);
        let changed: Vec<(Key<PolicyKey<N>>, PolicyRule)> = wanted
            .iter()
            .filter(|&(id, rule)| held.get(id) != Some(rule))
            .map(|(id, rule)| (trie_key(id), *rule))
            .collect();
        let stale: Vec<Key<PolicyKey<N>>> = held.keys().filter(|id| !wanted.contains_key(id)).map(trie_key).collect();
        report.unchanged += wanted.len() - changed.len();
        // Entries `changed[..n]` add to what the trie holds.
        let added = |n: usize| changed[..n].iter().filter(|(key, _)| !held.contains_key(&merged_id(key))).count();
        if let Err(error) = self.update(&changed) {
            entries.store((held.len() + added(error.done)) as u64, Ordering::Relaxed);
            report.inserted += error.done;
            return Err(ControlError::Map { map: name, message: error.error.to_string() });
        }
        report.inserted += changed.len();
        let holding = held.len() + added(changed.len());
        entries.store(holding as u64, Ordering::Relaxed);
        if let Err(error) = self.delete(&stale) {
            entries.store((holding - error.done) as u64, Ordering::Relaxed);
            report.removed += error.done;
            return Err(ControlError::Map { map: name, message: error.error.to_string() });
        }
        report.removed += stale.len();
        entries.store(wanted.len() as u64, Ordering::Relaxed);
        self.held = Some(wanted);
        Ok(())
    }

    /// What the kernel's trie holds (key by key: only the first sync of a controller).
    fn read(&self) -> Merged<N> {
        self.map.iter().filter_map(Result::ok).map(|(key, rule)| (merged_id(&key), rule)).collect()
    }

    /// Writes `entries` in one batch, or one by one on a kernel without batch writes to
    /// tries.
    fn update(&mut self, entries: &[(Key<PolicyKey<N>>, PolicyRule)]) -> Result<(), batch::Partial> {
        match batch::update(self.map.map(), entries) {
            Err(error) if error.unsupported() => {
                for (done, (key, rule)) in entries.iter().enumerate() {
                    self.map
                        .insert(key, rule, 0)
                        .map_err(|e| batch::Partial { done, error: std::io::Error::other(e) })?;
                }
                Ok(())
            }
            written => written,
        }
    }

    /// Deletes `keys` in one batch, or one by one on a kernel without batch deletes in tries.
    fn delete(&mut self, keys: &[Key<PolicyKey<N>>]) -> Result<(), batch::Partial> {
        match batch::delete(self.map.map(), keys) {
            Err(error) if error.unsupported() => {
                for (done, key) in keys.iter().enumerate() {
                    self.map.remove(key).map_err(|e| batch::Partial { done, error: std::io::Error::other(e) })?;
                }
                Ok(())
            }
            deleted => deleted,
        }
    }
}

/// A trie key's place in `Merged`.
fn merged_id<const N: usize>(key: &Key<PolicyKey<N>>) -> (u32, u8, [u8; N], u8) {
    let data = key.data();
    (u32::from_be_bytes(data.policy_id), data.proto, data.addr, (key.prefix_len() - POLICY_KEY_FIXED_BITS) as u8)
}

/// The `DEVICES` entry XDP reads for a device with `access`, counted at `slot`.
fn device_entry(access: DeviceAccess, slot: u32) -> DeviceEntry {
    DeviceEntry {
        state: access.access.code(),
        _pad: 0,
        class_id: access.class_id,
        policy_id: access.policy_id,
        slot,
        _pad_end: 0,
    }
}
