//! Map sizes from configuration: a gateway started with a small device table
//! (`datapath.devices_capacity`), then restarted with a larger one. The kernel cannot resize
//! a map, so the restarted controller drops the pins of the old size, creates the maps at
//! the new one and refills the device table from the store before swapping its programs in:
//! the enrolled device still reaches its broker, the blocked one is still dropped. Also,
//! without a controller: pins of another size are recreated at load, pins of the
//! configured size kept.
//!
//! Run as root through `cargo xtask test` (one test at a time).
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::MapInfo;
use gateway_ebpf::{maps as abi, reason};
use iotgw::{
    datapath::{DatapathConfig, DeviceAccess, DeviceControl as _, capacity, loader},
    device::{Access, Mac},
};
use netns_tests::{
    api::{ApiClient, token_entry},
    controller::Controller,
    lab::{Lab, UPSTREAM_IP},
    packets::{self, Endpoints},
    policies::{DefaultVerdicts, LANES, SENSOR_CLASS, SENSOR_CLASS_ID, SENSOR_POLICY_ID},
    raw::RawSocket,
    require_root,
};

const OPERATOR_TOKEN: &str = "lab-operator-c4p4c1";
const SMALL: u32 = 64;
const LARGE: u32 = 1_024;
/// How long sniffers wait for frames.
const SETTLE: Duration = Duration::from_millis(600);
/// How long to wait for the inventory to learn a device.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(10);

fn endpoints(lab: &Lab, n: usize) -> Endpoints {
    let d = &lab.devices[n];
    Endpoints { src_mac: d.mac, dst_mac: lab.mac_of(&lab.gw, "lan0"), src_ip: d.ip, dst_ip: UPSTREAM_IP }
}

/// MQTT SYNs of device `n` that reach upstream, of `count` sent.
fn mqtt_reaching_upstream(lab: &Lab, n: usize, base_port: u16, count: u16) -> usize {
    let tx = RawSocket::open(&lab.devices[n].ns, lab.devices[n].interface);
    let upstream = RawSocket::open(&lab.up, "eth0");
    let src_ip = lab.devices[n].ip;
    std::thread::scope(|scope| {
        let upstream = &upstream;
        let sniffer = scope.spawn(move || {
            let mqtt = |f: &[u8]| packets::tcp(f).is_some_and(|t| t.destination_port() == packets::MQTT_PORT);
            upstream.collect(SETTLE, |f| mqtt(f) && packets::ipv4_source(f) == Some(src_ip)).len()
        });
        std::thread::sleep(Duration::from_millis(100));
        for k in 0..count {
            tx.send(&packets::tcp_syn(endpoints(lab, n), base_port + k, packets::MQTT_PORT));
        }
        sniffer.join().expect("sniffer")
    })
}

