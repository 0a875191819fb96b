//! The capabilities `packaging/deb/iotgw.service` gives the gateway are the ones loading and
//! attaching XDP needs on this kernel, no more: with exactly the unit's `CapabilityBoundingSet`
//! (root, as systemd leaves it) the controller loads, pins and attaches on the lab's LAN and
//! WAN interfaces; without any one of them it refuses to start and attaches nothing.
//!
//! Run as root through `cargo xtask test` (one test at a time).
use std::time::Duration;

use netns_tests::{
    controller::{Controller, Launcher},
    lab::{Lab, XdpAttached, xdp_attached},
    policies::{self, LANES},
};

/// `CapabilityBoundingSet` of the unit, as setpriv names them.
const UNIT_CAPABILITIES: &[&str] = &["bpf", "net_admin", "perfmon"];
/// The unit set less one capability, each.
const WITHOUT_ONE: [&[&str]; 3] = [&["net_admin", "perfmon"], &["bpf", "perfmon"], &["bpf", "net_admin"]];
/// How long a controller short of a capability may take to give up.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

const INTERFACES: [&str; 2] = ["lan0", "wan0"];

#[test]
fn the_units_capability_set_is_what_the_loader_needs() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/deb/iotgw.service"))
        .expect("packaging/deb/iotgw.service");
    let bounding: Vec<String> = unit
        .lines()
        .find_map(|line| line.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities")
        .split_whitespace()
        .map(|cap| cap.trim_start_matches("CAP_").to_lowercase())
        .collect();
    assert_eq!(bounding, UNIT_CAPABILITIES, "the test runs the unit's set");
    let defaults = policies::defaults("drop");
    let files = [("lanes.toml", LANES), ("defaults.toml", defaults.as_str())];

    for short in WITHOUT_ONE {
        let lab = Lab::new(1);
        let mut ctl = Controller::configure(&lab, &files, "");
        ctl.launcher = Launcher::NsenterWithCapabilities(short);
        let (code, stderr) = ctl.run_to_exit(REFUSAL_TIMEOUT);
        assert_ne!(code, Some(0), "with only {short:?} the controller must not run: {stderr}");
        for interface in INTERFACES {
            assert_eq!(xdp_attached(&lab.gw, interface), XdpAttached::None, "{short:?}: {interface}: {stderr}");
        }
    }

    let lab = Lab::new(1);
    let mut ctl = Controller::configure(&lab, &files, "");
    ctl.launcher = Launcher::NsenterWithCapabilities(UNIT_CAPABILITIES);
    ctl.spawn();
    for interface in INTERFACES {
        assert_ne!(xdp_attached(&lab.gw, interface), XdpAttached::None, "{interface} attached with the unit's set");
    }
    assert!(ctl.pin_path.join("links").exists(), "links pinned with the unit's set");
}
