//! What the wire says: EtherTypes, header layouts read as bytes, flag bits, option kinds and
//! well-known ports, each named once for the steps that read frames (`parse`, the programs'
//! samples). Not ABI: userspace never sees these; the headers `network_types` describes as
//! structs are read through those.

/// EtherTypes (IEEE 802 numbers), host order.
pub mod ether_type {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    /// An 802.1Q VLAN tag follows.
    pub const VLAN: u16 = 0x8100;
    /// An 802.1ad service tag follows (QinQ).
    pub const SERVICE_VLAN: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
    /// Link Layer Discovery Protocol (IEEE 802.1AB): sampled for the MUD URL TLV.
    pub const LLDP: u16 = 0x88cc;
}

/// A VLAN tag (802.1Q): TCI (2 bytes), then the EtherType of what follows.
pub mod vlan {
    pub const TAG_LEN: usize = 4;
    /// Offset of the inner EtherType in the tag.
    pub const INNER_ETHER_TYPE_AT: usize = 2;
}

/// IPv4 (RFC 791).
pub mod ipv4 {
    pub const VERSION: u8 = 4;
    /// The flags-and-fragment-offset field: the Don't Fragment flag.
    pub const DONT_FRAGMENT: u16 = 0x4000;
}

/// IPv6 (RFC 8200).
pub mod ipv6 {
    pub const VERSION: u8 = 6;
    /// Next-header values of the extension headers the parser follows.
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    /// The authentication header (RFC 4302), whose length counts 4-byte units minus 2.
    pub const AUTH: u8 = 51;
    pub const DEST_OPTS: u8 = 60;
    /// Every extension header starts with these 8 bytes: next header, length, and 6 more
    /// (the whole of a fragment header).
    pub const EXT_MIN_LEN: usize = 8;
    /// Offset of the length byte in an extension header.
    pub const EXT_LEN_AT: usize = 1;
    /// The fragment header's offset-and-flags field: where it sits, and the 13-bit offset
    /// in it (non-zero: not the first fragment).
    pub const FRAGMENT_OFFSET_AT: usize = 2;
    pub const FRAGMENT_OFFSET: u16 = 0xfff8;

    /// Whether `next_header` is an extension header the parser follows.
    #[inline(always)]
    pub fn is_extension(next_header: u8) -> bool {
        matches!(next_header, HOP_BY_HOP | ROUTING | DEST_OPTS | AUTH | FRAGMENT)
    }
}

/// TCP (RFC 9293 §3.1), read as bytes: offsets of the fields the datapath uses.
pub mod tcp {
    pub const SRC_PORT_AT: usize = 0;
    pub const DST_PORT_AT: usize = 2;
    /// The header length in 4-byte units, in the high nibble.
    pub const DATA_OFFSET_AT: usize = 12;
    pub const FLAGS_AT: usize = 13;
    pub const WINDOW_AT: usize = 14;
    pub const SYN: u8 = 0x02;
    pub const ACK: u8 = 0x10;

    /// Option kinds (IANA "TCP Option Kind Numbers") and the lengths the fingerprint reads.
    pub mod option {
        pub const END: u8 = 0;
        pub const NOP: u8 = 1;
        pub const MSS: u8 = 2;
        pub const MSS_LEN: u8 = 4;
        pub const WINDOW_SCALE: u8 = 3;
        pub const WINDOW_SCALE_LEN: u8 = 3;
        /// Kind and length bytes: the shortest option that has a length.
        pub const MIN_LEN: u8 = 2;
    }
}

/// ICMP and ICMPv6: type, code, checksum.
pub mod icmp {
    pub const HEADER_LEN: usize = 4;
    pub const TYPE_AT: usize = 0;
    pub const CODE_AT: usize = 1;
}

/// ICMPv6 neighbour discovery (RFC 4861 §4.3, §4.4): the messages sampled for the source
/// guard.
pub mod icmpv6 {
    pub const NEIGHBOR_SOLICITATION: u8 = 135;
    pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
}

/// Well-known UDP ports of the protocols sampled for userspace.
pub mod port {
    pub const DNS: u16 = 53;
    pub const DHCP_SERVER: u16 = 67;
    pub const DHCP_CLIENT: u16 = 68;
    pub const DHCPV6_CLIENT: u16 = 546;
    pub const DHCPV6_SERVER: u16 = 547;
    /// SSDP (UPnP discovery): devices announce their UPnP device type.
    pub const SSDP: u16 = 1900;
}

/// TLS (RFC 8446 §5.1): a record starts with its content type and the protocol's major
/// version.
pub mod tls {
    pub const HANDSHAKE: u8 = 0x16;
    pub const MAJOR_VERSION: u8 = 0x03;
}
