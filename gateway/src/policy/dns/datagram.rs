//! Reads a DNS sample: the addresses and ports it travelled between (its IP and UDP
//! headers, read by etherparse) and its DNS message (hickory-proto) with its one question.
use std::net::SocketAddr;

use hickory_proto::{
    op::{Message, MessageType},
    rr::{DNSClass, RecordType},
};

use super::DnsError;
use crate::{datapath::events::PacketSample, fingerprint::dns::normalize_name};

/// What a query asks: a name (lower case, no trailing dot) and a record type, in class IN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub kind: RecordType,
}

/// A sampled DNS message over UDP.
#[derive(Debug)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub message: Message,
    pub question: Question,
}

impl Datagram {
    /// Reads a sample (from the IP header on). Only messages with exactly one question in
    /// class IN are read: that is what stub resolvers send, and what an answer is matched on.
    pub fn read(sample: &PacketSample) -> Result<Self, DnsError> {
        let malformed = |why: String| DnsError::Malformed(why);
        let (ip, _) = etherparse::LaxIpSlice::from_slice(&sample.data).map_err(|e| malformed(e.to_string()))?;
        let payload = ip.payload();
        if payload.ip_number != etherparse::IpNumber::UDP || payload.fragmented {
            return Err(malformed("not an unfragmented UDP datagram".into()));
        }
        let udp = etherparse::UdpSlice::from_slice_lax(payload.payload).map_err(|e| malformed(e.to_string()))?;
        let message = Message::from_vec(udp.payload()).map_err(|e| malformed(e.to_string()))?;
        let [query] = message.queries() else {
            return Err(malformed(format!("{} questions, not one", message.queries().len())));
        };
        if query.query_class() != DNSClass::IN {
            return Err(malformed("question not in class IN".into()));
        }
        let question = Question { name: normalize_name(&query.name().to_ascii()), kind: query.query_type() };
        Ok(Self {
            src: SocketAddr::new(ip.source_addr(), udp.source_port()),
            dst: SocketAddr::new(ip.destination_addr(), udp.destination_port()),
            message,
            question,
        })
    }

    pub fn is_response(&self) -> bool {
        self.message.message_type() == MessageType::Response
    }

    pub fn id(&self) -> u16 {
        self.message.id()
    }
}
