//! What a sample says about who holds which address, for the binding table: an ARP whose
//! sender is the frame's own MAC (announcements, requests, replies; probes from 0.0.0.0 claim
//! nothing), a client's DHCP REQUEST (the address it asks for or renews) or RELEASE, and a
//! trusted server's DHCP ACK (the address it gave, to the client it names). Reads nothing
//! but the sample.
use std::net::Ipv4Addr;

use super::bindings::Source;
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

/// One observation for `bindings::Bindings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// `mac` holds `address` on `source`'s authority.
    Holds { mac: Mac, address: Ipv4Addr, source: Source },
    /// `mac` gave `address` up.
    Releases { mac: Mac, address: Ipv4Addr },
}

/// The claim `sample` makes, if any; `dhcp_servers` are the servers whose ACKs are trusted.
pub fn from_sample(sample: &PacketSample, dhcp_servers: &[Mac]) -> Option<Claim> {
    match sample.kind {
        SampleKind::Arp => {
            let arp = baseline::arp_claim(sample)?;
            // A sender that is not the frame's source is forged (the ARP detector's alert).
            (arp.sender_mac == sample.mac).then_some(Claim::Holds {
                mac: sample.mac,
                address: arp.sender_ip,
                source: Source::Claim,
            })
        }
        SampleKind::Dhcp => {
            let message = dhcp::parse(sample.payload()).ok()?;
            match (message.from_client, message.message_type?) {
                (true, DHCP_REQUEST) => {
                    Some(Claim::Holds { mac: sample.mac, address: message.client_address?, source: Source::Claim })
                }
                (true, DHCP_RELEASE) => Some(Claim::Releases { mac: sample.mac, address: message.client_address? }),
                (false, DHCP_ACK) if dhcp_servers.contains(&sample.mac) => Some(Claim::Holds {
                    mac: Mac(message.client_mac?),
                    address: message.offered_address?,
                    source: Source::DhcpLease,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use dhcproto::{Encodable as _, Encoder, v4};

    use super::*;
    use crate::{datapath::events::DatapathEvent, detect::synthetic, pipeline::Input};

    const CLIENT: Mac = Mac([0x02, 0, 0, 0, 0, 0x0c]);
    const SERVER: Mac = Mac([0x02, 0, 0, 0, 0, 0x53]);
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);

    fn arp(frame: Mac, sender: Mac, sender_ip: Ipv4Addr) -> PacketSample {
        let Input::Datapath(DatapathEvent::Sample(sample)) =
            synthetic::arp(frame, SystemTime::now(), sender, sender_ip, Ipv4Addr::new(192, 168, 1, 1), false)
        else {
            unreachable!("synthetic::arp makes a sample")
        };
        sample
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
        PacketSample {
            time: SystemTime::now(),
            mac: frame,
            kind: SampleKind::Dhcp,
            frame_bytes: data.len() as u32 + 42,
            data,
            payload_offset: 0,
            verdict: gateway_ebpf::verdict::PASS,
        }
    }

    #[test]
    fn an_arp_claims_the_senders_own_address_only() {
        let claim = from_sample(&arp(CLIENT, CLIENT, ADDRESS), &[]);
        assert_eq!(claim, Some(Claim::Holds { mac: CLIENT, address: ADDRESS, source: Source::Claim }));
        assert_eq!(from_sample(&arp(CLIENT, SERVER, ADDRESS), &[]), None, "forged sender");
        assert_eq!(from_sample(&arp(CLIENT, CLIENT, Ipv4Addr::UNSPECIFIED), &[]), None, "probe");
    }

    #[test]
    fn a_request_claims_and_a_release_gives_up() {
        let request = dhcp(CLIENT, v4::Opcode::BootRequest, v4::MessageType::Request);
        assert_eq!(
            from_sample(&request, &[]),
            Some(Claim::Holds { mac: CLIENT, address: ADDRESS, source: Source::Claim })
        );
        let release = dhcp(CLIENT, v4::Opcode::BootRequest, v4::MessageType::Release);
        assert_eq!(from_sample(&release, &[]), Some(Claim::Releases { mac: CLIENT, address: ADDRESS }));
        let discover = dhcp(CLIENT, v4::Opcode::BootRequest, v4::MessageType::Discover);
        assert_eq!(from_sample(&discover, &[]), None);
    }

    #[test]
    fn only_a_trusted_servers_ack_leases_the_address_to_its_client() {
        let ack = dhcp(SERVER, v4::Opcode::BootReply, v4::MessageType::Ack);
        assert_eq!(
            from_sample(&ack, &[SERVER]),
            Some(Claim::Holds { mac: CLIENT, address: ADDRESS, source: Source::DhcpLease })
        );
        assert_eq!(from_sample(&ack, &[]), None, "a rogue server binds nothing");
        let offer = dhcp(SERVER, v4::Opcode::BootReply, v4::MessageType::Offer);
        assert_eq!(from_sample(&offer, &[SERVER]), None, "an offer is not a lease");
    }
}
