//! What a sample says about who holds which address, for the binding table:
//! - an ARP whose sender is the frame's own MAC (announcements, requests, replies; probes
//!   from 0.0.0.0 claim nothing), a client's DHCP REQUEST (the address it asks for or renews)
//!   or RELEASE, and a trusted server's DHCP ACK (the address it gave, to the client it names);
//! - IPv6 (FCFS SAVI, RFC 6620; SAVI-DHCP, RFC 7513): the source address of a device's
//!   neighbour solicitation or advertisement or DHCPv6 message (its first use), the target of
//!   its duplicate address detection probe (a solicitation from `::`, hop limit 255), the
//!   IA addresses a DHCPv6 client requests, renews or releases, and the IA addresses a trusted
//!   DHCPv6 server's REPLY leases (valid lifetime above 0) or takes back (0), to the client
//!   it is sent to.
//!
//! Reads nothing but the sample: a REPLY's client is named by the address it is sent to
//! (`Claim::Lease`), which the step resolves.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dhcproto::v6::MessageType;

use super::{bindings::Source, dhcpv6};
use crate::{
    baseline,
    datapath::events::{PacketSample, SampleKind},
    device::Mac,
    fingerprint::dhcp,
};

/// DHCP message types (option 53, RFC 2132 §9.6).
const DHCP_REQUEST: u8 = 3;
const DHCP_ACK: u8 = 5;
const DHCP_RELEASE: u8 = 7;

/// The IPv6 header (RFC 8200 §3): where the hop limit and the addresses are, and its length.
const IPV6_HOP_LIMIT_AT: usize = 7;
const IPV6_SOURCE_AT: usize = 8;
const IPV6_DESTINATION_AT: usize = 24;
const IPV6_HEADER: usize = 40;
/// Neighbour discovery (RFC 4861 §4.3, §4.4): the message types sampled, the hop limit every
/// genuine one carries, and where the target address is in the payload XDP hands on (after
/// 4 reserved or flag bytes).
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const ND_HOP_LIMIT: u8 = 255;
const ND_TARGET_AT: usize = 4;
/// ICMPv6 type, code and checksum: the bytes before the payload XDP names.
const ICMP_HEADER: usize = 4;

/// One observation for `bindings::Bindings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// `mac` holds `address` on `source`'s authority.
    Holds { mac: Mac, address: IpAddr, source: Source },
    /// `mac` gave `address` up.
    Releases { mac: Mac, address: IpAddr },
    /// `mac` probes `address` before using it (duplicate address detection): it holds it
    /// unless another device defends it (`bindings::Bindings::probe`).
    Probes { mac: Mac, address: IpAddr },
    /// A trusted DHCPv6 server leased `address` (`ended`: took it back) to the client its
    /// REPLY went to: the holder of `to`, the client's link-local address, or else the MAC
    /// the client's DUID names (`duid_mac`).
    Lease { to: Ipv6Addr, duid_mac: Option<Mac>, address: Ipv6Addr, ended: bool },
}

/// The claims `sample` makes; `dhcp_servers` and `dhcpv6_servers` are the servers whose
/// ACKs and REPLYs are trusted.
pub fn from_sample(sample: &PacketSample, dhcp_servers: &[Mac], dhcpv6_servers: &[Mac]) -> Vec<Claim> {
    match sample.kind {
        SampleKind::Arp => arp(sample).into_iter().collect(),
        SampleKind::Dhcp => dhcp(sample, dhcp_servers).into_iter().collect(),
        SampleKind::Ndp => neighbor_discovery(sample),
        SampleKind::Dhcpv6 => dhcpv6(sample, dhcpv6_servers),
        _ => Vec::new(),
    }
}

fn arp(sample: &PacketSample) -> Option<Claim> {
    let arp = baseline::arp_claim(sample)?;
    // A sender that is not the frame's source is forged (the ARP detector's alert).
    (arp.sender_mac == sample.mac).then_some(Claim::Holds {
        mac: sample.mac,
        address: arp.sender_ip.into(),
        source: Source::Claim,
    })
}

fn dhcp(sample: &PacketSample, dhcp_servers: &[Mac]) -> Option<Claim> {
    let message = dhcp::parse(sample.payload()).ok()?;
    let v4 = |address: Option<Ipv4Addr>| address.map(IpAddr::V4);
    match (message.from_client, message.message_type?) {
        (true, DHCP_REQUEST) => {
            Some(Claim::Holds { mac: sample.mac, address: v4(message.client_address)?, source: Source::Claim })
        }
        (true, DHCP_RELEASE) => Some(Claim::Releases { mac: sample.mac, address: v4(message.client_address)? }),
        (false, DHCP_ACK) if dhcp_servers.contains(&sample.mac) => Some(Claim::Holds {
            mac: Mac(message.client_mac?),
            address: v4(message.offered_address)?,
            source: Source::DhcpLease,
        }),
        _ => None,
    }
}

