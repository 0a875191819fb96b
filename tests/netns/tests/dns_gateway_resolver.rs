//! DNS-name rules when the devices resolve through a resolver on the gateway itself (issue
//! 17), the commonest home and branch set-up: the query reaches the gateway's LAN address,
//! the answer leaves by the LAN interface's egress, which only the TC observer sees. The
//! resolver here is a UDP socket on the gateway's LAN address in the gateway's namespace,
//! answering one query; another device forges answers on the LAN.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket},
    time::Duration,
};

use aya::programs::{SchedClassifier, TcAttachType};
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use netns_tests::{
    api::{ApiClient, metric},
    controller::Controller,
    lab::{self, GATEWAY_LAN_IP, Lab},
    packets::{self, DNS_PORT, Endpoints},
    policies::{LANES, defaults},
    raw::{RawSocket, reachable},
};

/// A camera reaching its upload service by name only (its resolver, the gateway, is allowed
/// by the onboarding lane), and a forger allowed to send UDP to the other devices, so that
/// the gateway routes its forgery out of the LAN interface.
const CLASSES: &str = r#"
[[class]]
name = "camera"
id = 14
[[class.allow]]
names = ["upload.camera.example.com"]
protocol = "tcp"
ports = [443]
[[class.allow]]
nets = ["fd77::1/128"]
protocol = "udp"
ports = [53]

[[class]]
name = "forger"
id = 15
[[class.allow]]
nets = ["10.77.0.0/16"]
protocol = "udp"
"#;

const NAME: &str = "upload.camera.example.com";
const HTTPS: u16 = 443;
const DEVICE_PORT: u16 = 5_401;
const QUERY_ID: u16 = 0x4101;
/// Where the resolver's answer points (the upstream namespace's own address).
const RESOLVED: [u8; 4] = lab::UPSTREAM_IP;
/// Held upstream, never in an answer.
const NOT_RESOLVED: [u8; 4] = [10, 78, 0, 71];
/// Where the forger's answers point.
const FORGED: [u8; 4] = [10, 78, 0, 72];

/// The gateway's IPv6 LAN address, and the camera's.
const GATEWAY_LAN_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const CAMERA_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10);

/// The gateway's own resolver: a UDP socket on its LAN address `address`, port 53.
fn resolver_socket(gateway_ns: &str, address: IpAddr) -> UdpSocket {
    let socket = lab::in_namespace(gateway_ns, || {
        UdpSocket::bind((address, DNS_PORT)).expect("bind the resolver on the LAN address")
    });
    socket.set_read_timeout(Some(Duration::from_secs(3))).expect("read timeout");
    socket
}

/// Enrols `mac` in class `class_id`.
fn enrol(ctl: &Controller, mac: [u8; 6], class_id: u16) {
    let policy_id = gateway_ebpf::lane::FIRST_CLASS_POLICY + u32::from(class_id);
    ctl.maps()
        .set_access(Mac(mac), DeviceAccess { access: Access::Enrolled, policy_id, class_id })
        .expect("device table");
}

