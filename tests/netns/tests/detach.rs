//! `iotgw detach`: switching enforcement off is deliberate and complete. It refuses while a
//! controller runs on the same pins, says what stops and changes nothing without `--yes`, and
//! with it removes every XDP program of the lab's gateway and every pin; a second run finds
//! nothing to do.
//!
//! Run as root through `cargo xtask test` (one test at a time).
use std::process::{Command, Output};

use iotgw_test_support::run;
use netns_tests::{
    controller::{Controller, iotgw_bin},
    lab::{Lab, XdpAttached, xdp_attached},
    policies::{self, LANES},
};

/// The lab gateway's interfaces that run XDP programs (quar0 only receives redirects).
const INTERFACES: [&str; 2] = ["lan0", "wan0"];

fn detach(ctl: &Controller, yes: bool) -> Output {
    let mut command = Command::new(iotgw_bin());
    command.args(["detach", "--config"]).arg(&ctl.config);
    if yes {
        command.arg("--yes");
    }
    run(&mut command)
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn attached(lab: &Lab) -> Vec<XdpAttached> {
    INTERFACES.iter().map(|interface| xdp_attached(&lab.gw, interface)).collect()
}

#[test]
fn detach_refuses_under_a_controller_and_without_yes_then_removes_programs_and_pins() {
    netns_tests::require_root();
    let lab = Lab::new(1);
    let defaults = policies::defaults("drop");
    let mut ctl = Controller::start(&lab, &[("lanes.toml", LANES), ("defaults.toml", defaults.as_str())], "");
    assert!(attached(&lab).iter().all(|a| *a != XdpAttached::None), "attached at start: {:?}", attached(&lab));

    let refused = detach(&ctl, true);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("stop it first"), "{}", text(&refused));
    assert!(ctl.pin_path.join("links").exists(), "the pins stay under a running controller");

    // The controller gone (as after a crash or `systemctl stop`), XDP goes on enforcing.
    ctl.kill9();
    assert!(attached(&lab).iter().all(|a| *a != XdpAttached::None), "pins keep XDP: {:?}", attached(&lab));

    let asked = detach(&ctl, false);
    assert_eq!(asked.status.code(), Some(1), "{}", text(&asked));
    let said = text(&asked);
    for words in ["Enforcement stops", "lan0", "wan0", "quarantined device(s) leave quarantine", "--yes"] {
        assert!(said.contains(words), "{words:?} missing from: {said}");
    }
    assert!(attached(&lab).iter().all(|a| *a != XdpAttached::None), "nothing changed without --yes");

    let done = detach(&ctl, true);
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(attached(&lab), vec![XdpAttached::None; INTERFACES.len()], "{}", text(&done));
    assert!(!ctl.pin_path.exists(), "no pin left under {}", ctl.pin_path.display());

    let again = detach(&ctl, true);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("nothing to detach"), "{}", text(&again));
}
