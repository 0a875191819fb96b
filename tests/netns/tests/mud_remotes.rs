//! The MUD abstractions that name other devices (RFC 8520 §8: `same-manufacturer`,
//! `manufacturer`, `model`), enforced in XDP (issue 17). Three devices announce signed MUD
//! files in DHCP option 161: a bulb and a switch from one authority, a plug from another. The
//! bulb's file lets it reach its own manufacturer's devices on tcp/7001, the plug's
//! manufacturer on tcp/7002 and the switch model on tcp/7003; the gateway resolves those from
//! the inventory (`controller/mud_devices.rs`, read every 2 s). Then the switch moves to
//! another address, and then announces another manufacturer's file: what the bulb reaches
//! follows each change.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    controller::Controller,
    lab::{self, Lab},
    mud::MudServer,
    packets::{self, Endpoints},
    policies::{LANES, defaults},
    raw::{RawSocket, reachable},
};

/// The two authorities, each an HTTPS server on the default port in the upstream namespace.
const LIGHTING: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const PLUGS: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 3);
/// How often the controller reads the devices on MUD classes (`MUD_DEVICES_INTERVAL`).
const POLL: Duration = Duration::from_secs(2);
/// One probe: the sniffer's window and the pause before sending (`raw::reachable`).
const PROBE: Duration = Duration::from_millis(700);
/// The ports the bulb's file opens, per abstraction, and one it does not.
const SAME_MANUFACTURER: u16 = 7001;
const PLUG_MANUFACTURER: u16 = 7002;
const SWITCH_MODEL: u16 = 7003;
const NOT_ALLOWED: u16 = 7004;
/// Where the switch moves.
const SWITCH_MOVED: [u8; 4] = [10, 77, 0, 21];

const BULB_URL: &str = "https://10.78.0.2/bulb.json";
const SWITCH_URL: &str = "https://10.78.0.2/switch.json";
const PLUG_URL: &str = "https://10.78.0.3/plug.json";

/// One from-device ACE over TCP to `port`, with `mud_match` as its `ietf-mud:mud` match.
fn ace(name: &str, mud_match: &str, port: u16) -> String {
    format!(
        r#"{{ "name": "{name}",
  "matches": {{ "ietf-mud:mud": {mud_match}, "ipv4": {{ "protocol": 6 }},
               "tcp": {{ "destination-port": {{ "operator": "eq", "port": {port} }} }} }},
  "actions": {{ "forwarding": "accept" }} }}"#
    )
}

/// A signed MUD file at `url` whose one from-device ACL holds `aces`.
fn mud_file(url: &str, aces: &[String]) -> String {
    let signature = url.replace(".json", ".p7s");
    format!(
        r#"{{
  "ietf-mud:mud": {{
    "mud-version": 1, "mud-url": "{url}", "mud-signature": "{signature}",
    "last-update": "2026-12-01T10:00:00+00:00", "cache-validity": 48, "is-supported": true,
    "systeminfo": "iotgw lab device",
    "from-device-policy": {{ "access-lists": {{ "access-list": [ {{ "name": "frdev" }} ] }} }}
  }},
  "ietf-access-control-list:acls": {{ "acl": [ {{
    "name": "frdev", "type": "ipv4-acl-type", "aces": {{ "ace": [ {} ] }} }} ] }}
}}"#,
        aces.join(",\n")
    )
}

/// HTTPS to the lighting cloud: what the switch and the plug may do.
fn cloud_ace() -> String {
    r#"{ "name": "cloud",
  "matches": { "ipv4": { "protocol": 6, "destination-ipv4-network": "10.78.0.2/32" },
               "tcp": { "destination-port": { "operator": "eq", "port": 443 } } },
  "actions": { "forwarding": "accept" } }"#
        .to_owned()
}

