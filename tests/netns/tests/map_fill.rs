//! How full the maps are, in `/metrics`: a gateway with a 10-device table and a 32-flow
//! table. One device opens more flows than the flow table holds: its LRU evicts, and the
//! evictions are counted. Nine devices in the device table (90 %) raise the `map_capacity`
//! alert, which a table that must not fill (devices, policy) owes the operator before the
//! next device is refused.
//!
//! Run as root through `cargo xtask test` (one test at a time).
use std::time::{Duration, Instant};

use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    api::{ApiClient, token_entry},
    controller::Controller,
    lab::{Lab, UPSTREAM_IP},
    packets::{self, Endpoints},
    policies::{DefaultVerdicts, LANES, SENSOR_CLASS, SENSOR_CLASS_ID, SENSOR_POLICY_ID},
    raw::RawSocket,
};

const OPERATOR_TOKEN: &str = "lab-operator-f1115";
const DEVICES: u32 = 10;
const FLOWS: u32 = 32;
/// Flows the device opens: well past the table's size.
const OPENED: u16 = 200;
/// The metrics step reads the maps' fill every 30 s: allow two reads and a loaded machine.
const FILL_TIMEOUT: Duration = Duration::from_secs(75);

/// The value of the sample `name{map="map"}` in a scrape, if present.
fn sample(scrape: &str, name: &str, map: &str) -> Option<u64> {
    let prefix = format!("{name}{{map=\"{map}\"}} ");
    scrape.lines().find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// Scrapes until `done` holds for the scrape, or fails after `FILL_TIMEOUT`.
fn scrape_until(api: &ApiClient, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + FILL_TIMEOUT;
    loop {
        let scrape = api.get("/metrics", Some(OPERATOR_TOKEN)).body;
        if done(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{what} not in /metrics within {FILL_TIMEOUT:?}:\n{scrape}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn fill_levels_and_evictions_are_metrics_and_a_nearly_full_device_table_alerts() {
    let lab = Lab::new(1);
    let defaults = DefaultVerdicts { unknown_device: "pass", ..DefaultVerdicts::LAB }.toml();
    let files = [("lanes.toml", LANES), ("sensor.toml", SENSOR_CLASS), ("defaults.toml", defaults.as_str())];
    let config = format!("\n[api]\ntokens = [\n  {},\n]\n", token_entry("otto", "operator", OPERATOR_TOKEN));
    let mut ctl = Controller::configure(&lab, &files, &config);
    let text = std::fs::read_to_string(&ctl.config).expect("config");
    let sized = format!("[datapath]\ndevices_capacity = {DEVICES}\nflows_capacity = {FLOWS}\n");
    std::fs::write(&ctl.config, text.replacen("[datapath]\n", &sized, 1)).expect("config");
    ctl.spawn();
    let api = ApiClient::new(&lab.gw);

    let first =
        scrape_until(&api, "the maps' capacities", |s| sample(s, "iotgw_datapath_map_capacity", "FLOWS_V4").is_some());
    assert_eq!(sample(&first, "iotgw_datapath_map_capacity", "FLOWS_V4"), Some(u64::from(FLOWS)));
    assert_eq!(sample(&first, "iotgw_datapath_map_capacity", "DEVICES"), Some(u64::from(DEVICES)));
    assert_eq!(sample(&first, "iotgw_datapath_map_evictions_total", "FLOWS_V4"), Some(0), "nothing evicted yet");
    assert_eq!(sample(&first, "iotgw_datapath_map_evictions_total", "DEVICES"), None, "DEVICES never evicts");

    // One device opens far more flows than the table holds (unknown devices pass here).
    let d = &lab.devices[0];
    let e = Endpoints { src_mac: d.mac, dst_mac: lab.mac_of(&lab.gw, "lan0"), src_ip: d.ip, dst_ip: UPSTREAM_IP };
    let tx = RawSocket::open(&d.ns, d.interface);
    for port in 0..OPENED {
        tx.send(&packets::udp(e, 50_000 + port, 9_000, b"flow"));
    }
    let scrape = scrape_until(&api, "flow evictions", |s| {
        sample(s, "iotgw_datapath_map_evictions_total", "FLOWS_V4").is_some_and(|n| n > 0)
    });
    let (entries, evicted) = (
        sample(&scrape, "iotgw_datapath_map_entries", "FLOWS_V4").expect("FLOWS entries"),
        sample(&scrape, "iotgw_datapath_map_evictions_total", "FLOWS_V4").expect("FLOWS_V4 evictions"),
    );
    assert!(entries <= u64::from(FLOWS), "{entries} entries in a {FLOWS}-entry table");
    assert!(
        entries + evicted >= u64::from(OPENED),
        "every flow opened is held or counted evicted: {entries} + {evicted}"
    );
    assert_eq!(ctl.log_count("map nearly full"), 0, "an LRU table filling is no alarm");

    // Nine devices of ten: the alert fires, once.
    let sensor = DeviceAccess { access: Access::Enrolled, policy_id: SENSOR_POLICY_ID, class_id: SENSOR_CLASS_ID };
    for n in 0..9 {
        ctl.maps().set_access(Mac([0x02, 0xf1, 0, 0, 0, n]), sensor).expect("device entry");
    }
    scrape_until(&api, "nine devices", |s| sample(s, "iotgw_datapath_map_entries", "DEVICES") == Some(9));
    ctl.wait_for_log("map nearly full", FILL_TIMEOUT);
    assert_eq!(ctl.log_lines("map nearly full").len(), 1);
    assert!(ctl.log_lines("map nearly full")[0].contains("map=\"DEVICES\""), "{:?}", ctl.log_lines("map nearly full"));
    let alerts = api.get("/api/v1/alerts", Some(OPERATOR_TOKEN));
    assert_eq!(alerts.status, 200, "{alerts:?}");
    assert!(alerts.body.contains("map_capacity:DEVICES"), "the alert is recorded: {}", alerts.body);
}
