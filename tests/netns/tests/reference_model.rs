//! The LAN XDP program against a reference model of its decisions. (One file past 600 lines:
//! the model reads as one contract, next to the frames that exercise it.)
//!
//! `Model` below is the datapath's contract in plain Rust, written from the module docs of
//! gateway-ebpf (`parse` → `classify` → `source_guard` → `policy` → `verdict`), not from its
//! code: how a frame parses (up to two VLAN tags, IPv4 options by IHL, up to four IPv6
//! extension headers, TCP/UDP/ICMP headers), whether an IPv4 or IPv6 source is bound to
//! another device (dropped under `enforce`, the million-frame run; counted only under `log`,
//! the other; link-local addresses bound like the others, `::` never), which lane or class policy applies to the sending device, the
//! longest-prefix rule and its port matches (the remote's port, the device's port and who
//! opened: a TCP flow's SYN or SYN-ACK tells, its later packets keep it), and what each
//! verdict does. A seeded generator
//! makes 1,000,000 frames, valid and malformed (VLAN stacks, IPv6 extension chains, IPv4
//! options and fragments, random byte flips, truncations at every byte from the Ethernet
//! header on of some frames; the kernel's test run refuses shorter input), and
//! runs each through the real LAN program with BPF_PROG_TEST_RUN and through the model: the
//! XDP action must be identical for every frame, and the counters (per device: frames, bytes,
//! per protocol, drops by reason, source-address violations; globally: frames, drops by
//! reason, redirects, spoofed sources passed) identical at every checkpoint. A mismatch names the frame (hex) and the seed.
//!
//! Not modelled: the ring-buffer events and samples (turned off in the config) and the WAN
//! program. Needs root (BPF); the maps are pinned in a directory of the test's own.
use std::{collections::HashMap, path::PathBuf};

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use gateway_ebpf::{
    GatewayConfig, counter, device_state, lane, opener, programs, proto, reason, source_guard, verdict,
};
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _, loader, maps::Maps},
    device::{Access, Mac},
    policy::{CompiledRule, PortRangeKey},
};
use netns_tests::{
    policies::{LANES, defaults},
    require_root,
};

/// Frames run through both; the issue's bar.
const FRAMES: usize = 1_000_000;
/// Counters compared every this many frames (and at the end).
const CHECKPOINT: usize = 20_000;
/// Frames whose every truncation is also run (each yields ~100 frames).
const TRUNCATED_BASES: usize = 2_000;
const SEED: u64 = 0x107A_2026_1206;

/// XDP return codes (`enum xdp_action`, include/uapi/linux/bpf.h).
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const GATEWAY_MAC: [u8; 6] = [0x02, 0x66, 0, 0, 0, 1];
/// The devices: enrolled in class 20, enrolled in class 21, quarantined, blocked,
/// onboarding, and one the gateway has never seen.
const DEVICES: [[u8; 6]; 6] = [
    [0x02, 0x66, 0, 0, 0, 0x10],
    [0x02, 0x66, 0, 0, 0, 0x11],
    [0x02, 0x66, 0, 0, 0, 0x12],
    [0x02, 0x66, 0, 0, 0, 0x13],
    [0x02, 0x66, 0, 0, 0, 0x14],
    [0x02, 0x66, 0, 0, 0, 0x15],
];

/// Class policies: nested prefixes (the longest must win), port ranges, "any" rules (folded
/// into TCP/UDP/ICMP/ICMPv6, looked up as ANY for others), ICMP by type and code, IPv6.
const CLASSES: &str = r#"
[[class]]
name = "sensor"
id = 20
[[class.allow]]
nets = ["10.78.0.0/16"]
protocol = "tcp"
ports = [443, "8000-8100"]
[[class.allow]]
nets = ["10.78.1.0/24"]
protocol = "tcp"
ports = [1883]
[[class.allow]]
nets = ["10.78.2.0/24", "2001:db8::/32"]
protocol = "udp"
ports = [123, "5000-5010"]
[[class.allow]]
nets = ["10.78.3.3/32", "2001:db8:1::/48"]
protocol = "any"

[[class.allow]]
nets = ["10.78.1.0/24"]
protocol = "icmp"
icmp_types = ["8/0"]

