//! What the datapath tells the controller, decoded. The ring buffer (live) and the capture
//! replayer in `analyze` (offline) both produce these, so every later step works the same on
//! either source.
use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use gateway_ebpf::{BudgetEvent, EventHeader, FlowEvent, SampleEvent, SynFingerprint, event_kind, sample_kind};

use super::budget::{BudgetCrossing, Measure};
use crate::device::{Access, Mac};

/// A flow's first packet.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowObservation {
    pub time: SystemTime,
    pub mac: Mac,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 0 for protocols without ports; ICMP type/code for ICMP.
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    pub frame_bytes: u32,
    pub tcp_flags: u8,
    /// Present when the first packet was a TCP SYN.
    pub syn: Option<SynFingerprint>,
    /// What the datapath did with it (`gateway_ebpf::verdict`) and why (`gateway_ebpf::reason`).
    pub verdict: u8,
    pub reason: u32,
    /// The device's state when the packet was seen.
    pub access: Access,
}

/// What a sampled packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleKind {
    Dhcp,
    /// DNS a device sent (LAN side): its queries, and anything DNS-looking it sends.
    Dns,
    /// DNS towards the device that no device sent: from upstream (WAN program) or from a
    /// resolver on the gateway itself (LAN egress program). Opens DNS-name rules when it
    /// answers one of the device's queries (`policy::dns`).
    DnsAnswer,
    Arp,
    /// A TCP payload starting like a TLS handshake record.
    Tls,
    /// A DHCPv6 message (MUD URL option 112).
    Dhcpv6,
    /// An LLDPDU, from the Ethernet payload on (MUD URL TLV); `payload_offset` is 0.
    Lldp,
    /// An SSDP message (UDP 1900): the device's UPnP announcements and search answers.
    Ssdp,
    /// An ICMPv6 Neighbor Solicitation or Advertisement the device sent: the addresses it
    /// claims (`source_guard`).
    Ndp,
}

/// A copy of a DHCP, DHCPv6, DNS, ARP, TLS, LLDP, SSDP or neighbour-discovery packet.
#[derive(Clone, Debug, PartialEq)]
pub struct PacketSample {
    pub time: SystemTime,
    pub mac: Mac,
    pub kind: SampleKind,
    /// From the L3 header on (ARP, LLDP: from the Ethernet payload), possibly truncated to
    /// `gateway_ebpf::SAMPLE_BYTES`.
    pub data: Vec<u8>,
    /// Where the L4 payload starts in `data` (0 for ARP).
    pub payload_offset: usize,
    pub frame_bytes: u32,
    /// What the datapath did with the packet (`gateway_ebpf::verdict`): a DNS query counts
    /// only when it was passed on to its resolver.
    pub verdict: u8,
}

impl PacketSample {
    /// The L4 payload (DHCP message, DNS message, TLS record), possibly truncated.
    pub fn payload(&self) -> &[u8] {
        self.data.get(self.payload_offset..).unwrap_or_default()
    }
}

/// One decoded ring-buffer record.
#[derive(Clone, Debug, PartialEq)]
pub enum DatapathEvent {
    Flow(FlowObservation),
    Sample(PacketSample),
    /// A device went over one of its budgets (`datapath::budget`).
    Budget(BudgetCrossing),
}

impl DatapathEvent {
    /// When the datapath saw it.
    pub fn time(&self) -> SystemTime {
        match self {
            DatapathEvent::Flow(flow) => flow.time,
            DatapathEvent::Sample(sample) => sample.time,
            DatapathEvent::Budget(crossing) => crossing.time,
        }
    }

    /// The device it is about.
    pub fn mac(&self) -> Mac {
        match self {
            DatapathEvent::Flow(flow) => flow.mac,
            DatapathEvent::Sample(sample) => sample.mac,
            DatapathEvent::Budget(crossing) => crossing.mac,
        }
    }
}

/// Why a ring-buffer record could not be decoded (a version skew between the programs and
/// this controller, never packet content: XDP writes these records itself).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("record of {len} bytes is too short for {what}")]
    Short { what: &'static str, len: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("unknown sample kind {0}")]
    UnknownSample(u8),
    #[error("unknown budget measure {0}")]
    UnknownMeasure(u8),
}

/// Turns `bpf_ktime_get_ns` (CLOCK_MONOTONIC) into wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    boot: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        let monotonic = monotonic_now();
        Self { boot: SystemTime::now() - monotonic }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(ktime_ns)
    }
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default()
}

