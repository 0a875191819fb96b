//! Step 1: parse the frame. Ethernet (with up to `MAX_VLAN_TAGS` 802.1Q/802.1ad tags), ARP,
//! IPv4 (options skipped by IHL), IPv6 (up to `MAX_IPV6_EXT_HEADERS` extension headers),
//! TCP (with the SYN's options for a fingerprint), UDP, ICMP and ICMPv6.
//!
//! Every read goes through `ptr_at`, which checks it against `data_end`; no length field from
//! the packet is trusted beyond what the frame actually holds. A frame that is not what its
//! headers claim is an `Err(DropReason)`, never a guess.
use aya_ebpf::programs::XdpContext;
use gateway_ebpf::{DropReason, MAX_IPV6_EXT_HEADERS, MAX_TCP_OPTIONS, MAX_VLAN_TAGS, SynFingerprint, opener, proto};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::wire::{
    ether_type, icmp, ipv4 as v4, ipv6 as v6,
    tcp::{self, option},
    vlan,
};

/// No header starts further into a frame than this (VLAN tags, IPv6 extension headers and
/// TCP options included, a frame is well past its headers by then).
const MAX_HEADER_OFFSET: usize = 4_096;

/// What a frame's link layer says.
#[derive(Clone, Copy)]
pub struct Link {
    /// EtherType after the VLAN tags (host order).
    pub ether_type: u16,
    /// Offset of the L3 header.
    pub l3_offset: usize,
}

/// What the IP and transport headers say.
#[derive(Clone, Copy)]
pub struct Ip {
    /// 4 or 6.
    pub version: u8,
    /// Network order; IPv4 in the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub proto: u8,
    /// Host order; ICMP and ICMPv6: `type << 8 | code` in `dst_port`, `src_port` 0.
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub ttl: u8,
    pub dont_fragment: u8,
    /// A non-first fragment: no transport header, ports are 0.
    pub is_fragment: u8,
    /// Offset of the transport header (0 when there is none).
    pub l4_offset: usize,
    /// Offset of the L4 payload (0 when there is none).
    pub payload_offset: usize,
}

/// A bounds-checked pointer to a `T` at `offset` bytes into the frame.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    // Offsets computed from header fields, or handed back by a subprogram, may be unknown to
    // the verifier; an explicit cap keeps pointer arithmetic on them bounded.
    if offset > MAX_HEADER_OFFSET {
        return None;
    }
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

/// The big-endian `u16` at `at` in a header read as bytes.
#[inline(always)]
fn be16_at<const N: usize>(hdr: &[u8; N], at: usize) -> u16 {
    be16([hdr[at], hdr[at + 1]])
}

#[inline(always)]
fn is_vlan_tag(ether_type: u16) -> bool {
    ether_type == ether_type::VLAN || ether_type == ether_type::SERVICE_VLAN
}

/// Whether the frame carries IPv4 or IPv6, the EtherTypes `ip` parses.
#[inline(always)]
pub fn is_ip(link: &Link) -> bool {
    link.ether_type == ether_type::IPV4 || link.ether_type == ether_type::IPV6
}

/// The source MAC, if the frame holds a whole Ethernet header.
#[inline(always)]
pub fn src_mac(ctx: &XdpContext) -> Option<[u8; 6]> {
    // SAFETY: bounds checked by ptr_at.
    ptr_at::<EthHdr>(ctx, 0).map(|eth| unsafe { (*eth).src_addr })
}

/// Ethernet and VLAN tags.
#[inline(always)]
pub fn link(ctx: &XdpContext) -> Result<Link, DropReason> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(DropReason::Runt)?;
    // SAFETY: bounds checked by ptr_at.
    let mut ether_type = unsafe { u16::from_be((*eth).ether_type) };
    let mut offset = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan_tag(ether_type) {
            break;
        }
        let tag = ptr_at::<[u8; vlan::TAG_LEN]>(ctx, offset).ok_or(DropReason::BadVlan)?;
        // SAFETY: bounds checked by ptr_at.
        ether_type = be16_at(unsafe { &*tag }, vlan::INNER_ETHER_TYPE_AT);
        offset += vlan::TAG_LEN;
    }
    if is_vlan_tag(ether_type) {
        return Err(DropReason::BadVlan);
    }
    Ok(Link { ether_type, l3_offset: offset })
}