[[class]]
name = "camera"
id = 21
[[class.allow]]
nets = ["10.78.0.0/16"]
protocol = "icmp"
[[class.allow]]
nets = ["2001:db8::/32"]
protocol = "tcp"
ports = [443]
[[class.allow]]
nets = ["10.78.3.0/24"]
protocol = "tcp"
ports = [554]
direction = "inbound"
[[class.allow]]
nets = ["10.78.2.0/24"]
protocol = "udp"
ports = [123]
source_ports = [123]
[[class.allow]]
nets = ["2001:db8:1::/48"]
protocol = "icmp"
icmp_types = ["128"]
direction = "inbound"
[[class.allow]]
nets = ["10.78.3.4/32"]
protocol = "any"
direction = "inbound"
"#;

/// Destinations the generator aims at: inside and outside every prefix above and the lanes.
const V4_DESTINATIONS: [[u8; 4]; 8] = [
    [10, 78, 0, 2],
    [10, 78, 1, 9],
    [10, 78, 2, 7],
    [10, 78, 3, 3],
    [10, 78, 3, 4],
    [10, 77, 0, 1],
    [255, 255, 255, 255],
    [192, 0, 2, 1],
];
const V6_DESTINATIONS: [[u16; 8]; 4] = [
    [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1],
    [0x2001, 0xdb8, 1, 0, 0, 0, 0, 2],
    [0x2001, 0xdb9, 0, 0, 0, 0, 0, 3],
    [0xfe80, 0, 0, 0, 0, 0, 0, 1],
];
/// IPv4 sources of the frames: `DEVICES[0]`'s and `DEVICES[1]`'s bound addresses (each
/// device also sends from the other's), one bound to nobody, and a DHCP client's 0.0.0.0.
const V4_SOURCES: [[u8; 4]; 4] = [[10, 77, 0, 10], [10, 77, 0, 11], [10, 77, 0, 12], [0, 0, 0, 0]];
/// Which device holds which of `V4_SOURCES`, as the controller binds them.
const BOUND: [([u8; 4], usize); 2] = [([10, 77, 0, 10], 0), ([10, 77, 0, 11], 1)];
/// IPv6 sources of the frames: `DEVICES[0]`'s link-local and SLAAC addresses, `DEVICES[1]`'s
/// SLAAC address (each device also sends from the other's), a link-local address bound to
/// nobody, and `::` of duplicate address detection.
const V6_SOURCES: [[u16; 8]; 5] = [
    [0xfe80, 0, 0, 0, 0, 0, 0, 0x10],
    [0xfd77, 0, 0, 0, 0, 0, 1, 0x10],
    [0xfd77, 0, 0, 0, 0, 0, 1, 0x11],
    [0xfe80, 0, 0, 0, 0, 0, 0, 0x12],
    [0; 8],
];
/// Which device holds which of `V6_SOURCES`.
const BOUND_V6: [([u16; 8], usize); 3] = [
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0x10], 0),
    ([0xfd77, 0, 0, 0, 0, 0, 1, 0x10], 0),
    ([0xfd77, 0, 0, 0, 0, 0, 1, 0x11], 1),
];

const PORTS: [u16; 12] = [53, 67, 68, 123, 443, 1883, 5000, 5010, 5011, 8050, 8443, 9999];
/// The devices' own ports: ephemeral, and services the rules name (554, 123).
const SOURCE_PORTS: [u16; 4] = [40_000, 554, 123, 9999];

// ---- the model --------------------------------------------------------------------------

