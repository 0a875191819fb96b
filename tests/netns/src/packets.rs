//! Test frames, built with etherparse from named parts (no magic offsets): the shared
//! builder for the lab tests and the XDP benchmark.
use etherparse::{IpNumber, Ipv4Header, Ipv6Header, PacketBuilder, TcpHeader};

/// Broadcast MAC and the DHCP client's source address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
pub const UNSPECIFIED_IP: [u8; 4] = [0, 0, 0, 0];
pub const BROADCAST_IP: [u8; 4] = [255, 255, 255, 255];
pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;
pub const DNS_PORT: u16 = 53;
pub const ENROLLMENT_PORT: u16 = 8443;
pub const MQTT_PORT: u16 = 1883;
pub const HTTP_PORT: u16 = 80;
pub const TELNET_PORT: u16 = 23;
pub const DEFAULT_TTL: u8 = 64;

/// Who sends a frame to whom, at the link and IP layers.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
}

pub fn udp(e: Endpoints, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let builder =
        PacketBuilder::ethernet2(e.src_mac, e.dst_mac).ipv4(e.src_ip, e.dst_ip, DEFAULT_TTL).udp(src_port, dst_port);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("udp frame");
    frame
}

/// A UDP datagram over IPv6 from `src` to `dst` (addresses and ports), between two MACs.
pub fn udp6(
    macs: ([u8; 6], [u8; 6]),
    src: std::net::SocketAddrV6,
    dst: std::net::SocketAddrV6,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src.ip().octets(), dst.ip().octets(), DEFAULT_TTL)
        .udp(src.port(), dst.port());
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("udp frame");
    frame
}

/// A TCP SYN with a typical option set (MSS, SACK permitted, timestamps, NOP, window scale).
pub fn tcp_syn(e: Endpoints, src_port: u16, dst_port: u16) -> Vec<u8> {
    use etherparse::TcpOptionElement::*;
    let builder = PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
        .ipv4(e.src_ip, e.dst_ip, DEFAULT_TTL)
        .tcp(src_port, dst_port, 1_000, 64_240)
        .syn()
        .options(&[MaximumSegmentSize(1460), SelectiveAcknowledgementPermitted, Timestamp(1, 0), Noop, WindowScale(7)])
        .expect("tcp options");
    let mut frame = Vec::with_capacity(builder.size(0));
    builder.write(&mut frame, &[]).expect("syn frame");
    frame
}

/// A TCP segment carrying `len` bytes on an established connection (ACK, PSH).
pub fn tcp_data(e: Endpoints, src_port: u16, dst_port: u16, seq: u32, len: usize) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
        .ipv4(e.src_ip, e.dst_ip, DEFAULT_TTL)
        .tcp(src_port, dst_port, seq, 64_240)
        .ack(1)
        .psh();
    let payload = vec![0x5a; len];
    let mut frame = Vec::with_capacity(builder.size(len));
    builder.write(&mut frame, &payload).expect("tcp data frame");
    frame
}

/// `tcp_data` over IPv6: `len` bytes from `src` to `dst` (addresses and ports), between two MACs.
pub fn tcp6_data(
    macs: ([u8; 6], [u8; 6]),
    src: std::net::SocketAddrV6,
    dst: std::net::SocketAddrV6,
    seq: u32,
    len: usize,
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src.ip().octets(), dst.ip().octets(), DEFAULT_TTL)
        .tcp(src.port(), dst.port(), seq, 64_240)
        .ack(1)
        .psh();
    let payload = vec![0x5a; len];
    let mut frame = Vec::with_capacity(builder.size(len));
    builder.write(&mut frame, &payload).expect("tcp6 data frame");
    frame
}

/// A TCP SYN-ACK: the answer to a SYN the other side sent.
pub fn tcp_syn_ack(e: Endpoints, src_port: u16, dst_port: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
        .ipv4(e.src_ip, e.dst_ip, DEFAULT_TTL)
        .tcp(src_port, dst_port, 5_000, 64_240)
        .syn()
        .ack(1_001);
    let mut frame = Vec::with_capacity(builder.size(0));
    builder.write(&mut frame, &[]).expect("syn-ack frame");
    frame
}

