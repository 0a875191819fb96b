//! What a DHCPv6 message (RFC 8415) says about addresses: its type, the client's DUID and the
//! addresses of its IA_NA and IA_TA options with their valid lifetimes. Message types and
//! option codes are dhcproto's; the options are walked here, every read bounds-checked,
//! because dhcproto's owned decoder subtracts from hostile option lengths (see
//! `mud::announce`) and a device sends these bytes. A sample cut at `SAMPLE_BYTES` yields the
//! addresses before the cut.
use std::net::Ipv6Addr;

use dhcproto::v6::{MessageType, OptionCode};

use crate::device::Mac;

/// msg-type and transaction-id before the options (RFC 8415 §8).
const HEADER: usize = 4;
/// Option code and length (RFC 8415 §21.1).
const OPTION_HEADER: usize = 4;
/// IA_NA's IAID, T1 and T2 before its options (§21.4); IA_TA's IAID (§21.5).
const IA_NA_FIXED: usize = 12;
const IA_TA_FIXED: usize = 4;
/// IAADDR: the address, then preferred and valid lifetimes (§21.6).
const IA_ADDRESS_FIXED: usize = 24;
/// DUID-LLT and DUID-LL (RFC 8415 §11.2, §11.4): type, hardware type (1, Ethernet), then for
/// LLT 4 bytes of time, then the link-layer address.
const DUID_LLT: u16 = 1;
const DUID_LL: u16 = 3;
const HARDWARE_ETHERNET: u16 = 1;

/// What the source guard reads of a DHCPv6 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcpv6 {
    pub message_type: MessageType,
    /// The Client Identifier option: the client's DUID.
    pub client_id: Option<Vec<u8>>,
    /// The IA_NA and IA_TA addresses, each with its valid lifetime in seconds (0: the
    /// address is no longer the client's).
    pub addresses: Vec<(Ipv6Addr, u32)>,
}

impl Dhcpv6 {
    /// The MAC a DUID-LL or DUID-LLT of Ethernet names; `None` for other DUIDs (DUID-EN,
    /// DUID-UUID), which do not.
    pub fn client_mac(&self) -> Option<Mac> {
        let duid = self.client_id.as_deref()?;
        let (kind, rest) = (be16(duid.get(..2)?), duid.get(2..)?);
        let address = match kind {
            DUID_LL => rest.get(2..)?,
            DUID_LLT => rest.get(6..)?,
            _ => return None,
        };
        (be16(rest.get(..2)?) == HARDWARE_ETHERNET).then_some(())?;
        Some(Mac(address.try_into().ok()?))
    }
}

/// Reads a DHCPv6 message (a UDP payload from port 546 or 547).
pub fn parse(payload: &[u8]) -> Result<Dhcpv6, &'static str> {
    let message_type = MessageType::from(*payload.first().ok_or("empty message")?);
    let options = payload.get(HEADER..).ok_or("shorter than its header")?;
    let mut message = Dhcpv6 { message_type, client_id: None, addresses: Vec::new() };
    for (code, data) in options_of(options) {
        match OptionCode::from(code) {
            OptionCode::ClientId => message.client_id = Some(data.to_vec()),
            OptionCode::IANA => addresses_in(data.get(IA_NA_FIXED..), &mut message.addresses),
            OptionCode::IATA => addresses_in(data.get(IA_TA_FIXED..), &mut message.addresses),
            _ => {}
        }
    }
    Ok(message)
}

/// The IAADDR options among an IA's options.
fn addresses_in(options: Option<&[u8]>, out: &mut Vec<(Ipv6Addr, u32)>) {
    for (code, data) in options_of(options.unwrap_or_default()) {
        if OptionCode::from(code) != OptionCode::IAAddr || data.len() < IA_ADDRESS_FIXED {
            continue;
        }
        let address: [u8; 16] = data[..16].try_into().expect("checked: at least 24 bytes");
        let valid = u32::from_be_bytes(data[20..24].try_into().expect("checked: at least 24 bytes"));
        out.push((Ipv6Addr::from(address), valid));
    }
}

