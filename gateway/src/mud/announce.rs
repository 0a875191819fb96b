//! Where devices announce their MUD URL (RFC 8520 §10): DHCPv4 option 161 (read by
//! `fingerprint::dhcp`), DHCPv6 option 112 and the LLDP MUD TLV (organisationally specific,
//! OUI 00-00-5E, subtype 1). Reads a `PacketSample`; returns the URL bytes as sent, unchecked
//! (`url` checks them).
//!
//! DHCPv6 and LLDP are walked here, with a bounds check on every read: both are plain
//! type-length-value lists, and dhcproto's DHCPv6 decoder subtracts from hostile option lengths
//! (`len - 4` in its `VendorClass` and `VendorOpts` arms, `len - 11` in `Authentication`), an
//! overflow panic in debug builds before option 112 is reached.
use crate::{
    datapath::events::{PacketSample, SampleKind},
    device::Mac,
    fingerprint::dhcp,
};

/// Which announcement carried the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Dhcpv4,
    Dhcpv6,
    Lldp,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Dhcpv4 => "dhcpv4",
            Channel::Dhcpv6 => "dhcpv6",
            Channel::Lldp => "lldp",
        }
    }
}

/// A device said "my MUD file is at `url`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub mac: Mac,
    pub channel: Channel,
    /// As sent: device-controlled bytes.
    pub url: Vec<u8>,
}