#[test]
fn answers_of_the_gateways_own_resolver_open_the_name_and_lan_forgeries_open_nothing() {
    let lab = Lab::new(2);
    let config = "[policy.dns]\nttl_floor_secs = 1\n\n[api]\nmetrics_public = true\n";
    let mut ctl = Controller::start(
        &lab,
        &[("lanes.toml", LANES), ("classes.toml", CLASSES), ("defaults.toml", &defaults("drop"))],
        config,
    );
    ctl.wait_for_log("LAN egress observer attached", Duration::from_secs(5));
    let (camera, forger) = (&lab.devices[0], &lab.devices[1]);
    enrol(&ctl, camera.mac, 14);
    enrol(&ctl, forger.mac, 15);
    for addr in [NOT_RESOLVED, FORGED] {
        lab::ip(&lab.up, &["addr", "add", &format!("{}/24", Ipv4Addr::from(addr)), "dev", "eth0"]);
    }
    // The devices have no IP stack: the gateway finds them by static neighbour entries.
    for device in [camera, forger] {
        let (ip, mac) = (Ipv4Addr::from(device.ip).to_string(), lab::format_mac(device.mac));
        lab::ip(&lab.gw, &["neigh", "replace", &ip, "lladdr", &mac, "dev", "lan0", "nud", "permanent"]);
    }
    let resolver = resolver_socket(&lab.gw, IpAddr::from(GATEWAY_LAN_IP));
    let gw_lan = lab.mac_of(&lab.gw, "lan0");
    let tx = RawSocket::open(&camera.ns, camera.interface);
    let forger_tx = RawSocket::open(&forger.ns, forger.interface);
    let up = RawSocket::open(&lab.up, "eth0");
    let to_gateway = Endpoints { src_mac: camera.mac, dst_mac: gw_lan, src_ip: camera.ip, dst_ip: GATEWAY_LAN_IP };
    let targets = [RESOLVED, NOT_RESOLVED, FORGED];
    assert!(reachable(&up, &tx, to_gateway, &targets, HTTPS, 30_000).is_empty(), "nothing open before any answer");

    let received = std::thread::scope(|scope| {
        let sniffer = scope.spawn(|| {
            tx.collect(Duration::from_millis(1_500), |f| {
                packets::ports(f).is_some_and(|(src, dst)| (src, dst) == (DNS_PORT, DEVICE_PORT))
            })
        });
        std::thread::sleep(Duration::from_millis(100));
        tx.send(&packets::dns_query(to_gateway, DEVICE_PORT, QUERY_ID, NAME));
        let mut query = [0u8; 512];
        let (len, asker) = resolver.recv_from(&mut query).expect("the query reaches the gateway's resolver");
        assert_eq!(asker, SocketAddr::from((camera.ip, DEVICE_PORT)));
        let asked = hickory_proto::op::Message::from_vec(&query[..len]).expect("a DNS query");
        assert_eq!(asked.id(), QUERY_ID);

        // The forger answers first, as the gateway: straight to the camera over the switch,
        // and to the gateway's MAC (a spoofed source of the gateway's own: the gateway
        // drops it, its LAN program saw it as the forger's); then as itself, routed by the
        // gateway out of the LAN interface to the camera, so it passes the egress observer,
        // which does not sample what the gateway forwards.
        let forged = packets::dns_answer_message(QUERY_ID, NAME, FORGED, 300);
        let as_gateway =
            Endpoints { src_mac: forger.mac, dst_mac: camera.mac, src_ip: GATEWAY_LAN_IP, dst_ip: camera.ip };
        forger_tx.send(&packets::udp(as_gateway, DNS_PORT, DEVICE_PORT, &forged));
        forger_tx.send(&packets::udp(Endpoints { dst_mac: gw_lan, ..as_gateway }, DNS_PORT, DEVICE_PORT, &forged));
        let routed = Endpoints { dst_mac: gw_lan, src_ip: forger.ip, ..as_gateway };
        forger_tx.send(&packets::udp(routed, DNS_PORT, DEVICE_PORT, &forged));
        std::thread::sleep(Duration::from_millis(100));

        let answer = packets::dns_answer_message(QUERY_ID, NAME, RESOLVED, 300);
        resolver.send_to(&answer, asker).expect("the resolver answers");
        sniffer.join().expect("sniffer")
    });
    // (sender MAC, source address) of the answers the camera received.
    let senders: Vec<([u8; 6], [u8; 4])> =
        received.iter().filter_map(|f| Some((f.get(6..12)?.try_into().ok()?, packets::ipv4_source(f)?))).collect();
    assert!(senders.contains(&(gw_lan, GATEWAY_LAN_IP)), "the observer passes the resolver's answer on: {senders:?}");
    assert!(senders.contains(&(gw_lan, forger.ip)), "the routed forgery left by the LAN interface: {senders:?}");

    let mut open = Default::default();
    for attempt in 0..5 {
        open = reachable(&up, &tx, to_gateway, &targets, HTTPS, 31_000 + attempt * 10);
        if open.contains(&RESOLVED) {
            break;
        }
    }
    assert!(open.contains(&RESOLVED), "the resolver's answer opens the name's address: {open:?}");
    assert!(!open.contains(&NOT_RESOLVED), "an address the name did not resolve to stays closed");
    assert!(!open.contains(&FORGED), "a forged answer opens nothing");

    let scrape = ApiClient::new(&lab.gw).get("/metrics", None).body;
    let series = |name: &str, label: &str| metric(&scrape, &format!("iotgw_dns_answers_{name}_total{{{label}}}"));
    assert_eq!(series("matched", "source=\"gateway_resolver\""), Some(1.0), "{scrape}");
    assert_eq!(series("matched", "source=\"upstream\""), Some(0.0));
    // The routed forgery would be refused as from the wrong resolver had it been sampled.
    for reason in ["wrong_resolver", "duplicate", "unsolicited"] {
        assert_eq!(series("refused", &format!("reason=\"{reason}\"")), Some(0.0), "{reason}");
    }

    // The observer's tcx link is pinned like the XDP links: it outlives a killed controller,
    // the next one swaps its program in, and detaching removes it.
    let observers = || {
        lab::in_namespace(&lab.gw, || {
            SchedClassifier::query_tcx("lan0", TcAttachType::Egress).expect("tcx programs on lan0's egress").1.len()
        })
    };
    assert_eq!(observers(), 1);
    ctl.kill9();
    assert_eq!(observers(), 1, "the pinned link keeps observing without the controller");
    ctl.spawn();
    ctl.wait_for_log("LAN egress observer attached", Duration::from_secs(5));
    let attached = ctl.log_lines("LAN egress observer attached");
    assert!(attached.iter().any(|line| line.contains("replaced=true")), "{attached:?}");
    assert_eq!(observers(), 1, "swapped in, not added");
    drop(ctl);
    assert_eq!(observers(), 0, "detaching removes the observer");
}

