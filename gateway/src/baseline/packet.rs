//! What a flow or a sample says about who talks to whom: whether the device opened the
//! conversation, whether the destination is a peer at all, what an ARP packet claims.
use std::net::IpAddr;

use gateway_ebpf::proto;

use crate::{
    datapath::events::{FlowObservation, PacketSample, SampleKind},
    device::Mac,
};

/// What an ARP packet claims: `sender_ip` is at `sender_mac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpClaim {
    pub sender_mac: Mac,
    pub sender_ip: std::net::Ipv4Addr,
    pub target_ip: std::net::Ipv4Addr,
}

/// Decodes an ARP sample (Ethernet/IPv4 only, by `etherparse`); `None` for anything else,
/// and for probes (sender 0.0.0.0, RFC 5227), which claim nothing.
pub fn arp_claim(sample: &PacketSample) -> Option<ArpClaim> {
    if sample.kind != SampleKind::Arp {
        return None;
    }
    let arp = etherparse::ArpPacketSlice::from_slice(sample.payload()).ok()?;
    let sender_mac = Mac(<[u8; 6]>::try_from(arp.sender_hw_addr()).ok()?);
    let sender_ip = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(arp.sender_protocol_addr()).ok()?);
    let target_ip = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(arp.target_protocol_addr()).ok()?);
    (!sender_ip.is_unspecified()).then_some(ArpClaim { sender_mac, sender_ip, target_ip })
}

/// TCP flag bits (RFC 9293).
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// True when this flow's first packet opens a conversation from the device (a TCP SYN
/// without ACK; UDP from a port not below the destination port, which excludes replies
/// from services like SSDP 1900 → ephemeral; ICMP and the rest always), as opposed to the
/// device answering someone else.
pub fn is_initiation(flow: &FlowObservation) -> bool {
    match flow.proto {
        proto::TCP => flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
        proto::UDP => flow.src_port >= flow.dst_port,
        _ => true,
    }
}

/// Multicast, broadcast and unspecified destinations are not conversations with a peer.
pub fn is_group_or_unspecified(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.octets()[3] == 255,
        IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
    }
}