/// An ICMP message of any type and code, with 8 bytes of payload.
pub fn icmp_message(e: Endpoints, kind: u8, code: u8) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(e.src_mac, e.dst_mac).ipv4(e.src_ip, e.dst_ip, DEFAULT_TTL).icmpv4_raw(
        kind,
        code,
        [0, 1, 0, 1],
    );
    let mut frame = Vec::with_capacity(builder.size(8));
    builder.write(&mut frame, &[0u8; 8]).expect("icmp frame");
    frame
}

/// The ICMP type and code of an IPv4 ICMP frame.
pub fn icmp_type_code(frame: &[u8]) -> Option<(u8, u8)> {
    let packet = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match packet.net? {
        etherparse::NetSlice::Ipv4(ip) if ip.header().protocol() == etherparse::IpNumber::ICMP => {
            let payload = ip.payload().payload;
            (payload.len() >= 2).then(|| (payload[0], payload[1]))
        }
        _ => None,
    }
}

/// The TCP or UDP (source, destination) ports of a frame.
pub fn ports(frame: &[u8]) -> Option<(u16, u16)> {
    let packet = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match packet.transport? {
        etherparse::TransportSlice::Tcp(tcp) => Some((tcp.source_port(), tcp.destination_port())),
        etherparse::TransportSlice::Udp(udp) => Some((udp.source_port(), udp.destination_port())),
        _ => None,
    }
}

pub fn icmp_echo(e: Endpoints, id: u16, seq: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
        .ipv4(e.src_ip, e.dst_ip, DEFAULT_TTL)
        .icmpv4_echo_request(id, seq);
    let mut frame = Vec::with_capacity(builder.size(8));
    builder.write(&mut frame, &[0u8; 8]).expect("icmp frame");
    frame
}

/// A DHCPDISCOVER from `e.src_mac` (broadcast, from 0.0.0.0), asking for `parameters`
/// (option 55) and giving `hostname` (option 12), encoded by dhcproto.
pub fn dhcp_discover(e: Endpoints, xid: u32, parameters: &[u8], hostname: &str) -> Vec<u8> {
    use dhcproto::{Encodable as _, v4};
    let mut message = v4::Message::default();
    message.set_xid(xid).set_flags(v4::Flags::default().set_broadcast()).set_chaddr(&e.src_mac);
    let options = message.opts_mut();
    options.insert(v4::DhcpOption::MessageType(v4::MessageType::Discover));
    options.insert(v4::DhcpOption::ParameterRequestList(
        parameters.iter().map(|code| v4::OptionCode::from(*code)).collect(),
    ));
    options.insert(v4::DhcpOption::Hostname(hostname.to_owned()));
    let payload = message.to_vec().expect("dhcp message");
    let e = Endpoints { dst_mac: BROADCAST_MAC, src_ip: UNSPECIFIED_IP, dst_ip: BROADCAST_IP, ..e };
    udp(e, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, &payload)
}

/// A DHCPREQUEST from `e.src_mac` (broadcast, from 0.0.0.0) announcing its MUD URL in option
/// 161 (RFC 8520 §10), encoded by dhcproto.
pub fn dhcp_request_with_mud_url(e: Endpoints, xid: u32, mud_url: &str) -> Vec<u8> {
    use dhcproto::{Encodable as _, v4};
    let mut message = v4::Message::default();
    message.set_xid(xid).set_flags(v4::Flags::default().set_broadcast()).set_chaddr(&e.src_mac);
    let options = message.opts_mut();
    options.insert(v4::DhcpOption::MessageType(v4::MessageType::Request));
    options.insert(v4::DhcpOption::Unknown(v4::UnknownOption::new(161.into(), mud_url.as_bytes().to_vec())));
    let payload = message.to_vec().expect("dhcp message");
    let e = Endpoints { dst_mac: BROADCAST_MAC, src_ip: UNSPECIFIED_IP, dst_ip: BROADCAST_IP, ..e };
    udp(e, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, &payload)
}

