//! The controller above the real datapath, in the lab: the inventory it builds from what XDP
//! reports, its API's tokens and roles, policy reloads reaching the maps (and bad ones not),
//! and the inventory surviving a `kill -9`.
//!
//! Run as root through `cargo xtask test`. One test at a time (`--test-threads=1`): each
//! builds its own lab, but the machine has two cores and XDP loads are heavy.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use gateway_ebpf::reason;
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    api::{ApiClient, token_entry},
    controller::Controller,
    lab::{GATEWAY_LAN_IP, Lab, UPSTREAM_IP, format_mac},
    packets::{self, BROADCAST_IP, Endpoints},
    policies::{LANES, SENSOR_CLASS, SENSOR_CLASS_ID, SENSOR_POLICY_ID, defaults},
    raw::RawSocket,
};
use serde_json::{Value, json};

/// The sensor class, now also allowed HTTP to `net` upstream.
fn sensor_class_with_http_to(net: &str) -> String {
    format!("{SENSOR_CLASS}[[class.allow]]\nnets = [\"{net}\"]\nprotocol = \"tcp\"\nports = [80]\n")
}

/// HTTP allowed to the upstream host.
fn sensor_class_with_http() -> String {
    sensor_class_with_http_to("10.78.0.2/32")
}

/// HTTP allowed too, but with a network whose host bits are set: valid TOML, refused by the
/// policy compiler, so none of the file (HTTP included) may reach the maps.
fn sensor_class_host_bits() -> String {
    sensor_class_with_http_to("10.78.0.2/24")
}

/// Not TOML: the value of `id` is missing.
const BROKEN_SYNTAX: &str = "[[class]]\nname = \"broken\"\nid = \n";

const VIEWER_TOKEN: &str = "lab-viewer-7c1f0e";
const OPERATOR_TOKEN: &str = "lab-operator-93ab42";

/// Philips Lighting's IEEE MA-L assignment 00-17-88, and its name in the registry
/// (`/usr/share/ieee-data/oui.csv`).
const PHILIPS_MAC: [u8; 6] = [0x00, 0x17, 0x88, 0x12, 0x34, 0x56];
const PHILIPS_VENDOR: &str = "Philips Lighting BV";
const HOSTNAME: &str = "hue-bridge";
const DNS_NAME: &str = "diagnostics.meethue.com";

/// How long to wait for frames that should (or should not) arrive.
const SETTLE: Duration = Duration::from_millis(700);
/// How long the inventory may take to show what a device sent.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(10);
/// The issue's bound for a policy change to reach the maps.
const POLICY_CHANGE_BOUND: Duration = Duration::from_secs(1);
/// How long the probe loop keeps trying, so a slow reload is measured rather than cut off.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

fn api_config() -> String {
    format!(
        "\n[api]\ntokens = [\n  {},\n  {},\n]\n",
        token_entry("vera", "viewer", VIEWER_TOKEN),
        token_entry("otto", "operator", OPERATOR_TOKEN)
    )
}

struct Setup {
    lab: Lab,
    ctl: Controller,
    api: ApiClient,
    gw_lan_mac: [u8; 6],
}

/// Starts the controller on `lab` with the lanes, the sensor class and the tokens.
fn start(lab: Lab) -> Setup {
    let defaults = defaults("drop");
    let files = [("lanes.toml", LANES), ("sensor.toml", SENSOR_CLASS), ("defaults.toml", defaults.as_str())];
    let ctl = Controller::start(&lab, &files, &api_config());
    let gw_lan_mac = lab.mac_of(&lab.gw, "lan0");
    let api = ApiClient::new(&lab.gw);
    Setup { lab, ctl, api, gw_lan_mac }
}

impl Setup {
    fn mac(&self) -> Mac {
        Mac(self.lab.devices[0].mac)
    }

    fn endpoints(&self, dst_ip: [u8; 4]) -> Endpoints {
        let d = &self.lab.devices[0];
        Endpoints { src_mac: d.mac, dst_mac: self.gw_lan_mac, src_ip: d.ip, dst_ip }
    }