/// What the model knows: the device table and the policy rules (as the controller writes
/// them), and the configured verdicts.
struct Model {
    devices: HashMap<[u8; 6], (u8, u32)>,
    /// `SOURCE_BINDINGS_V4` and `SOURCE_BINDINGS_V6`: address → the device that holds it.
    bindings: HashMap<std::net::IpAddr, [u8; 6]>,
    /// Frames per device from an address bound to another (`SOURCE_VIOLATIONS`).
    violations: HashMap<[u8; 6], u64>,
    /// Of those, the IPv6 ones: the run must have exercised the IPv6 check.
    violations_v6: u64,
    rules: Vec<CompiledRule>,
    config: GatewayConfig,
    /// Who opened each flow (`opener`), by the datapath's flow key.
    openers: HashMap<FlowId, u8>,
    global: HashMap<u32, u64>,
    per_device: HashMap<[u8; 6], ModelCounters>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ModelCounters {
    tx_packets: u64,
    tx_bytes: u64,
    tcp: u64,
    udp: u64,
    icmp: u64,
    other: u64,
    drops: [u64; reason::COUNT],
}

/// A parsed IP packet, as the contract describes it.
struct Packet {
    version: u8,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    /// ICMP: 0.
    src_port: u16,
    /// ICMP: `type << 8 | code`.
    dst_port: u16,
    tcp_flags: u8,
    fragment: bool,
}

/// A flow as the datapath keys it: the sender, addresses, ports, protocol and version.
type FlowId = ([u8; 6], [u8; 16], [u8; 16], u16, u16, u8, u8);

const ETH_LEN: usize = 14;
const IPV4_MIN: usize = 20;
const IPV6_LEN: usize = 40;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// `Ok(Some(packet))` for IP, `Ok(None)` for other EtherTypes (ARP included), `Err(reason)`
/// for a frame that is not what its headers claim. `link` is `Err` for link-layer faults.
enum Parsed {
    Runt,
    BadLink,
    NotIp,
    Ip(Result<Packet, u32>),
}

fn parse(frame: &[u8]) -> Parsed {
    if frame.len() < ETH_LEN {
        return Parsed::Runt;
    }
    let mut ether_type = be16(frame, 12);
    let mut at = ETH_LEN;
    for _ in 0..2 {
        if ether_type != 0x8100 && ether_type != 0x88a8 {
            break;
        }
        if frame.len() < at + 4 {
            return Parsed::BadLink;
        }
        ether_type = be16(frame, at + 2);
        at += 4;
    }
    match ether_type {
        0x8100 | 0x88a8 => Parsed::BadLink,
        0x0800 => Parsed::Ip(ipv4(frame, at)),
        0x86dd => Parsed::Ip(ipv6(frame, at)),
        _ => Parsed::NotIp,
    }
}

fn ipv4(frame: &[u8], at: usize) -> Result<Packet, u32> {
    if frame.len() < at + IPV4_MIN {
        return Err(reason::BAD_IPV4);
    }
    let header_len = usize::from(frame[at] & 0x0f) * 4;
    if frame[at] >> 4 != 4 || header_len < IPV4_MIN || frame.len() < at + header_len {
        return Err(reason::BAD_IPV4);
    }
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    src[..4].copy_from_slice(&frame[at + 12..at + 16]);
    dst[..4].copy_from_slice(&frame[at + 16..at + 20]);
    let fragment = be16(frame, at + 6) & 0x1fff != 0;
    let packet =
        Packet { version: 4, proto: frame[at + 9], src, dst, src_port: 0, dst_port: 0, tcp_flags: 0, fragment };
    if packet.fragment { Ok(packet) } else { transport(frame, at + header_len, packet) }
}

fn ipv6(frame: &[u8], at: usize) -> Result<Packet, u32> {
    if frame.len() < at + IPV6_LEN || frame[at] >> 4 != 6 {
        return Err(reason::BAD_IPV6);
    }
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    src.copy_from_slice(&frame[at + 8..at + 24]);
    dst.copy_from_slice(&frame[at + 24..at + 40]);
    let mut packet =
        Packet { version: 6, proto: frame[at + 6], src, dst, src_port: 0, dst_port: 0, tcp_flags: 0, fragment: false };
    let is_extension = |next: u8| matches!(next, 0 | 43 | 44 | 51 | 60);
    let mut next = at + IPV6_LEN;
    for _ in 0..4 {
        if !is_extension(packet.proto) {
            break;
        }
        if frame.len() < next + 8 {
            return Err(reason::BAD_IPV6);
        }
        let len = match packet.proto {
            44 => {
                packet.fragment |= be16(frame, next + 2) & 0xfff8 != 0;
                8
            }
            51 => (usize::from(frame[next + 1]) + 2) * 4,
            _ => (usize::from(frame[next + 1]) + 1) * 8,
        };
        packet.proto = frame[next];
        next += len;
    }
    if is_extension(packet.proto) {
        return Err(reason::BAD_IPV6);
    }
    if packet.fragment { Ok(packet) } else { transport(frame, next, packet) }
}

fn transport(frame: &[u8], at: usize, mut packet: Packet) -> Result<Packet, u32> {
    let need = match packet.proto {
        proto::TCP => 20,
        proto::UDP => 8,
        proto::ICMP | proto::ICMPV6 => 4,
        _ => return Ok(packet),
    };
    if frame.len() < at + need {
        return Err(reason::BAD_L4);
    }
    match packet.proto {
        proto::TCP => {
            let header_len = usize::from(frame[at + 12] >> 4) * 4;
            if header_len < 20 || frame.len() < at + header_len {
                return Err(reason::BAD_L4);
            }
            (packet.src_port, packet.dst_port, packet.tcp_flags) =
                (be16(frame, at), be16(frame, at + 2), frame[at + 13]);
        }
        proto::UDP => (packet.src_port, packet.dst_port) = (be16(frame, at), be16(frame, at + 2)),
        // ICMP: type and code where the destination port would be.
        _ => packet.dst_port = be16(frame, at),
    }
    Ok(packet)
}

impl Model {
    /// The longest prefix among `policy_id`'s rules for `proto`, then its port matches: one
    /// for the packet's `opened_by` holding the remote's (destination) and the device's
    /// (source) port; a fragment only by one admitting every port on both sides.
    fn rule_allows(&self, policy_id: u32, rule_proto: u8, packet: &Packet, opened_by: u8) -> bool {
        let addr: std::net::IpAddr = if packet.version == 4 {
            std::net::IpAddr::from([packet.dst[0], packet.dst[1], packet.dst[2], packet.dst[3]])
        } else {
            std::net::IpAddr::from(packet.dst)
        };
        let best = self
            .rules
            .iter()
            .filter(|r| r.policy_id.0 == policy_id && r.proto == rule_proto && r.net.contains(&addr))
            .max_by_key(|r| r.net.prefix_len());
        let Some(rule) = best else { return false };
        let all = PortRangeKey { first: 0, last: u16::MAX };
        let within = |range: PortRangeKey, port: u16| range.first <= port && port <= range.last;
        rule.matches.iter().any(|admitted| {
            admitted.openers & opened_by != 0
                && if packet.fragment {
                    admitted.remote == all && admitted.device == all
                } else {
                    within(admitted.remote, packet.dst_port) && within(admitted.device, packet.src_port)
                }
        })
    }

