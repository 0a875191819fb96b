//! Source-address validation over the real datapath, in the lab: the controller binds
//! addresses from the ARP and DHCP it samples, and the LAN program drops (`enforce`) or only
//! counts (`log`) a device's frames from an address bound to another, raising one
//! `source_spoof` alert per device per interval.
//!
//! Three devices behind the lab's switch: the owner of an address, a spoofer, and a DHCP
//! server trusted by the configuration. Traffic is DNS to the gateway, which the onboarding
//! lane lets through, so the only thing that can stop a frame is the source check. Run as
//! root through `cargo xtask test`.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use gateway_ebpf::{counter, reason};
use iotgw::device::Mac;
use netns_tests::{
    controller::Controller,
    lab::{GATEWAY_LAN_IP, Lab, format_mac},
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
const WAIT: Duration = Duration::from_secs(5);
/// How long to collect frames that should (or should not) pass.
const SETTLE: Duration = Duration::from_millis(600);

struct Guarded {
    lab: Lab,
    ctl: Controller,
    gw_lan_mac: [u8; 6],
    gw_lan: RawSocket,
    next_port: u16,
}

fn start(mode: &str) -> Guarded {
    let lab = Lab::new(3);
    let server = format_mac(lab.devices[DHCP_SERVER].mac);
    let config =
        format!("\n[source_guard]\nmode = \"{mode}\"\nalert_interval_secs = 1\ndhcp_servers = [\"{server}\"]\n");
    let defaults = DefaultVerdicts::LAB.toml();
    let ctl = Controller::start(&lab, &[("lanes.toml", LANES), ("defaults.toml", &defaults)], &config);
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

    /// Sends `FRAMES` DNS queries to the gateway from `device` with source address `from`, on
    /// a source port of their own; returns how many reached the gateway (passed XDP).
    fn dns_from(&mut self, device: usize, from: [u8; 4]) -> u64 {
        self.next_port += 1;
        let port = self.next_port;
        let e = Endpoints {
            src_mac: self.lab.devices[device].mac,
            dst_mac: self.gw_lan_mac,
            src_ip: from,
            dst_ip: GATEWAY_LAN_IP,
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
                tx.send(&packets::udp(e, port, packets::DNS_PORT, b"query"));
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

    /// Waits until `address` is bound to `device` in the datapath's binding table.
    fn wait_bound(&self, address: [u8; 4], device: usize) {
        let (address, mac) = (Ipv4Addr::from(address), self.mac(device));
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
