//! Reads a `PacketSample` into what it says: a DHCP fingerprint, a DNS observation, a TLS
//! ClientHello, an SSDP message or an ARP announcement. One parse per sample, shared by the inventory and the
//! feature extractor.
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{FingerprintError, dhcp, dns, ssdp, tls};
use crate::{
    datapath::events::{PacketSample, SampleKind},
    device::Mac,
};

/// ARP over Ethernet/IPv4 (RFC 826): hardware type 1, protocol 0x0800, lengths 6 and 4.
const ARP_ETHERNET_IPV4: [u8; 6] = [0x00, 0x01, 0x08, 0x00, 0x06, 0x04];
const ARP_LEN: usize = 28;

/// An ARP packet's sender and target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arp {
    /// 1 = request, 2 = reply.
    pub operation: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// What a sample holds, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    Dhcp(dhcp::DhcpFingerprint),
    Dns(dns::DnsObservation),
    Tls(tls::ClientHello),
    Ssdp(ssdp::SsdpMessage),
    Arp(Arp),
}

/// Parses a sample according to its kind.
pub fn parse(sample: &PacketSample) -> Result<Parsed, FingerprintError> {
    Ok(match sample.kind {
        SampleKind::Dhcp => Parsed::Dhcp(dhcp::parse(sample.payload())?),
        SampleKind::Dns | SampleKind::DnsAnswer => Parsed::Dns(dns::parse(sample.payload())?),
        SampleKind::Tls => Parsed::Tls(tls::parse(sample.payload())?),
        SampleKind::Ssdp => Parsed::Ssdp(ssdp::parse(sample.payload())?),
        SampleKind::Arp => Parsed::Arp(parse_arp(&sample.data)?),
        SampleKind::Dhcpv6 | SampleKind::Lldp | SampleKind::Ndp => {
            return Err(FingerprintError::NotFingerprinted(sample.kind));
        }
    })
}

/// Reads the fixed-layout Ethernet/IPv4 ARP header. The layout is four fixed fields and only
/// Ethernet/IPv4 is accepted, so this reads them directly with bounds checks.
pub fn parse_arp(data: &[u8]) -> Result<Arp, FingerprintError> {
    let arp = data.get(..ARP_LEN).ok_or(FingerprintError::Arp("shorter than 28 bytes"))?;
    if arp[..6] != ARP_ETHERNET_IPV4 {
        return Err(FingerprintError::Arp("not Ethernet/IPv4 ARP"));
    }
    let ip = |at: usize| Ipv4Addr::new(arp[at], arp[at + 1], arp[at + 2], arp[at + 3]);
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(&arp[8..14]);
    Ok(Arp {
        operation: u16::from_be_bytes([arp[6], arp[7]]),
        sender_mac: Mac(sender_mac),
        sender_ip: ip(14),
        target_ip: ip(24),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp_request() -> Vec<u8> {
        let mut arp = ARP_ETHERNET_IPV4.to_vec();
        arp.extend_from_slice(&[0x00, 0x01]);
        arp.extend_from_slice(&[0x00, 0x17, 0x88, 0x24, 0x76, 0xff, 192, 168, 1, 20]);
        arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 192, 168, 1, 1]);
        arp
    }

    #[test]
    fn arp_request_yields_sender_and_target() {
        let arp = parse_arp(&arp_request()).unwrap();
        assert_eq!(arp.operation, 1);
        assert_eq!(arp.sender_mac.to_string(), "00:17:88:24:76:ff");
        assert_eq!(arp.sender_ip, Ipv4Addr::new(192, 168, 1, 20));
        assert_eq!(arp.target_ip, Ipv4Addr::new(192, 168, 1, 1));
    }

    /// Hostile input: random bytes, with valid-looking prefixes so the parsers get past their
    /// first checks (TLS record header, DHCP magic cookie, DNS header, ARP header), must give
    /// an error or a value, never a panic.
    #[test]
    fn random_and_mutated_samples_never_panic() {
        use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

        use crate::datapath::events::{PacketSample, SampleKind};

        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut parsed = 0;
        for round in 0..20_000 {
            let len = rng.gen_range(0..600);
            let mut data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let kind = [SampleKind::Dhcp, SampleKind::Dns, SampleKind::Tls, SampleKind::Arp][round % 4];
            match kind {
                SampleKind::Tls if data.len() > 10 => {
                    data[..6].copy_from_slice(&[0x16, 0x03, 0x01, (len >> 8) as u8, len as u8, 0x01]);
                }
                SampleKind::Dhcp if data.len() > 240 => data[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]),
                SampleKind::Dns if data.len() > 12 => {
                    data[4..6].copy_from_slice(&[0, 1]);
                    data[6..12].fill(0);
                }
                SampleKind::Arp if data.len() > 6 => data[..6].copy_from_slice(&ARP_ETHERNET_IPV4),
                _ => {}
            }
            let sample = PacketSample {
                time: std::time::SystemTime::UNIX_EPOCH,
                mac: Mac([2, 0, 0, 0, 0, 1]),
                kind,
                payload_offset: 0,
                data,
                frame_bytes: len as u32,
                verdict: gateway_ebpf::verdict::PASS,
            };
            if parse(&sample).is_ok() {
                parsed += 1;
            }
        }
        // Some random inputs pass (ARP has no checksum); most do not.
        assert!(parsed < 20_000);
    }

    #[test]
    fn arp_truncated_or_other_hardware_is_an_error() {
        let arp = arp_request();
        for len in 0..ARP_LEN {
            assert!(parse_arp(&arp[..len]).is_err());
        }
        let mut other = arp.clone();
        other[1] = 6;
        assert!(parse_arp(&other).is_err());
    }
}