    fn allows(&self, policy_id: u32, packet: &Packet, opened_by: u8) -> bool {
        self.rule_allows(policy_id, packet.proto, packet, opened_by)
            || self.rule_allows(policy_id, proto::ANY, packet, opened_by)
    }

    /// The verdict for an IP packet from a device in `state` with `policy_id`, whose flow
    /// `opened_by` opened.
    fn decide(&self, state: u8, policy_id: u32, packet: &Packet, opened_by: u8) -> (u8, u32) {
        const PASS: (u8, u32) = (verdict::PASS, reason::NONE);
        let allows = |policy_id| self.allows(policy_id, packet, opened_by);
        match state {
            device_state::BLOCKED => (verdict::DROP, reason::BLOCKED),
            device_state::ENROLLED if allows(policy_id) || allows(lane::ONBOARDING) => PASS,
            device_state::ENROLLED => (self.config.policy_miss_verdict, reason::POLICY_DENY),
            device_state::QUARANTINED if allows(lane::QUARANTINE) => PASS,
            device_state::QUARANTINED => (self.config.quarantine_verdict, reason::QUARANTINE),
            _ if allows(lane::ONBOARDING) => PASS,
            _ => (self.config.unknown_verdict, reason::NOT_ENROLLED),
        }
    }

    /// Who opened the packet's flow: its SYN (the device) or SYN-ACK (the remote) tells, and
    /// the flow keeps what the last one told; `EITHER` before any, and for other protocols.
    fn opened_by(&mut self, mac: [u8; 6], packet: &Packet) -> u8 {
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        let flow = (mac, packet.src, packet.dst, packet.src_port, packet.dst_port, packet.proto, packet.version);
        let known = self.openers.entry(flow).or_insert(opener::EITHER);
        if packet.proto == proto::TCP && packet.tcp_flags & SYN != 0 {
            *known = if packet.tcp_flags & ACK == 0 { opener::DEVICE } else { opener::REMOTE };
        }
        *known
    }

    fn count_drop(&mut self, mac: Option<[u8; 6]>, why: u32) {
        *self.global.entry(counter::DROPS_BASE + why).or_default() += 1;
        if let Some(stats) = mac.and_then(|m| self.per_device.get_mut(&m)) {
            stats.drops[why as usize] += 1;
        }
    }

    fn count_tx(&mut self, mac: [u8; 6], ip_proto: u8, bytes: usize) {
        let stats = self.per_device.entry(mac).or_default();
        stats.tx_packets += 1;
        stats.tx_bytes += bytes as u64;
        match ip_proto {
            proto::TCP => stats.tcp += 1,
            proto::UDP => stats.udp += 1,
            proto::ICMP | proto::ICMPV6 => stats.icmp += 1,
            _ => stats.other += 1,
        }
    }

    /// Applies a verdict: the XDP action.
    fn apply(&mut self, mac: Option<[u8; 6]>, (verdict, why): (u8, u32)) -> u32 {
        match verdict {
            verdict::PASS => XDP_PASS,
            verdict::REDIRECT => {
                // No quarantine port is configured here: a redirect falls back to a drop,
                // counted once, under why the redirect failed.
                self.count_drop(mac, reason::NO_REDIRECT_PORT);
                XDP_DROP
            }
            _ => {
                self.count_drop(mac, why);
                XDP_DROP
            }
        }
    }

