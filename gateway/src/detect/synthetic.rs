//! Synthetic IoT traffic as `pipeline::Input`s: normal patterns (periodic telemetry over
//! TLS or MQTT to a broker, DNS lookups, NTP polls, per-second counters, with jitter) and
//! the attacks the detectors must catch. For scenario tests and the decision-latency
//! benchmark; reads nothing, writes nothing.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, SystemTime},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

use crate::{
    datapath::events::{DatapathEvent, FlowObservation, PacketSample, SampleKind},
    datapath::traffic::{TrafficCounters, TrafficSample},
    device::{Access, Mac},
    pipeline::Input,
};

pub const PROTO_TCP: u8 = 0x06;
pub const PROTO_UDP: u8 = 0x11;
const TCP_SYN: u8 = 0x02;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// First ephemeral port the synthetic devices use (Linux default range).
const EPHEMERAL_PORTS: std::ops::Range<u16> = 32_768..60_999;

/// A flow's first packet.
#[allow(clippy::too_many_arguments, reason = "a flow is its 5-tuple, MAC, time and flags")]
pub fn flow(
    mac: Mac,
    time: SystemTime,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    tcp_flags: u8,
) -> Input {
    Input::Datapath(DatapathEvent::Flow(FlowObservation {
        time,
        mac,
        src,
        dst,
        src_port,
        dst_port,
        proto,
        frame_bytes: 74,
        tcp_flags,
        syn: None,
        verdict: gateway_ebpf::verdict::PASS,
        reason: gateway_ebpf::reason::NONE,
        access: Access::Enrolled,
    }))
}