/// The IPv6 header's source and destination, if the sample holds a whole IPv6 header.
fn ipv6_addresses(sample: &PacketSample) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let header = sample.data.get(..IPV6_HEADER).filter(|h| h[0] >> 4 == 6)?;
    let address = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&header[at..at + 16]).expect("16 bytes"));
    Some((address(IPV6_SOURCE_AT), address(IPV6_DESTINATION_AT)))
}

/// The device's first use of its source address, if it is one a device can hold (`::` of a
/// probe is not: the binding table ignores it).
fn first_use(sample: &PacketSample, source: Ipv6Addr) -> Claim {
    Claim::Holds { mac: sample.mac, address: source.into(), source: Source::Claim }
}

fn neighbor_discovery(sample: &PacketSample) -> Vec<Claim> {
    let Some((source, _)) = ipv6_addresses(sample) else { return Vec::new() };
    // The ICMPv6 type comes just before the payload XDP names (type, code, checksum).
    let message = sample.payload_offset.checked_sub(ICMP_HEADER).and_then(|at| sample.data.get(at)).copied();
    if !matches!(message, Some(NEIGHBOR_SOLICITATION | NEIGHBOR_ADVERTISEMENT)) {
        return Vec::new();
    }
    let mut claims = vec![first_use(sample, source)];
    // Duplicate address detection: the tentative address, probed from `::` (RFC 4862 §5.4.2).
    let probe = message == Some(NEIGHBOR_SOLICITATION)
        && source.is_unspecified()
        && sample.data.get(IPV6_HOP_LIMIT_AT) == Some(&ND_HOP_LIMIT);
    if probe && let Some(target) = sample.payload().get(ND_TARGET_AT..ND_TARGET_AT + 16) {
        let target = Ipv6Addr::from(<[u8; 16]>::try_from(target).expect("16 bytes"));
        claims.push(Claim::Probes { mac: sample.mac, address: target.into() });
    }
    claims
}

