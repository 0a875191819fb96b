//! Step 1: parse the frame. Ethernet (with up to `MAX_VLAN_TAGS` 802.1Q/802.1ad tags), ARP,
//! IPv4 (options skipped by IHL), IPv6 (up to `MAX_IPV6_EXT_HEADERS` extension headers),
//! TCP (with the SYN's options for a fingerprint), UDP, ICMP and ICMPv6.
//!
//! Every read goes through `ptr_at`, which checks it against `data_end`; no length field from
//! the packet is trusted beyond what the frame actually holds. A frame that is not what its
//! headers claim is an `Err(reason)`, never a guess.
use aya_ebpf::programs::XdpContext;
use gateway_ebpf::{MAX_IPV6_EXT_HEADERS, MAX_TCP_OPTIONS, MAX_VLAN_TAGS, SynFingerprint, proto, reason};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
const IPV4_DONT_FRAGMENT: u16 = 0x4000;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// No header starts further into a frame than this (VLAN tags, IPv6 extension headers and
/// TCP options included, a frame is well past its headers by then).
const MAX_HEADER_OFFSET: usize = 4_096;

/// What a frame's link layer says.
#[derive(Clone, Copy)]
pub struct Link {
    pub src_mac: [u8; 6],
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
    /// Host order; ICMP: type << 8 | code in `dst_port`.
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

/// The source MAC, if the frame holds a whole Ethernet header.
#[inline(always)]
pub fn src_mac(ctx: &XdpContext) -> Option<[u8; 6]> {
    // SAFETY: bounds checked by ptr_at.
    ptr_at::<EthHdr>(ctx, 0).map(|eth| unsafe { (*eth).src_addr })
}

/// Ethernet and VLAN tags.
#[inline(always)]
pub fn link(ctx: &XdpContext) -> Result<Link, u32> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(reason::RUNT)?;
    // SAFETY: bounds checked by ptr_at.
    let (src_mac, mut ether_type) = unsafe { ((*eth).src_addr, u16::from_be((*eth).ether_type)) };
    let mut offset = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // A VLAN tag is TCI (2 bytes) then the inner EtherType (2 bytes).
        let inner = ptr_at::<[u8; 4]>(ctx, offset).ok_or(reason::BAD_VLAN)?;
        // SAFETY: bounds checked by ptr_at.
        let tag = unsafe { *inner };
        ether_type = be16([tag[2], tag[3]]);
        offset += 4;
    }
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return Err(reason::BAD_VLAN);
    }
    Ok(Link { src_mac, ether_type, l3_offset: offset })
}