    /// The source check: true when the frame is to be dropped (an IPv4 or IPv6 source bound to
    /// another device, under `enforce`); a violation is counted in either mode, and under `log`
    /// the frame goes on, counted as passed. `::` and 0.0.0.0 are never bound.
    fn spoofs(&mut self, mac: [u8; 6], packet: &Packet) -> bool {
        if self.config.source_guard == source_guard::OFF {
            return false;
        }
        let source: std::net::IpAddr = if packet.version == 4 {
            [packet.src[0], packet.src[1], packet.src[2], packet.src[3]].into()
        } else {
            packet.src.into()
        };
        if self.bindings.get(&source).is_none_or(|holder| *holder == mac) {
            return false;
        }
        *self.violations.entry(mac).or_default() += 1;
        self.violations_v6 += u64::from(packet.version == 6);
        if self.config.source_guard == source_guard::ENFORCE {
            return true;
        }
        *self.global.entry(counter::SPOOFED_SOURCE_PASSED).or_default() += 1;
        false
    }

    fn malformed(&mut self, mac: Option<[u8; 6]>, why: u32) -> u32 {
        if self.config.malformed_verdict == verdict::PASS {
            self.count_drop(mac, why);
            XDP_PASS
        } else {
            self.apply(mac, (verdict::DROP, why))
        }
    }

    /// One frame through the contract: its XDP action, counters updated.
    fn run(&mut self, frame: &[u8]) -> u32 {
        *self.global.entry(counter::LAN_PACKETS).or_default() += 1;
        let mac = (frame.len() >= ETH_LEN).then(|| {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&frame[6..12]);
            mac
        });
        let (state, policy_id) = mac.and_then(|m| self.devices.get(&m).copied()).unwrap_or((device_state::UNKNOWN, 0));
        match parse(frame) {
            Parsed::Runt => self.malformed(None, reason::RUNT),
            Parsed::BadLink => {
                let mac = mac.expect("a bad VLAN stack has an Ethernet header");
                self.count_tx(mac, 0, frame.len());
                self.malformed(Some(mac), reason::BAD_VLAN)
            }
            Parsed::NotIp => {
                let mac = mac.expect("parsed past Ethernet");
                self.count_tx(mac, 0, frame.len());
                if state == device_state::BLOCKED {
                    self.apply(Some(mac), (verdict::DROP, reason::BLOCKED))
                } else {
                    XDP_PASS
                }
            }
            Parsed::Ip(Err(why)) => {
                let mac = mac.expect("parsed past Ethernet");
                self.count_tx(mac, 0, frame.len());
                self.malformed(Some(mac), why)
            }
            Parsed::Ip(Ok(packet)) => {
                let mac = mac.expect("parsed past Ethernet");
                self.count_tx(mac, packet.proto, frame.len());
                if self.spoofs(mac, &packet) {
                    return self.apply(Some(mac), (verdict::DROP, reason::SPOOFED_SOURCE));
                }
                let opened_by = self.opened_by(mac, &packet);
                let decision = self.decide(state, policy_id, &packet, opened_by);
                self.apply(Some(mac), decision)
            }
        }
    }
}

// ---- the frames -------------------------------------------------------------------------

/// splitmix64: a seeded, reproducible stream for the generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A frame built header by header, each header's fields named.
struct FrameBuilder {
    bytes: Vec<u8>,
}

