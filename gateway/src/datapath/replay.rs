//! Capture replay: reads libpcap and pcapng files (`capture`), parses each Ethernet frame
//! (`etherparse`) and produces the `DatapathEvent`s the LAN XDP program would have sent for it,
//! plus per-device per-interval traffic counters (what `DEVICE_STATS` would have counted).
//! Writes nothing; `iotgw analyze`, fingerprint training and baseline/detection replays all
//! consume the same items, so offline results come from the live code path.
//!
//! What the XDP program does, and so what this does (see `gateway-ebpf/src/lan.rs`):
//! - a new-flow event on the first packet of each flow, keyed by 5-tuple + source MAC, with
//!   the SYN fingerprint when that packet is a SYN without ACK; ICMP puts `type << 8 | code`
//!   in `dst_port`;
//! - a sample (from the L3 header on, at most `SAMPLE_BYTES`) for ARP, UDP to or from port
//!   67/68 (DHCP), 546/547 (DHCPv6), 53 (DNS) or 1900 (SSDP), ICMPv6 neighbour
//!   solicitations and advertisements, and TCP payloads starting `0x16 0x03` (TLS handshake).
//!   XDP does not sample DNS over TCP; neither does this.
//!
//! Offline there is no enforcement: every event carries verdict PASS, reason NONE and access
//! `Unknown`.
use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    fs::File,
    io::{BufReader, Read},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use etherparse::{
    EtherPayloadSlice, EtherType, Ethernet2Slice, NetSlice, SingleVlanSlice, SlicedPacket, TransportSlice,
};
use gateway_ebpf::{MAX_TCP_OPTIONS, MAX_VLAN_TAGS, SAMPLE_BYTES, SynFingerprint, proto, reason, verdict};
use pcap_file::DataLink;
use serde::Serialize;

use crate::{
    datapath::{
        capture::{CaptureReader, Next},
        events::{DatapathEvent, FlowObservation, PacketSample, SampleKind},
        traffic::TrafficCounters,
    },
    device::{Access, Mac},
};

/// Default length of a traffic-counter interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Flows remembered before the oldest half is forgotten, like the LRU flow table of XDP
/// (`FLOWS_V4_CAPACITY`): a forgotten flow that shows up again is new again.
pub const FLOW_MEMORY: usize = gateway_ebpf::maps::FLOWS_V4_CAPACITY as usize;

const PORT_DHCP_SERVER: u16 = 67;
const PORT_DHCP_CLIENT: u16 = 68;
const PORT_DHCPV6_CLIENT: u16 = 546;
const PORT_DHCPV6_SERVER: u16 = 547;
const PORT_SSDP: u16 = 1900;
const ETHER_TYPE_LLDP: EtherType = EtherType(0x88cc);
/// The port DNS queries go to and answers come from, as the datapath samples them.
pub const PORT_DNS: u16 = 53;
const TLS_HANDSHAKE: u8 = 0x16;
const TLS_MAJOR: u8 = 0x03;
/// ICMPv6 neighbour discovery (RFC 4861), sampled for the source guard, and the bytes XDP
/// counts as the ICMP header (type, code, checksum).
const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
const ICMP_HEADER_BYTES: usize = 4;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_OPTION_END: u8 = 0x00;
const TCP_OPTION_NOP: u8 = 0x01;
const TCP_OPTION_MSS: u8 = 0x02;
const TCP_OPTION_WINDOW_SCALE: u8 = 0x03;
/// Offset of the flags byte in a TCP header.
const TCP_FLAGS_OFFSET: usize = 13;

/// Why a capture cannot be replayed. Frames that do not parse are not errors: they are
/// counted in `ReplayStats::malformed`, as XDP counts them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("cannot open capture {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    /// Neither a libpcap nor a pcapng file, or its header is damaged.
    #[error("{path} is not a readable libpcap or pcapng capture: {source}")]
    Format { path: PathBuf, source: pcap_file::PcapError },
    /// The capture's link type is not Ethernet.
    #[error("{path} has link type {datalink:?}; only Ethernet captures can be replayed")]
    LinkType { path: PathBuf, datalink: DataLink },
}

