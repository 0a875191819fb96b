//! Start-up, before any packet meets the programs: load the object, configure the maps from
//! the gateway configuration and the policy files, rebuild the device table from the store,
//! put enrolled devices on their class policy, and only then attach.
use std::sync::Arc;

use anyhow::Context as _;

use super::{ACTOR_DATAPATH, classes, policy_sync};
use crate::{
    config::Config,
    datapath::{
        events::RingReader,
        interface,
        loader::{self, Loaded},
        maps::Maps,
    },
    inventory::Ledger,
    policy::{DnsTracker, PolicyStore},
};

/// The attached datapath and what start-up built around it.
pub(super) struct Datapath {
    pub loaded: Loaded,
    pub maps: Arc<Maps>,
    pub ring: RingReader,
    /// DNS-name rules, as the policy files and the answers seen so far make them.
    pub dns: DnsTracker,
    /// The quarantine port's own MAC, the source of redirected frames (zero without one).
    pub quarantine_src_mac: [u8; 6],
    /// The devices on MUD classes the policy was applied with (`manufacturer:`/`model:`
    /// remotes): where `mud_devices` starts.
    pub mud_devices: Vec<crate::policy::remote::MudDevice>,
}

/// Loads, configures and attaches the datapath. `ledger` is the store the device table is
/// rebuilt from and the class assignments are recorded in.
pub(super) fn attach(config: &Config, policy: &PolicyStore, ledger: &mut Ledger) -> anyhow::Result<Datapath> {
    let mut loaded = loader::load(&config.datapath).context("loading the XDP datapath")?;
    let maps = Arc::new(Maps::take(&mut loaded.ebpf).context("opening the datapath maps")?);
    let ring = RingReader::new(&mut loaded.ebpf).context("opening the event ring buffer")?;

    let quarantine_src_mac = match &config.datapath.quarantine_interface {
        Some(name) => {
            maps.set_quarantine_port(Some(interface::if_index(name)?))?;
            interface::interface_mac(name)?
        }
        None => {
            maps.set_quarantine_port(None)?;
            [0; 6]
        }
    };
    let compiled = policy.current();
    let dns = DnsTracker::new(&compiled, &config.policy.dns).with_gateway_addresses(gateway_addresses(config));
    let mud_devices =
        crate::inventory::mud::devices(ledger.connection()).context("reading the devices on MUD classes")?;
    policy_sync::apply_policy(&maps, config, &compiled, dns.active(), &mud_devices, quarantine_src_mac)?;
    restore_device_table(&*maps, ledger, config.identity.enrolled_policy_id)?;
    classes::assign_classes(&maps, ledger, &compiled);
    // Only now does traffic meet the programs: configured maps, never blank ones.
    loader::attach_all(&mut loaded, &config.datapath).context("attaching the XDP programs")?;
    tracing::info!(
        devices = maps.devices().len(),
        pins = loaded.pins.describe(),
        "datapath configured (device table rebuilt from the store before attaching)"
    );
    Ok(Datapath { loaded, maps, ring, dns, quarantine_src_mac, mud_devices })
}

/// The gateway's own addresses, whose answers are a resolver on the gateway's: the LAN
/// interface's and `[policy] gateway_addresses`.
pub(super) fn gateway_addresses(config: &Config) -> Vec<std::net::IpAddr> {
    let mut addresses = interface::interface_addresses(&config.datapath.lan_interface).unwrap_or_default();
    for address in &config.policy.gateway_addresses {
        if !addresses.contains(address) {
            addresses.push(*address);
        }
    }
    addresses
}

/// Rebuilds the device table from the store (`datapath::restore`) and records back what the
/// pinned table held stricter. Runs before the programs are attached, so a device blocked
/// or quarantined before a reboot (or a controller on a private bpffs) is so at its first
/// packet.
pub(super) fn restore_device_table(
    maps: &dyn crate::datapath::DeviceControl,
    ledger: &mut Ledger,
    enrolled_policy: u32,
) -> anyhow::Result<crate::datapath::restore::Restored> {
    let started = std::time::Instant::now();
    let stored = ledger.enforced().context("reading the device table from the store")?;
    let restored = crate::datapath::restore::restore(maps, &stored, enrolled_policy);
    for (mac, entry) in &restored.written {
        if matches!(entry.access, crate::device::Access::Quarantined | crate::device::Access::Blocked) {
            tracing::info!(device = %mac, access = %entry.access, "isolation restored from the store");
        }
    }
    for (mac, entry) in &restored.stricter_in_table {
        tracing::warn!(device = %mac, access = %entry.access, "the pinned device table is stricter than the store; kept");
        let reason = "stricter entry found in the pinned device table at start-up";
        if let Err(error) = ledger.record_access(*mac, *entry, ACTOR_DATAPATH, reason) {
            tracing::error!(%error, device = %mac, "cannot record the kept entry in the store");
        }
    }
    for (mac, error) in &restored.failed {
        tracing::error!(device = %mac, %error, "cannot restore the device's entry from the store");
    }
    tracing::info!(
        stored = stored.len(),
        written = restored.written.len(),
        unchanged = restored.unchanged,
        kept_stricter = restored.stricter_in_table.len(),
        failed = restored.failed.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "device table restored from the store"
    );
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use gateway_ebpf::lane;

    use super::*;

    #[test]
    fn the_restore_writes_the_store_and_records_back_what_the_table_held_stricter() {
        use crate::{
            datapath::{DeviceAccess, DeviceControl as _, MemoryDatapath},
            device::{Access, Mac},
        };
        let table = MemoryDatapath::default();
        let mut store = Ledger::new(crate::schema::open_in_memory().expect("store"));
        let (lost, stricter) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        let enrolled = DeviceAccess { access: Access::Enrolled, policy_id: 36, class_id: 20 };
        let quarantined = DeviceAccess { access: Access::Quarantined, ..enrolled };
        store.record_access(lost, quarantined, "api:otto", "incident").expect("record");
        store.record_access(stricter, enrolled, "identity", "enrolled").expect("record");
        // Killed after a block reached the table, before it reached the store.
        let blocked = DeviceAccess { access: Access::Blocked, ..enrolled };
        table.set_access(stricter, blocked).expect("table");

        let restored = restore_device_table(&table, &mut store, lane::FIRST_CLASS_POLICY).expect("restore");
        assert_eq!(restored.written, vec![(lost, quarantined)]);
        assert_eq!(table.access(lost).expect("table"), Some(quarantined));
        assert_eq!(table.access(stricter).expect("table"), Some(blocked), "never lowered");
        assert_eq!(store.enforced().expect("store"), vec![(lost, quarantined), (stricter, blocked)]);
        let audit = store.audit_log(Some(stricter), 1).expect("audit");
        assert_eq!(
            (audit[0].actor.as_str(), audit[0].detail.as_str()),
            (ACTOR_DATAPATH, "enrolled -> blocked: stricter entry found in the pinned device table at start-up")
        );
    }
}