/// A DHCPACK from the server at `e` (its MAC and address) giving `address` to `client`
/// (broadcast, as to a client without an address yet), encoded by dhcproto.
pub fn dhcp_ack(e: Endpoints, xid: u32, client: [u8; 6], address: [u8; 4]) -> Vec<u8> {
    use dhcproto::{Encodable as _, v4};
    let mut message = v4::Message::default();
    message
        .set_opcode(v4::Opcode::BootReply)
        .set_xid(xid)
        .set_flags(v4::Flags::default().set_broadcast())
        .set_chaddr(&client)
        .set_yiaddr(address)
        .set_siaddr(e.src_ip);
    let options = message.opts_mut();
    options.insert(v4::DhcpOption::MessageType(v4::MessageType::Ack));
    options.insert(v4::DhcpOption::ServerIdentifier(e.src_ip.into()));
    options.insert(v4::DhcpOption::AddressLeaseTime(3_600));
    let payload = message.to_vec().expect("dhcp message");
    let e = Endpoints { dst_mac: BROADCAST_MAC, dst_ip: BROADCAST_IP, ..e };
    udp(e, DHCP_SERVER_PORT, DHCP_CLIENT_PORT, &payload)
}

/// A gratuitous ARP request (an announcement, RFC 5227): `mac` says it is at `ip`.
pub fn arp_announcement(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header};
    let arp = ArpPacket::new(ArpHardwareId::ETHERNET, EtherType::IPV4, ArpOperation::REQUEST, &mac, &ip, &[0; 6], &ip)
        .expect("Ethernet/IPv4 ARP sizes are valid");
    let ethernet = Ethernet2Header { source: mac, destination: BROADCAST_MAC, ether_type: EtherType::ARP };
    let mut frame = ethernet.to_bytes().to_vec();
    frame.extend_from_slice(&arp.to_bytes());
    frame
}

/// All DHCPv6 relay agents and servers (RFC 8415 §7.1), at their multicast MAC (RFC 2464 §7),
/// and the DHCPv6 ports.
pub const DHCPV6_SERVERS_IP: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
pub const DHCPV6_SERVERS_MAC: [u8; 6] = [0x33, 0x33, 0x00, 0x01, 0x00, 0x02];
pub const DHCPV6_CLIENT_PORT: u16 = 546;
pub const DHCPV6_SERVER_PORT: u16 = 547;

/// The link-local address a device forms from its MAC (modified EUI-64, RFC 4291 appendix A).
pub fn link_local(mac: [u8; 6]) -> std::net::Ipv6Addr {
    let [m0, m1, m2, m3, m4, m5] = mac;
    let interface_id = [m0 ^ 0x02, m1, m2, 0xff, 0xfe, m3, m4, m5];
    let mut octets = [0u8; 16];
    octets[..2].copy_from_slice(&[0xfe, 0x80]);
    octets[8..].copy_from_slice(&interface_id);
    octets.into()
}

/// A DHCPv6 SOLICIT from `mac`'s link-local address to all DHCP servers, with a DUID-LL client
/// id and its MUD URL in option 112 (RFC 8520 §10), encoded by dhcproto.
pub fn dhcpv6_solicit_with_mud_url(mac: [u8; 6], xid: [u8; 3], mud_url: &str) -> Vec<u8> {
    use dhcproto::{Encodable as _, v6};
    /// DUID-LL (RFC 8415 §11.4): type 3, hardware type 1 (Ethernet), the MAC.
    const DUID_LL_ETHERNET: [u8; 4] = [0, 3, 0, 1];
    let mut message = v6::Message::new_with_id(v6::MessageType::Solicit, xid);
    let options = message.opts_mut();
    options.insert(v6::DhcpOption::ClientId([&DUID_LL_ETHERNET[..], &mac].concat()));
    options.insert(v6::DhcpOption::ElapsedTime(0));
    options.insert(v6::DhcpOption::Unknown(v6::UnknownOption::new(v6::OptionCode::MudUrlV6, mud_url.into())));
    let payload = message.to_vec().expect("dhcpv6 message");
    let from = std::net::SocketAddrV6::new(link_local(mac), DHCPV6_CLIENT_PORT, 0, 0);
    let to = std::net::SocketAddrV6::new(DHCPV6_SERVERS_IP, DHCPV6_SERVER_PORT, 0, 0);
    udp6((mac, DHCPV6_SERVERS_MAC), from, to, &payload)
}