/// Every device's counters for one interval `[start, start + length)`. Only devices that sent
/// or received something appear; intervals in which nobody did are not emitted, so a gap
/// between two intervals means zero traffic for everyone.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntervalCounters {
    pub start: SystemTime,
    pub length: Duration,
    pub devices: BTreeMap<Mac, TrafficCounters>,
}

/// One replayed item, in capture order: an interval's counters come out before the first
/// event of a later interval.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplayItem {
    Event(DatapathEvent),
    Interval(IntervalCounters),
}

/// What a replay saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayStats {
    pub frames: u64,
    /// Frames XDP would have called malformed (truncated headers...), still counted as tx.
    pub malformed: u64,
    pub flows: u64,
    pub samples: u64,
    /// The capture ended in a damaged record; what came before was replayed.
    pub truncated_capture: bool,
    /// pcapng packets not replayed: of an interface that is not Ethernet, or without one.
    pub skipped_frames: u64,
}

/// The XDP program's view of frames, one frame at a time. Feed frames in time order with
/// `frame`, then call `finish` for the last interval.
pub struct Replayer {
    interval: Duration,
    seen_flows: HashSet<FlowId>,
    /// Index (since the epoch, in intervals) and counters of the interval being filled.
    current: Option<(u128, BTreeMap<Mac, TrafficCounters>)>,
    stats: ReplayStats,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FlowId {
    mac: Mac,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    proto: u8,
}

impl Replayer {
    /// `interval` is the counter interval; zero is raised to one nanosecond.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval: interval.max(Duration::from_nanos(1)),
            seen_flows: HashSet::new(),
            current: None,
            stats: ReplayStats::default(),
        }
    }

    pub fn stats(&self) -> ReplayStats {
        self.stats
    }

    /// Replays one Ethernet frame seen at `time`; `wire_len` is its length on the wire (the
    /// capture may hold fewer bytes). Pushes the resulting items to `out`.
    pub fn frame(&mut self, time: SystemTime, frame: &[u8], wire_len: u32, out: &mut impl FnMut(ReplayItem)) {
        self.stats.frames += 1;
        let Some(header) = frame.get(..14) else {
            self.stats.malformed += 1;
            return;
        };
        let dst_mac = Mac([header[0], header[1], header[2], header[3], header[4], header[5]]);
        let mac = Mac([header[6], header[7], header[8], header[9], header[10], header[11]]);
        self.count(time, mac, dst_mac, u64::from(wire_len), out);

        let Some(ether) = ether_payload(frame) else {
            self.stats.malformed += 1;
            return;
        };
        let link_sample = match ether.ether_type {
            EtherType::ARP => Some(SampleKind::Arp),
            ETHER_TYPE_LLDP => Some(SampleKind::Lldp),
            _ => None,
        };
        if let Some(kind) = link_sample {
            let l3_offset = offset_in(frame, ether.payload);
            self.sample(time, mac, kind, frame, l3_offset, l3_offset, wire_len, out);
            return;
        }
        if ether.ether_type != EtherType::IPV4 && ether.ether_type != EtherType::IPV6 {
            return;
        }
        let packet = match SlicedPacket::from_ether_type(ether.ether_type, ether.payload) {
            Ok(packet) => packet,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let Some(net) = &packet.net else { return };
        let (src, dst, ttl, dont_fragment, l3_offset) = match net {
            NetSlice::Ipv4(ipv4) => {
                let header = ipv4.header();
                (
                    IpAddr::from(header.source()),
                    IpAddr::from(header.destination()),
                    header.ttl(),
                    u8::from(header.dont_fragment()),
                    offset_in(frame, header.slice()),
                )
            }
            NetSlice::Ipv6(ipv6) => {
                let header = ipv6.header();
                (
                    IpAddr::from(header.source()),
                    IpAddr::from(header.destination()),
                    header.hop_limit(),
                    0,
                    offset_in(frame, header.slice()),
                )
            }
            // Only IPv4 and IPv6 EtherTypes reach the slicer (ARP was sampled above).
            NetSlice::Arp(_) => return,
        };
        let ip_proto = net.ip_payload_ref().map_or(0, |payload| payload.ip_number.0);
        let mut flow = FlowObservation {
            time,
            mac,
            src,
            dst,
            src_port: 0,
            dst_port: 0,
            proto: ip_proto,
            frame_bytes: wire_len,
            tcp_flags: 0,
            syn: None,
            verdict: verdict::PASS,
            reason: reason::NONE,
            access: Access::Unknown,
        };
        let mut sample = None;
        match &packet.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                flow.src_port = tcp.source_port();
                flow.dst_port = tcp.destination_port();
                flow.tcp_flags = tcp.header_slice().get(TCP_FLAGS_OFFSET).copied().unwrap_or_default();
                if flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                    flow.syn = Some(syn_fingerprint(tcp.window_size(), tcp.options(), ttl, dont_fragment));
                }
                if tcp.payload().starts_with(&[TLS_HANDSHAKE, TLS_MAJOR]) {
                    sample = Some((SampleKind::Tls, offset_in(frame, tcp.payload())));
                }
            }
            Some(TransportSlice::Udp(udp)) => {
                flow.src_port = udp.source_port();
                flow.dst_port = udp.destination_port();
                let ports = [flow.src_port, flow.dst_port];
                let payload_offset = offset_in(frame, udp.payload());
                if ports.contains(&PORT_DHCP_SERVER) || ports.contains(&PORT_DHCP_CLIENT) {
                    sample = Some((SampleKind::Dhcp, payload_offset));
                } else if ports.contains(&PORT_DHCPV6_SERVER) || ports.contains(&PORT_DHCPV6_CLIENT) {
                    sample = Some((SampleKind::Dhcpv6, payload_offset));
                } else if ports.contains(&PORT_DNS) {
                    sample = Some((SampleKind::Dns, payload_offset));
                } else if ports.contains(&PORT_SSDP) {
                    sample = Some((SampleKind::Ssdp, payload_offset));
                }
            }
            Some(TransportSlice::Icmpv4(icmp)) => {
                flow.dst_port = u16::from(icmp.type_u8()) << 8 | u16::from(icmp.code_u8());
            }
            Some(TransportSlice::Icmpv6(icmp)) => {
                flow.dst_port = u16::from(icmp.type_u8()) << 8 | u16::from(icmp.code_u8());
                if matches!(icmp.type_u8(), ICMPV6_NEIGHBOR_SOLICITATION | ICMPV6_NEIGHBOR_ADVERTISEMENT) {
                    // XDP's payload starts after type, code and checksum.
                    sample = Some((SampleKind::Ndp, offset_in(frame, icmp.slice()) + ICMP_HEADER_BYTES));
                }
            }
            None => {
                // Fragments and protocols without ports: a flow by address pair. A truncated
                // TCP/UDP/ICMP header is malformed for XDP (BAD_L4) and opens no flow.
                if matches!(ip_proto, proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6)
                    && !packet.is_ip_payload_fragmented()
                {
                    self.stats.malformed += 1;
                    return;
                }
            }
        }
        self.flow(flow, out);
        if let Some((kind, payload_offset)) = sample {
            self.sample(time, mac, kind, frame, l3_offset, payload_offset, wire_len, out);
        }
    }

    /// Emits the last interval's counters.
    pub fn finish(&mut self, out: &mut impl FnMut(ReplayItem)) {
        if let Some((index, devices)) = self.current.take() {
            out(ReplayItem::Interval(self.interval_counters(index, devices)));
        }
    }

    fn flow(&mut self, flow: FlowObservation, out: &mut impl FnMut(ReplayItem)) {
        let id = FlowId {
            mac: flow.mac,
            src: flow.src,
            dst: flow.dst,
            src_port: flow.src_port,
            dst_port: flow.dst_port,
            proto: flow.proto,
        };
        if self.seen_flows.len() >= FLOW_MEMORY {
            // Bounded memory, as the LRU map: forget everything rather than track recency.
            self.seen_flows.clear();
        }
        if self.seen_flows.insert(id) {
            self.stats.flows += 1;
            out(ReplayItem::Event(DatapathEvent::Flow(flow)));
        }
    }

    #[expect(clippy::too_many_arguments, reason = "mirrors the XDP sample helper's arguments")]
    fn sample(
        &mut self,
        time: SystemTime,
        mac: Mac,
        kind: SampleKind,
        frame: &[u8],
        l3_offset: usize,
        payload_offset: usize,
        wire_len: u32,
        out: &mut impl FnMut(ReplayItem),
    ) {
        let Some(l3) = frame.get(l3_offset..).filter(|l3| !l3.is_empty()) else { return };
        let data = l3[..l3.len().min(SAMPLE_BYTES)].to_vec();
        let payload_offset = payload_offset.saturating_sub(l3_offset).min(data.len());
        self.stats.samples += 1;
        // XDP stores the frame length in a u16.
        let frame_bytes = wire_len.min(u32::from(u16::MAX));
        out(ReplayItem::Event(DatapathEvent::Sample(PacketSample {
            time,
            mac,
            kind,
            data,
            payload_offset,
            frame_bytes,
            verdict: verdict::PASS,
        })));
    }

    fn count(&mut self, time: SystemTime, src: Mac, dst: Mac, bytes: u64, out: &mut impl FnMut(ReplayItem)) {
        let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let index = since_epoch.as_nanos() / self.interval.as_nanos();
        match &mut self.current {
            // Captures are nearly time-ordered; a frame from an earlier interval joins the
            // current one rather than reopening a closed interval.
            Some((current, _)) if index <= *current => {}
            _ => {
                if let Some((old, devices)) = self.current.replace((index, BTreeMap::new())) {
                    out(ReplayItem::Interval(self.interval_counters(old, devices)));
                }
            }
        }
        let Some((_, devices)) = &mut self.current else { return };
        if !is_group(&src) {
            let counters = devices.entry(src).or_default();
            counters.tx_bytes += bytes;
            counters.tx_packets += 1;
        }
        if !is_group(&dst) {
            let counters = devices.entry(dst).or_default();
            counters.rx_bytes += bytes;
            counters.rx_packets += 1;
        }
    }

    fn interval_counters(&self, index: u128, devices: BTreeMap<Mac, TrafficCounters>) -> IntervalCounters {
        let nanos = index.saturating_mul(self.interval.as_nanos());
        let start =
            SystemTime::UNIX_EPOCH + Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32);
        IntervalCounters { start, length: self.interval, devices }
    }
}

