//! DNS observations: reads a DNS message (the payload of a DNS `PacketSample`) with
//! `hickory-proto` and keeps the names asked and the addresses answered, with their TTLs.
use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType};
use serde::{Deserialize, Serialize};

use super::FingerprintError;

/// One address record of an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// The owner name, lower case, without the trailing dot.
    pub name: String,
    pub address: IpAddr,
    pub ttl: u32,
}

/// What one DNS message shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsObservation {
    pub is_response: bool,
    /// Names in the question section, lower case, without the trailing dot.
    pub queries: Vec<String>,
    /// A and AAAA records of the answer section (CNAME chains are followed by the owner names).
    pub answers: Vec<DnsAnswer>,
}

/// Lower case, no trailing dot: the form every other step compares names in.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Parses a DNS message (UDP payload; for DNS over TCP, strip the 2-byte length first).
pub fn parse(payload: &[u8]) -> Result<DnsObservation, FingerprintError> {
    let message = Message::from_vec(payload).map_err(|error| FingerprintError::Dns(error.to_string()))?;
    let queries = message.queries().iter().map(|q| normalize_name(&q.name().to_ascii())).collect();
    let answers = message
        .answers()
        .iter()
        .filter_map(|record| {
            Some(DnsAnswer {
                name: normalize_name(&record.name().to_ascii()),
                address: record.data().ip_addr()?,
                ttl: record.ttl(),
            })
        })
        .collect();
    Ok(DnsObservation { is_response: message.message_type() == MessageType::Response, queries, answers })
}

/// DNS over TCP prefixes each message with its length; returns the message.
pub fn strip_tcp_length(payload: &[u8]) -> Result<&[u8], FingerprintError> {
    payload.get(2..).ok_or_else(|| FingerprintError::Dns("DNS over TCP shorter than its length prefix".into()))
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr as _};

    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RData, Record, RecordType, rdata::A},
    };

    use super::*;

    fn response() -> Vec<u8> {
        let name = Name::from_str("Time.Example.COM.").unwrap();
        let mut message = Message::new();
        message.set_message_type(MessageType::Response);
        message.add_query(Query::query(name.clone(), RecordType::A));
        message.add_answer(Record::from_rdata(name, 300, RData::A(A(Ipv4Addr::new(192, 0, 2, 7)))));
        message.to_vec().unwrap()
    }

    #[test]
    fn dns_response_yields_names_and_addresses_with_ttl() {
        let observation = parse(&response()).unwrap();
        assert!(observation.is_response);
        assert_eq!(observation.queries, vec!["time.example.com".to_owned()]);
        assert_eq!(
            observation.answers,
            vec![DnsAnswer { name: "time.example.com".into(), address: "192.0.2.7".parse().unwrap(), ttl: 300 }]
        );
    }

    #[test]
    fn dns_truncated_or_garbage_is_an_error() {
        let bytes = response();
        for len in [0, 5, 12, 20, bytes.len() - 1] {
            assert!(parse(&bytes[..len]).is_err(), "len {len}");
        }
        assert!(strip_tcp_length(&[0]).is_err());
    }
}
