//! Faults under load, through real interfaces: the controller killed with `kill -9` while an
//! operator's quarantine or release is answered and a policy reload is under way, three
//! times at different moments. Throughout, a second device keeps sending traffic its policy
//! denies; a sniffer upstream counts what leaks. The programs and maps are pinned, so XDP
//! keeps enforcing while no controller runs: nothing may leak, every answered action must be
//! in force while the controller is dead, and after its restart (the store agreeing).
//!
//! (A reboot, where the pins are gone too, is `restore.rs`.) Run as root through `cargo xtask
//! test` (one test at a time).
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    api::{ApiClient, token_entry},
    controller::Controller,
    lab::{Lab, UPSTREAM_IP, XdpAttached, xdp_attached},
    packets::{self, Endpoints},
    policies::{LANES, SENSOR_CLASS, SENSOR_CLASS_ID, SENSOR_POLICY_ID, defaults},
    raw::RawSocket,
};

const OPERATOR_TOKEN: &str = "lab-operator-faults-7f3a";

/// The denied probe: one telnet SYN every `PROBE_INTERVAL`, `PROBE_FRAMES` per round.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
const PROBE_FRAMES: u16 = 400;
/// Delay between the API's answer and the kill, per round.
const KILL_DELAYS: [Duration; 3] = [Duration::ZERO, Duration::from_millis(15), Duration::from_millis(60)];
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(10);

fn endpoints(lab: &Lab, n: usize) -> Endpoints {
    let d = &lab.devices[n];
    Endpoints { src_mac: d.mac, dst_mac: lab.mac_of(&lab.gw, "lan0"), src_ip: d.ip, dst_ip: UPSTREAM_IP }
}

/// Frames from `src` to TCP port `port` seen by `socket` within `window`.
fn count_from(socket: &RawSocket, window: Duration, src: [u8; 4], port: u16) -> usize {
    socket
        .collect(window, |f| {
            let from = packets::ipv4_source(f) == Some(src);
            let to = packets::tcp(f).is_some_and(|t| t.destination_port() == port);
            from && to
        })
        .len()
}

/// Both lab devices enrolled as sensors (straight in the table, as an enrollment would), each
/// sending one MQTT SYN so the inventory learns it.
fn enroll_sensors(ctl: &Controller, lab: &Lab) {
    for (n, device) in lab.devices.iter().enumerate() {
        let entry = DeviceAccess { access: Access::Enrolled, policy_id: SENSOR_POLICY_ID, class_id: SENSOR_CLASS_ID };
        ctl.maps().set_access(Mac(device.mac), entry).expect("device entry");
        ctl.maps().set_device_ipv4(Mac(device.mac), Ipv4Addr::from(device.ip)).expect("device address");
        let tx = RawSocket::open(&device.ns, device.interface);
        tx.send(&packets::tcp_syn(endpoints(lab, n), 40_000, packets::MQTT_PORT));
    }
}

fn access(ctl: &Controller, mac: Mac) -> Option<Access> {
    ctl.maps().access(mac).expect("device table lookup").map(|a| a.access)
}