#[test]
fn answers_of_the_gateways_own_resolver_over_ipv6_open_the_name() {
    let lab = Lab::new(1);
    let camera = &lab.devices[0];
    // IPv6 on the gateway's LAN side only, before the controller reads its addresses.
    lab::sysctl(&lab.gw, "net.ipv6.conf.lan0.disable_ipv6", "0");
    lab::ip(&lab.gw, &["-6", "addr", "add", &format!("{GATEWAY_LAN_IPV6}/64"), "dev", "lan0", "nodad"]);
    let mac = lab::format_mac(camera.mac);
    let neighbour = CAMERA_IPV6.to_string();
    lab::ip(&lab.gw, &["-6", "neigh", "replace", &neighbour, "lladdr", &mac, "dev", "lan0", "nud", "permanent"]);
    let config = "[policy.dns]\nttl_floor_secs = 1\n\n[api]\nmetrics_public = true\n";
    let files = [("lanes.toml", LANES), ("classes.toml", CLASSES), ("defaults.toml", &defaults("drop"))];
    let ctl = Controller::start(&lab, &files, config);
    enrol(&ctl, camera.mac, 14);
    lab::ip(&lab.up, &["addr", "add", &format!("{}/24", Ipv4Addr::from(NOT_RESOLVED)), "dev", "eth0"]);
    let resolver = resolver_socket(&lab.gw, IpAddr::V6(GATEWAY_LAN_IPV6));
    let gw_lan = lab.mac_of(&lab.gw, "lan0");
    let tx = RawSocket::open(&camera.ns, camera.interface);
    let up = RawSocket::open(&lab.up, "eth0");
    let to_gateway = Endpoints { src_mac: camera.mac, dst_mac: gw_lan, src_ip: camera.ip, dst_ip: GATEWAY_LAN_IP };
    let targets = [RESOLVED, NOT_RESOLVED];
    assert!(reachable(&up, &tx, to_gateway, &targets, HTTPS, 30_000).is_empty(), "nothing open before any answer");

    // An A query over IPv6: the transport's family is not the record's.
    let (device, gateway) =
        (SocketAddrV6::new(CAMERA_IPV6, DEVICE_PORT, 0, 0), SocketAddrV6::new(GATEWAY_LAN_IPV6, DNS_PORT, 0, 0));
    let query = packets::dns_query_message(QUERY_ID, NAME);
    tx.send(&packets::udp6((camera.mac, gw_lan), device, gateway, &query));
    let mut received = [0u8; 512];
    let (_, asker) = resolver.recv_from(&mut received).expect("the query reaches the gateway's resolver");
    assert_eq!(asker, SocketAddr::V6(device));
    resolver.send_to(&packets::dns_answer_message(QUERY_ID, NAME, RESOLVED, 300), asker).expect("the answer");

    let mut open = Default::default();
    for attempt in 0..5 {
        open = reachable(&up, &tx, to_gateway, &targets, HTTPS, 31_000 + attempt * 10);
        if open.contains(&RESOLVED) {
            break;
        }
    }
    assert!(open.contains(&RESOLVED), "the answer over IPv6 opens the name's address: {open:?}");
    assert!(!open.contains(&NOT_RESOLVED), "an address the name did not resolve to stays closed");
    let scrape = ApiClient::new(&lab.gw).get("/metrics", None).body;
    let matched = metric(&scrape, "iotgw_dns_answers_matched_total{source=\"gateway_resolver\"}");
    assert_eq!(matched, Some(1.0), "{scrape}");
}