/// A TCP connection opened by the device.
pub fn tcp_syn(mac: Mac, time: SystemTime, src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Input {
    flow(mac, time, src, dst, src_port, dst_port, PROTO_TCP, TCP_SYN)
}

/// A UDP exchange started by the device.
pub fn udp(mac: Mac, time: SystemTime, src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Input {
    flow(mac, time, src, dst, src_port, dst_port, PROTO_UDP, 0)
}

/// The address synthetic devices ask DNS from when a test gives none.
pub const DEVICE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
/// The port synthetic devices ask DNS from.
const DNS_CLIENT_PORT: u16 = 53_000;
/// The id of synthetic DNS queries.
const DNS_ID: u16 = 0x1234;
/// How long after its query a synthetic answer arrives.
const DNS_ROUND_TRIP: Duration = Duration::from_millis(5);

/// A DNS message asking `name` (A) and, for a response, answering `addr` (built with
/// `hickory-proto`, names written out in full).
fn dns_message(name: &str, answer: Option<Ipv4Addr>) -> Vec<u8> {
    use hickory_proto::{
        op::{Message, MessageType, Query},
        rr::{Name, RData, Record, RecordType, rdata::A},
        serialize::binary::{BinEncodable, BinEncoder},
    };
    let mut message = Message::new();
    message.set_id(DNS_ID).set_recursion_desired(true);
    // The names here are fixtures written in this file or tests, always valid DNS names.
    let qname = Name::from_ascii(name).unwrap_or_default();
    message.add_query(Query::query(qname.clone(), RecordType::A));
    if let Some(addr) = answer {
        message.set_message_type(MessageType::Response);
        message.add_answer(Record::from_rdata(qname, 300, RData::A(A(addr))));
    }
    let mut payload = Vec::new();
    let mut encoder = BinEncoder::new(&mut payload);
    encoder.set_canonical_names(true);
    if message.emit(&mut encoder).is_err() {
        payload.clear();
    }
    payload
}

/// A sample of a UDP datagram from `src` to `dst` carrying `payload` (from the IP header on,
/// as the datapath samples).
fn udp_sample(
    mac: Mac,
    time: SystemTime,
    kind: SampleKind,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Input {
    let mut data = Vec::new();
    let built =
        etherparse::PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64).udp(src.1, dst.1).write(&mut data, payload);
    // Writing into a Vec cannot fail; a fixture's payload is far below the UDP limit.
    debug_assert!(built.is_ok());
    Input::Datapath(DatapathEvent::Sample(PacketSample {
        time,
        mac,
        kind,
        frame_bytes: data.len() as u32 + 14,
        payload_offset: data.len() - payload.len(),
        data,
        verdict: gateway_ebpf::verdict::PASS,
    }))
}

/// A DNS response from `resolver` telling the device at `DEVICE_ADDRESS` that `name` is at
/// `addr`, as the datapath samples answers to devices (`SampleKind::DnsAnswer`).
pub fn dns_answer(mac: Mac, time: SystemTime, name: &str, addr: Ipv4Addr) -> Input {
    dns_answer_from(mac, time, (GATEWAY, DEVICE_ADDRESS), name, addr)
}

/// `dns_answer` between `(resolver, device)`.
fn dns_answer_from(
    mac: Mac,
    time: SystemTime,
    (resolver, device): (Ipv4Addr, Ipv4Addr),
    name: &str,
    addr: Ipv4Addr,
) -> Input {
    let payload = dns_message(name, Some(addr));
    udp_sample(mac, time, SampleKind::DnsAnswer, (resolver, 53), (device, DNS_CLIENT_PORT), &payload)
}

/// A device's lookup at the gateway's resolver (`GATEWAY`): its query, then the answer that
/// `name` is at `addr`.
pub fn dns_lookup(mac: Mac, time: SystemTime, name: &str, addr: Ipv4Addr) -> [Input; 2] {
    dns_lookup_via(mac, time, GATEWAY, name, addr)
}

/// A device's lookup at `resolver` (IPv4), from `DEVICE_ADDRESS`.
pub fn dns_lookup_via(mac: Mac, time: SystemTime, resolver: Ipv4Addr, name: &str, addr: Ipv4Addr) -> [Input; 2] {
    dns_lookup_between(mac, time, DEVICE_ADDRESS, resolver, name, addr)
}

/// A lookup by the device at `device` of `name` at `resolver`, answered `addr`.
pub fn dns_lookup_between(
    mac: Mac,
    time: SystemTime,
    device: Ipv4Addr,
    resolver: Ipv4Addr,
    name: &str,
    addr: Ipv4Addr,
) -> [Input; 2] {
    let query = dns_message(name, None);
    [
        udp_sample(mac, time, SampleKind::Dns, (device, DNS_CLIENT_PORT), (resolver, 53), &query),
        dns_answer_from(mac, time + DNS_ROUND_TRIP, (resolver, device), name, addr),
    ]
}

/// An ARP packet sent by `frame_mac` (request when `target_ip` is asked for, reply
/// otherwise); gratuitous when `sender_ip == target_ip`.
pub fn arp(
    frame_mac: Mac,
    time: SystemTime,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
    reply: bool,
) -> Input {
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType};
    let operation = ArpOperation(if reply { ARP_REPLY } else { ARP_REQUEST });
    let target_mac = if reply { [0xff; 6] } else { [0; 6] };
    // Sizes match (6-byte MACs, 4-byte IPv4), so the constructor cannot fail.
    let packet = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        operation,
        &sender_mac.0,
        &sender_ip.octets(),
        &target_mac,
        &target_ip.octets(),
    )
    .expect("Ethernet/IPv4 ARP sizes are valid");
    let data = packet.to_bytes().to_vec();
    Input::Datapath(DatapathEvent::Sample(PacketSample {
        time,
        mac: frame_mac,
        kind: SampleKind::Arp,
        frame_bytes: 60,
        data,
        payload_offset: 0,
        verdict: gateway_ebpf::verdict::PASS,
    }))
}

/// One interval's counters.
pub fn traffic(
    mac: Mac,
    start: SystemTime,
    interval: Duration,
    tx_bytes: u64,
    tx_packets: u64,
    rx_bytes: u64,
    rx_packets: u64,
) -> Input {
    let counters = TrafficCounters { tx_bytes, tx_packets, rx_bytes, rx_packets };
    Input::Traffic(TrafficSample { mac, interval_start: start, interval, counters })
}

