//! MUD at run time over the real datapath (issue 17): a device announces its MUD URL through
//! the gateway's XDP, in a DHCPREQUEST (option 161), a DHCPv6 SOLICIT (option 112) or an LLDPDU
//! (the MUD TLV); the gateway fetches the file and its detached signature over HTTPS from a
//! server in the lab's upstream namespace (reachable only inside the lab), verifies them, and
//! puts the device on the MUD file's class, whose rules XDP then enforces; the inventory and
//! the audit record which file, signed by whom, came over which channel. The server is
//! `netns_tests::mud::MudServer`.
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
    lab::Lab,
    mud::{self, MudServer},
    packets::{self, Endpoints},
    policies::{LANES, defaults},
    raw::RawSocket,
};

/// What the MUD file allows: HTTPS to the upstream host.
const CLOUD: [u8; 4] = [10, 78, 0, 2];
/// The first MUD class id (`policy::store::GENERATED_CLASS_IDS`).
const MUD_CLASS: u16 = 0xc000;

const MUD_FILE: &str = r#"{
  "ietf-mud:mud": {
    "mud-version": 1,
    "mud-url": "https://10.78.0.2:8443/bulb.json",
    "mud-signature": "https://10.78.0.2:8443/bulb.p7s",
    "last-update": "2026-12-01T10:00:00+00:00",
    "cache-validity": 48,
    "is-supported": true,
    "systeminfo": "iotgw lab bulb",
    "from-device-policy": { "access-lists": { "access-list": [ { "name": "bulb-frdev" } ] } }
  },
  "ietf-access-control-list:acls": { "acl": [ {
    "name": "bulb-frdev",
    "type": "ipv4-acl-type",
    "aces": { "ace": [ {
      "name": "cloud",
      "matches": {
        "ipv4": { "protocol": 6, "destination-ipv4-network": "10.78.0.2/32" },
        "tcp": { "destination-port": { "operator": "eq", "port": 443 } }
      },
      "actions": { "forwarding": "accept" }
    } ] }
  } ] }
}"#;

/// SYNs from the device to `CLOUD:port` that reach the upstream namespace.
fn syns_upstream(up: &RawSocket, tx: &RawSocket, e: Endpoints, port: u16, base: u16) -> usize {
    std::thread::scope(|scope| {
        let sniffer = scope.spawn(|| {
            up.collect(Duration::from_millis(600), |f| packets::tcp(f).is_some_and(|t| t.destination_port() == port))
                .len()
        });
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..3 {
            tx.send(&packets::tcp_syn(e, base + n, port));
        }
        sniffer.join().expect("sniffer")
    })
}

/// The token the tests read the inventory and the audit with.
const VIEWER_TOKEN: &str = "lab-mud-viewer-51e2";
const URL: &str = "https://10.78.0.2:8443/bulb.json";

/// A device announces `URL` in the frame `announcement` makes from its MAC and its way to the
/// cloud; it gets the file's class, XDP enforces the file, and the inventory and audit say
/// which file, signed by whom, came over which `channel`.
fn announced_mud_url_gets_its_class(channel: &str, announcement: impl Fn([u8; 6], Endpoints) -> Vec<u8>) {
    let lab = Lab::new(1);
    let server = MudServer::start(&lab, &[mud::upstream(8443)], &[("bulb.json", MUD_FILE)]);
    let defaults = defaults("drop");
    let config = format!("{}\n[api]\ntokens = [{}]\n", server.config(), token_entry("vera", "viewer", VIEWER_TOKEN));
    let mut ctl = Controller::start(&lab, &[("lanes.toml", LANES), ("defaults.toml", &defaults)], &config);
    let device = &lab.devices[0];
    let mac = Mac(device.mac);
    // Enrolled before any class is known, as the identity service does.
    let onboarding = DeviceAccess { access: Access::Enrolled, policy_id: gateway_ebpf::lane::ONBOARDING, class_id: 0 };
    ctl.maps().set_access(mac, onboarding).expect("device table");
    ctl.maps().set_device_ipv4(mac, Ipv4Addr::from(device.ip)).expect("device address");
    let gw_lan = lab.mac_of(&lab.gw, "lan0");
    let tx = RawSocket::open(&device.ns, device.interface);
    let up = RawSocket::open(&lab.up, "eth0");
    let to_cloud = Endpoints { src_mac: device.mac, dst_mac: gw_lan, src_ip: device.ip, dst_ip: CLOUD };
    assert_eq!(syns_upstream(&up, &tx, to_cloud, 443, 30_000), 0, "before its MUD class the device reaches nothing");

    tx.send(&announcement(device.mac, to_cloud));
    let expected = (gateway_ebpf::lane::FIRST_CLASS_POLICY + u32::from(MUD_CLASS), MUD_CLASS);
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_secs(15) {
        seen = ctl.maps().access(mac).expect("lookup").map(|a| (a.policy_id, a.class_id));
        if seen == Some(expected) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seen, Some(expected), "the device is on its MUD class");
    println!("MUD class applied {:?} after the {channel} announcement", start.elapsed());
    ctl.wait_for_log("MUD file applied", Duration::from_secs(1));

    assert_eq!(syns_upstream(&up, &tx, to_cloud, 443, 31_000), 3, "the MUD file's HTTPS to the cloud passes");
    assert_eq!(syns_upstream(&up, &tx, to_cloud, 80, 32_000), 0, "what the MUD file does not allow is dropped");

    let api = ApiClient::new(&lab.gw);
    let device = api.get(&format!("/api/v1/devices/{mac}"), Some(VIEWER_TOKEN)).json();
    let record = &device["mud"];
    assert_eq!(record["channel"], channel, "{record:#}");
    assert_eq!(record["outcome"], "applied", "{record:#}");
    assert_eq!(record["announced_url"], URL);
    let applied = &record["applied"];
    assert_eq!(applied["url"], URL);
    assert_eq!(applied["class"], "mud-49152");
    assert_eq!(applied["sha256"], server.sha256("bulb.json"), "the file served, byte for byte");
    assert!(applied["signer"].as_str().is_some_and(|s| s.contains("CN=signer")), "{applied:#}");
    let audit = api.get(&format!("/api/v1/audit?device={mac}&actor=mud"), Some(VIEWER_TOKEN)).json();
    let actions: Vec<&str> = audit.as_array().expect("a list").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["mud_applied"], "{audit:#}");
}

#[test]
fn a_device_announcing_a_signed_mud_url_in_dhcpv4_gets_its_class_and_xdp_enforces_it() {
    announced_mud_url_gets_its_class("dhcpv4", |_, to_cloud| {
        packets::dhcp_request_with_mud_url(to_cloud, 0x4d55_4400, URL)
    });
}

#[test]
fn a_device_announcing_a_signed_mud_url_in_dhcpv6_gets_its_class_and_xdp_enforces_it() {
    announced_mud_url_gets_its_class("dhcpv6", |mac, _| {
        packets::dhcpv6_solicit_with_mud_url(mac, [0x4d, 0x55, 0x06], URL)
    });
}

#[test]
fn a_device_announcing_a_signed_mud_url_in_lldp_gets_its_class_and_xdp_enforces_it() {
    announced_mud_url_gets_its_class("lldp", |mac, _| packets::lldp_with_mud_url(mac, URL));
}