/// IPv4 or IPv6 and the transport header. Call only for those EtherTypes.
// A BPF subprogram, not inlined: the verifier then checks each parse path once instead of once per later branch.
#[inline(never)]
pub fn ip(ctx: &XdpContext, link: &Link) -> Result<Ip, u32> {
    if link.ether_type == ETH_P_IPV4 { ipv4(ctx, link.l3_offset) } else { ipv6(ctx, link.l3_offset) }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, offset: usize) -> Result<Ip, u32> {
    let hdr = ptr_at::<Ipv4Hdr>(ctx, offset).ok_or(reason::BAD_IPV4)?;
    // SAFETY: bounds checked by ptr_at.
    let hdr = unsafe { *hdr };
    let version = hdr.vihl >> 4;
    let header_len = usize::from(hdr.vihl & 0x0f) * 4;
    if version != 4 || header_len < Ipv4Hdr::LEN {
        return Err(reason::BAD_IPV4);
    }
    // The options must be in the frame too (IHL is a length field: check it).
    if ctx.data() + offset + header_len > ctx.data_end() {
        return Err(reason::BAD_IPV4);
    }
    let frags = be16(hdr.frags);
    let mut ip = Ip {
        version: 4,
        src: [0; 16],
        dst: [0; 16],
        proto: hdr.proto,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        ttl: hdr.ttl,
        dont_fragment: u8::from(frags & IPV4_DONT_FRAGMENT != 0),
        is_fragment: u8::from(frags & 0x1fff != 0),
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
fn ipv6(ctx: &XdpContext, offset: usize) -> Result<Ip, u32> {
    let hdr = ptr_at::<Ipv6Hdr>(ctx, offset).ok_or(reason::BAD_IPV6)?;
    // SAFETY: bounds checked by ptr_at.
    let hdr = unsafe { *hdr };
    if hdr.vcf[0] >> 4 != 6 {
        return Err(reason::BAD_IPV6);
    }
    let mut ip = Ip {
        version: 6,
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
        match ip.proto {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT => {}
            _ => {
                chain_ended = true;
                break;
            }
        }
        // Every extension header starts with next-header and a length byte.
        let ext = ptr_at::<[u8; 8]>(ctx, next).ok_or(reason::BAD_IPV6)?;
        // SAFETY: bounds checked by ptr_at.
        let ext = unsafe { *ext };
        let len = match ip.proto {
            IPV6_FRAGMENT => {
                // A non-first fragment carries no transport header.
                if be16([ext[2], ext[3]]) & 0xfff8 != 0 {
                    ip.is_fragment = 1;
                }
                8
            }
            // AH counts 4-byte units minus 2.
            IPV6_AUTH => (usize::from(ext[1]) + 2) * 4,
            _ => (usize::from(ext[1]) + 1) * 8,
        };
        ip.proto = ext[0];
        next += len;
    }
    if !chain_ended {
        // Either the chain is longer than we follow, or it ended exactly at the bound.
        match ip.proto {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT => {
                return Err(reason::BAD_IPV6);
            }
            _ => {}
        }
    }
    if ip.is_fragment != 0 {
        return Ok(ip);
    }
    transport(ctx, next, ip)
}

#[inline(always)]
fn transport(ctx: &XdpContext, offset: usize, mut ip: Ip) -> Result<Ip, u32> {
    ip.l4_offset = offset;
    match ip.proto {
        proto::TCP => {
            // Read as bytes: ports 0..4, data offset in the high nibble of 12, flags in 13.
            let hdr = ptr_at::<[u8; TcpHdr::LEN]>(ctx, offset).ok_or(reason::BAD_L4)?;
            // SAFETY: bounds checked by ptr_at.
            let hdr = unsafe { *hdr };
            let header_len = usize::from(hdr[12] >> 4) * 4;
            if header_len < TcpHdr::LEN || ctx.data() + offset + header_len > ctx.data_end() {
                return Err(reason::BAD_L4);
            }
            ip.src_port = be16([hdr[0], hdr[1]]);
            ip.dst_port = be16([hdr[2], hdr[3]]);
            ip.tcp_flags = hdr[13];
            ip.payload_offset = offset + header_len;
        }
        proto::UDP => {
            let hdr = ptr_at::<UdpHdr>(ctx, offset).ok_or(reason::BAD_L4)?;
            // SAFETY: bounds checked by ptr_at.
            let hdr = unsafe { *hdr };
            ip.src_port = be16(hdr.src);
            ip.dst_port = be16(hdr.dst);
            ip.payload_offset = offset + UdpHdr::LEN;
        }
        proto::ICMP | proto::ICMPV6 => {
            let hdr = ptr_at::<[u8; 4]>(ctx, offset).ok_or(reason::BAD_L4)?;
            // SAFETY: bounds checked by ptr_at.
            let hdr = unsafe { *hdr };
            ip.dst_port = u16::from(hdr[0]) << 8 | u16::from(hdr[1]);
            ip.payload_offset = offset + 4;
        }
        _ => {}
    }
    Ok(ip)
}

/// Whether the packet is a connection-opening SYN (SYN without ACK).
#[inline(always)]
pub fn is_syn(ip: &Ip) -> bool {
    ip.proto == proto::TCP && ip.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The SYN's fingerprint: TTL, window, and the TCP options in order (p0f-style).
///
/// Option bytes are read with `bpf_xdp_load_bytes`, one at a time: the helper checks the
/// packet bounds itself, whereas packet pointers moved by option lengths are beyond what the
/// verifier can follow. Only SYNs pay for it.
// A BPF subprogram, not inlined: only SYNs need it, and it keeps the option loop out of the main path.
#[inline(never)]
pub fn syn_fingerprint(ctx: &XdpContext, ip: &Ip) -> SynFingerprint {
    let mut fp =
        SynFingerprint { ttl: ip.ttl, dont_fragment: ip.dont_fragment, window_scale: 0xff, ..Default::default() };
    let Some(hdr) = ptr_at::<[u8; TcpHdr::LEN]>(ctx, ip.l4_offset) else { return fp };
    // SAFETY: bounds checked by ptr_at.
    let hdr = unsafe { *hdr };
    fp.window = be16([hdr[14], hdr[15]]);
    let options_end = ip.l4_offset + usize::from(hdr[12] >> 4) * 4;
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
            0 => break,
            1 => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(len) = load_u8(ctx, at + 1) else { break };
        if len < 2 {
            break;
        }
        if kind == 2 && len == 4 {
            if let (Some(hi), Some(lo)) = (load_u8(ctx, at + 2), load_u8(ctx, at + 3)) {
                fp.mss = be16([hi, lo]);
            }
        } else if kind == 3 && len == 3 {
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