    fn device_socket(&self) -> RawSocket {
        let d = &self.lab.devices[0];
        RawSocket::open(&d.ns, d.interface)
    }

    /// Enrolls the device in the sensor class straight in the pinned maps, as an enrollment
    /// would.
    fn enroll(&self, access: Access) {
        let access = DeviceAccess { access, policy_id: SENSOR_POLICY_ID, class_id: SENSOR_CLASS_ID };
        self.ctl.maps().set_access(self.mac(), access).expect("device entry");
        self.ctl.maps().set_device_ipv4(self.mac(), Ipv4Addr::from(self.lab.devices[0].ip)).expect("device address");
    }

    fn access(&self) -> Option<Access> {
        self.ctl.maps().access(self.mac()).expect("device lookup").map(|a| a.access)
    }

    fn device_drops(&self, why: u32) -> u64 {
        self.ctl.device_drops(self.mac(), why)
    }

    /// The onboarding chatter of a Hue bridge: a DHCP discover with its hostname, then a DNS
    /// query to the gateway.
    fn send_onboarding_chatter(&self, tx: &RawSocket, dns_port: u16) {
        tx.send(&packets::dhcp_discover(self.endpoints(BROADCAST_IP), 0x4875_6501, &[1, 3, 6, 15, 28, 42], HOSTNAME));
        tx.send(&packets::dns_query(self.endpoints(GATEWAY_LAN_IP), dns_port, 0x2a2a, DNS_NAME));
    }

