//! DHCP fingerprint: reads a DHCPv4 message (the payload of a DHCP `PacketSample`) with
//! `dhcproto` and keeps what identifies the client's software: the parameter request list
//! (option 55), the vendor class (option 60) and the host name (option 12).
use std::net::Ipv4Addr;

use dhcproto::{Decodable as _, Decoder, v4};
use serde::{Deserialize, Serialize};

use super::FingerprintError;

/// What a DHCP message says about the client that sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpFingerprint {
    /// Option 53 (1 = DISCOVER, 3 = REQUEST, ...), when present.
    pub message_type: Option<u8>,
    /// Option 55, in the client's order: the order is part of the fingerprint.
    pub parameter_request_list: Vec<u8>,
    /// Option 60, as text (lossy UTF-8).
    pub vendor_class: Option<String>,
    /// Option 12.
    pub hostname: Option<String>,
    /// Option 50 or `ciaddr`: the address the client asks for or already has.
    pub client_address: Option<Ipv4Addr>,
    /// `yiaddr` of a server reply: the address given to the client.
    pub offered_address: Option<Ipv4Addr>,
    /// BOOTREQUEST (client to server) or not.
    pub from_client: bool,
}

impl DhcpFingerprint {
    /// Option 55 as the usual comma-separated text (`1,3,6,15`), the form fingerprint
    /// databases such as Fingerbank use.
    pub fn parameter_list_text(&self) -> String {
        self.parameter_request_list.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
    }
}

/// RFC 2131 magic cookie, right after the fixed BOOTP header: tells DHCP from other traffic
/// on ports 67/68 (dhcproto does not insist on it).
const MAGIC_COOKIE: [u8; 4] = [0x63, 0x82, 0x53, 0x63];
const MAGIC_COOKIE_OFFSET: usize = 236;

/// Parses a DHCPv4 message (the UDP payload).
pub fn parse(payload: &[u8]) -> Result<DhcpFingerprint, FingerprintError> {
    if payload.get(MAGIC_COOKIE_OFFSET..MAGIC_COOKIE_OFFSET + MAGIC_COOKIE.len()) != Some(&MAGIC_COOKIE[..]) {
        return Err(FingerprintError::Dhcp("no DHCP magic cookie (truncated, or BOOTP only)".into()));
    }
    let message = v4::Message::decode(&mut Decoder::new(payload))
        .map_err(|error| FingerprintError::Dhcp(error.to_string()))?;
    let opts = message.opts();
    let mut fingerprint = DhcpFingerprint {
        from_client: message.opcode() == v4::Opcode::BootRequest,
        ..DhcpFingerprint::default()
    };
    if let Some(v4::DhcpOption::MessageType(kind)) = opts.get(v4::OptionCode::MessageType) {
        fingerprint.message_type = Some(u8::from(*kind));
    }
    if let Some(v4::DhcpOption::ParameterRequestList(list)) =
        opts.get(v4::OptionCode::ParameterRequestList)
    {
        fingerprint.parameter_request_list = list.iter().map(|code| u8::from(*code)).collect();
    }
    if let Some(v4::DhcpOption::ClassIdentifier(bytes)) = opts.get(v4::OptionCode::ClassIdentifier) {
        fingerprint.vendor_class = Some(String::from_utf8_lossy(bytes).into_owned());
    }
    if let Some(v4::DhcpOption::Hostname(name)) = opts.get(v4::OptionCode::Hostname) {
        fingerprint.hostname = Some(name.clone());
    }
    let requested = match opts.get(v4::OptionCode::RequestedIpAddress) {
        Some(v4::DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let unspecified = |ip: Ipv4Addr| (!ip.is_unspecified()).then_some(ip);
    fingerprint.client_address = requested.or_else(|| unspecified(message.ciaddr()));
    if !fingerprint.from_client {
        fingerprint.offered_address = unspecified(message.yiaddr());
    }
    Ok(fingerprint)
}

#[cfg(test)]
mod tests {
    use dhcproto::{Encodable as _, Encoder};

    use super::*;

    fn discover() -> Vec<u8> {
        let mut message = v4::Message::default();
        message.set_chaddr(&[0x00, 0x17, 0x88, 0x24, 0x76, 0xff]);
        let opts = message.opts_mut();
        opts.insert(v4::DhcpOption::MessageType(v4::MessageType::Discover));
        opts.insert(v4::DhcpOption::ParameterRequestList(vec![
            v4::OptionCode::SubnetMask,
            v4::OptionCode::Router,
            v4::OptionCode::DomainNameServer,
        ]));
        opts.insert(v4::DhcpOption::ClassIdentifier(b"udhcp 1.19.4".to_vec()));
        opts.insert(v4::DhcpOption::Hostname("Philips-hue".into()));
        opts.insert(v4::DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 168, 1, 20)));
        let mut bytes = Vec::new();
        message.encode(&mut Encoder::new(&mut bytes)).unwrap();
        bytes
    }

    #[test]
    fn dhcp_discover_yields_options_55_60_12() {
        let fingerprint = parse(&discover()).unwrap();
        assert_eq!(fingerprint.message_type, Some(1));
        assert_eq!(fingerprint.parameter_list_text(), "1,3,6");
        assert_eq!(fingerprint.vendor_class.as_deref(), Some("udhcp 1.19.4"));
        assert_eq!(fingerprint.hostname.as_deref(), Some("Philips-hue"));
        assert_eq!(fingerprint.client_address, Some(Ipv4Addr::new(192, 168, 1, 20)));
        assert!(fingerprint.from_client);
    }

    #[test]
    fn dhcp_truncated_or_garbage_is_an_error() {
        let bytes = discover();
        for len in [0, 1, 20, 100, 236] {
            assert!(parse(&bytes[..len]).is_err(), "len {len}");
        }
        assert!(parse(&[0xff; 300]).is_err());
    }
}