/// The address SLAAC forms from `prefix` (its first 64 bits) and `mac` (modified EUI-64, as
/// Linux does with `addr_gen_mode` 0, its default).
pub fn slaac(prefix: std::net::Ipv6Addr, mac: [u8; 6]) -> std::net::Ipv6Addr {
    let mut octets = link_local(mac).octets();
    octets[..8].copy_from_slice(&prefix.octets()[..8]);
    octets.into()
}

/// Neighbour discovery's hop limit: a receiver discards ND with any other (RFC 4861 §6.1).
pub const ND_HOP_LIMIT: u8 = 255;

/// The solicited-node multicast address of `target` and its MAC (RFC 4291 §2.7.1, RFC 2464 §7).
fn solicited_node(target: std::net::Ipv6Addr) -> (std::net::Ipv6Addr, [u8; 6]) {
    let [.., a, b, c] = target.octets();
    let address = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(a), u16::from_be_bytes([b, c]));
    (address, [0x33, 0x33, 0xff, a, b, c])
}

/// An ICMPv6 message of `kind` whose bytes 5 to 8 are `first_word`, then `body`, hop limit 255.
fn icmpv6(
    macs: ([u8; 6], [u8; 6]),
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    kind: u8,
    first_word: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let icmp = etherparse::Icmpv6Type::Unknown { type_u8: kind, code_u8: 0, bytes5to8: first_word };
    let builder = PacketBuilder::ethernet2(macs.0, macs.1).ipv6(src.octets(), dst.octets(), ND_HOP_LIMIT).icmpv6(icmp);
    let mut frame = Vec::with_capacity(builder.size(body.len()));
    builder.write(&mut frame, body).expect("icmpv6 frame");
    frame
}

/// A neighbour solicitation (RFC 4861 §4.3) for `target` from `src`, to the target's
/// solicited-node group: from `::` it is duplicate address detection's probe (RFC 4862 §5.4.2).
pub fn neighbor_solicitation(mac: [u8; 6], src: std::net::Ipv6Addr, target: std::net::Ipv6Addr) -> Vec<u8> {
    const NEIGHBOR_SOLICITATION: u8 = 135;
    const SOURCE_LINK_LAYER_ADDRESS: u8 = 1;
    let (group, group_mac) = solicited_node(target);
    let mut body = target.octets().to_vec();
    if !src.is_unspecified() {
        body.extend_from_slice(&[SOURCE_LINK_LAYER_ADDRESS, 1]);
        body.extend_from_slice(&mac);
    }
    icmpv6((mac, group_mac), src, group, NEIGHBOR_SOLICITATION, [0; 4], &body)
}

/// All nodes on the link (RFC 4291 §2.7.1) and their MAC.
pub const ALL_NODES_IP: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// A router advertisement (RFC 4861 §4.2) from `mac`'s link-local address with one prefix
/// for SLAAC (on-link and autonomous, valid an hour), and a router lifetime of 0: the router is
/// no default router, its prefix is still taken.
pub fn router_advertisement(mac: [u8; 6], prefix: std::net::Ipv6Addr) -> Vec<u8> {
    const ROUTER_ADVERTISEMENT: u8 = 134;
    const PREFIX_INFORMATION: u8 = 3;
    const ON_LINK_AND_AUTONOMOUS: u8 = 0xc0;
    const CUR_HOP_LIMIT: u8 = 64;
    // Reachable time and retransmission timer: unspecified.
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&[PREFIX_INFORMATION, 4, 64, ON_LINK_AND_AUTONOMOUS]);
    body.extend_from_slice(&3_600u32.to_be_bytes());
    body.extend_from_slice(&1_800u32.to_be_bytes());
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&prefix.octets());
    let first_word = [CUR_HOP_LIMIT, 0, 0, 0];
    icmpv6((mac, ALL_NODES_MAC), link_local(mac), ALL_NODES_IP, ROUTER_ADVERTISEMENT, first_word, &body)
}