/// What a synthetic device does normally.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// The broker or head-end it reports to, by name.
    pub server_name: String,
    /// The addresses that name resolves to (rotated per lookup, like a cloud service).
    pub server_addrs: Vec<Ipv4Addr>,
    pub server_port: u16,
    /// Telemetry period and its jitter.
    pub period: Duration,
    pub jitter: Duration,
    /// Bytes per report (±25%).
    pub report_bytes: u64,
    /// A new connection per report (HTTPS telemetry) or one kept open and re-established
    /// every `reconnect` (MQTT).
    pub reconnect: Option<Duration>,
    /// NTP servers polled every `ntp_period`.
    pub ntp_servers: Vec<Ipv4Addr>,
    pub ntp_period: Duration,
    /// LAN hosts it talks to (a hub, the gateway's DNS).
    pub lan_peers: Vec<(Ipv4Addr, u16)>,
}

/// The resolver and gateway of the synthetic LAN.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A smart meter: HTTPS report every minute to its head-end.
pub fn meter(index: u8) -> DeviceSpec {
    DeviceSpec {
        mac: Mac([0x02, 0x00, 0x61, 0x00, 0x00, index]),
        ip: Ipv4Addr::new(10, 77, 1, index),
        server_name: "headend.utility.example".into(),
        server_addrs: vec![Ipv4Addr::new(203, 0, 113, 40), Ipv4Addr::new(203, 0, 113, 41)],
        server_port: 443,
        period: Duration::from_secs(60),
        jitter: Duration::from_secs(3),
        report_bytes: 2_000,
        reconnect: None,
        ntp_servers: vec![Ipv4Addr::new(198, 51, 100, 123), Ipv4Addr::new(198, 51, 100, 124)],
        ntp_period: Duration::from_secs(1_024),
        lan_peers: vec![(GATEWAY, 53)],
    }
}

/// A camera: MQTT to a broker (connection kept, renewed every 30 min), a 150 KB snapshot
/// upload every 30 s.
pub fn camera(index: u8) -> DeviceSpec {
    DeviceSpec {
        mac: Mac([0x02, 0x00, 0xca, 0x00, 0x00, index]),
        ip: Ipv4Addr::new(10, 77, 2, index),
        server_name: "broker.camera.example.net".into(),
        server_addrs: vec![Ipv4Addr::new(192, 0, 2, 80), Ipv4Addr::new(192, 0, 2, 81), Ipv4Addr::new(192, 0, 2, 82)],
        server_port: 8883,
        period: Duration::from_secs(30),
        jitter: Duration::from_secs(2),
        report_bytes: 150_000,
        reconnect: Some(Duration::from_secs(1_800)),
        ntp_servers: vec![Ipv4Addr::new(198, 51, 100, 123)],
        ntp_period: Duration::from_secs(1_024),
        lan_peers: vec![(GATEWAY, 53)],
    }
}

/// A smart plug: MQTT to a broker plus a LAN hub on CoAP.
pub fn plug(index: u8) -> DeviceSpec {
    DeviceSpec {
        mac: Mac([0x02, 0x00, 0x91, 0x00, 0x00, index]),
        ip: Ipv4Addr::new(10, 77, 3, index),
        server_name: "mqtt.plug.example.com".into(),
        server_addrs: vec![Ipv4Addr::new(203, 0, 113, 90)],
        server_port: 1883,
        period: Duration::from_secs(120),
        jitter: Duration::from_secs(10),
        report_bytes: 400,
        reconnect: Some(Duration::from_secs(3_600)),
        ntp_servers: vec![Ipv4Addr::new(198, 51, 100, 123)],
        ntp_period: Duration::from_secs(2_048),
        lan_peers: vec![(GATEWAY, 53), (Ipv4Addr::new(10, 77, 0, 10), 5683)],
    }
}