/// The (code, data) options of a list, up to the first one cut short.
fn options_of(mut list: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let header = list.get(..OPTION_HEADER)?;
        let (code, len) = (be16(&header[..2]), usize::from(be16(&header[2..])));
        let data = list.get(OPTION_HEADER..OPTION_HEADER + len)?;
        list = &list[OPTION_HEADER + len..];
        Some((code, data))
    })
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

#[cfg(test)]
mod tests {
    use dhcproto::{Encodable as _, v6};

    use super::*;

    const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
    const LEASED: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x50);
    const TEMPORARY: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0x1, 0x51);

    fn reply() -> Vec<u8> {
        let mut message = v6::Message::new_with_id(v6::MessageType::Reply, [1, 2, 3]);
        let options = message.opts_mut();
        options.insert(v6::DhcpOption::ClientId([&[0, 3, 0, 1][..], &CLIENT].concat()));
        let address = |addr, valid_life| {
            let mut opts = v6::DhcpOptions::new();
            opts.insert(v6::DhcpOption::IAAddr(v6::IAAddr {
                addr,
                preferred_life: valid_life / 2,
                valid_life,
                opts: v6::DhcpOptions::new(),
            }));
            opts
        };
        options.insert(v6::DhcpOption::IANA(v6::IANA { id: 7, t1: 1_800, t2: 2_880, opts: address(LEASED, 3_600) }));
        options.insert(v6::DhcpOption::IATA(v6::IATA { id: 8, opts: address(TEMPORARY, 0) }));
        message.to_vec().expect("a DHCPv6 reply encodes")
    }

    #[test]
    fn a_reply_gives_its_ia_addresses_with_their_lifetimes_and_names_the_client() {
        let message = parse(&reply()).expect("a reply parses");
        assert_eq!(message.message_type, MessageType::Reply);
        assert_eq!(message.addresses, [(LEASED, 3_600), (TEMPORARY, 0)]);
        assert_eq!(message.client_mac(), Some(Mac(CLIENT)));
    }

    #[test]
    fn a_message_cut_anywhere_or_lying_about_lengths_yields_what_came_before() {
        let whole = reply();
        for len in 0..whole.len() {
            let _ = parse(&whole[..len]);
        }
        // An IA_NA whose length says far more than the message holds: the walk stops there.
        let mut lying = vec![7, 1, 2, 3, 0, 3, 0xff, 0xff];
        lying.extend_from_slice(&whole[4..]);
        assert!(parse(&lying).expect("the header is whole").addresses.is_empty());
        // An IA address option shorter than its fixed fields is skipped, not read past.
        let short = [7, 1, 2, 3, 0, 3, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0];
        assert!(parse(&short).expect("the header is whole").addresses.is_empty());
        assert_eq!(parse(&[]), Err("empty message"));
    }

    #[test]
    fn only_ethernet_duid_ll_and_llt_name_a_mac() {
        let duid = |bytes: &[u8]| Dhcpv6 {
            message_type: MessageType::Solicit,
            client_id: Some(bytes.to_vec()),
            addresses: Vec::new(),
        };
        let llt = [&[0, 1, 0, 1, 0x2a, 0x2b, 0x2c, 0x2d][..], &CLIENT].concat();
        assert_eq!(duid(&llt).client_mac(), Some(Mac(CLIENT)));
        assert_eq!(duid(&[0, 2, 0, 0, 0x01, 0x37, 1, 2, 3]).client_mac(), None, "DUID-EN");
        assert_eq!(duid(&[0, 3, 0, 6, 1, 2, 3, 4, 5, 6]).client_mac(), None, "not Ethernet");
        assert_eq!(duid(&[0, 3, 0, 1, 1, 2]).client_mac(), None, "cut short");
    }
}