/// A DHCPv6 REPLY (RFC 8415 §18.3.10) from `server` to the client at `client_ip` (its
/// link-local address) leasing `address` for an hour in an IA_NA, sent to `dst_mac`; encoded
/// by dhcproto. The client id is a DUID-EN, which names no MAC.
pub fn dhcpv6_reply(
    server: [u8; 6],
    dst_mac: [u8; 6],
    client_ip: std::net::Ipv6Addr,
    xid: [u8; 3],
    address: std::net::Ipv6Addr,
) -> Vec<u8> {
    use dhcproto::{Encodable as _, v6};
    /// DUID-EN (RFC 8415 §11.3): type 2, an enterprise number, an identifier.
    const DUID_EN: [u8; 10] = [0, 2, 0, 0, 0x01, 0x37, 0xde, 0xad, 0xbe, 0xef];
    let mut message = v6::Message::new_with_id(v6::MessageType::Reply, xid);
    let mut ia_address = v6::DhcpOptions::new();
    ia_address.insert(v6::DhcpOption::IAAddr(v6::IAAddr {
        addr: address,
        preferred_life: 1_800,
        valid_life: 3_600,
        opts: v6::DhcpOptions::new(),
    }));
    let options = message.opts_mut();
    options.insert(v6::DhcpOption::ClientId(DUID_EN.to_vec()));
    options.insert(v6::DhcpOption::ServerId([&[0, 3, 0, 1][..], &server].concat()));
    options.insert(v6::DhcpOption::IANA(v6::IANA { id: 1, t1: 1_800, t2: 2_880, opts: ia_address }));
    let payload = message.to_vec().expect("dhcpv6 message");
    let from = std::net::SocketAddrV6::new(link_local(server), DHCPV6_SERVER_PORT, 0, 0);
    let to = std::net::SocketAddrV6::new(client_ip, DHCPV6_CLIENT_PORT, 0, 0);
    udp6((server, dst_mac), from, to, &payload)
}

/// The nearest-bridge group address LLDP is sent to (IEEE 802.1AB §7.1) and LLDP's EtherType.
pub const LLDP_NEAREST_BRIDGE_MAC: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
const LLDP_ETHER_TYPE: etherparse::EtherType = etherparse::EtherType(0x88cc);

/// One LLDP TLV: 7 bits of type and 9 of length (IEEE 802.1AB §8.4.1), then the value.
fn lldp_tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let header = (u16::from(kind) << 9) | u16::try_from(value.len()).expect("LLDP TLV of at most 511 bytes");
    [&header.to_be_bytes()[..], value].concat()
}

/// An LLDPDU from `mac`: chassis id and port id (both its MAC), a TTL of 120 s, the MUD URL TLV
/// (RFC 8520 §10: organisationally specific, OUI 00-00-5E, subtype 1) and the end TLV.
pub fn lldp_with_mud_url(mac: [u8; 6], mud_url: &str) -> Vec<u8> {
    /// TLV types (IEEE 802.1AB §8.4) and the MAC-address subtypes of chassis and port id.
    const END: u8 = 0;
    const CHASSIS_ID: u8 = 1;
    const PORT_ID: u8 = 2;
    const TTL: u8 = 3;
    const ORGANIZATION_SPECIFIC: u8 = 127;
    const CHASSIS_MAC: u8 = 4;
    const PORT_MAC: u8 = 3;
    const MUD_OUI_AND_SUBTYPE: [u8; 4] = [0x00, 0x00, 0x5e, 0x01];
    let mut frame = Vec::new();
    etherparse::Ethernet2Header { source: mac, destination: LLDP_NEAREST_BRIDGE_MAC, ether_type: LLDP_ETHER_TYPE }
        .write(&mut frame)
        .expect("ethernet");
    frame.extend(lldp_tlv(CHASSIS_ID, &[&[CHASSIS_MAC][..], &mac].concat()));
    frame.extend(lldp_tlv(PORT_ID, &[&[PORT_MAC][..], &mac].concat()));
    frame.extend(lldp_tlv(TTL, &120u16.to_be_bytes()));
    frame.extend(lldp_tlv(ORGANIZATION_SPECIFIC, &[&MUD_OUI_AND_SUBTYPE[..], mud_url.as_bytes()].concat()));
    frame.extend(lldp_tlv(END, &[]));
    frame
}