/// Why a message that should carry options could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnnounceError {
    #[error("DHCPv6: {0}")]
    Dhcpv6(&'static str),
    #[error("LLDP: {0}")]
    Lldp(&'static str),
}

/// DHCPv6 option code of the MUD URL (RFC 8520 §10).
const DHCPV6_OPTION_MUD_URL: u16 = 112;
/// msg-type (1 byte) and transaction-id (3 bytes) before a client message's options
/// (RFC 8415 §8).
const DHCPV6_HEADER: usize = 4;
/// Client-to-server message types (RFC 8415 §7.3): SOLICIT, REQUEST, CONFIRM, RENEW, REBIND,
/// RELEASE, DECLINE, INFORMATION-REQUEST. A server's message announces nothing about a device.
const DHCPV6_CLIENT_MESSAGES: [u8; 8] = [1, 3, 4, 5, 6, 8, 9, 11];

/// LLDP TLV types (IEEE 802.1AB §8.4): end of LLDPDU, organizationally specific.
const LLDP_END: u8 = 0;
const LLDP_ORGANIZATION_SPECIFIC: u8 = 127;
/// The MUD TLV's OUI (IANA, 00-00-5E) and subtype (RFC 8520 §10).
const LLDP_MUD_OUI: [u8; 3] = [0x00, 0x00, 0x5e];
const LLDP_MUD_SUBTYPE: u8 = 0x01;

/// The MUD URL a sample announces, if any. A sample that cannot be read announces nothing
/// (the inventory reports unreadable DHCP; LLDP and DHCPv6 say why here).
pub fn from_sample(sample: &PacketSample) -> Result<Option<Announcement>, AnnounceError> {
    let (channel, url) = match sample.kind {
        SampleKind::Dhcp => match dhcp::parse(sample.payload()) {
            Ok(fingerprint) if fingerprint.from_client => (Channel::Dhcpv4, fingerprint.mud_url),
            _ => return Ok(None),
        },
        SampleKind::Dhcpv6 => (Channel::Dhcpv6, dhcpv6_mud_url(sample.payload())?),
        SampleKind::Lldp => (Channel::Lldp, lldp_mud_url(sample.payload())?),
        _ => return Ok(None),
    };
    Ok(url.map(|url| Announcement { mac: sample.mac, channel, url }))
}

/// Option 112 of a DHCPv6 client message (the UDP payload), or `None` when the message has
/// none or is not a client's. An option running past the end is an error (a sample cut inside
/// the options, or a lie), never a shorter URL.
pub fn dhcpv6_mud_url(payload: &[u8]) -> Result<Option<Vec<u8>>, AnnounceError> {
    let message_type = *payload.first().ok_or(AnnounceError::Dhcpv6("empty message"))?;
    if !DHCPV6_CLIENT_MESSAGES.contains(&message_type) {
        return Ok(None);
    }
    let mut options = payload.get(DHCPV6_HEADER..).ok_or(AnnounceError::Dhcpv6("shorter than its header"))?;
    let mut found = None;
    while !options.is_empty() {
        let [c0, c1, l0, l1, rest @ ..] = options else {
            return Err(AnnounceError::Dhcpv6("option header cut short"));
        };
        let (code, len) = (u16::from_be_bytes([*c0, *c1]), usize::from(u16::from_be_bytes([*l0, *l1])));
        let data = rest.get(..len).ok_or(AnnounceError::Dhcpv6("option longer than the message"))?;
        if code == DHCPV6_OPTION_MUD_URL {
            if found.is_some() {
                return Err(AnnounceError::Dhcpv6("option 112 twice"));
            }
            found = Some(data.to_vec());
        }
        options = &rest[len..];
    }
    Ok(found)
}

/// The MUD TLV of an LLDPDU (the Ethernet payload of an LLDP frame), or `None` without one.
pub fn lldp_mud_url(lldpdu: &[u8]) -> Result<Option<Vec<u8>>, AnnounceError> {
    let mut tlvs = lldpdu;
    let mut found = None;
    loop {
        let [h0, h1, rest @ ..] = tlvs else {
            return Err(AnnounceError::Lldp("no end TLV"));
        };
        // 7 bits of type, 9 bits of length (IEEE 802.1AB §8.4.1).
        let header = u16::from_be_bytes([*h0, *h1]);
        let (kind, len) = ((header >> 9) as u8, usize::from(header & 0x01ff));
        let value = rest.get(..len).ok_or(AnnounceError::Lldp("TLV longer than the frame"))?;
        if kind == LLDP_END {
            return Ok(found);
        }
        if kind == LLDP_ORGANIZATION_SPECIFIC
            && let [o0, o1, o2, subtype, url @ ..] = value
            && [*o0, *o1, *o2] == LLDP_MUD_OUI
            && *subtype == LLDP_MUD_SUBTYPE
        {
            if found.is_some() {
                return Err(AnnounceError::Lldp("MUD TLV twice"));
            }
            found = Some(url.to_vec());
        }
        tlvs = &rest[len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &[u8] = b"https://mud.example.com/lightbulb.json";

    fn dhcpv6_option(code: u16, data: &[u8]) -> Vec<u8> {
        let mut out = code.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    /// A SOLICIT with a client id, the MUD URL and an elapsed-time option.
    fn solicit(url: &[u8]) -> Vec<u8> {
        let mut message = vec![1, 0x12, 0x34, 0x56];
        message.extend(dhcpv6_option(1, &[0, 3, 0, 1, 2, 0, 0, 0, 0, 1]));
        message.extend(dhcpv6_option(DHCPV6_OPTION_MUD_URL, url));
        message.extend(dhcpv6_option(8, &[0, 0]));
        message
    }

    #[test]
    fn dhcpv6_option_112_is_the_mud_url() {
        assert_eq!(dhcpv6_mud_url(&solicit(URL)).unwrap().as_deref(), Some(URL));
        let mut without = vec![3, 0, 0, 1];
        without.extend(dhcpv6_option(8, &[0, 0]));
        assert_eq!(dhcpv6_mud_url(&without).unwrap(), None);
        assert_eq!(dhcpv6_mud_url(&[11, 0, 0, 1]).unwrap(), None, "no options at all");
    }

    #[test]
    fn dhcpv6_server_messages_announce_nothing() {
        let mut advertise = solicit(URL);
        advertise[0] = 2;
        assert_eq!(dhcpv6_mud_url(&advertise).unwrap(), None);
        advertise[0] = 12; // RELAY-FORW has another header: not a device's own message
        assert_eq!(dhcpv6_mud_url(&advertise).unwrap(), None);
    }

    #[test]
    fn dhcpv6_malformed_is_an_error_never_a_shorter_url() {
        let message = solicit(URL);
        assert!(dhcpv6_mud_url(&[]).is_err());
        assert!(dhcpv6_mud_url(&[1, 0]).is_err(), "header cut short");
        for cut in 1..message.len() - DHCPV6_HEADER {
            let result = dhcpv6_mud_url(&message[..message.len() - cut]);
            // Cut at an option boundary, the rest is a shorter but whole message.
            let whole = result == Ok(Some(URL.to_vec())) || result == Ok(None);
            assert!(result.is_err() || whole, "cut {cut}: {result:?}");
        }
        // A length running past the end.
        let mut lying = vec![1, 0, 0, 1];
        lying.extend_from_slice(&112u16.to_be_bytes());
        lying.extend_from_slice(&0xffffu16.to_be_bytes());
        lying.extend_from_slice(URL);
        assert_eq!(dhcpv6_mud_url(&lying), Err(AnnounceError::Dhcpv6("option longer than the message")));
        let mut twice = solicit(URL);
        twice.extend(dhcpv6_option(DHCPV6_OPTION_MUD_URL, b"https://other.example/x.json"));
        assert_eq!(dhcpv6_mud_url(&twice), Err(AnnounceError::Dhcpv6("option 112 twice")));
    }

    fn lldp_tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let header = (u16::from(kind) << 9) | value.len() as u16;
        let mut out = header.to_be_bytes().to_vec();
        out.extend_from_slice(value);
        out
    }

    fn mud_tlv(url: &[u8]) -> Vec<u8> {
        let mut value = LLDP_MUD_OUI.to_vec();
        value.push(LLDP_MUD_SUBTYPE);
        value.extend_from_slice(url);
        lldp_tlv(LLDP_ORGANIZATION_SPECIFIC, &value)
    }

    /// Chassis id (MAC), port id, TTL, an 802.1 organisational TLV, the MUD TLV, end.
    fn lldpdu(url: &[u8]) -> Vec<u8> {
        let mut out = lldp_tlv(1, &[4, 0x02, 0, 0, 0, 0, 1]);
        out.extend(lldp_tlv(2, &[3, 0x02, 0, 0, 0, 0, 1]));
        out.extend(lldp_tlv(3, &[0, 120]));
        out.extend(lldp_tlv(LLDP_ORGANIZATION_SPECIFIC, &[0x00, 0x80, 0xc2, 0x01, 0x00, 0x01]));
        out.extend(mud_tlv(url));
        out.extend(lldp_tlv(LLDP_END, &[]));
        out
    }

    #[test]
    fn lldp_mud_tlv_is_the_mud_url() {
        assert_eq!(lldp_mud_url(&lldpdu(URL)).unwrap().as_deref(), Some(URL));
        let mut plain = lldp_tlv(1, &[4, 0x02, 0, 0, 0, 0, 1]);
        plain.extend(lldp_tlv(LLDP_END, &[]));
        assert_eq!(lldp_mud_url(&plain).unwrap(), None);
        // Another subtype of the IANA OUI is not the MUD TLV.
        let mut other = lldp_tlv(LLDP_ORGANIZATION_SPECIFIC, &[0x00, 0x00, 0x5e, 0x02, b'x']);
        other.extend(lldp_tlv(LLDP_END, &[]));
        assert_eq!(lldp_mud_url(&other).unwrap(), None);
        // TLVs after the end TLV (Ethernet padding) are not read.
        let mut padded = plain.clone();
        padded.extend(mud_tlv(URL));
        assert_eq!(lldp_mud_url(&padded).unwrap(), None);
    }

    #[test]
    fn lldp_malformed_is_an_error_never_a_shorter_url() {
        let frame = lldpdu(URL);
        for cut in 1..frame.len() {
            let result = lldp_mud_url(&frame[..frame.len() - cut]);
            assert!(result.is_err(), "cut {cut}: {result:?}");
        }
        let mut twice = mud_tlv(URL);
        twice.extend(mud_tlv(URL));
        twice.extend(lldp_tlv(LLDP_END, &[]));
        assert_eq!(lldp_mud_url(&twice), Err(AnnounceError::Lldp("MUD TLV twice")));
        // A short organisational TLV (no room for OUI and subtype) is skipped, not misread.
        let mut short = lldp_tlv(LLDP_ORGANIZATION_SPECIFIC, &[0x00, 0x00]);
        short.extend(lldp_tlv(LLDP_END, &[]));
        assert_eq!(lldp_mud_url(&short).unwrap(), None);
    }

    #[test]
    fn random_options_never_panic() {
        use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(0x0112);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..300);
            let mut data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            if let Some(first) = data.first_mut() {
                *first = 1;
            }
            let _ = dhcpv6_mud_url(&data);
            let _ = lldp_mud_url(&data);
        }
    }
}
