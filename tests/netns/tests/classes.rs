//! Device classes over the real datapath (issue 4): an enrolled device is put on the policy
//! of the class the policy files match it to (here by MAC), and gains exactly that class's
//! access.
use std::time::{Duration, Instant};

use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    controller::Controller,
    lab::Lab,
    policies::{LANES, defaults},
};

/// A thermostat class matched by MAC, allowed MQTT over TLS to the broker.
fn thermostat_class(mac: &str) -> String {
    format!(
        r#"
[[class]]
name = "thermostat"
id = 15
[class.match]
macs = ["{mac}"]
[[class.allow]]
nets = ["10.78.0.2/32"]
protocol = "tcp"
ports = [8883]
"#
    )
}

#[test]
fn enrolled_device_is_put_on_the_policy_of_its_matched_class() {
    let lab = Lab::new(1);
    let mac = Mac(lab.devices[0].mac);
    let class = thermostat_class(&mac.to_string());
    let defaults = defaults("drop");
    let ctl =
        Controller::start(&lab, &[("lanes.toml", LANES), ("classes.toml", &class), ("defaults.toml", &defaults)], "");
    // Enrolled as the identity service does before any class is known: a generic policy.
    ctl.maps()
        .set_access(
            mac,
            DeviceAccess { access: Access::Enrolled, policy_id: gateway_ebpf::lane::ONBOARDING, class_id: 0 },
        )
        .expect("device table");
    let expected = (gateway_ebpf::lane::FIRST_CLASS_POLICY + 15, 15);
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_secs(3) {
        seen = ctl.maps().access(mac).expect("lookup").map(|a| (a.access, a.policy_id, a.class_id));
        if seen == Some((Access::Enrolled, expected.0, expected.1)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen, Some((Access::Enrolled, expected.0, expected.1)), "class policy assigned");
    println!("class policy assigned {:?} after enrollment", start.elapsed());
    assert!(start.elapsed() <= Duration::from_millis(1_500));
}