/// Broadcast and multicast MACs are nobody's device.
fn is_group(mac: &Mac) -> bool {
    mac.0[0] & 0x01 != 0
}

/// The EtherType and payload after the Ethernet header and at most `MAX_VLAN_TAGS` VLAN tags
/// (802.1Q, 802.1ad or 0x9100); `None` when the frame or a tag is cut short. Anything
/// deeper (a third tag, MACsec) is left as an unknown EtherType, so such frames open no flow.
/// Walked here rather than by `SlicedPacket::from_ethernet`, which also slices ARP (a truncated
/// ARP packet would become an error, where XDP still samples it), a third tag and MACsec.
fn ether_payload(frame: &[u8]) -> Option<EtherPayloadSlice<'_>> {
    let mut payload = Ethernet2Slice::from_slice_without_fcs(frame).ok()?.payload();
    for _ in 0..MAX_VLAN_TAGS {
        if !matches!(
            payload.ether_type,
            EtherType::VLAN_TAGGED_FRAME | EtherType::PROVIDER_BRIDGING | EtherType::VLAN_DOUBLE_TAGGED_FRAME
        ) {
            break;
        }
        payload = SingleVlanSlice::from_slice(payload.payload).ok()?.payload();
    }
    Some(payload)
}

/// Where `part` starts in `whole`; `part` is always a sub-slice handed out by etherparse.
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize).min(whole.len())
}