/// IPv4 or IPv6 and the transport header. Call only for those EtherTypes.
// A BPF subprogram, not inlined: the verifier then checks each parse path once instead of once per later branch.
#[inline(never)]
pub fn ip(ctx: &XdpContext, link: &Link) -> Result<Ip, DropReason> {
    if link.ether_type == ether_type::IPV4 { ipv4(ctx, link.l3_offset) } else { ipv6(ctx, link.l3_offset) }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, offset: usize) -> Result<Ip, DropReason> {
    let hdr = ptr_at::<Ipv4Hdr>(ctx, offset).ok_or(DropReason::BadIpv4)?;
    // SAFETY: bounds checked by ptr_at.
    let hdr = unsafe { *hdr };
    let header_len = usize::from(hdr.ihl());
    if hdr.version() != v4::VERSION || header_len < Ipv4Hdr::LEN {
        return Err(DropReason::BadIpv4);
    }
    // The options must be in the frame too (IHL is a length field: check it).
    if ctx.data() + offset + header_len > ctx.data_end() {
        return Err(DropReason::BadIpv4);
    }
    let mut ip = Ip {
        version: v4::VERSION,
        src: [0; 16],
        dst: [0; 16],
        proto: hdr.proto,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        ttl: hdr.ttl,
        dont_fragment: u8::from(be16(hdr.frags) & v4::DONT_FRAGMENT != 0),
        is_fragment: u8::from(hdr.frag_offset() != 0),
        l4_offset: 0,
        payload_offset: 0,
    };
    ip.src[..4].copy_from_slice(&hdr.src_addr);
    ip.dst[..4].copy_from_slice(&hdr.dst_addr);
    if ip.is_fragment != 0 {
        return Ok(ip);
    }
    transport(ctx, offset + header_len, ip)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, offset: usize) -> Result<Ip, DropReason> {
    let hdr = ptr_at::<Ipv6Hdr>(ctx, offset).ok_or(DropReason::BadIpv6)?;
    // SAFETY: bounds checked by ptr_at.
    let hdr = unsafe { *hdr };
    if hdr.version() != v6::VERSION {
        return Err(DropReason::BadIpv6);
    }
    let mut ip = Ip {
        version: v6::VERSION,
        src: hdr.src_addr,
        dst: hdr.dst_addr,
        proto: hdr.next_hdr,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        ttl: hdr.hop_limit,
        dont_fragment: 0,
        is_fragment: 0,
        l4_offset: 0,
        payload_offset: 0,
    };
    let mut next = offset + Ipv6Hdr::LEN;
    let mut chain_ended = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !v6::is_extension(ip.proto) {
            chain_ended = true;
            break;
        }
        let ext = ptr_at::<[u8; v6::EXT_MIN_LEN]>(ctx, next).ok_or(DropReason::BadIpv6)?;
        // SAFETY: bounds checked by ptr_at.
        let ext = unsafe { *ext };
        let units = usize::from(ext[v6::EXT_LEN_AT]);
        let len = match ip.proto {
            v6::FRAGMENT => {
                // A non-first fragment carries no transport header.
                if be16_at(&ext, v6::FRAGMENT_OFFSET_AT) & v6::FRAGMENT_OFFSET != 0 {
                    ip.is_fragment = 1;
                }
                v6::EXT_MIN_LEN
            }
            // AH counts 4-byte units minus 2.
            v6::AUTH => (units + 2) * 4,
            // The others count 8-byte units beyond the first 8 bytes.
            _ => (units + 1) * 8,
        };
        // The next-header byte comes first.
        ip.proto = ext[0];
        next += len;
    }
    // Either the chain is longer than we follow, or it ended exactly at the bound.
    if !chain_ended && v6::is_extension(ip.proto) {
        return Err(DropReason::BadIpv6);
    }
    if ip.is_fragment != 0 {
        return Ok(ip);
    }
    transport(ctx, next, ip)
}

#[inline(always)]
fn transport(ctx: &XdpContext, offset: usize, mut ip: Ip) -> Result<Ip, DropReason> {
    ip.l4_offset = offset;
    match ip.proto {
        proto::TCP => {
            // Read as bytes: `TcpHdr` keeps the data offset and flags in a bitfield.
            let hdr = ptr_at::<[u8; TcpHdr::LEN]>(ctx, offset).ok_or(DropReason::BadL4)?;
            // SAFETY: bounds checked by ptr_at.
            let hdr = unsafe { *hdr };
            let header_len = tcp_header_len(&hdr);
            if header_len < TcpHdr::LEN || ctx.data() + offset + header_len > ctx.data_end() {
                return Err(DropReason::BadL4);
            }
            ip.src_port = be16_at(&hdr, tcp::SRC_PORT_AT);
            ip.dst_port = be16_at(&hdr, tcp::DST_PORT_AT);
            ip.tcp_flags = hdr[tcp::FLAGS_AT];
            ip.payload_offset = offset + header_len;
        }
        proto::UDP => {
            let hdr = ptr_at::<UdpHdr>(ctx, offset).ok_or(DropReason::BadL4)?;
            // SAFETY: bounds checked by ptr_at.
            let hdr = unsafe { *hdr };
            ip.src_port = be16(hdr.src);
            ip.dst_port = be16(hdr.dst);
            ip.payload_offset = offset + UdpHdr::LEN;
        }
        proto::ICMP | proto::ICMPV6 => {
            let hdr = ptr_at::<[u8; icmp::HEADER_LEN]>(ctx, offset).ok_or(DropReason::BadL4)?;
            // SAFETY: bounds checked by ptr_at.
            let hdr = unsafe { *hdr };
            ip.dst_port = u16::from(hdr[icmp::TYPE_AT]) << 8 | u16::from(hdr[icmp::CODE_AT]);
            ip.payload_offset = offset + icmp::HEADER_LEN;
        }
        _ => {}
    }
    Ok(ip)
}