impl FrameBuilder {
    fn ethernet(src: [u8; 6]) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(&GATEWAY_MAC);
        bytes.extend_from_slice(&src);
        Self { bytes }
    }

    fn ether_type(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    fn vlan_tag(&mut self, tpid: u16, vid: u16) {
        self.ether_type(tpid);
        self.bytes.extend_from_slice(&vid.to_be_bytes());
    }

    fn ipv4(&mut self, ihl: u8, fragment_offset: u16, ip_proto: u8, src: [u8; 4], dst: [u8; 4]) {
        let header_len = usize::from(ihl.max(5)) * 4;
        let mut header = vec![0u8; header_len];
        header[0] = 0x40 | ihl;
        header[6..8].copy_from_slice(&fragment_offset.to_be_bytes());
        header[8] = 64;
        header[9] = ip_proto;
        header[12..16].copy_from_slice(&src);
        header[16..20].copy_from_slice(&dst);
        self.bytes.extend_from_slice(&header);
    }

    fn ipv6(&mut self, next_header: u8, src: [u16; 8], dst: [u16; 8]) {
        let mut header = [0u8; 40];
        header[0] = 0x60;
        header[6] = next_header;
        header[7] = 64;
        for (i, word) in src.iter().enumerate() {
            header[8 + 2 * i..10 + 2 * i].copy_from_slice(&word.to_be_bytes());
        }
        for (i, word) in dst.iter().enumerate() {
            header[24 + 2 * i..26 + 2 * i].copy_from_slice(&word.to_be_bytes());
        }
        self.bytes.extend_from_slice(&header);
    }

    /// An IPv6 extension header: its kind decides how `length` counts.
    fn ipv6_extension(&mut self, kind: u8, next_header: u8, length: u8, fragment_offset: u16) {
        let total = match kind {
            44 => 8,
            51 => (usize::from(length) + 2) * 4,
            _ => (usize::from(length) + 1) * 8,
        };
        let mut header = vec![0u8; total.max(8)];
        header[0] = next_header;
        header[1] = length;
        if kind == 44 {
            header[2..4].copy_from_slice(&(fragment_offset << 3).to_be_bytes());
        }
        self.bytes.extend_from_slice(&header[..total]);
    }

    fn tcp(&mut self, src_port: u16, dst_port: u16, data_offset: u8, flags: u8) {
        let mut header = vec![0u8; usize::from(data_offset.max(5)) * 4];
        header[0..2].copy_from_slice(&src_port.to_be_bytes());
        header[2..4].copy_from_slice(&dst_port.to_be_bytes());
        header[12] = data_offset << 4;
        header[13] = flags;
        self.bytes.extend_from_slice(&header);
    }

    fn udp(&mut self, src_port: u16, dst_port: u16) {
        let mut header = [0u8; 8];
        header[0..2].copy_from_slice(&src_port.to_be_bytes());
        header[2..4].copy_from_slice(&dst_port.to_be_bytes());
        self.bytes.extend_from_slice(&header);
    }

    fn icmp(&mut self, icmp_type: u8, code: u8) {
        self.bytes.extend_from_slice(&[icmp_type, code, 0, 0, 0, 1, 0, 1]);
    }

    fn payload(&mut self, len: usize) {
        self.bytes.extend(std::iter::repeat_n(0xa5, len));
    }
}

/// One generated frame: mostly well formed, with every kind of fault mixed in.
fn frame(rng: &mut Rng) -> Vec<u8> {
    let src = if rng.chance(3) { [0x02, 0x99, 0, 0, 0, rng.below(4) as u8] } else { rng.pick(&DEVICES) };
    let mut f = FrameBuilder::ethernet(src);
    // 0–3 VLAN tags (3 is one too many).
    let tags = [0, 0, 0, 0, 1, 1, 2, 3][rng.below(8)];
    for _ in 0..tags {
        f.vlan_tag(rng.pick(&[0x8100, 0x88a8]), rng.below(4096) as u16);
    }
    let transport = rng.pick(&[proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6, 47, 132]);
    match rng.below(10) {
        0 => {
            f.ether_type(0x0806);
            f.payload(28);
        }
        1 => {
            f.ether_type(rng.pick(&[0x88cc, 0x888e, 0x9000]));
            f.payload(rng.below(60));
        }
        2..=5 => {
            f.ether_type(0x0800);
            let ihl = rng.pick(&[5, 5, 5, 5, 6, 8, 15, 4, 0]);
            let fragment = if rng.chance(8) { rng.pick(&[0x2000, 0x0001, 0x00b9, 0x4000]) } else { 0x4000 };
            f.ipv4(ihl, fragment, transport, rng.pick(&V4_SOURCES), rng.pick(&V4_DESTINATIONS));
            l4(&mut f, rng, transport);
        }
        _ => {
            f.ether_type(0x86dd);
            let chain = [0, 0, 0, 1, 2, 3, 4, 5][rng.below(8)];
            let kinds: Vec<u8> = (0..chain).map(|_| rng.pick(&[0, 43, 44, 51, 60])).collect();
            let next = kinds.first().copied().unwrap_or(transport);
            f.ipv6(next, rng.pick(&V6_SOURCES), rng.pick(&V6_DESTINATIONS));
            for (i, &kind) in kinds.iter().enumerate() {
                let next = kinds.get(i + 1).copied().unwrap_or(transport);
                let offset = if rng.chance(30) { rng.below(100) as u16 } else { 0 };
                f.ipv6_extension(kind, next, rng.below(3) as u8, offset);
            }
            l4(&mut f, rng, transport);
        }
    }
    f.payload(rng.below(40));
    let mut bytes = f.bytes;
    // Faults: flipped bytes and truncations.
    if rng.chance(15) {
        for _ in 0..=rng.below(3) {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next() as u8;
        }
    }
    if rng.chance(15) {
        bytes.truncate(rng.below(bytes.len() + 1));
    }
    bytes
}