    /// `GET /api/v1/devices/{mac}` until `ready` holds for the answer, bounded in time.
    fn wait_for_device(&self, ready: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/v1/devices/{}", self.mac());
        let deadline = Instant::now() + INVENTORY_TIMEOUT;
        loop {
            let response = self.api.get(&path, Some(VIEWER_TOKEN));
            if response.status == 200 {
                let detail = response.json();
                if ready(&detail) {
                    return detail;
                }
                assert!(Instant::now() < deadline, "device never got ready in the inventory: {detail:#}");
            } else {
                assert_eq!(response.status, 404, "unexpected answer for {path}: {response:?}");
                assert!(Instant::now() < deadline, "device {} never appeared in the inventory", self.mac());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn policies(&self) -> Value {
        let response = self.api.get("/api/v1/policies", Some(VIEWER_TOKEN));
        assert_eq!(response.status, 200, "{response:?}");
        response.json()
    }

    /// How many MQTT and HTTP SYNs of a burst of `count` each reach upstream.
    fn upstream_burst(&self, tx: &RawSocket, upstream: &RawSocket, base_port: u16, count: u16) -> (usize, usize) {
        std::thread::scope(|scope| {
            let sniffer = scope.spawn(|| {
                let frames = upstream.collect(SETTLE, |f| tcp_destination(f).is_some());
                let count = |port| frames.iter().filter(|f| tcp_destination(f) == Some(port)).count();
                (count(packets::MQTT_PORT), count(packets::HTTP_PORT))
            });
            std::thread::sleep(Duration::from_millis(100));
            for n in 0..count {
                tx.send(&packets::tcp_syn(self.endpoints(UPSTREAM_IP), base_port + 2 * n, packets::MQTT_PORT));
                tx.send(&packets::tcp_syn(self.endpoints(UPSTREAM_IP), base_port + 2 * n + 1, packets::HTTP_PORT));
            }
            sniffer.join().expect("sniffer")
        })
    }
}

/// Destination port of a TCP frame.
fn tcp_destination(frame: &[u8]) -> Option<u16> {
    packets::tcp(frame).map(|t| t.destination_port())
}

/// Source port of a TCP frame.
fn tcp_source(frame: &[u8]) -> Option<u16> {
    packets::tcp(frame).map(|t| t.source_port())
}

/// Frames at `socket` within the settle time whose TCP destination port is `port`.
fn arrivals_to_port(socket: &RawSocket, port: u16) -> usize {
    socket.collect(SETTLE, |f| tcp_destination(f) == Some(port)).len()
}

/// Replaces a policy file the way an editor or deploy tool should: write aside, then rename,
/// so the watcher never reads half a file. Returns when the rename is done.
fn write_policy(ctl: &Controller, name: &str, text: &str) -> Instant {
    let aside = ctl.policy_dir.join(format!(".{name}.partial"));
    std::fs::write(&aside, text).expect("policy file");
    std::fs::rename(&aside, ctl.policy_dir.join(name)).expect("policy rename");
    Instant::now()
}

/// Waits until `needle` was logged at least `count` times by the current process.
fn wait_for_log_count(ctl: &Controller, needle: &str, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while ctl.log_count(needle) < count {
        assert!(Instant::now() < deadline, "iotgw did not log {needle:?} {count} times within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn devices_appear_in_the_inventory_with_mac_ip_and_vendor() {
    let mut lab = Lab::new(1);
    lab.set_device_mac(0, PHILIPS_MAC);
    let s = start(lab);
    let tx = s.device_socket();
    s.send_onboarding_chatter(&tx, 40_100);

    let detail = s.wait_for_device(|d| {
        d["ips"].as_array().is_some_and(|ips| !ips.is_empty())
            && !d["hostname"].is_null()
            && d["dns_names"].as_array().is_some_and(|names| !names.is_empty())
    });
    assert_eq!(detail["mac"], json!(format_mac(PHILIPS_MAC)), "{detail:#}");
    assert_eq!(detail["ips"], json!(["10.77.0.10"]), "the DHCP discover's 0.0.0.0 is not the device's: {detail:#}");
    assert_eq!(detail["vendor"], json!(PHILIPS_VENDOR), "{detail:#}");
    assert_eq!(detail["hostname"], json!(HOSTNAME), "{detail:#}");
    assert_eq!(detail["dns_names"], json!([DNS_NAME]), "{detail:#}");
    assert_eq!(detail["state"], json!("unknown"), "never enrolled: {detail:#}");
    let added: Vec<&Value> =
        detail["audit"].as_array().expect("audit").iter().filter(|e| e["action"] == "device_added").collect();
    assert_eq!(added.len(), 1, "{detail:#}");
    assert_eq!(added[0]["detail"], json!(format!("vendor {PHILIPS_VENDOR}")));

    let list = s.api.get("/api/v1/devices", Some(VIEWER_TOKEN));
    assert_eq!(list.status, 200, "{list:?}");
    let list = list.json();
    let devices = list.as_array().expect("device list");
    assert_eq!(devices.len(), 1, "only the device that spoke: {list:#}");
    assert_eq!(devices[0]["mac"], json!(format_mac(PHILIPS_MAC)));
    assert_eq!(devices[0]["ips"], json!(["10.77.0.10"]));
    assert_eq!(devices[0]["vendor"], json!(PHILIPS_VENDOR));
    assert_eq!(devices[0]["first_seen"], detail["first_seen"]);
}

#[test]
fn unauthenticated_and_viewer_actions_are_refused() {
    let s = start(Lab::new(1));
    s.enroll(Access::Enrolled);
    let tx = s.device_socket();
    // The inventory holds only devices it saw, and actions refuse others.
    tx.send(&packets::tcp_syn(s.endpoints(UPSTREAM_IP), 40_200, packets::MQTT_PORT));
    s.wait_for_device(|_| true);
    let quarantine = format!("/api/v1/devices/{}/quarantine", s.mac());
    let upstream = RawSocket::open(&s.lab.up, "eth0");
    let quarantine_host = RawSocket::open(&s.lab.quar, "eth0");

    assert_eq!(s.api.get("/api/v1/devices", None).status, 401, "reading needs a token");
    assert_eq!(s.api.get("/api/v1/status", Some("not-a-token")).status, 401, "unknown tokens are refused");
    assert_eq!(s.api.post(&quarantine, None, "{}").status, 401, "acting needs a token");
    assert_eq!(s.api.post(&quarantine, Some("not-a-token"), "{}").status, 401);
    let viewer = s.api.post(&quarantine, Some(VIEWER_TOKEN), r#"{"reason":"viewer tries"}"#);
    assert_eq!(viewer.status, 403, "a viewer may not quarantine: {viewer:?}");
    assert_eq!(s.api.get("/api/v1/devices", Some(VIEWER_TOKEN)).status, 200, "a viewer may read");

    assert_eq!(s.access(), Some(Access::Enrolled), "refused actions leave the device table alone");
    assert_eq!(s.upstream_burst(&tx, &upstream, 41_000, 3), (3, 0), "still enforced as an enrolled sensor");
    let detail = s.wait_for_device(|_| true);
    assert!(
        detail["audit"].as_array().expect("audit").iter().all(|e| e["action"] != "access_changed"),
        "refused actions are not recorded as changes: {detail:#}"
    );

    let operator = s.api.post(&quarantine, Some(OPERATOR_TOKEN), r#"{"reason":"lab incident"}"#);
    assert_eq!(operator.status, 200, "{operator:?}");
    let answer = operator.json();
    assert_eq!(answer["previous"], json!("enrolled"), "{answer:#}");
    assert_eq!(answer["access"], json!("quarantined"), "{answer:#}");
    assert_eq!(answer["changed"], json!(true), "{answer:#}");
    assert_eq!(answer["actor"], json!("api:otto"), "{answer:#}");
    assert_eq!(s.access(), Some(Access::Quarantined), "the operator's quarantine reaches the device table");

    let (at_quarantine, at_upstream) = std::thread::scope(|scope| {
        let q = scope.spawn(|| arrivals_to_port(&quarantine_host, packets::MQTT_PORT));
        let u = scope.spawn(|| arrivals_to_port(&upstream, packets::MQTT_PORT));
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..5 {
            tx.send(&packets::tcp_syn(s.endpoints(UPSTREAM_IP), 42_000 + n, packets::MQTT_PORT));
        }
        (q.join().expect("sniffer"), u.join().expect("sniffer"))
    });
    assert_eq!((at_quarantine, at_upstream), (5, 0), "quarantined frames go to the quarantine host only");

    let detail = s.wait_for_device(|_| true);
    let audit = detail["audit"].as_array().expect("audit");
    assert!(audit.iter().all(|e| e["actor"] != "api:vera"), "refused actions are not audited: {detail:#}");
    let by_operator: Vec<&Value> = audit.iter().filter(|e| e["actor"] == "api:otto").collect();
    assert_eq!(by_operator.len(), 1, "exactly the operator's change is audited: {detail:#}");
    assert_eq!(by_operator[0]["action"], json!("access_changed"));
    assert_eq!(by_operator[0]["from"], json!("enrolled"), "the audit names what the datapath enforced: {detail:#}");
    assert_eq!(by_operator[0]["to"], json!("quarantined"));
    assert_eq!(detail["restore_access"], json!("enrolled"), "{detail:#}");

    // Release gives back what the device had before the quarantine.
    let release = format!("/api/v1/devices/{}/release", s.mac());
    assert_eq!(s.api.post(&release, Some(VIEWER_TOKEN), "{}").status, 403, "a viewer may not release either");
    assert_eq!(s.access(), Some(Access::Quarantined));
    let released = s.api.post(&release, Some(OPERATOR_TOKEN), r#"{"reason":"lab incident closed"}"#);
    assert_eq!(released.status, 200, "{released:?}");
    assert_eq!(released.json()["access"], json!("enrolled"), "{released:?}");
    assert_eq!(s.access(), Some(Access::Enrolled));
    assert_eq!(s.upstream_burst(&tx, &upstream, 43_000, 3), (3, 0), "enforced as an enrolled sensor again");
}

#[test]
fn policy_change_alters_enforcement_within_one_second() {
    let s = start(Lab::new(1));
    s.enroll(Access::Enrolled);
    let tx = s.device_socket();
    let upstream = RawSocket::open(&s.lab.up, "eth0");
    let version_before = s.policies()["version"].clone();

    assert_eq!(s.upstream_burst(&tx, &upstream, 43_500, 3), (3, 0), "before the change HTTP is denied");
    assert_eq!(s.device_drops(reason::POLICY_DENY), 3);

    let applied_before = s.ctl.log_count("policy applied");
    let written = write_policy(&s.ctl, "sensor.toml", &sensor_class_with_http());
    // Probe every PROBE_INTERVAL with a fresh source port; the first probe that arrives
    // upstream dates the change (to within one interval).
    let mut sent_at = Vec::new();
    let mut passed = None;
    for n in 0u16.. {
        let now = Instant::now();
        assert!(now - written < PROBE_TIMEOUT, "HTTP still denied {PROBE_TIMEOUT:?} after the policy change");
        let port = 44_000 + n;
        tx.send(&packets::tcp_syn(s.endpoints(UPSTREAM_IP), port, packets::HTTP_PORT));
        sent_at.push((port, now));
        let arrived = upstream.collect(PROBE_INTERVAL, |f| tcp_destination(f) == Some(packets::HTTP_PORT));
        if let Some(port) = arrived.iter().filter_map(|f| tcp_source(f)).min() {
            let (_, at) = sent_at.iter().find(|(p, _)| *p == port).expect("a probe we sent");
            passed = Some(*at - written);
            break;
        }
    }
    let latency = passed.expect("loop ends with a passing probe");
    println!("policy change reached enforcement after {latency:?} (probe interval {PROBE_INTERVAL:?})");
    assert!(latency < POLICY_CHANGE_BOUND, "policy change took {latency:?}, more than {POLICY_CHANGE_BOUND:?}");

    assert_eq!(s.upstream_burst(&tx, &upstream, 45_000, 3), (3, 3), "after the change MQTT and HTTP pass");
    wait_for_log_count(&s.ctl, "policy applied", applied_before + 1, Duration::from_secs(2));
    let after = s.policies();
    assert_ne!(after["version"], version_before, "the API shows the new policy: {after:#}");
    assert_eq!(after["last_refused"], Value::Null, "{after:#}");
}

#[test]
fn bad_policy_is_refused_and_the_old_one_still_enforced() {
    let s = start(Lab::new(1));
    s.enroll(Access::Enrolled);
    let tx = s.device_socket();
    let upstream = RawSocket::open(&s.lab.up, "eth0");
    let running = s.policies();
    assert_eq!(running["last_refused"], Value::Null, "{running:#}");
    assert_eq!(s.upstream_burst(&tx, &upstream, 46_000, 3), (3, 0), "the running policy: MQTT only");

    // A file that is not TOML.
    write_policy(&s.ctl, "broken.toml", BROKEN_SYNTAX);
    wait_for_log_count(&s.ctl, "policy reload refused", 1, Duration::from_secs(3));
    assert!(s.ctl.log_count("broken.toml") >= 1, "the refusal names the file");
    let shown = s.policies();
    let refused = shown["last_refused"].as_str().unwrap_or_else(|| panic!("no last_refused: {shown:#}"));
    assert!(refused.contains("broken.toml:3:"), "the refusal says where: {refused}");
    assert_eq!(shown["version"], running["version"], "the running policy is still shown");
    assert_eq!(s.upstream_burst(&tx, &upstream, 46_100, 3), (3, 0), "still enforced: MQTT only");

    // Removing it is a good reload of the same policy.
    let applied = s.ctl.log_count("policy applied");
    std::fs::remove_file(s.ctl.policy_dir.join("broken.toml")).expect("remove broken.toml");
    wait_for_log_count(&s.ctl, "policy applied", applied + 1, Duration::from_secs(3));
    let shown = s.policies();
    assert_eq!(shown["last_refused"], Value::Null, "{shown:#}");
    assert_eq!(shown["version"], running["version"], "same policy, same version");

    // Valid TOML that widens the class, but with a mistake: none of it may land.
    write_policy(&s.ctl, "sensor.toml", &sensor_class_host_bits());
    wait_for_log_count(&s.ctl, "policy reload refused", 2, Duration::from_secs(3));
    let shown = s.policies();
    let refused = shown["last_refused"].as_str().unwrap_or_else(|| panic!("no last_refused: {shown:#}"));
    assert!(
        refused.contains("sensor.toml:") && refused.contains("host bits"),
        "the refusal says where and why: {refused}"
    );
    assert_eq!(shown["version"], running["version"], "the running policy is still shown");
    let drops_before = s.device_drops(reason::POLICY_DENY);
    assert_eq!(s.upstream_burst(&tx, &upstream, 46_200, 3), (3, 0), "the refused file's HTTP rule is not enforced");
    assert_eq!(s.device_drops(reason::POLICY_DENY), drops_before + 3);
    assert_eq!(s.ctl.log_count("policy applied"), applied + 1, "nothing was written to the maps");
}

#[test]
fn inventory_survives_a_controller_restart() {
    let mut lab = Lab::new(1);
    lab.set_device_mac(0, PHILIPS_MAC);
    let mut s = start(lab);
    let tx = s.device_socket();
    s.send_onboarding_chatter(&tx, 40_300);
    let before = s.wait_for_device(|d| {
        d["ips"].as_array().is_some_and(|ips| !ips.is_empty())
            && d["dns_names"].as_array().is_some_and(|n| !n.is_empty())
    });

    s.ctl.kill9();
    s.ctl.spawn();
    let listed = s.api.get("/api/v1/devices", Some(VIEWER_TOKEN));
    assert_eq!(listed.status, 200, "{listed:?}");
    let listed = listed.json();
    let devices = listed.as_array().expect("device list");
    assert_eq!(devices.len(), 1, "{listed:#}");
    for key in ["mac", "ips", "vendor", "first_seen", "last_seen"] {
        assert_eq!(devices[0][key], before[key], "{key} kept across kill -9: {listed:#}");
    }
    let after = s.wait_for_device(|_| true);
    for key in ["hostname", "dns_names", "fingerprints", "first_seen"] {
        assert_eq!(after[key], before[key], "{key} kept across kill -9");
    }

    // Seen again after the restart: the same record moves on, no second one is made.
    std::thread::sleep(Duration::from_millis(20));
    tx.send(&packets::dns_query(s.endpoints(GATEWAY_LAN_IP), 40_301, 0x2b2b, DNS_NAME));
    let later = s.wait_for_device(|d| d["last_seen"] != before["last_seen"]);
    assert_eq!(later["first_seen"], before["first_seen"], "first_seen kept when seen again");
    let added = later["audit"].as_array().expect("audit").iter().filter(|e| e["action"] == "device_added").count();
    assert_eq!(added, 1, "the device was not added a second time: {later:#}");
    assert_eq!(s.api.get("/api/v1/devices", Some(VIEWER_TOKEN)).json().as_array().map(Vec::len), Some(1));
}

/// A DHCP discover padded to 1,100 bytes (longer than the 1,023 the sample length was once
/// masked to) still yields its host name: the sample is the frame's first `SAMPLE_BYTES`.
#[test]
fn a_long_dhcp_message_is_sampled_from_its_start() {
    let mut lab = Lab::new(1);
    lab.set_device_mac(0, PHILIPS_MAC);
    let s = start(lab);
    let tx = s.device_socket();
    let frame = packets::dhcp_discover_padded(s.endpoints(BROADCAST_IP), 0x4875_6502, &[1, 3, 6], HOSTNAME, 1_100);
    assert_eq!(frame.len(), 1_100);
    tx.send(&frame);
    let device = s.wait_for_device(|d| d["hostname"] == HOSTNAME);
    assert_eq!(device["hostname"], HOSTNAME, "{device:#}");
}
