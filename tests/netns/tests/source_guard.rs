//! Source-address validation over the real datapath, in the lab: the controller binds
//! addresses from the ARP, DHCP, DHCPv6 and neighbour discovery it samples, and the LAN
//! program drops (`enforce`) or only counts (`log`) a device's frames from an address bound
//! to another, raising one `source_spoof` alert per device per interval.
//!
//! Three devices behind the lab's switch: the owner of an address, a spoofer, and a DHCP
//! (and DHCPv6) server trusted by the configuration. Traffic is DNS to the gateway, which the
//! onboarding lane lets through, so the only thing that can stop a frame is the source check.
//! The IPv6 cases turn IPv6 on in the namespaces they need: the devices' own kernels then
//! form link-local and SLAAC addresses and probe them (duplicate address detection), and
//! send to the gateway through neighbour discovery. Run as root through `cargo xtask test`.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6},
    time::{Duration, Instant},
};

use gateway_ebpf::{counter, reason};
use iotgw::device::Mac;
use netns_tests::{
    controller::Controller,
    lab::{self, GATEWAY_LAN_IP, Lab, format_mac},
    packets::{self, Endpoints},
    policies::{DefaultVerdicts, LANES},
    raw::RawSocket,
};

const OWNER: usize = 0;
const SPOOFER: usize = 1;
const DHCP_SERVER: usize = 2;
/// An address the DHCP server leases, first to the spoofer, then to the owner.
const LEASED: [u8; 4] = [10, 77, 5, 50];
/// Frames sent per check: few, so a test stays quick, enough to see them counted.
const FRAMES: u64 = 5;
/// How long a binding or an alert may take: a sample's trip through the ring buffer and
/// the fan-out, or one alert interval (1 s here) and the pipeline.
const WAIT: Duration = Duration::from_secs(10);
/// How long to collect frames that should (or should not) pass.
const SETTLE: Duration = Duration::from_millis(600);

/// The lab's IPv6 prefix (a unique local one) and the gateway's address in it.
const PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// An address the DHCPv6 server leases, first to the owner, then to the spoofer.
const LEASED_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x50);
/// How long a kernel may take to finish duplicate address detection (a random delay of up
/// to a second, then a second for an answer).
const DAD_WAIT: Duration = Duration::from_secs(10);

/// The lanes, with IPv6 beside IPv4: DNS to the gateway (and on the link), and ICMPv6 on the
/// link (neighbour discovery, MLD).
const LANES_V6: &str = r#"
[lanes.onboarding]
[[lanes.onboarding.allow]]
nets = ["255.255.255.255/32", "10.77.0.1/32"]
protocol = "udp"
ports = [53, 67, 68]
[[lanes.onboarding.allow]]
nets = ["fd77::1/128", "fe80::/10"]
protocol = "udp"
ports = [53]
[[lanes.onboarding.allow]]
nets = ["fe80::/10", "ff02::/16", "fd77::/64"]
protocol = "icmp"

[lanes.quarantine]
[[lanes.quarantine.allow]]
nets = ["10.77.0.1/32"]
protocol = "udp"
ports = [53]
"#;

struct Guarded {
    lab: Lab,
    ctl: Controller,
    gw_lan_mac: [u8; 6],
    gw_lan: RawSocket,
    next_port: u16,
}

fn start(mode: &str) -> Guarded {
    start_with(mode, LANES)
}

fn start_with(mode: &str, lanes: &str) -> Guarded {
    let lab = Lab::new(3);
    let server = format_mac(lab.devices[DHCP_SERVER].mac);
    let config = format!(
        "\n[source_guard]\nmode = \"{mode}\"\nalert_interval_secs = 1\ndhcp_servers = [\"{server}\"]\ndhcpv6_servers = [\"{server}\"]\n"
    );
    let defaults = DefaultVerdicts::LAB.toml();
    let ctl = Controller::start(&lab, &[("lanes.toml", lanes), ("defaults.toml", &defaults)], &config);
    let gw_lan_mac = lab.mac_of(&lab.gw, "lan0");
    let gw_lan = RawSocket::open(&lab.gw, "lan0");
    Guarded { lab, ctl, gw_lan_mac, gw_lan, next_port: 30_000 }
}

impl Guarded {
    fn mac(&self, device: usize) -> Mac {
        Mac(self.lab.devices[device].mac)
    }