/// Waits, bounded, until `mac` is on a MUD class other than `not`; returns the class id.
fn mud_class(ctl: &Controller, mac: Mac, not: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let class = ctl.maps().access(mac).expect("lookup").map(|a| a.class_id).unwrap_or_default();
        if iotgw::policy::store::GENERATED_CLASS_IDS.contains(&class) && class != not {
            return class;
        }
        assert!(Instant::now() < deadline, "{mac} is not on a new MUD class (on {class:#x})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Probes `port` until the devices reached are `expected`, bounded by `within`; returns how
/// long it took, or panics with what was reached last.
fn reached_within(
    probe: impl Fn(u16) -> BTreeSet<[u8; 4]>,
    port: u16,
    expected: &[[u8; 4]],
    within: Duration,
) -> Duration {
    let (start, expected): (_, BTreeSet<[u8; 4]>) = (Instant::now(), expected.iter().copied().collect());
    loop {
        let reached = probe(port);
        if reached == expected {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "tcp/{port}: reached {reached:?}, expected {expected:?} within {within:?}");
    }
}

#[test]
fn manufacturer_and_model_remotes_follow_the_devices_in_xdp() {
    let lab = Lab::new(3);
    let server = MudServer::start(
        &lab,
        &[SocketAddrV4::new(LIGHTING, 443), SocketAddrV4::new(PLUGS, 443)],
        &[
            (
                "bulb.json",
                &mud_file(
                    BULB_URL,
                    &[
                        ace("siblings", r#"{ "same-manufacturer": [null] }"#, SAME_MANUFACTURER),
                        ace("plugs", r#"{ "manufacturer": "10.78.0.3" }"#, PLUG_MANUFACTURER),
                        ace("switches", &format!(r#"{{ "model": "{SWITCH_URL}" }}"#), SWITCH_MODEL),
                    ],
                ),
            ),
            ("switch.json", &mud_file(SWITCH_URL, &[cloud_ace()])),
            ("plug.json", &mud_file(PLUG_URL, &[cloud_ace()])),
        ],
    );
    let defaults = defaults("drop");
    let ctl = Controller::start(&lab, &[("lanes.toml", LANES), ("defaults.toml", &defaults)], &server.config());
    let gw_lan = lab.mac_of(&lab.gw, "lan0");
    let [bulb, switch, plug] = [&lab.devices[0], &lab.devices[1], &lab.devices[2]];
    // The devices have no IP stack: the gateway reaches them by static neighbour entries.
    for (ip, mac) in [(switch.ip, switch.mac), (SWITCH_MOVED, switch.mac), (plug.ip, plug.mac)] {
        let (ip, mac) = (Ipv4Addr::from(ip).to_string(), lab::format_mac(mac));
        lab::ip(&lab.gw, &["neigh", "replace", &ip, "lladdr", &mac, "dev", "lan0", "nud", "permanent"]);
    }
    let to_cloud = |device: &lab::Device, src_ip: [u8; 4]| Endpoints {
        src_mac: device.mac,
        dst_mac: gw_lan,
        src_ip,
        dst_ip: LIGHTING.octets(),
    };
    for (device, url) in [(bulb, BULB_URL), (switch, SWITCH_URL), (plug, PLUG_URL)] {
        let onboarding =
            DeviceAccess { access: Access::Enrolled, policy_id: gateway_ebpf::lane::ONBOARDING, class_id: 0 };
        ctl.maps().set_access(Mac(device.mac), onboarding).expect("device table");
        ctl.maps().set_device_ipv4(Mac(device.mac), Ipv4Addr::from(device.ip)).expect("device address");
        let tx = RawSocket::open(&device.ns, device.interface);
        tx.send(&packets::dhcp_request_with_mud_url(to_cloud(device, device.ip), 0x4d55_4401, url));
        mud_class(&ctl, Mac(device.mac), 0);
        // A connection of its own, so the inventory learns its address.
        tx.send(&packets::tcp_syn(to_cloud(device, device.ip), 40_000, 443));
    }
    let switch_class = ctl.maps().access(Mac(switch.mac)).expect("lookup").expect("enrolled").class_id;

    let bulb_tx = RawSocket::open(&bulb.ns, bulb.interface);
    // Frames the gateway forwards into the switch, towards the devices.
    let uplink = RawSocket::open(&lab.sw, "uplink");
    let from_bulb = Endpoints { src_mac: bulb.mac, dst_mac: gw_lan, src_ip: bulb.ip, dst_ip: switch.ip };
    let targets = [switch.ip, SWITCH_MOVED, plug.ip];
    let next_port = std::cell::Cell::new(41_000u16);
    let probe = |port: u16| {
        let base = next_port.get();
        next_port.set(base + targets.len() as u16);
        reachable(&uplink, &bulb_tx, from_bulb, &targets, port, base)
    };

    // The inventory has all three on their classes at their addresses.
    let first = reached_within(probe, SAME_MANUFACTURER, &[switch.ip], POLL * 5);
    println!("same-manufacturer open {first:?} after the last device's class");
    assert_eq!(probe(PLUG_MANUFACTURER), BTreeSet::from([plug.ip]), "manufacturer: the plug's authority only");
    assert_eq!(probe(SWITCH_MODEL), BTreeSet::from([switch.ip]), "model: the switch only");
    assert_eq!(probe(NOT_ALLOWED), BTreeSet::new(), "what the file does not name stays dropped");

    // The switch moves: its new address is reached, its old one no longer.
    let switch_tx = RawSocket::open(&switch.ns, switch.interface);
    switch_tx.send(&packets::tcp_syn(to_cloud(switch, SWITCH_MOVED), 40_001, 443));
    let moved = reached_within(probe, SAME_MANUFACTURER, &[SWITCH_MOVED], POLL + POLL + PROBE);
    println!("same-manufacturer followed the move in {moved:?}");
    assert_eq!(probe(SWITCH_MODEL), BTreeSet::from([SWITCH_MOVED]), "model follows the move");

    // The switch announces the plug maker's file: it is that manufacturer's and model's now.
    switch_tx.send(&packets::dhcp_request_with_mud_url(to_cloud(switch, SWITCH_MOVED), 0x4d55_4402, PLUG_URL));
    mud_class(&ctl, Mac(switch.mac), switch_class);
    let changed = reached_within(probe, PLUG_MANUFACTURER, &[SWITCH_MOVED, plug.ip], POLL + POLL + PROBE);
    println!("manufacturer followed the new MUD URL in {changed:?} after the class change");
    assert_eq!(probe(SAME_MANUFACTURER), BTreeSet::new(), "no other device of the bulb's manufacturer is left");
    assert_eq!(probe(SWITCH_MODEL), BTreeSet::new(), "no switch model is left");
}
