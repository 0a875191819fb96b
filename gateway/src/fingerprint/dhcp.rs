//! DHCP fingerprint: reads a DHCPv4 message (the payload of a DHCP `PacketSample`) with
//! `dhcproto` and keeps what identifies the client's software: the parameter request list
//! (option 55), the vendor class (option 60) and the host name (option 12); and the MUD URL
//! the client announces (option 161, RFC 8520 §10), for `crate::mud`.
use std::net::Ipv4Addr;

use dhcproto::v4;
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
    /// `chaddr`, the client's MAC, when it is an Ethernet address (a server's reply names the
    /// client it answers here).
    pub client_mac: Option<[u8; 6]>,
    /// Option 161, the MUD URL, as sent (device-controlled bytes: `crate::mud::url` checks them).
    pub mud_url: Option<Vec<u8>>,
    /// Option 6 of a server's reply: the DNS resolvers it hands the client.
    #[serde(default)]
    pub dns_servers: Vec<Ipv4Addr>,
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

/// Option codes read here (RFC 2132).
const OPTION_DNS_SERVERS: u8 = 6;
const OPTION_HOSTNAME: u8 = 12;
const OPTION_REQUESTED_ADDRESS: u8 = 50;
const OPTION_MESSAGE_TYPE: u8 = 53;
const OPTION_PARAMETER_LIST: u8 = 55;
const OPTION_VENDOR_CLASS: u8 = 60;
/// RFC 8520 §10.
const OPTION_MUD_URL: u8 = 161;

/// Parses a DHCPv4 message (the UDP payload). Options are framed by dhcproto's zero-copy
/// reader, which stops at a truncated option: a sample cut at `SAMPLE_BYTES` keeps the options
/// before the cut. (dhcproto's owned decoder is not used: it `debug_assert`s on hostile option
/// lengths, a panic in debug builds.)
pub fn parse(payload: &[u8]) -> Result<DhcpFingerprint, FingerprintError> {
    if payload.get(MAGIC_COOKIE_OFFSET..MAGIC_COOKIE_OFFSET + MAGIC_COOKIE.len()) != Some(&MAGIC_COOKIE[..]) {
        return Err(FingerprintError::Dhcp("no DHCP magic cookie (truncated, or BOOTP only)".into()));
    }
    let message = v4::borrowed::Message::new(payload).map_err(|error| FingerprintError::Dhcp(error.to_string()))?;
    let mut fingerprint = DhcpFingerprint {
        from_client: message.opcode() == v4::Opcode::BootRequest,
        client_mac: (message.htype() == v4::HType::Eth && message.hlen() == 6)
            .then(|| message.chaddr().get(..6).and_then(|mac| <[u8; 6]>::try_from(mac).ok()))
            .flatten(),
        ..DhcpFingerprint::default()
    };
    let mut requested = None;
    for option in message.opts() {
        let data = option.data();
        match u8::from(option.code()) {
            OPTION_MESSAGE_TYPE => fingerprint.message_type = data.first().copied(),
            OPTION_PARAMETER_LIST => fingerprint.parameter_request_list = data.to_vec(),
            OPTION_VENDOR_CLASS => fingerprint.vendor_class = Some(String::from_utf8_lossy(data).into_owned()),
            OPTION_HOSTNAME => fingerprint.hostname = Some(String::from_utf8_lossy(data).into_owned()),
            OPTION_MUD_URL => fingerprint.mud_url = Some(data.to_vec()),
            OPTION_DNS_SERVERS if !fingerprint.from_client => {
                fingerprint.dns_servers = data
                    .chunks_exact(4)
                    .map(|octets| Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
                    .collect();
            }
            OPTION_REQUESTED_ADDRESS => {
                if let [a, b, c, d] = data {
                    requested = Some(Ipv4Addr::new(*a, *b, *c, *d));
                }
            }
            _ => {}
        }
    }
    if fingerprint.message_type.is_none() {
        return Err(FingerprintError::Dhcp("no message type option (53)".into()));
    }
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
    fn dhcp_cut_inside_the_options_keeps_those_before_the_cut() {
        let bytes = discover();
        // dhcproto writes options in code order: 12, 50, 53, 55, then 60 (vendor class) and
        // the end marker. Cut inside option 60.
        let fingerprint = parse(&bytes[..bytes.len() - 4]).unwrap();
        assert_eq!(fingerprint.message_type, Some(1));
        assert_eq!(fingerprint.hostname.as_deref(), Some("Philips-hue"));
        assert_eq!(fingerprint.parameter_list_text(), "1,3,6");
        assert!(fingerprint.vendor_class.is_none());
    }

    const MUD_URL: &[u8] = b"https://mud.example.com/lightbulb.json";

    fn request_with_mud_url(url: &[u8]) -> Vec<u8> {
        let mut message = v4::Message::default();
        message.set_chaddr(&[0x00, 0x17, 0x88, 0x24, 0x76, 0xff]);
        message.opts_mut().insert(v4::DhcpOption::MessageType(v4::MessageType::Request));
        message.opts_mut().insert(v4::DhcpOption::Unknown(v4::UnknownOption::new(OPTION_MUD_URL.into(), url.to_vec())));
        let mut bytes = Vec::new();
        message.encode(&mut Encoder::new(&mut bytes)).unwrap();
        bytes
    }

    #[test]
    fn dhcp_option_161_is_the_mud_url() {
        assert_eq!(parse(&request_with_mud_url(MUD_URL)).unwrap().mud_url.as_deref(), Some(MUD_URL));
        assert_eq!(parse(&discover()).unwrap().mud_url, None);
        // Empty: no URL. Not text: kept as sent, for the URL check to refuse with its reason.
        assert!(parse(&request_with_mud_url(b"")).unwrap().mud_url.unwrap_or_default().is_empty());
        assert_eq!(parse(&request_with_mud_url(b"\xff\n")).unwrap().mud_url.as_deref(), Some(&b"\xff\n"[..]));
    }

    #[test]
    fn dhcp_option_161_cut_by_the_sample_is_not_taken() {
        let bytes = request_with_mud_url(MUD_URL);
        // Cut inside the URL: a truncated option is dropped, never read as a shorter URL.
        for cut in 2..MUD_URL.len() {
            let fingerprint = parse(&bytes[..bytes.len() - 1 - cut]).unwrap();
            assert_eq!(fingerprint.mud_url, None, "cut {cut}");
        }
    }

    #[test]
    fn a_servers_ack_names_the_resolvers_it_hands_out_and_a_client_names_none() {
        let mut message = v4::Message::default();
        message.set_opcode(v4::Opcode::BootReply).set_chaddr(&[0x00, 0x17, 0x88, 0x24, 0x76, 0xff]);
        let resolvers = vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(9, 9, 9, 9)];
        message.opts_mut().insert(v4::DhcpOption::MessageType(v4::MessageType::Ack));
        message.opts_mut().insert(v4::DhcpOption::DomainNameServer(resolvers.clone()));
        let mut ack = Vec::new();
        message.encode(&mut Encoder::new(&mut ack)).unwrap();
        assert_eq!(parse(&ack).unwrap().dns_servers, resolvers);
        message.set_opcode(v4::Opcode::BootRequest);
        let mut request = Vec::new();
        message.encode(&mut Encoder::new(&mut request)).unwrap();
        assert!(parse(&request).unwrap().dns_servers.is_empty(), "a client hands out nothing");
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