fn l4(f: &mut FrameBuilder, rng: &mut Rng, transport: u8) {
    match transport {
        proto::TCP => {
            let (src, dst) = (rng.pick(&SOURCE_PORTS), rng.pick(&PORTS));
            f.tcp(src, dst, rng.pick(&[5, 5, 5, 8, 15, 4, 0]), rng.pick(&[0x02, 0x10, 0x18, 0x12]))
        }
        proto::UDP => f.udp(rng.pick(&SOURCE_PORTS), rng.pick(&PORTS)),
        proto::ICMP | proto::ICMPV6 => f.icmp(rng.pick(&[8, 0, 3, 13, 128, 129, 135]), rng.below(2) as u8),
        _ => f.payload(8),
    }
}

// ---- the run ----------------------------------------------------------------------------

struct Datapath {
    ebpf: Ebpf,
    maps: Maps,
    pin_dir: PathBuf,
}

impl Drop for Datapath {
    fn drop(&mut self) {
        let _ = loader::detach_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

impl Datapath {
    fn run(&self, frame: &[u8]) -> u32 {
        let mut out = vec![0u8; frame.len() + 256];
        let lan: &Xdp = self.ebpf.program(programs::LAN_INGRESS).expect("lan program").try_into().expect("xdp");
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() };
        lan.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    }
}

fn setup(name: &str, malformed: &str, guard: u8) -> (Datapath, Model) {
    require_root();
    assert!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/iotgw-test-model-{name}-{}", std::process::id()));
    loader::prepare_bpffs(&pin_dir).expect("bpffs");
    let mut ebpf =
        loader::object_loader(&pin_dir, &[]).expect("object loader").load(loader::object()).expect("object loads");
    let lan: &mut Xdp = ebpf.program_mut(programs::LAN_INGRESS).expect("lan program").try_into().expect("xdp");
    lan.load().expect("verifier accepts the LAN program");
    let maps = Maps::take(&mut ebpf).expect("maps");

    let sources = vec![
        (PathBuf::from("lanes.toml"), LANES.to_owned()),
        (PathBuf::from("classes.toml"), CLASSES.to_owned()),
        (PathBuf::from("defaults.toml"), defaults(malformed)),
    ];
    let policy = iotgw::policy::parse_sources(&sources).expect("test policy parses");
    let compiled = iotgw::policy::compile(&policy).expect("test policy compiles");
    maps.sync_policy(compiled.rules.iter().map(CompiledRule::to_abi)).expect("policy rules");
    let v = compiled.verdicts;
    let config = GatewayConfig {
        malformed_verdict: v.malformed,
        unknown_verdict: v.unknown,
        policy_miss_verdict: v.policy_miss,
        quarantine_verdict: v.quarantine,
        sample_packets: 0,
        flow_events: 0,
        source_guard: guard,
        ..GatewayConfig::default()
    };
    maps.write_config(&config).expect("datapath config");
    let access = [
        (DEVICES[0], Access::Enrolled, 20),
        (DEVICES[1], Access::Enrolled, 21),
        (DEVICES[2], Access::Quarantined, 20),
        (DEVICES[3], Access::Blocked, 20),
        (DEVICES[4], Access::Onboarding, 0),
    ];
    for (mac, access, class) in access {
        let policy_id = lane::FIRST_CLASS_POLICY + u32::from(class);
        maps.set_access(Mac(mac), DeviceAccess { access, policy_id, class_id: class }).expect("device entry");
    }
    for (address, device) in BOUND {
        maps.bind_source(std::net::Ipv4Addr::from(address).into(), Mac(DEVICES[device])).expect("source binding");
    }
    for (address, device) in BOUND_V6 {
        maps.bind_source(std::net::Ipv6Addr::from(address).into(), Mac(DEVICES[device])).expect("source binding");
    }
    // The model reads the tables the program reads: states, policy ids and bindings as written.
    let devices = maps.devices().into_iter().map(|(mac, entry)| (mac.0, (entry.state, entry.policy_id))).collect();
    let bindings = maps.source_bindings().into_iter().map(|(address, mac)| (address, mac.0)).collect();
    let model = Model {
        devices,
        bindings,
        violations: HashMap::new(),
        violations_v6: 0,
        rules: compiled.rules.clone(),
        config: maps.read_config().expect("config"),
        openers: HashMap::new(),
        global: HashMap::new(),
        per_device: HashMap::new(),
    };
    (Datapath { ebpf, maps, pin_dir }, model)
}

/// Every counter the model keeps, compared with the kernel's.
fn compare_counters(datapath: &Datapath, model: &Model, at: usize) {
    for index in [counter::LAN_PACKETS, counter::REDIRECTED, counter::SPOOFED_SOURCE_PASSED]
        .into_iter()
        .chain((0..reason::COUNT as u32).map(|r| counter::DROPS_BASE + r))
    {
        let kernel = datapath.maps.global_counter(index);
        let expected = model.global.get(&index).copied().unwrap_or(0);
        assert_eq!(kernel, expected, "global counter {index} after {at} frames (seed {SEED:#x})");
    }
    let kernel: HashMap<[u8; 6], ModelCounters> = datapath
        .maps
        .device_counters()
        .into_iter()
        .map(|(mac, c)| {
            let counters = ModelCounters {
                tx_packets: c.traffic.tx_packets,
                tx_bytes: c.traffic.tx_bytes,
                tcp: c.tcp_packets,
                udp: c.udp_packets,
                icmp: c.icmp_packets,
                other: c.other_packets,
                drops: c.drops,
            };
            (mac.0, counters)
        })
        .collect();
    let violations: HashMap<[u8; 6], u64> =
        datapath.maps.source_violations().into_iter().map(|v| (v.mac.0, v.frames)).collect();
    assert_eq!(violations, model.violations, "source-address violations after {at} frames (seed {SEED:#x})");
    assert_eq!(kernel.len(), model.per_device.len(), "devices counted after {at} frames");
    for (mac, expected) in &model.per_device {
        assert_eq!(kernel.get(mac), Some(expected), "counters of {mac:02x?} after {at} frames (seed {SEED:#x})");
    }
}

fn run_and_compare(name: &str, malformed: &str, guard: u8, frames: usize) {
    let (datapath, mut model) = setup(name, malformed, guard);
    let mut rng = Rng(SEED ^ malformed.len() as u64);
    let mut run = 0usize;
    let check = |frame: &[u8], datapath: &Datapath, model: &mut Model, run: &mut usize| {
        let expected = model.run(frame);
        let actual = datapath.run(frame);
        assert_eq!(
            actual,
            expected,
            "frame {run} (seed {SEED:#x}, malformed = {malformed}): XDP {actual}, model {expected}: {}",
            frame.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        *run += 1;
        if (*run).is_multiple_of(CHECKPOINT) {
            compare_counters(datapath, model, *run);
        }
    };
    // Truncations at every byte of the first frames.
    let mut truncated = 0;
    while truncated < TRUNCATED_BASES.min(frames / 50) && run < frames {
        let whole = frame(&mut rng);
        // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header (EINVAL, as
        // `bpf_prog_test_run_xdp` checks ETH_HLEN), and no driver hands XDP such a frame.
        for len in ETH_LEN..=whole.len() {
            check(&whole[..len], &datapath, &mut model, &mut run);
        }
        truncated += 1;
    }
    while run < frames {
        let f = frame(&mut rng);
        if f.len() < ETH_LEN {
            continue;
        }
        check(&f, &datapath, &mut model, &mut run);
    }
    compare_counters(&datapath, &model, run);
    let by_reason: Vec<String> = (0..reason::COUNT as u32)
        .map(|r| format!("{} {}", reason::name(r), model.global.get(&(counter::DROPS_BASE + r)).unwrap_or(&0)))
        .collect();
    let spoofed_passed = model.global.get(&counter::SPOOFED_SOURCE_PASSED).unwrap_or(&0);
    println!(
        "{name}: {run} frames identical in XDP and the model (seed {SEED:#x}); counted: {}; spoofed sources passed {spoofed_passed}; IPv6 frames from another device's address {}",
        by_reason.join(", "),
        model.violations_v6
    );
    assert!(model.violations_v6 > 0, "no IPv6 frame from another device's address was generated");
}

#[test]
fn lan_program_matches_the_reference_model_on_a_million_frames() {
    run_and_compare("drop", "drop", source_guard::ENFORCE, FRAMES);
}

#[test]
fn lan_program_matches_the_reference_model_when_malformed_frames_pass() {
    run_and_compare("pass", "pass", source_guard::LOG, FRAMES / 10);
}