    fn socket(&self, device: usize) -> RawSocket {
        let d = &self.lab.devices[device];
        RawSocket::open(&d.ns, d.interface)
    }

    /// Sends `FRAMES` DNS queries to the gateway from `device` with source address `from`
    /// (IPv4 or IPv6, to the gateway's address of that family), on a source port of their
    /// own; returns how many reached the gateway (passed XDP).
    fn dns_from(&mut self, device: usize, from: impl Into<IpAddr>) -> u64 {
        self.next_port += 1;
        let port = self.next_port;
        let src_mac = self.lab.devices[device].mac;
        let query = match from.into() {
            IpAddr::V4(from) => {
                let e = Endpoints { src_mac, dst_mac: self.gw_lan_mac, src_ip: from.octets(), dst_ip: GATEWAY_LAN_IP };
                packets::udp(e, port, packets::DNS_PORT, b"query")
            }
            IpAddr::V6(from) => {
                let (from, to) =
                    (SocketAddrV6::new(from, port, 0, 0), SocketAddrV6::new(GATEWAY_V6, packets::DNS_PORT, 0, 0));
                packets::udp6((src_mac, self.gw_lan_mac), from, to, b"query")
            }
        };
        let tx = self.socket(device);
        let arrived = std::thread::scope(|scope| {
            let sniffer = scope.spawn(|| {
                self.gw_lan.collect(SETTLE, |frame| {
                    packets::destination_port(frame) == Some(packets::DNS_PORT)
                        && packets::ports(frame).map(|p| p.0) == Some(port)
                })
            });
            std::thread::sleep(Duration::from_millis(100));
            for _ in 0..FRAMES {
                tx.send(&query);
            }
            sniffer.join().expect("sniffer")
        });
        arrived.len() as u64
    }

    /// `device` announces its own address (gratuitous ARP), as hosts do when they take one.
    fn announce(&self, device: usize) {
        let d = &self.lab.devices[device];
        self.socket(device).send(&packets::arp_announcement(d.mac, d.ip));
    }

    /// The trusted server leases `address` to `client`.
    fn lease(&self, address: [u8; 4], client: usize) {
        let server = &self.lab.devices[DHCP_SERVER];
        let e = Endpoints { src_mac: server.mac, dst_mac: packets::BROADCAST_MAC, src_ip: server.ip, dst_ip: [0; 4] };
        self.socket(DHCP_SERVER).send(&packets::dhcp_ack(e, 0x5a11, self.lab.devices[client].mac, address));
    }