fn read<T: gateway_ebpf::FromBytes>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    T::from_bytes(bytes).ok_or(DecodeError::Short { what, len: bytes.len() })
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8], clock: &Clock) -> Result<DatapathEvent, DecodeError> {
    let header: EventHeader = read(record, "an event header")?;
    let access = Access::from_code(header.device_state).unwrap_or(Access::Unknown);
    match header.kind {
        event_kind::NEW_FLOW => {
            let event: FlowEvent = read(record, "a flow event")?;
            let key = event.key;
            let (src, dst) = addresses(key.ip_version, key.src_addr, key.dst_addr);
            Ok(DatapathEvent::Flow(FlowObservation {
                time: clock.wall(header.timestamp_ns),
                mac: Mac(key.mac.addr),
                src,
                dst,
                src_port: key.src_port,
                dst_port: key.dst_port,
                proto: key.proto,
                frame_bytes: event.frame_bytes,
                tcp_flags: event.tcp_flags,
                syn: (event.syn.option_count > 0 || event.syn.window > 0).then_some(event.syn),
                verdict: header.verdict,
                reason: header.reason,
                access,
            }))
        }
        event_kind::SAMPLE => {
            let event: SampleEvent = read(record, "a sample event")?;
            let kind = match event.kind {
                sample_kind::DHCP => SampleKind::Dhcp,
                sample_kind::DNS => SampleKind::Dns,
                sample_kind::DNS_ANSWER => SampleKind::DnsAnswer,
                sample_kind::ARP => SampleKind::Arp,
                sample_kind::TLS => SampleKind::Tls,
                sample_kind::DHCPV6 => SampleKind::Dhcpv6,
                sample_kind::LLDP => SampleKind::Lldp,
                sample_kind::SSDP => SampleKind::Ssdp,
                sample_kind::NDP => SampleKind::Ndp,
                other => return Err(DecodeError::UnknownSample(other)),
            };
            let len = usize::from(event.len).min(event.data.len());
            Ok(DatapathEvent::Sample(PacketSample {
                time: clock.wall(header.timestamp_ns),
                mac: Mac(event.mac.addr),
                kind,
                data: event.data[..len].to_vec(),
                payload_offset: usize::from(event.payload_offset).min(len),
                frame_bytes: u32::from(event.frame_bytes),
                verdict: header.verdict,
            }))
        }
        event_kind::BUDGET => {
            let event: BudgetEvent = read(record, "a budget event")?;
            Ok(DatapathEvent::Budget(BudgetCrossing {
                time: clock.wall(header.timestamp_ns),
                mac: Mac(event.mac.addr),
                measure: Measure::from_code(event.measure).ok_or(DecodeError::UnknownMeasure(event.measure))?,
                limit: event.limit,
                window: Duration::from_nanos(event.window_ns),
                counted: event.counted,
                elapsed: Duration::from_nanos(event.elapsed_ns),
            }))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn addresses(version: u8, src: [u8; 16], dst: [u8; 16]) -> (IpAddr, IpAddr) {
    if version == 6 {
        (IpAddr::from(src), IpAddr::from(dst))
    } else {
        let v4 = |a: [u8; 16]| IpAddr::from([a[0], a[1], a[2], a[3]]);
        (v4(src), v4(dst))
    }
}

/// Reads the `EVENTS` ring buffer as the kernel fills it, without busy-polling: the ring
/// buffer's fd becomes readable when records are waiting.
pub struct RingReader {
    ring: tokio::io::unix::AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    clock: Clock,
    /// Records that did not decode (a version skew; logged once per kind).
    pub undecodable: u64,
}

/// Most records drained per wake-up, so one busy burst cannot starve the other tasks.
pub const RING_BATCH: usize = 4_096;

impl RingReader {
    pub fn new(ebpf: &mut aya::Ebpf) -> Result<Self, super::ControlError> {
        let name = gateway_ebpf::maps::EVENTS;
        let map = ebpf
            .take_map(name)
            .ok_or(super::ControlError::Map { map: name, message: "missing from the object".into() })?;
        let ring = aya::maps::RingBuf::try_from(map)
            .map_err(|e| super::ControlError::Map { map: name, message: e.to_string() })?;
        // `with_interest` is deprecated for fds the wrapper does not own; here the AsyncFd owns
        // the RingBuf and so its fd, for as long as it is registered, which is the safe case.
        #[expect(deprecated, reason = "the AsyncFd owns the ring buffer and its fd")]
        let ring = tokio::io::unix::AsyncFd::with_interest(ring, tokio::io::Interest::READABLE)
            .map_err(|e| super::ControlError::Map { map: name, message: e.to_string() })?;
        Ok(Self { ring, clock: Clock::now(), undecodable: 0 })
    }

    /// Waits for records, then decodes up to `RING_BATCH` of them into `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<DatapathEvent>) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut drained = 0;
        while drained < RING_BATCH {
            let Some(record) = ring.next() else { break };
            drained += 1;
            match decode(&record, &self.clock) {
                Ok(event) => out.push(event),
                Err(error) => {
                    if self.undecodable == 0 {
                        tracing::warn!(%error, "undecodable ring-buffer record (XDP object and controller out of step?)");
                    }
                    self.undecodable += 1;
                }
            }
        }
        if drained < RING_BATCH {
            guard.clear_ready();
        }
        Ok(())
    }
}