/// The TCP header's length in bytes, from its data offset (4-byte units).
#[inline(always)]
fn tcp_header_len(hdr: &[u8; TcpHdr::LEN]) -> usize {
    usize::from(hdr[tcp::DATA_OFFSET_AT] >> 4) * 4
}

/// Who opened the connection of a packet the device sent (`opener`), as far as the packet
/// tells: its SYN opens, its SYN-ACK answers a remote's SYN. `EITHER` for every other packet.
#[inline(always)]
pub fn opener_from_device(ip: &Ip) -> u8 {
    if ip.proto != proto::TCP || ip.tcp_flags & tcp::SYN == 0 {
        return opener::EITHER;
    }
    if ip.tcp_flags & tcp::ACK == 0 { opener::DEVICE } else { opener::REMOTE }
}

/// Whether the packet is a connection-opening SYN (SYN without ACK).
#[inline(always)]
pub fn is_syn(ip: &Ip) -> bool {
    ip.proto == proto::TCP && ip.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN
}

/// The SYN's fingerprint: TTL, window, and the TCP options in order (p0f-style).
///
/// Option bytes are read with `bpf_xdp_load_bytes`, one at a time: the helper checks the
/// packet bounds itself, whereas packet pointers moved by option lengths are beyond what the
/// verifier can follow. Only SYNs pay for it.
// A BPF subprogram, not inlined: only SYNs need it, and it keeps the option loop out of the main path.
#[inline(never)]
pub fn syn_fingerprint(ctx: &XdpContext, ip: &Ip) -> SynFingerprint {
    // A window scale of `u8::MAX` says the option is absent (see `SynFingerprint`).
    let mut fp =
        SynFingerprint { ttl: ip.ttl, dont_fragment: ip.dont_fragment, window_scale: u8::MAX, ..Default::default() };
    let Some(hdr) = ptr_at::<[u8; TcpHdr::LEN]>(ctx, ip.l4_offset) else { return fp };
    // SAFETY: bounds checked by ptr_at.
    let hdr = unsafe { *hdr };
    fp.window = be16_at(&hdr, tcp::WINDOW_AT);
    let options_end = ip.l4_offset + tcp_header_len(&hdr);
    let mut at = ip.l4_offset + TcpHdr::LEN;
    for i in 0..MAX_TCP_OPTIONS {
        if at >= options_end {
            break;
        }
        let Some(kind) = load_u8(ctx, at) else { break };
        // `get_mut` bounds the index where it is used (see flow::count_drop).
        let Some(slot) = fp.option_kinds.get_mut(i) else { break };
        *slot = kind;
        fp.option_count = i as u8 + 1;
        match kind {
            option::END => break,
            // One byte, no length.
            option::NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        // Kind, length, then the value.
        let Some(len) = load_u8(ctx, at + 1) else { break };
        if len < option::MIN_LEN {
            break;
        }
        if kind == option::MSS && len == option::MSS_LEN {
            if let (Some(hi), Some(lo)) = (load_u8(ctx, at + 2), load_u8(ctx, at + 3)) {
                fp.mss = be16([hi, lo]);
            }
        } else if kind == option::WINDOW_SCALE && len == option::WINDOW_SCALE_LEN {
            if let Some(scale) = load_u8(ctx, at + 2) {
                fp.window_scale = scale;
            }
        }
        at += usize::from(len);
    }
    fp
}

/// One packet byte through the helper (which does its own bounds check).
#[inline(always)]
fn load_u8(ctx: &XdpContext, offset: usize) -> Option<u8> {
    let mut byte = 0u8;
    // SAFETY: writes one byte into `byte`; the helper fails cleanly outside the packet.
    let rc =
        unsafe { aya_ebpf::helpers::generated::bpf_xdp_load_bytes(ctx.ctx, offset as u32, (&raw mut byte).cast(), 1) };
    (rc == 0).then_some(byte)
}