/// `dhcp_discover` padded after its END option (as RFC 2131 allows) to a frame of
/// `frame_len` bytes: long DHCP messages must be sampled from their start.
pub fn dhcp_discover_padded(e: Endpoints, xid: u32, parameters: &[u8], hostname: &str, frame_len: usize) -> Vec<u8> {
    let short = dhcp_discover(e, xid, parameters, hostname);
    let dhcp = &short[ETHERNET_IPV4_UDP_HEADERS..];
    let mut payload = dhcp.to_vec();
    payload.resize(frame_len.saturating_sub(ETHERNET_IPV4_UDP_HEADERS).max(dhcp.len()), 0);
    let e = Endpoints { dst_mac: BROADCAST_MAC, src_ip: UNSPECIFIED_IP, dst_ip: BROADCAST_IP, ..e };
    udp(e, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, &payload)
}

/// Ethernet (14), IPv4 without options (20) and UDP (8) headers.
const ETHERNET_IPV4_UDP_HEADERS: usize = 14 + 20 + 8;

/// A DNS query for `name`'s A record, encoded by hickory-proto.
pub fn dns_query(e: Endpoints, src_port: u16, id: u16, name: &str) -> Vec<u8> {
    udp(e, src_port, DNS_PORT, &dns_query_message(id, name))
}

/// The DNS message of `dns_query`.
pub fn dns_query_message(id: u16, name: &str) -> Vec<u8> {
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RecordType},
    };
    let mut message = Message::new();
    message.set_id(id).set_recursion_desired(true);
    message.add_query(Query::query(Name::from_ascii(name).expect("DNS name"), RecordType::A));
    dns_bytes(&message)
}

/// A DNS answer giving `name` the A record `addr` for `ttl` seconds, encoded by hickory-proto,
/// sent from port 53 (as a resolver upstream answers).
pub fn dns_answer(e: Endpoints, dst_port: u16, id: u16, name: &str, addr: [u8; 4], ttl: u32) -> Vec<u8> {
    udp(e, DNS_PORT, dst_port, &dns_answer_message(id, name, addr, ttl))
}

/// The DNS message of `dns_answer`, for a resolver that sends it through a socket.
pub fn dns_answer_message(id: u16, name: &str, addr: [u8; 4], ttl: u32) -> Vec<u8> {
    use hickory_proto::{
        op::{Message, MessageType, Query},
        rr::{Name, RData, Record, RecordType, rdata::A},
    };
    let mut message = Message::new();
    message.set_id(id).set_message_type(MessageType::Response).set_recursion_available(true);
    let qname = Name::from_ascii(name).expect("DNS name");
    message.add_query(Query::query(qname.clone(), RecordType::A));
    message.add_answer(Record::from_rdata(qname, ttl, RData::A(A::from(std::net::Ipv4Addr::from(addr)))));
    dns_bytes(&message)
}

/// A DNS message on the wire, names written out in full (no compression pointers).
fn dns_bytes(message: &hickory_proto::op::Message) -> Vec<u8> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_canonical_names(true);
    message.emit(&mut encoder).expect("dns message");
    bytes
}

/// The TCP segment an Ethernet frame carries, if any: for sniffers that look for a port.
pub fn tcp(frame: &[u8]) -> Option<etherparse::TcpSlice<'_>> {
    match etherparse::SlicedPacket::from_ethernet(frame).ok()?.transport? {
        etherparse::TransportSlice::Tcp(tcp) => Some(tcp),
        _ => None,
    }
}

/// The TCP or UDP destination port of an Ethernet frame.
pub fn destination_port(frame: &[u8]) -> Option<u16> {
    match etherparse::SlicedPacket::from_ethernet(frame).ok()?.transport? {
        etherparse::TransportSlice::Udp(udp) => Some(udp.destination_port()),
        etherparse::TransportSlice::Tcp(tcp) => Some(tcp.destination_port()),
        _ => None,
    }
}