fn wait_for_device(api: &ApiClient, mac: Mac) {
    let deadline = Instant::now() + INVENTORY_TIMEOUT;
    while api.get(&format!("/api/v1/devices/{mac}"), Some(OPERATOR_TOKEN)).status != 200 {
        assert!(Instant::now() < deadline, "device {mac} never appeared in the inventory");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn max_entries(pin_path: &Path, map: &str) -> u32 {
    MapInfo::from_pin(pin_path.join(map)).expect("pinned map").max_entries()
}

/// Sets `datapath.devices_capacity` in the controller's configuration file.
fn set_devices_capacity(ctl: &Controller, entries: u32) {
    let text = std::fs::read_to_string(&ctl.config).expect("config");
    let text: String = text.lines().filter(|line| !line.starts_with("devices_capacity")).collect::<Vec<_>>().join("\n");
    let text = text.replacen("[datapath]\n", &format!("[datapath]\ndevices_capacity = {entries}\n"), 1);
    std::fs::write(&ctl.config, text).expect("config");
}

#[test]
fn a_larger_device_table_keeps_the_devices_and_their_enforcement() {
    let lab = Lab::new(2);
    let defaults = DefaultVerdicts { unknown_device: "pass", ..DefaultVerdicts::LAB }.toml();
    let files = [("lanes.toml", LANES), ("sensor.toml", SENSOR_CLASS), ("defaults.toml", defaults.as_str())];
    let config = format!("\n[api]\ntokens = [\n  {},\n]\n", token_entry("otto", "operator", OPERATOR_TOKEN));
    let mut ctl = Controller::configure(&lab, &files, &config);
    set_devices_capacity(&ctl, SMALL);
    ctl.spawn();
    let cpus = loader::possible_cpus().expect("possible CPUs");
    for (map, per_device) in [(abi::DEVICES, 1), (abi::DEVICE_IPV4, 1), (abi::DEVICE_STATS, cpus)] {
        assert_eq!(max_entries(&ctl.pin_path, map), SMALL * per_device, "{map} sized from the configuration");
    }
    let api = ApiClient::new(&lab.gw);
    let (enrolled, blocked) = (Mac(lab.devices[0].mac), Mac(lab.devices[1].mac));

    // Both enrolled as sensors (straight in the table, as an enrollment would) and seen by the
    // inventory. The store learns the enrolment from a quarantine and its release (the
    // audited path every access change takes); the second device is blocked.
    for (n, mac) in [enrolled, blocked].into_iter().enumerate() {
        let entry = DeviceAccess { access: Access::Enrolled, policy_id: SENSOR_POLICY_ID, class_id: SENSOR_CLASS_ID };
        ctl.maps().set_access(mac, entry).expect("device entry");
        ctl.maps().set_device_ipv4(mac, Ipv4Addr::from(lab.devices[n].ip)).expect("device address");
        assert_eq!(mqtt_reaching_upstream(&lab, n, 41_000 + 100 * n as u16, 2), 2, "an enrolled sensor reaches MQTT");
        wait_for_device(&api, mac);
    }
    for (mac, action) in [(enrolled, "quarantine"), (enrolled, "release"), (blocked, "block")] {
        let answer = api.post(&format!("/api/v1/devices/{mac}/{action}"), Some(OPERATOR_TOKEN), r#"{"reason":"lab"}"#);
        assert_eq!(answer.status, 200, "{action}: {answer:?}");
    }
    assert_eq!(ctl.maps().access(enrolled).expect("lookup").map(|a| a.access), Some(Access::Enrolled));
    assert_eq!(mqtt_reaching_upstream(&lab, 1, 41_300, 2), 0, "blocked");

    // Restarted with a table sixteen times larger: the pins of the old size go.
    ctl.kill9();
    set_devices_capacity(&ctl, LARGE);
    ctl.spawn();
    assert_eq!(ctl.log_count("recreating them"), 1, "the restart says why the maps are new");
    for (map, per_device) in [(abi::DEVICES, 1), (abi::DEVICE_IPV4, 1), (abi::DEVICE_STATS, cpus)] {
        assert_eq!(max_entries(&ctl.pin_path, map), LARGE * per_device, "{map} recreated at the new size");
    }
    let sensor = DeviceAccess { access: Access::Enrolled, policy_id: SENSOR_POLICY_ID, class_id: SENSOR_CLASS_ID };
    assert_eq!(ctl.maps().access(enrolled).expect("lookup"), Some(sensor), "enrolment restored from the store");
    assert_eq!(ctl.maps().access(blocked).expect("lookup").map(|a| a.access), Some(Access::Blocked));
    assert_eq!(mqtt_reaching_upstream(&lab, 0, 41_400, 3), 3, "the enrolled sensor still reaches MQTT");
    assert_eq!(mqtt_reaching_upstream(&lab, 1, 41_500, 3), 0, "the blocked device is still dropped");
    assert_eq!(ctl.device_drops(blocked, reason::BLOCKED), 3, "counted in the new counter map");
}

/// A pin directory of this test's own, removed on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = loader::detach_all(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pins_of_another_size_are_recreated_and_pins_of_the_configured_size_kept() {
    require_root();
    assert!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let dir = PinDir(PathBuf::from(format!("/sys/fs/bpf/iotgw-test-capacity-{}", std::process::id())));
    let config = |flows| DatapathConfig { pin_path: dir.0.clone(), flows_capacity: flows, ..DatapathConfig::default() };
    let loaded = loader::load(&config(1_000)).expect("load");
    drop(loaded);
    assert_eq!(max_entries(&dir.0, abi::FLOWS_V4), 1_000);
    let cpus = loader::possible_cpus().expect("possible CPUs");
    let sizes = |flows| capacity::capacities(&config(flows), cpus);
    assert!(!loader::forget_stale_pins(&dir.0, &sizes(1_000)), "the configured size is kept");
    assert!(loader::forget_stale_pins(&dir.0, &sizes(2_000)), "another size is dropped");
    assert!(!dir.0.join(abi::FLOWS_V4).exists() && !dir.0.join(abi::DEVICES).exists(), "every map pin goes");
    drop(loader::load(&config(2_000)).expect("load"));
    assert_eq!(max_entries(&dir.0, abi::FLOWS_V4), 2_000);
}
