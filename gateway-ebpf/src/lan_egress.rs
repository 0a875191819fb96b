//! The LAN egress program (TC, on the LAN interface's egress): what leaves towards the
//! devices, which XDP never sees. It only observes. A DNS resolver running on the gateway
//! itself (dnsmasq, unbound, ..., the server DHCP hands out) answers the devices through
//! here, so its answers are sampled as the WAN program samples answers from upstream
//! (`sample_kind::DNS_ANSWER`), and DNS-name rules follow them too. Every packet goes on
//! unchanged.
//!
//! Only the gateway's own packets are sampled: a packet it forwards (a device's forged
//! "answer" routed to another device, an upstream answer the WAN program already sampled)
//! was received on an interface first, so its `ingress_ifindex` is set.
use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use gateway_ebpf::{MacKey, proto, sample_kind};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};

use crate::{
    classify,
    decision::Decision,
    events, flow,
    wire::{ether_type, ipv4 as v4, port},
};

/// The program's entry. Always `TC_ACT_UNSPEC`, which tcx reads as `TCX_NEXT`: the next
/// program (or the qdisc) decides, as if this one were not there.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    let Some(config) = crate::configured() else { return TC_ACT_UNSPEC };
    if config.sample_packets != 0 && sent_by_gateway(ctx) {
        if let Some(answer) = dns_answer(ctx) {
            let mac = MacKey::new(answer.device);
            let state = classify::device(&mac).state;
            let kind = sample_kind::DNS_ANSWER;
            events::sample(ctx, &mac, kind, EthHdr::LEN, answer.payload_offset, state, &Decision::PASS, flow::now());
        }
    }
    TC_ACT_UNSPEC
}

/// Whether the gateway's own stack sent the packet (a forwarded one has the index of the
/// interface it came in by).
#[inline(always)]
fn sent_by_gateway(ctx: &TcContext) -> bool {
    // SAFETY: a field of the context the kernel handed in, readable by TC programs.
    unsafe { (*ctx.skb.skb).ingress_ifindex == 0 }
}

/// A UDP datagram from port 53, and where it goes.
struct Answer {
    /// The destination MAC: the device it answers.
    device: [u8; 6],
    /// Offset of the DNS message.
    payload_offset: usize,
}

/// The datagram, when the frame is UDP from port 53 over IPv4 or IPv6 (untagged: the stack
/// hands VLAN tags to the driver out of band). Fragments past the first carry no UDP header;
/// userspace refuses the rest of a fragmented answer.
#[inline(always)]
fn dns_answer(ctx: &TcContext) -> Option<Answer> {
    let eth: EthHdr = ctx.load(0).ok()?;
    let l4_offset = match u16::from_be(eth.ether_type) {
        ether_type::IPV4 => {
            let ip: Ipv4Hdr = ctx.load(EthHdr::LEN).ok()?;
            let header_len = usize::from(ip.ihl());
            if ip.version() != v4::VERSION || header_len < Ipv4Hdr::LEN || ip.proto != proto::UDP {
                return None;
            }
            if ip.frag_offset() != 0 {
                return None;
            }
            EthHdr::LEN + header_len
        }
        // The gateway's own answers carry no extension headers.
        ether_type::IPV6 => {
            let ip: Ipv6Hdr = ctx.load(EthHdr::LEN).ok()?;
            if ip.next_hdr != proto::UDP {
                return None;
            }
            EthHdr::LEN + Ipv6Hdr::LEN
        }
        _ => return None,
    };
    let udp: UdpHdr = ctx.load(l4_offset).ok()?;
    (u16::from_be_bytes(udp.src) == port::DNS)
        .then_some(Answer { device: eth.dst_addr, payload_offset: l4_offset + UdpHdr::LEN })
}
