//! Counter slots: each device in `DEVICES` holds an index (`DeviceEntry::slot`) into the
//! per-device counter arrays (`BUDGETS`, and `DEVICE_STATS` at `slot × CPUs`, an element per
//! CPU), so XDP finds its counters without a second hash lookup. This module hands the slots
//! out and takes them back; `maps` zeroes a slot's counters each time it changes hands.
//!
//! The pinned `DEVICE_SLOTS` map (slot → MAC) is the record of which slot is whose. A slot is
//! claimed by inserting it there with `BPF_NOEXIST`, which the kernel refuses for a slot
//! already claimed: two writers (the controller and a tool beside it, each with its own list
//! of free slots) never hand one slot to two devices, and a restarted controller finds every
//! claim where its predecessor left it. Freed slots are reused oldest first, so a slot is not
//! handed on while a program run that read the old owner's entry may still be counting
//! (microseconds; a slot is reused only after every other free one).
use std::collections::VecDeque;

use aya::maps::{HashMap, IterableMap as _, MapData, MapError};
use gateway_ebpf::{MacKey, maps as abi};

use super::{ControlError, batch};

/// `BPF_NOEXIST`: insert only if the key is absent.
const NO_EXIST: u64 = 1;

/// The slot claims, with this handle's view of the free slots.
pub struct Slots {
    claims: HashMap<MapData, u32, MacKey>,
    /// Slots not claimed when this handle last looked, oldest freed first.
    free: VecDeque<u32>,
}

impl Slots {
    /// Reads the claims of `DEVICE_SLOTS`; every other slot below the map's capacity is free.
    pub fn open(claims: HashMap<MapData, u32, MacKey>) -> Result<Self, ControlError> {
        let capacity = claims.map().info().map_err(map_error)?.max_entries();
        let mut taken = vec![false; capacity as usize];
        for (slot, _) in read_claims(&claims)? {
            if let Some(taken) = taken.get_mut(slot as usize) {
                *taken = true;
            }
        }
        let free = (0..capacity).filter(|&slot| !taken[slot as usize]).collect();
        Ok(Self { claims, free })
    }

    /// Every claim: (slot, device).
    pub fn claimed(&self) -> Result<Vec<(u32, MacKey)>, ControlError> {
        read_claims(&self.claims)
    }

    /// Claims a free slot for `mac`. Fails when every slot is claimed.
    pub fn claim(&mut self, mac: MacKey) -> Result<u32, ControlError> {
        while let Some(slot) = self.free.pop_front() {
            match self.claims.insert(slot, mac, NO_EXIST) {
                Ok(()) => return Ok(slot),
                // Claimed by another writer since this handle looked: not free.
                Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    self.free.push_front(slot);
                    return Err(map_error(e));
                }
            }
        }
        Err(full())
    }

    /// Claims a free slot for each of `macs` (in order) with one `BPF_MAP_UPDATE_BATCH` call per
    /// few thousand, as `claim` would one by one: a slot another writer claimed meanwhile stops
    /// the batch (`EEXIST`) and is skipped. All or nothing: on any other failure, or too few
    /// free slots, the slots claimed here are given back.
    pub fn claim_many(&mut self, macs: &[MacKey]) -> Result<Vec<u32>, ControlError> {
        let mut claimed: Vec<u32> = Vec::with_capacity(macs.len());
        while claimed.len() < macs.len() {
            let wanted = macs.len() - claimed.len();
            if self.free.len() < wanted {
                self.give_back(&claimed);
                return Err(full());
            }
            let claims: Vec<(u32, MacKey)> =
                self.free.drain(..wanted).zip(macs[claimed.len()..].iter().copied()).collect();
            let Err(partial) = batch::update_with(self.claims.map(), &claims, NO_EXIST) else {
                claimed.extend(claims.iter().map(|&(slot, _)| slot));
                break;
            };
            claimed.extend(claims[..partial.done].iter().map(|&(slot, _)| slot));
            let taken = partial.error.raw_os_error() == Some(libc::EEXIST);
            // Not tried (and the failed one, unless another writer holds it): free again, in order.
            let skip = partial.done + usize::from(taken);
            for &(slot, _) in claims.iter().skip(skip).rev() {
                self.free.push_front(slot);
            }
            if !taken {
                self.give_back(&claimed);
                return Err(map_error(partial.error));
            }
        }
        Ok(claimed)
    }

    /// Gives back slots claimed by a `claim_many` that failed (untouched, so still zero).
    fn give_back(&mut self, slots: &[u32]) {
        for &slot in slots {
            if let Err(error) = self.release(slot) {
                tracing::warn!(%error, slot, "cannot give back a counter slot");
            }
        }
    }

    /// Gives `slot` back (its counters already zeroed by the caller).
    pub fn release(&mut self, slot: u32) -> Result<(), ControlError> {
        match self.claims.remove(&slot) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_error(e)),
        }
        self.free.push_back(slot);
        Ok(())
    }

    /// How many slots are claimed, by any writer.
    pub fn count(&self) -> Result<u64, ControlError> {
        batch::count(self.claims.map())
            .map(|n| n as u64)
            .map_err(|e| ControlError::Map { map: abi::DEVICE_SLOTS, message: e.to_string() })
    }

    /// The map's capacity: the number of slots.
    pub fn capacity(&self) -> Result<u64, ControlError> {
        Ok(u64::from(self.claims.map().info().map_err(map_error)?.max_entries()))
    }
}

fn read_claims(claims: &HashMap<MapData, u32, MacKey>) -> Result<Vec<(u32, MacKey)>, ControlError> {
    let mut all = Vec::new();
    batch::for_each::<u32, MacKey>(claims.map(), 1, |slot, mac| all.extend(mac.first().map(|mac| (slot, *mac))))
        .map_err(|e| ControlError::Map { map: abi::DEVICE_SLOTS, message: e.to_string() })?;
    Ok(all)
}

fn full() -> ControlError {
    ControlError::Map {
        map: abi::DEVICE_SLOTS,
        message: "every counter slot is claimed (datapath.devices_capacity)".into(),
    }
}

fn map_error(e: impl std::fmt::Display) -> ControlError {
    ControlError::Map { map: abi::DEVICE_SLOTS, message: e.to_string() }
}