fn api_access(api: &ApiClient, mac: Mac) -> String {
    let deadline = Instant::now() + INVENTORY_TIMEOUT;
    loop {
        let response = api.get(&format!("/api/v1/devices/{mac}"), Some(OPERATOR_TOKEN));
        if response.status == 200 {
            return response.json()["state"].as_str().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "device {mac} not in the inventory: {response:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_while_quarantining_and_reloading_keeps_every_answered_action_and_enforcement() {
    let lab = Lab::new(2);
    let defaults = defaults("drop");
    let files = [("lanes.toml", LANES), ("sensor.toml", SENSOR_CLASS), ("defaults.toml", defaults.as_str())];
    let config = format!("\n[api]\ntokens = [\n  {},\n]\n", token_entry("otto", "operator", OPERATOR_TOKEN));
    let mut ctl = Controller::start(&lab, &files, &config);
    let api = ApiClient::new(&lab.gw);
    let target = Mac(lab.devices[0].mac);
    enroll_sensors(&ctl, &lab);
    // The inventory has seen the device (its recorded state follows the first action).
    api_access(&api, target);

    let upstream = RawSocket::open(&lab.up, "eth0");
    let probe_tx = RawSocket::open(&lab.devices[1].ns, lab.devices[1].interface);
    // The sniffer sees what passes: the prober's allowed MQTT does (a positive control for
    // the zero counts below).
    let seen = std::thread::scope(|scope| {
        let sniffer =
            scope.spawn(|| count_from(&upstream, Duration::from_millis(600), lab.devices[1].ip, packets::MQTT_PORT));
        std::thread::sleep(Duration::from_millis(100));
        for k in 0..3 {
            probe_tx.send(&packets::tcp_syn(endpoints(&lab, 1), 42_000 + k, packets::MQTT_PORT));
        }
        sniffer.join().expect("sniffer")
    });
    assert_eq!(seen, 3, "allowed frames reach the upstream sniffer");
    let mut expected = Access::Enrolled;
    for (round, delay) in KILL_DELAYS.into_iter().enumerate() {
        let (action, after) = if expected == Access::Quarantined {
            ("release", Access::Enrolled)
        } else {
            ("quarantine", Access::Quarantined)
        };
        let probe_window = PROBE_INTERVAL * u32::from(PROBE_FRAMES) + Duration::from_millis(600);
        let (leaked, answered, dead_for) = std::thread::scope(|scope| {
            let sniffer = scope.spawn(|| count_from(&upstream, probe_window, lab.devices[1].ip, packets::TELNET_PORT));
            let sender = scope.spawn(|| {
                for k in 0..PROBE_FRAMES {
                    probe_tx.send(&packets::tcp_syn(endpoints(&lab, 1), 41_000 + k, packets::TELNET_PORT));
                    std::thread::sleep(PROBE_INTERVAL);
                }
            });
            std::thread::sleep(Duration::from_millis(200));
            // A reload under way, an action answered, then the kill.
            ctl.hangup();
            let answer = api.post(
                &format!("/api/v1/devices/{target}/{action}"),
                Some(OPERATOR_TOKEN),
                r#"{"reason":"fault lab"}"#,
            );
            std::thread::sleep(delay);
            ctl.kill9();
            let killed = Instant::now();
            // With no controller at all, the answered action is in force.
            assert_eq!(xdp_attached(&lab.gw, "lan0"), XdpAttached::Driver, "the pinned link outlives the controller");
            let while_dead = access(&ctl, target);
            std::thread::sleep(Duration::from_millis(300));
            ctl.spawn();
            let dead_for = killed.elapsed();
            sender.join().expect("sender");
            (sniffer.join().expect("sniffer"), (answer.status, while_dead), dead_for)
        });
        assert_eq!(answered.0, 200, "round {round}: the {action} was answered");
        assert_eq!(answered.1, Some(after), "round {round}: an answered {action} holds while no controller runs");
        assert_eq!(access(&ctl, target), Some(after), "round {round}: and after the restart");
        assert_eq!(api_access(&api, target), after.as_str(), "round {round}: the store agrees");
        assert_eq!(leaked, 0, "round {round}: denied traffic leaked while the controller was killed and restarted");
        println!(
            "round {round}: killed {delay:?} after the {action} was answered, controller absent {dead_for:?}; \
             enforcement absent 0 ms ({PROBE_FRAMES} denied frames every {PROBE_INTERVAL:?}, none leaked)"
        );
        expected = after;
    }
}

/// A tmpfs of its own for the store, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn new(name: &str, size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("iotgw-fault-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mount point");
        netns_tests::lab::sh(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().expect("utf-8")],
        );
        Self(dir)
    }

    /// Writes a filler file until the disk refuses (ENOSPC); returns it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        // Bounded: the disk is megabytes, this writes at most 1 GiB before giving up.
        for _ in 0..16_384 {
            if file.write_all(&block).and_then(|()| file.sync_all()).is_err() {
                return filler;
            }
        }
        panic!("the small disk never filled up");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_store_disk_refuses_actions_it_cannot_record_while_enforcement_goes_on() {
    let lab = Lab::new(2);
    let disk = SmallDisk::new("full", "24m");
    let defaults = defaults("drop");
    let files = [("lanes.toml", LANES), ("sensor.toml", SENSOR_CLASS), ("defaults.toml", defaults.as_str())];
    let config = format!("\n[api]\ntokens = [\n  {},\n]\n", token_entry("otto", "operator", OPERATOR_TOKEN));
    let mut ctl = Controller::configure(&lab, &files, &config);
    // The store on the small disk.
    let text = std::fs::read_to_string(&ctl.config).expect("config");
    let store = disk.0.join("iotgw.db");
    let text = text.replace(&ctl.dir.join("iotgw.db").display().to_string(), &store.display().to_string());
    std::fs::write(&ctl.config, text).expect("config");
    ctl.spawn();
    let api = ApiClient::new(&lab.gw);
    let target = Mac(lab.devices[0].mac);
    enroll_sensors(&ctl, &lab);
    api_access(&api, target);

    let filler = disk.fill();
    // Actions until one cannot be recorded (bounded: the first write past the WAL's free
    // pages meets the full disk). Each answer is kept or refused whole.
    let mut refused = None;
    for round in 0..20 {
        let action = if access(&ctl, target) == Some(Access::Quarantined) { "release" } else { "quarantine" };
        let before = access(&ctl, target);
        let reason = format!("{{\"reason\":\"disk full round {round} {}\"}}", "x".repeat(400));
        let answer = api.post(&format!("/api/v1/devices/{target}/{action}"), Some(OPERATOR_TOKEN), &reason);
        if answer.status != 200 {
            refused = Some((answer, before));
            break;
        }
    }
    let (refusal, before) = refused.expect("an action on a full disk is refused, not answered as recorded");
    assert!(refusal.status >= 500, "a full disk is the gateway's fault, not the caller's: {refusal:?}");
    assert_eq!(access(&ctl, target), before, "a refused action leaves the device table as it was");

    // Enforcement goes on: the prober's denied telnet stays dropped, its MQTT passes.
    let upstream = RawSocket::open(&lab.up, "eth0");
    let probe_tx = RawSocket::open(&lab.devices[1].ns, lab.devices[1].interface);
    let (telnet, mqtt) = std::thread::scope(|scope| {
        let telnet =
            scope.spawn(|| count_from(&upstream, Duration::from_millis(600), lab.devices[1].ip, packets::TELNET_PORT));
        std::thread::sleep(Duration::from_millis(100));
        for k in 0..3 {
            probe_tx.send(&packets::tcp_syn(endpoints(&lab, 1), 43_000 + k, packets::TELNET_PORT));
        }
        let telnet = telnet.join().expect("sniffer");
        let mqtt =
            scope.spawn(|| count_from(&upstream, Duration::from_millis(600), lab.devices[1].ip, packets::MQTT_PORT));
        std::thread::sleep(Duration::from_millis(100));
        for k in 0..3 {
            probe_tx.send(&packets::tcp_syn(endpoints(&lab, 1), 44_000 + k, packets::MQTT_PORT));
        }
        (telnet, mqtt.join().expect("sniffer"))
    });
    assert_eq!((telnet, mqtt), (0, 3), "the datapath enforces on with a full store disk");

    // Space back: the controller is still there and the same action is answered and kept.
    std::fs::remove_file(filler).expect("freeing the disk");
    let action = if before == Some(Access::Quarantined) { "release" } else { "quarantine" };
    let answer =
        api.post(&format!("/api/v1/devices/{target}/{action}"), Some(OPERATOR_TOKEN), r#"{"reason":"space back"}"#);
    assert_eq!(answer.status, 200, "{answer:?}");
    let after = if action == "release" { Access::Enrolled } else { Access::Quarantined };
    ctl.kill9();
    ctl.spawn();
    assert_eq!(access(&ctl, target), Some(after), "the answered action survives a restart");
    assert_eq!(api_access(&api, target), after.as_str(), "and the store holds it");
    println!(
        "full disk: refused with {} ({}), device table unchanged; enforcement went on",
        refusal.status, refusal.body
    );
}