fn dhcpv6(sample: &PacketSample, dhcpv6_servers: &[Mac]) -> Vec<Claim> {
    let Some((source, destination)) = ipv6_addresses(sample) else { return Vec::new() };
    let Ok(message) = dhcpv6::parse(sample.payload()) else { return Vec::new() };
    let mut claims = vec![first_use(sample, source)];
    let addresses = message.addresses.iter().copied();
    match message.message_type {
        MessageType::Request | MessageType::Renew | MessageType::Rebind => {
            claims.extend(addresses.map(|(address, _)| Claim::Holds {
                mac: sample.mac,
                address: address.into(),
                source: Source::Claim,
            }));
        }
        MessageType::Release | MessageType::Decline => {
            claims.extend(addresses.map(|(address, _)| Claim::Releases { mac: sample.mac, address: address.into() }));
        }
        MessageType::Reply if dhcpv6_servers.contains(&sample.mac) => {
            let duid_mac = message.client_mac();
            claims.extend(addresses.map(|(address, valid)| Claim::Lease {
                to: destination,
                duid_mac,
                address,
                ended: valid == 0,
            }));
        }
        _ => {}
    }
    claims
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::SystemTime;

    use dhcproto::{Encodable as _, Encoder, v4, v6};

    use super::*;
    use crate::{datapath::events::DatapathEvent, detect::synthetic, pipeline::Input};

    const CLIENT: Mac = Mac([0x02, 0, 0, 0, 0, 0x0c]);
    const SERVER: Mac = Mac([0x02, 0, 0, 0, 0, 0x53]);
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);
    const CLIENT_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x0c);
    const SERVER_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x53);
    const TENTATIVE: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0x1234, 0x56ff, 0xfe78, 0x9abc);
    const LEASED: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x50);
    const SOLICITED_NODE: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff78, 0x9abc);

    fn claims(sample: &PacketSample, servers: &[Mac]) -> Vec<Claim> {
        from_sample(sample, servers, servers)
    }

    fn arp(frame: Mac, sender: Mac, sender_ip: Ipv4Addr) -> PacketSample {
        let Input::Datapath(DatapathEvent::Sample(sample)) =
            synthetic::arp(frame, SystemTime::now(), sender, sender_ip, Ipv4Addr::new(192, 168, 1, 1), false)
        else {
            unreachable!("synthetic::arp makes a sample")
        };
        sample
    }

    fn sample(frame: Mac, kind: SampleKind, data: Vec<u8>, payload_offset: usize) -> PacketSample {
        PacketSample {
            time: SystemTime::now(),
            mac: frame,
            kind,
            frame_bytes: data.len() as u32 + 14,
            data,
            payload_offset,
            verdict: gateway_ebpf::verdict::PASS,
        }
    }

    fn dhcp(frame: Mac, op: v4::Opcode, kind: v4::MessageType) -> PacketSample {
        let mut message = v4::Message::default();
        message.set_opcode(op).set_chaddr(&CLIENT.0);
        if op == v4::Opcode::BootReply {
            message.set_yiaddr(ADDRESS);
        } else {
            message.opts_mut().insert(v4::DhcpOption::RequestedIpAddress(ADDRESS));
        }
        message.opts_mut().insert(v4::DhcpOption::MessageType(kind));
        let mut data = Vec::new();
        message.encode(&mut Encoder::new(&mut data)).expect("a DHCP message encodes");
        sample(frame, SampleKind::Dhcp, data, 0)
    }

    /// An IPv6 header from `source` to `destination` with `next` and `hop_limit`, then `rest`.
    fn ipv6(source: Ipv6Addr, destination: Ipv6Addr, next: u8, hop_limit: u8, rest: &[u8]) -> Vec<u8> {
        let mut data = vec![0x60, 0, 0, 0];
        data.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        data.extend_from_slice(&[next, hop_limit]);
        data.extend_from_slice(&source.octets());
        data.extend_from_slice(&destination.octets());
        data.extend_from_slice(rest);
        data
    }

    /// A neighbour solicitation (135) or advertisement (136) for `target`, as XDP samples it.
    fn neighbor(frame: Mac, message: u8, source: Ipv6Addr, target: Ipv6Addr, hop_limit: u8) -> PacketSample {
        let mut icmp = vec![message, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        let data = ipv6(source, SOLICITED_NODE, 58, hop_limit, &icmp);
        sample(frame, SampleKind::Ndp, data, IPV6_HEADER + ICMP_HEADER)
    }

    fn dhcpv6(frame: Mac, source: Ipv6Addr, to: Ipv6Addr, kind: v6::MessageType, valid_life: u32) -> PacketSample {
        dhcpv6_leasing(frame, source, to, kind, LEASED, valid_life)
    }

    /// A DHCPv6 message of `kind` sent by `frame` from `source` to `to`, whose IA_NA holds
    /// `address` for `valid_life` seconds (also the source guard step's tests' frames).
    pub(in crate::source_guard) fn dhcpv6_leasing(
        frame: Mac,
        source: Ipv6Addr,
        to: Ipv6Addr,
        kind: v6::MessageType,
        address: Ipv6Addr,
        valid_life: u32,
    ) -> PacketSample {
        let mut message = v6::Message::new_with_id(kind, [1, 2, 3]);
        let mut ia = v6::DhcpOptions::new();
        ia.insert(v6::DhcpOption::IAAddr(v6::IAAddr {
            addr: address,
            preferred_life: valid_life,
            valid_life,
            opts: v6::DhcpOptions::new(),
        }));
        message.opts_mut().insert(v6::DhcpOption::IANA(v6::IANA { id: 1, t1: 0, t2: 0, opts: ia }));
        let payload = message.to_vec().expect("a DHCPv6 message encodes");
        let mut udp = vec![0x02, 0x23, 0x02, 0x22, 0, 0, 0, 0];
        udp.extend_from_slice(&payload);
        sample(frame, SampleKind::Dhcpv6, ipv6(source, to, 17, 1, &udp), IPV6_HEADER + 8)
    }

    fn holds(mac: Mac, address: impl Into<IpAddr>, source: Source) -> Claim {
        Claim::Holds { mac, address: address.into(), source }
    }

    #[test]
    fn an_arp_claims_the_senders_own_address_only() {
        assert_eq!(claims(&arp(CLIENT, CLIENT, ADDRESS), &[]), [holds(CLIENT, ADDRESS, Source::Claim)]);
        assert_eq!(claims(&arp(CLIENT, SERVER, ADDRESS), &[]), [], "forged sender");
        assert_eq!(claims(&arp(CLIENT, CLIENT, Ipv4Addr::UNSPECIFIED), &[]), [], "probe");
    }

    #[test]
    fn a_request_claims_and_a_release_gives_up() {
        let request = dhcp(CLIENT, v4::Opcode::BootRequest, v4::MessageType::Request);
        assert_eq!(claims(&request, &[]), [holds(CLIENT, ADDRESS, Source::Claim)]);
        let release = dhcp(CLIENT, v4::Opcode::BootRequest, v4::MessageType::Release);
        assert_eq!(claims(&release, &[]), [Claim::Releases { mac: CLIENT, address: ADDRESS.into() }]);
        let discover = dhcp(CLIENT, v4::Opcode::BootRequest, v4::MessageType::Discover);
        assert_eq!(claims(&discover, &[]), []);
    }

    #[test]
    fn only_a_trusted_servers_ack_leases_the_address_to_its_client() {
        let ack = dhcp(SERVER, v4::Opcode::BootReply, v4::MessageType::Ack);
        assert_eq!(claims(&ack, &[SERVER]), [holds(CLIENT, ADDRESS, Source::DhcpLease)]);
        assert_eq!(claims(&ack, &[]), [], "a rogue server binds nothing");
        let offer = dhcp(SERVER, v4::Opcode::BootReply, v4::MessageType::Offer);
        assert_eq!(claims(&offer, &[SERVER]), [], "an offer is not a lease");
    }

    #[test]
    fn duplicate_address_detection_claims_the_tentative_address() {
        let probe = neighbor(CLIENT, NEIGHBOR_SOLICITATION, Ipv6Addr::UNSPECIFIED, TENTATIVE, ND_HOP_LIMIT);
        // `::` is the first claim; the binding table ignores it.
        assert_eq!(
            claims(&probe, &[]),
            [
                holds(CLIENT, Ipv6Addr::UNSPECIFIED, Source::Claim),
                Claim::Probes { mac: CLIENT, address: TENTATIVE.into() }
            ]
        );
        let forwarded = neighbor(CLIENT, NEIGHBOR_SOLICITATION, Ipv6Addr::UNSPECIFIED, TENTATIVE, 254);
        assert_eq!(claims(&forwarded, &[]).len(), 1, "not a genuine probe: no target claimed");
    }

    #[test]
    fn neighbour_discovery_claims_its_source_but_not_the_target_it_resolves() {
        let resolve = neighbor(CLIENT, NEIGHBOR_SOLICITATION, CLIENT_LINK_LOCAL, TENTATIVE, ND_HOP_LIMIT);
        assert_eq!(claims(&resolve, &[]), [holds(CLIENT, CLIENT_LINK_LOCAL, Source::Claim)]);
        let advertise = neighbor(CLIENT, NEIGHBOR_ADVERTISEMENT, TENTATIVE, TENTATIVE, ND_HOP_LIMIT);
        assert_eq!(claims(&advertise, &[]), [holds(CLIENT, TENTATIVE, Source::Claim)]);
        let echo = neighbor(CLIENT, 128, TENTATIVE, TENTATIVE, ND_HOP_LIMIT);
        assert_eq!(claims(&echo, &[]), [], "only neighbour discovery is read");
        let mut cut = resolve.clone();
        cut.data.truncate(IPV6_HEADER - 1);
        assert_eq!(claims(&cut, &[]), []);
    }

    #[test]
    fn a_trusted_dhcpv6_reply_leases_to_the_client_it_is_sent_to() {
        let reply = dhcpv6(SERVER, SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL, v6::MessageType::Reply, 3_600);
        let lease = Claim::Lease { to: CLIENT_LINK_LOCAL, duid_mac: None, address: LEASED, ended: false };
        assert_eq!(claims(&reply, &[SERVER]), [holds(SERVER, SERVER_LINK_LOCAL, Source::Claim), lease]);
        assert_eq!(claims(&reply, &[]), [holds(SERVER, SERVER_LINK_LOCAL, Source::Claim)], "a rogue server");
        let ended = dhcpv6(SERVER, SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL, v6::MessageType::Reply, 0);
        assert!(matches!(claims(&ended, &[SERVER])[1], Claim::Lease { ended: true, .. }));
    }

    #[test]
    fn a_dhcpv6_client_claims_what_it_renews_and_gives_up_what_it_releases() {
        let to = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
        let renew = dhcpv6(CLIENT, CLIENT_LINK_LOCAL, to, v6::MessageType::Renew, 3_600);
        assert_eq!(
            claims(&renew, &[]),
            [holds(CLIENT, CLIENT_LINK_LOCAL, Source::Claim), holds(CLIENT, LEASED, Source::Claim)]
        );
        let release = dhcpv6(CLIENT, CLIENT_LINK_LOCAL, to, v6::MessageType::Release, 0);
        assert_eq!(claims(&release, &[])[1], Claim::Releases { mac: CLIENT, address: LEASED.into() });
        let solicit = dhcpv6(CLIENT, CLIENT_LINK_LOCAL, to, v6::MessageType::Solicit, 0);
        assert_eq!(claims(&solicit, &[]), [holds(CLIENT, CLIENT_LINK_LOCAL, Source::Claim)], "first use only");
    }
}
