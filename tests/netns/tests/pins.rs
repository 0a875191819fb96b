//! Pinned maps across an ABI change: maps pinned by a controller of an older layout (here
//! ABI 1: 24-byte `CONFIG`, 64-byte values in `FLOWS`, the flow table ABI 5 split into
//! `FLOWS_V4` and `FLOWS_V6`) are recreated at load, never reused by a program that would
//! read them with today's layout, and retired maps' pins go; pins of this layout are kept.
//!
//! Needs root (bpffs) and bpftool (to create the old-layout pins); under CI both must be
//! there. Each test uses its own pin directory, removed on drop.
use std::{path::PathBuf, process::Command};

use aya::{maps::MapInfo, programs::Xdp};
use gateway_ebpf::{GatewayConfig, maps as abi, programs};
use iotgw::datapath::{loader, maps::Maps};
use netns_tests::require_root;

/// ABI 1's value sizes, before the flow verdict cache.
const OLD_CONFIG_VALUE: u32 = 24;
const OLD_FLOWS_VALUE: u32 = 64;
const FLOW_KEY_BYTES: u32 = 48;
/// The one flow table of ABI 4 and before.
const RETIRED_FLOWS: &str = "FLOWS";

struct PinDir(PathBuf);

impl PinDir {
    fn new(name: &str) -> Self {
        require_root();
        let dir = PathBuf::from(format!("/sys/fs/bpf/iotgw-test-{name}-{}", std::process::id()));
        loader::prepare_bpffs(&dir).expect("bpffs");
        Self(dir)
    }

    fn pin(&self, map: &str) -> PathBuf {
        self.0.join(map)
    }

    /// Loads the object with its maps pinned here (creating or reusing them) and verifies the
    /// LAN program.
    fn load(&self) -> Maps {
        let mut ebpf =
            loader::object_loader(&self.0, &[]).expect("object loader").load(loader::object()).expect("object loads");
        let lan: &mut Xdp = ebpf.program_mut(programs::LAN_INGRESS).expect("lan").try_into().expect("xdp");
        lan.load().expect("verifier accepts the LAN program over these maps");
        Maps::take(&mut ebpf).expect("maps")
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = loader::detach_all(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bpftool(args: &[&str]) {
    let out =
        Command::new("bpftool").args(args).output().unwrap_or_else(|e| panic!("bpftool is needed for this test: {e}"));
    assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn value_size(pin: &PathBuf) -> u32 {
    MapInfo::from_pin(pin).expect("pinned map").value_size()
}

#[test]
fn pins_of_an_older_layout_are_recreated_at_load() {
    assert!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let dir = PinDir::new("oldabi");
    let config = dir.pin(abi::CONFIG);
    let flows = dir.pin(RETIRED_FLOWS);
    let (old_config, old_flows, key) =
        (OLD_CONFIG_VALUE.to_string(), OLD_FLOWS_VALUE.to_string(), FLOW_KEY_BYTES.to_string());
    bpftool(&[
        "map",
        "create",
        config.to_str().expect("utf-8"),
        "type",
        "array",
        "key",
        "4",
        "value",
        &old_config,
        "entries",
        "1",
        "name",
        abi::CONFIG,
    ]);
    bpftool(&[
        "map",
        "create",
        flows.to_str().expect("utf-8"),
        "type",
        "lru_hash",
        "key",
        &key,
        "value",
        &old_flows,
        "entries",
        "16",
        "name",
        RETIRED_FLOWS,
    ]);
    // ABI 1's configuration: abi_version 1 (host order), drop verdicts.
    let mut value = vec!["1", "0", "0", "0", "1", "1", "1", "2", "1", "1"];
    value.resize(OLD_CONFIG_VALUE as usize, "0");
    let mut args = vec!["map", "update", "pinned", config.to_str().expect("utf-8"), "key", "0", "0", "0", "0", "value"];
    args.extend(value);
    bpftool(&args);

    assert!(loader::forget_stale_pins(&dir.0, &[]), "old-layout pins must be dropped");
    assert!(!config.exists() && !flows.exists(), "the stale pins are gone");
    let maps = dir.load();
    assert_eq!(value_size(&config) as usize, size_of::<GatewayConfig>(), "CONFIG recreated in today's layout");
    assert!(!flows.exists(), "the retired flow table is not pinned again");
    let flows_v4 = dir.pin(abi::FLOWS_V4);
    let info = MapInfo::from_pin(&flows_v4).expect("FLOWS_V4 pinned");
    assert_eq!(info.key_size() as usize, size_of::<gateway_ebpf::FlowKeyV4>(), "FLOWS_V4 has today's key");
    assert_eq!(info.value_size() as usize, size_of::<gateway_ebpf::FlowStats>(), "FLOWS_V4 has today's value");
    maps.write_config(&GatewayConfig::default()).expect("config of this ABI");
    assert!(!loader::forget_stale_pins(&dir.0, &[]), "pins of this layout and ABI are kept");
    assert!(config.exists() && flows_v4.exists() && dir.pin(abi::FLOWS_V6).exists());
}

#[test]
fn pins_of_this_layout_with_another_abi_version_are_recreated() {
    assert!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let dir = PinDir::new("otherabi");
    let maps = dir.load();
    maps.write_config(&GatewayConfig { abi_version: gateway_ebpf::ABI_VERSION + 1, ..GatewayConfig::default() })
        .expect("config");
    drop(maps);
    assert!(loader::forget_stale_pins(&dir.0, &[]));
    assert!(!dir.pin(abi::CONFIG).exists());
}

#[test]
fn a_per_cpu_device_stats_pin_of_abi_8_is_recreated_as_an_array() {
    assert!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let dir = PinDir::new("percpu");
    let pin = dir.pin(abi::DEVICE_STATS);
    // ABI 8's layout: the same key and value sizes, one element per slot, per CPU.
    let value = size_of::<gateway_ebpf::DeviceStats>().to_string();
    let path = pin.to_str().expect("utf-8");
    let args = ["map", "create", path, "type", "percpu_array", "key", "4", "value", &value, "entries", "16"];
    bpftool(&[&args[..], &["name", abi::DEVICE_STATS]].concat());
    assert!(loader::forget_stale_pins(&dir.0, &[]), "a per-CPU DEVICE_STATS must be dropped");
    assert!(!pin.exists(), "the stale pin is gone");
    let _maps = dir.load();
    let kind = MapInfo::from_pin(&pin).expect("DEVICE_STATS pinned").map_type().expect("map type");
    assert_eq!(kind, aya::maps::MapType::Array, "recreated as this build's array");
}