/// Normal traffic of `devices` over `[start, start + length)`, time-ordered: DNS lookups
/// before connecting (answers rotate the server's addresses), telemetry with jitter, NTP
/// polls, LAN peer exchanges, and per-second counters with ±25% noise. Deterministic per
/// `seed`.
pub fn normal_traffic(devices: &[DeviceSpec], start: SystemTime, length: Duration, seed: u64) -> Vec<Input> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut inputs = Vec::new();
    let end = start + length;
    for device in devices {
        let src = IpAddr::V4(device.ip);
        let mut port = rng.gen_range(EPHEMERAL_PORTS);
        let mut next_port = |rng: &mut StdRng| {
            port = if port + 1 >= EPHEMERAL_PORTS.end { EPHEMERAL_PORTS.start } else { port + rng.gen_range(1..8) };
            port
        };
        // Bytes sent per second, accumulated from the reports below.
        let seconds = length.as_secs() as usize + 1;
        let mut tx = vec![0u64; seconds];
        let mut connected_until = start;
        let mut report_at = start + Duration::from_secs(rng.gen_range(0..device.period.as_secs().max(1)));
        let mut lookup = 0usize;
        while report_at < end {
            let needs_connection = device.reconnect.is_none_or(|_| report_at >= connected_until);
            if needs_connection {
                let addr = device.server_addrs[lookup % device.server_addrs.len()];
                lookup += 1;
                inputs.push(udp(device.mac, report_at, src, IpAddr::V4(GATEWAY), next_port(&mut rng), 53));
                inputs.extend(dns_lookup_between(
                    device.mac,
                    report_at + Duration::from_millis(15),
                    device.ip,
                    GATEWAY,
                    &device.server_name,
                    addr,
                ));
                inputs.push(tcp_syn(
                    device.mac,
                    report_at + Duration::from_millis(40),
                    src,
                    IpAddr::V4(addr),
                    next_port(&mut rng),
                    device.server_port,
                ));
                if let Some(reconnect) = device.reconnect {
                    connected_until = report_at + reconnect;
                }
            }
            let bytes = device.report_bytes * rng.gen_range(75..=125) / 100;
            // A report of more than a few packets spreads over a few seconds.
            let spread = (bytes / 50_000).clamp(1, 5) as usize;
            let second = report_at.duration_since(start).unwrap_or_default().as_secs() as usize;
            for slot in tx.iter_mut().take((second + spread).min(seconds)).skip(second) {
                *slot += bytes / spread as u64;
            }
            let jitter = rng.gen_range(0..=device.jitter.as_millis() as u64 * 2);
            report_at += device.period - device.jitter + Duration::from_millis(jitter);
        }
        let mut ntp_at = start + Duration::from_secs(rng.gen_range(0..60));
        let mut ntp_index = 0usize;
        while ntp_at < end {
            let server = device.ntp_servers[ntp_index % device.ntp_servers.len()];
            ntp_index += 1;
            inputs.push(udp(device.mac, ntp_at, src, IpAddr::V4(server), 123, 123));
            ntp_at += device.ntp_period + Duration::from_millis(rng.gen_range(0..2_000));
        }
        for &(peer, peer_port) in device.lan_peers.iter().filter(|(_, p)| *p != 53) {
            let mut at = start + Duration::from_secs(rng.gen_range(0..300));
            while at < end {
                inputs.push(udp(device.mac, at, src, IpAddr::V4(peer), next_port(&mut rng), peer_port));
                at += Duration::from_secs(rng.gen_range(240..360));
            }
        }
        for (second, bytes) in tx.iter().enumerate().take(length.as_secs() as usize) {
            let background = rng.gen_range(60..200);
            let tx_bytes = bytes + background;
            let tx_packets = tx_bytes / 600 + 1;
            inputs.push(traffic(
                device.mac,
                start + Duration::from_secs(second as u64),
                Duration::from_secs(1),
                tx_bytes,
                tx_packets,
                tx_bytes / 4,
                tx_packets,
            ));
        }
    }
    inputs.sort_by_key(|input| input.time());
    inputs
}

/// A Mirai-style scan: telnet SYNs to `hosts` random addresses, 23 or 2323, `rate` per
/// second.
pub fn telnet_scan(mac: Mac, src: Ipv4Addr, start: SystemTime, hosts: usize, rate: u32, seed: u64) -> Vec<Input> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..hosts)
        .map(|i| {
            let dst = Ipv4Addr::from(rng.gen_range(0x0100_0000u32..0xdf00_0000));
            let port = if rng.gen_bool(0.9) { 23 } else { 2323 };
            let time = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            tcp_syn(mac, time, IpAddr::V4(src), IpAddr::V4(dst), rng.gen_range(EPHEMERAL_PORTS), port)
        })
        .collect()
}