    /// Waits until `address` is bound to `device` in the datapath's binding tables.
    fn wait_bound(&self, address: impl Into<IpAddr>, device: usize) {
        let (address, mac) = (address.into(), self.mac(device));
        let deadline = Instant::now() + WAIT;
        while !self.ctl.maps().source_bindings().contains(&(address, mac)) {
            assert!(Instant::now() < deadline, "{address} not bound to {mac} within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spoofed_drops(&self, device: usize) -> u64 {
        self.ctl.device_drops(self.mac(device), reason::SPOOFED_SOURCE)
    }

    /// The `source_spoof` alerts logged for `device` (the alerted one, not the address's holder
    /// the text names).
    fn alerts(&self, device: usize) -> usize {
        let alerted = format!("device=Some({})", self.mac(device));
        self.ctl.log_lines("detector=source_spoof").iter().filter(|line| line.contains(&alerted)).count()
    }

    /// Gives the gateway's LAN interface IPv6 and `GATEWAY_V6` (no probe: the lab's own).
    fn gateway_ipv6(&self) {
        lab::sysctl(&self.lab.gw, "net.ipv6.conf.lan0.disable_ipv6", "0");
        lab::ip(&self.lab.gw, &["-6", "addr", "add", &format!("{GATEWAY_V6}/64"), "dev", "lan0", "nodad"]);
    }

    /// Turns IPv6 on for `device`'s interface: its kernel forms its link-local address and
    /// probes it (duplicate address detection), and takes SLAAC prefixes from advertisements.
    fn enable_ipv6(&self, device: usize) -> Ipv6Addr {
        let d = &self.lab.devices[device];
        lab::sysctl(&d.ns, &format!("net.ipv6.conf.{}.disable_ipv6", d.interface), "0");
        packets::link_local(d.mac)
    }

    /// The flags `ip` shows for `address` on `device` (`tentative`, `dadfailed`), or None
    /// while the interface does not have it.
    fn address_state(&self, device: usize, address: Ipv6Addr) -> Option<String> {
        let d = &self.lab.devices[device];
        let shown = lab::ip(&d.ns, &["-6", "-o", "addr", "show", "dev", d.interface]);
        shown.lines().find(|line| line.contains(&format!("inet6 {address}/"))).map(str::to_owned)
    }

    /// Waits until `device` holds `address` past duplicate address detection.
    fn wait_usable(&self, device: usize, address: Ipv6Addr) {
        let deadline = Instant::now() + DAD_WAIT;
        loop {
            let state = self.address_state(device, address);
            if state.as_deref().is_some_and(|line| !line.contains("tentative") && !line.contains("dadfailed")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{address} not usable on device {device} within {DAD_WAIT:?}: {state:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether a datagram `device`'s own stack sends from its `from` to a socket of the
    /// gateway's at `to` (port 53) arrives: both kernels resolve each other by neighbour
    /// discovery first (the device's solicitation from `from`, its advertisement answering
    /// the gateway's), all through the LAN program. A few tries, each bounded.
    fn stack_reaches_gateway(&self, device: usize, from: Ipv6Addr, to: Ipv6Addr) -> bool {
        let d = &self.lab.devices[device];
        let index = |ns: &str, name: &str| {
            lab::in_namespace(ns, || {
                let name = std::ffi::CString::new(name).expect("interface name");
                // SAFETY: a valid C string; 0 means no such interface.
                unsafe { libc::if_nametoindex(name.as_ptr()) }
            })
        };
        let link_local = to.is_unicast_link_local();
        let (gateway_scope, device_scope) =
            if link_local { (index(&self.lab.gw, "lan0"), index(&d.ns, d.interface)) } else { (0, 0) };
        let listener = lab::in_namespace(&self.lab.gw, || {
            std::net::UdpSocket::bind(SocketAddrV6::new(to, packets::DNS_PORT, 0, gateway_scope))
        })
        .expect("gateway socket");
        listener.set_read_timeout(Some(Duration::from_millis(700))).expect("timeout");
        let sender =
            lab::in_namespace(&d.ns, || std::net::UdpSocket::bind(SocketAddrV6::new(from, 0, 0, device_scope)))
                .expect("device socket");
        let mut buffer = [0u8; 64];
        for _ in 0..5 {
            sender.send_to(b"stack", SocketAddrV6::new(to, packets::DNS_PORT, 0, device_scope)).expect("send");
            if let Ok((_, source)) = listener.recv_from(&mut buffer) {
                return source.ip() == IpAddr::V6(from);
            }
        }
        false
    }

    fn wait_alert(&self, device: usize) {
        let deadline = Instant::now() + WAIT;
        while self.alerts(device) == 0 {
            assert!(Instant::now() < deadline, "no source_spoof alert for device {device} within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn enforce_drops_a_device_sending_with_another_devices_address_and_alerts_once_per_interval() {
    let mut s = start("enforce");
    let owner_ip = s.lab.devices[OWNER].ip;
    s.announce(OWNER);
    s.wait_bound(owner_ip, OWNER);

    assert_eq!(s.dns_from(SPOOFER, owner_ip), 0, "the spoofer's frames with the owner's address are dropped");
    assert_eq!(s.spoofed_drops(SPOOFER), FRAMES, "each one counted against the spoofer");
    assert_eq!(s.ctl.maps().drops_by_reason()[reason::SPOOFED_SOURCE as usize], FRAMES);
    assert_eq!(s.dns_from(OWNER, owner_ip), FRAMES, "the rightful owner still passes");
    assert_eq!(s.spoofed_drops(OWNER), 0);
    let spoofer_ip = s.lab.devices[SPOOFER].ip;
    assert_eq!(s.dns_from(SPOOFER, spoofer_ip), FRAMES, "an address nobody holds passes (learn, then enforce)");

    s.wait_alert(SPOOFER);
    // More spoofing within the next intervals: one alert per interval at most, never one per frame.
    let started = Instant::now();
    for _ in 0..3 {
        s.dns_from(SPOOFER, owner_ip);
    }
    std::thread::sleep(Duration::from_millis(1_200));
    let intervals = started.elapsed().as_secs() + 2;
    let alerts = s.alerts(SPOOFER);
    assert!((2..=intervals as usize).contains(&alerts), "{alerts} alerts in {intervals} intervals");
    assert_eq!(s.alerts(OWNER), 0);
    let line = s.ctl.log_lines("detector=source_spoof").remove(0);
    assert!(line.contains(&format!("from {}", Ipv4Addr::from(owner_ip))), "{line}");
}

#[test]
fn a_dhcp_lease_binds_its_address_and_a_lease_moved_to_another_device_moves_the_binding() {
    let mut s = start("enforce");
    s.lease(LEASED, SPOOFER);
    s.wait_bound(LEASED, SPOOFER);
    assert_eq!(s.dns_from(SPOOFER, LEASED), FRAMES, "after DHCP, the device passes from its lease");
    assert_eq!(s.dns_from(OWNER, LEASED), 0, "another device may not use it");

    // The server gives the address to the other device (the first one's lease ended).
    s.lease(LEASED, OWNER);
    s.wait_bound(LEASED, OWNER);
    assert_eq!(s.dns_from(OWNER, LEASED), FRAMES, "the new holder passes");
    assert_eq!(s.dns_from(SPOOFER, LEASED), 0, "the old holder no longer does");
    // A claim does not take a leased address back.
    let spoofer = &s.lab.devices[SPOOFER];
    s.socket(SPOOFER).send(&packets::arp_announcement(spoofer.mac, LEASED));
    std::thread::sleep(SETTLE);
    assert_eq!(s.dns_from(SPOOFER, LEASED), 0, "an ARP claim on a leased address is refused");
}

#[test]
fn log_mode_passes_another_devices_address_but_counts_and_alerts() {
    let mut s = start("log");
    let owner_ip = s.lab.devices[OWNER].ip;
    s.announce(OWNER);
    s.wait_bound(owner_ip, OWNER);
    let passed_before = s.ctl.maps().global_counter(counter::SPOOFED_SOURCE_PASSED);
    assert_eq!(s.dns_from(SPOOFER, owner_ip), FRAMES, "log mode drops nothing");
    assert_eq!(s.ctl.maps().global_counter(counter::SPOOFED_SOURCE_PASSED) - passed_before, FRAMES);
    assert_eq!(s.spoofed_drops(SPOOFER), 0, "not a drop");
    s.wait_alert(SPOOFER);
}

#[test]
fn ipv6_enforce_drops_another_devices_slaac_and_link_local_address_while_dad_and_neighbour_discovery_work() {
    let mut s = start_with("enforce", LANES_V6);
    s.gateway_ipv6();
    // The owner's kernel probes its link-local address, then (after the gateway's advertisement)
    // its SLAAC address: each probe binds the address to it, first come first served.
    let owner_link_local = s.enable_ipv6(OWNER);
    s.wait_bound(owner_link_local, OWNER);
    let owner_slaac = packets::slaac(PREFIX, s.lab.devices[OWNER].mac);
    s.gw_lan.send(&packets::router_advertisement(s.gw_lan_mac, PREFIX));
    s.wait_bound(owner_slaac, OWNER);
    s.wait_usable(OWNER, owner_slaac);

    assert_eq!(s.dns_from(SPOOFER, owner_slaac), 0, "the spoofer's frames from the owner's SLAAC address are dropped");
    assert_eq!(s.dns_from(SPOOFER, owner_link_local), 0, "and from its link-local address");
    assert_eq!(s.spoofed_drops(SPOOFER), 2 * FRAMES, "each one counted against the spoofer");
    assert_eq!(s.dns_from(OWNER, owner_slaac), FRAMES, "the owner passes from its SLAAC address");
    assert_eq!(s.dns_from(OWNER, owner_link_local), FRAMES, "and from its link-local address");
    let unbound = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x99);
    assert_eq!(s.dns_from(SPOOFER, unbound), FRAMES, "an address nobody holds passes (learn, then enforce)");
    // The owner's own stack: neighbour discovery from its addresses, both ways, then data.
    assert!(
        s.stack_reaches_gateway(OWNER, owner_slaac, GATEWAY_V6),
        "the owner's stack reaches the gateway from its SLAAC address"
    );
    s.wait_usable(OWNER, owner_link_local);
    let gateway_link_local = packets::link_local(s.gw_lan_mac);
    assert!(s.stack_reaches_gateway(OWNER, owner_link_local, gateway_link_local), "and from its link-local address");
    assert_eq!(s.spoofed_drops(OWNER), 0);

    // Duplicate address detection from `::` passes: the spoofer's kernel probes the gateway's
    // address, the gateway answers, and the spoofer gives the address up.
    s.enable_ipv6(SPOOFER);
    let spoofer = &s.lab.devices[SPOOFER];
    lab::ip(&spoofer.ns, &["-6", "addr", "add", &format!("{GATEWAY_V6}/64"), "dev", spoofer.interface]);
    let deadline = Instant::now() + DAD_WAIT;
    while !s.address_state(SPOOFER, GATEWAY_V6).is_some_and(|line| line.contains("dadfailed")) {
        assert!(
            Instant::now() < deadline,
            "the gateway never answered the probe: {:?}",
            s.address_state(SPOOFER, GATEWAY_V6)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A probe for an address another device holds binds nothing: the owner keeps its own.
    s.socket(SPOOFER).send(&packets::neighbor_solicitation(
        s.lab.devices[SPOOFER].mac,
        Ipv6Addr::UNSPECIFIED,
        owner_slaac,
    ));
    std::thread::sleep(SETTLE);
    assert!(s.ctl.maps().source_bindings().contains(&(owner_slaac.into(), s.mac(OWNER))));
    assert_eq!(s.dns_from(SPOOFER, owner_slaac), 0, "still the owner's");

    s.wait_alert(SPOOFER);
    let line = s.ctl.log_lines("detector=source_spoof").remove(0);
    assert!(
        line.contains(&format!("from {owner_slaac}")) || line.contains(&format!("from {owner_link_local}")),
        "{line}"
    );
}

#[test]
fn a_dhcpv6_reply_binds_its_address_to_the_client_it_is_sent_to_and_a_new_lease_moves_it() {
    let mut s = start_with("enforce", LANES_V6);
    let owner_link_local = s.enable_ipv6(OWNER);
    let spoofer_link_local = s.enable_ipv6(SPOOFER);
    s.wait_bound(owner_link_local, OWNER);
    s.wait_bound(spoofer_link_local, SPOOFER);
    let server = s.lab.devices[DHCP_SERVER].mac;
    // Broadcast, so the lab's switch floods it past the gateway as a switch floods a frame to
    // a MAC it has not learnt; the client is named by the address it is sent to.
    let reply = |to| packets::dhcpv6_reply(server, packets::BROADCAST_MAC, to, [0x5a, 0x11, 0x06], LEASED_V6);
    s.socket(DHCP_SERVER).send(&reply(owner_link_local));
    s.wait_bound(LEASED_V6, OWNER);
    assert_eq!(s.dns_from(OWNER, LEASED_V6), FRAMES, "after DHCPv6, the device passes from its lease");
    assert_eq!(s.dns_from(SPOOFER, LEASED_V6), 0, "another device may not use it");

    s.socket(DHCP_SERVER).send(&reply(spoofer_link_local));
    s.wait_bound(LEASED_V6, SPOOFER);
    assert_eq!(s.dns_from(SPOOFER, LEASED_V6), FRAMES, "the new holder passes");
    assert_eq!(s.dns_from(OWNER, LEASED_V6), 0, "the old holder no longer does");
    // A probe does not take a leased address back.
    s.socket(OWNER).send(&packets::neighbor_solicitation(s.lab.devices[OWNER].mac, Ipv6Addr::UNSPECIFIED, LEASED_V6));
    std::thread::sleep(SETTLE);
    assert_eq!(s.dns_from(OWNER, LEASED_V6), 0, "a duplicate address probe for a leased address is refused");
}

#[test]
fn ipv6_log_mode_passes_another_devices_link_local_address_but_counts_and_alerts() {
    let mut s = start_with("log", LANES_V6);
    let owner_link_local = s.enable_ipv6(OWNER);
    s.wait_bound(owner_link_local, OWNER);
    let passed_before = s.ctl.maps().global_counter(counter::SPOOFED_SOURCE_PASSED);
    assert_eq!(s.dns_from(SPOOFER, owner_link_local), FRAMES, "log mode drops nothing");
    assert_eq!(s.ctl.maps().global_counter(counter::SPOOFED_SOURCE_PASSED) - passed_before, FRAMES);
    assert_eq!(s.spoofed_drops(SPOOFER), 0, "not a drop");
    s.wait_alert(SPOOFER);
    let line = s.ctl.log_lines("detector=source_spoof").remove(0);
    assert!(line.contains(&format!("from {owner_link_local}")), "{line}");
}