/// The IPv4 source address of an Ethernet frame.
pub fn ipv4_source(frame: &[u8]) -> Option<[u8; 4]> {
    ipv4_header(frame).map(|header| header.source)
}

/// The IPv4 destination address of an Ethernet frame.
pub fn ipv4_destination(frame: &[u8]) -> Option<[u8; 4]> {
    ipv4_header(frame).map(|header| header.destination)
}

fn ipv4_header(frame: &[u8]) -> Option<Ipv4Header> {
    match etherparse::SlicedPacket::from_ethernet(frame).ok()?.net? {
        etherparse::NetSlice::Ipv4(ip) => Some(ip.header().to_header()),
        _ => None,
    }
}

/// A UDP frame behind `tags` 802.1Q/802.1ad tags (any number, for the "too many" case).
pub fn udp_vlan(e: Endpoints, tags: usize, dst_port: u16) -> Vec<u8> {
    let inner = udp(e, 40_000, dst_port, b"vlan");
    let ether_type_at = 12; // after destination and source MACs
    let mut frame = inner[..ether_type_at].to_vec();
    for n in 0..tags {
        // 802.1ad for the outer tag of a stack, 802.1Q inside.
        let tpid: u16 = if n == 0 && tags > 1 { 0x88a8 } else { 0x8100 };
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&(100 + n as u16).to_be_bytes());
    }
    frame.extend_from_slice(&inner[ether_type_at..]);
    frame
}

/// An IPv4/UDP frame whose IHL says `ihl` (valid is 5..=15).
pub fn ipv4_with_ihl(e: Endpoints, ihl: u8) -> Vec<u8> {
    let mut frame = udp(e, 40_000, DNS_PORT, b"ihl");
    let ip_at = etherparse::Ethernet2Header::LEN;
    frame[ip_at] = 0x40 | (ihl & 0x0f);
    frame
}

/// A TCP frame whose data offset says `words` 32-bit words (valid is 5..=15).
pub fn tcp_with_data_offset(e: Endpoints, dst_port: u16, words: u8) -> Vec<u8> {
    let mut frame = tcp_syn(e, 40_000, dst_port);
    let tcp_at = etherparse::Ethernet2Header::LEN + Ipv4Header::MIN_LEN;
    let data_offset_at = tcp_at + 12;
    frame[data_offset_at] = (words << 4) | (frame[data_offset_at] & 0x0f);
    frame
}

/// A frame cut to `len` bytes.
pub fn truncated(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

/// An IPv6/UDP frame behind `count` hop-by-hop/destination-options headers (8 bytes each).
pub fn ipv6_with_extensions(src_mac: [u8; 6], dst_mac: [u8; 6], count: usize, dst_port: u16) -> Vec<u8> {
    const UDP: u8 = 17;
    const DEST_OPTS: u8 = 60;
    let payload = b"ext";
    let udp_len = 8 + payload.len();
    let ext_len = 8 * count;
    let mut ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: (ext_len + udp_len) as u16,
        next_header: if count == 0 { IpNumber(UDP) } else { IpNumber(DEST_OPTS) },
        hop_limit: DEFAULT_TTL,
        source: [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
        destination: [0xfd, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    };
    ip.source[15] = 0x10;
    let mut frame = Vec::new();
    etherparse::Ethernet2Header { source: src_mac, destination: dst_mac, ether_type: etherparse::EtherType::IPV6 }
        .write(&mut frame)
        .expect("ethernet");
    ip.write(&mut frame).expect("ipv6");
    for n in 0..count {
        let next = if n + 1 == count { UDP } else { DEST_OPTS };
        // Next header, length 0 (8 bytes), then a PadN option filling the rest.
        frame.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    let udp =
        etherparse::UdpHeader { source_port: 40_000, destination_port: dst_port, length: udp_len as u16, checksum: 0 };
    udp.write(&mut frame).expect("udp");
    frame.extend_from_slice(payload);
    frame
}

/// Length of a TCP header without options, for tests that cut inside it.
pub const TCP_MIN_HEADER: usize = TcpHeader::MIN_LEN;