/// The SYN fingerprint exactly as `gateway-ebpf/src/parse.rs::syn_fingerprint` builds it: the
/// option kinds in order (up to `MAX_TCP_OPTIONS`, EOL included), MSS and window scale.
/// This walks option kinds and lengths as the XDP program does rather than with etherparse's
/// option iterator, which stops at unknown kinds where XDP does not.
fn syn_fingerprint(window: u16, options: &[u8], ttl: u8, dont_fragment: u8) -> SynFingerprint {
    let mut fp = SynFingerprint { window, ttl, dont_fragment, window_scale: u8::MAX, ..Default::default() };
    let mut at = 0;
    for i in 0..MAX_TCP_OPTIONS {
        let Some(&kind) = options.get(at) else { break };
        fp.option_kinds[i] = kind;
        fp.option_count = i as u8 + 1;
        match kind {
            TCP_OPTION_END => break,
            TCP_OPTION_NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = options.get(at + 1) else { break };
        if len < 2 {
            break;
        }
        match (kind, len, options.get(at + 2..at + usize::from(len))) {
            (TCP_OPTION_MSS, 4, Some(value)) => fp.mss = u16::from_be_bytes([value[0], value[1]]),
            (TCP_OPTION_WINDOW_SCALE, 3, Some(value)) => fp.window_scale = value[0],
            _ => {}
        }
        at += usize::from(len);
    }
    fp
}

/// Items of one capture file, in order, as an iterator. Reading stops at the first damaged
/// record (`stats().truncated_capture`).
pub struct CaptureReplay<R: Read> {
    reader: Option<CaptureReader<R>>,
    replayer: Replayer,
    pending: VecDeque<ReplayItem>,
}

impl CaptureReplay<BufReader<File>> {
    /// Opens a libpcap (Ethernet) or pcapng file.
    pub fn open(path: &Path, interval: Duration) -> Result<Self, ReplayError> {
        let file = File::open(path).map_err(|source| ReplayError::Open { path: path.to_owned(), source })?;
        Self::new(BufReader::new(file), path, interval)
    }
}

impl<R: Read> CaptureReplay<R> {
    /// Reads a libpcap or pcapng stream; `path` only names it in errors.
    pub fn new(reader: R, path: &Path, interval: Duration) -> Result<Self, ReplayError> {
        let reader = CaptureReader::new(reader, path)?;
        Ok(Self { reader: Some(reader), replayer: Replayer::new(interval), pending: VecDeque::new() })
    }

    pub fn stats(&self) -> ReplayStats {
        self.replayer.stats()
    }
}

impl<R: Read> Iterator for CaptureReplay<R> {
    type Item = ReplayItem;

    fn next(&mut self) -> Option<ReplayItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            let reader = self.reader.as_mut()?;
            let pending = &mut self.pending;
            let mut push = |item| pending.push_back(item);
            match reader.next_frame() {
                Some(Next::Frame(frame)) => self.replayer.frame(frame.time, &frame.data, frame.wire_len, &mut push),
                Some(Next::Skipped) => self.replayer.stats.skipped_frames += 1,
                end => {
                    if matches!(end, Some(Next::Damaged(_))) {
                        self.replayer.stats.truncated_capture = true;
                    }
                    self.reader = None;
                    self.replayer.finish(&mut push);
                }
            }
        }
    }
}

/// Replays capture files one after the other (each with fresh flow memory, as if the gateway
/// restarted between them), calling `out` for every item. Returns the stats of each file.
pub fn replay_files(
    paths: &[PathBuf],
    interval: Duration,
    mut out: impl FnMut(&Path, ReplayItem),
) -> Result<Vec<ReplayStats>, ReplayError> {
    let mut stats = Vec::with_capacity(paths.len());
    for path in paths {
        let mut replay = CaptureReplay::open(path, interval)?;
        for item in replay.by_ref() {
            out(path, item);
        }
        stats.push(replay.stats());
    }
    Ok(stats)
}

#[cfg(test)]
mod tests;
