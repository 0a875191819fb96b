//! Which DNS answers may name addresses for the baseline and detection (`Baselines::name_of`,
//! whose names exempt a new destination the device or its type knows by name). A device
//! chooses its resolver, so an answer names anything only when
//! - it answers a query the device sent: same resolver and device address and port, id and
//!   question, in time, once (`policy::dns::queries`, the matching the DNS-name rules use),
//!   with only the question's name and its CNAME chain followed (`policy::dns::answers`);
//! - it reached the gateway as an answer: sampled from upstream or from the gateway's own
//!   resolver (`SampleKind::DnsAnswer`), or, in captures, relayed by a router
//!   (`detect.gateway_macs`). A device's own DNS response on the LAN names nothing;
//! - its resolver is one the site trusts (`TrustedResolvers`).
//!
//! A matched answer from any other resolver names nothing and is reported
//! (`Resolution::Untrusted`): an IoT device resolving through a server of its own choosing is
//! what an implant that answers its own lookups (or uses its operator's resolver) looks like.
//! Reads DNS and DHCP samples; writes nothing outside itself.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    time::SystemTime,
};

use crate::{
    datapath::{
        events::{PacketSample, SampleKind},
        replay::PORT_DNS,
    },
    device::Mac,
    fingerprint::dhcp,
    policy::dns::{
        Datagram, DnsConfig, Refusal,
        answers::Answers,
        queries::{Exchange, QueryBook},
    },
};

/// Most resolvers learnt from DHCP replies and routers' addresses; past it they are forgotten
/// and learnt again from the next reply (a LAN has a handful).
pub const MAX_LEARNT_RESOLVERS: usize = 64;
/// Most addresses named at once (address → name); past it everything is forgotten rather
/// than tracking ages.
pub const MAX_NAMED_ADDRESSES: usize = super::DNS_CACHE_CAPACITY;

/// DHCP message types of a server's reply (option 53, RFC 2132 §9.6).
const DHCP_OFFER: u8 = 2;
const DHCP_ACK: u8 = 5;

/// The resolvers whose answers name addresses.
#[derive(Clone, Debug, Default)]
pub struct TrustedResolvers {
    /// Configured (`detect.trusted_resolvers`, `detect.public_resolvers`) and the gateway's
    /// own addresses.
    configured: HashSet<IpAddr>,
    /// The DHCP servers whose replies announce resolvers (option 6).
    dhcp_servers: HashSet<Mac>,
    /// Announced by those servers, and the LAN addresses routers send from.
    learnt: HashSet<IpAddr>,
}

impl TrustedResolvers {
    pub fn new(configured: impl IntoIterator<Item = IpAddr>, dhcp_servers: impl IntoIterator<Item = Mac>) -> Self {
        Self {
            configured: configured.into_iter().collect(),
            dhcp_servers: dhcp_servers.into_iter().collect(),
            learnt: HashSet::new(),
        }
    }

    pub fn trusts(&self, resolver: IpAddr) -> bool {
        self.configured.contains(&resolver) || self.learnt.contains(&resolver)
    }

    /// Trusts `resolver` from now on (announced by a trusted DHCP server, or a router's own).
    pub fn learn(&mut self, resolver: IpAddr) {
        if resolver.is_unspecified() || self.configured.contains(&resolver) {
            return;
        }
        if self.learnt.len() >= MAX_LEARNT_RESOLVERS && !self.learnt.contains(&resolver) {
            self.learnt.clear();
        }
        self.learnt.insert(resolver);
    }

    /// Learns the resolvers a trusted server's DHCP OFFER or ACK hands out.
    fn observe_dhcp(&mut self, sample: &PacketSample) {
        if !self.dhcp_servers.contains(&sample.mac) {
            return;
        }
        let Ok(message) = dhcp::parse(sample.payload()) else { return };
        if message.from_client || !matches!(message.message_type, Some(DHCP_OFFER | DHCP_ACK)) {
            return;
        }
        for resolver in message.dns_servers {
            self.learn(IpAddr::V4(resolver));
        }
    }
}

/// What one DNS (or DHCP) sample did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// A device's query, remembered; `name` is what it asked.
    Query { name: String },
    /// A trusted resolver's answer to a device's query: `named` addresses now carry its name.
    Named { device: Mac, resolver: SocketAddr, named: usize },
    /// The answer to a device's query from a resolver the site does not trust: it names
    /// nothing.
    Untrusted { device: Mac, asked_from: SocketAddr, resolver: SocketAddr, question: String, addresses: Vec<IpAddr> },
    /// An answer that answers no query (forged, late, duplicate...): it names nothing.
    Refused { device: Option<Mac>, reason: Refusal },
    /// Not a DNS exchange to follow (a device's own response, a malformed message, DHCP).
    Ignored,
}

/// The DNS exchanges followed for naming addresses, and the names they gave.
#[derive(Debug)]
pub struct Resolutions {
    queries: QueryBook,
    trusted: TrustedResolvers,
    /// Address → the name a trusted answer gave it for (the question's name: what the device
    /// asked for, where CNAME targets are the CDN's names).
    names: HashMap<IpAddr, String>,
}

impl Default for Resolutions {
    fn default() -> Self {
        Self::new(TrustedResolvers::default())
    }
}

impl Resolutions {
    pub fn new(trusted: TrustedResolvers) -> Self {
        Self { queries: QueryBook::new(&DnsConfig::default()), trusted, names: HashMap::new() }
    }

    pub fn set_trusted(&mut self, trusted: TrustedResolvers) {
        self.trusted = trusted;
    }

    pub fn trusted_mut(&mut self) -> &mut TrustedResolvers {
        &mut self.trusted
    }

    /// The name a trusted answer last gave `addr`, if any.
    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        self.names.get(&addr).map(String::as_str)
    }

    /// Reads one sample. `relayed` says it was sent by a router (`detect.gateway_macs`): a
    /// response from it is an answer to the device its destination address belongs to
    /// (`device_of`), as an upstream answer is live.
    pub fn observe(
        &mut self,
        sample: &PacketSample,
        relayed: bool,
        device_of: impl FnOnce(IpAddr) -> Option<Mac>,
    ) -> Resolution {
        match sample.kind {
            SampleKind::Dhcp => {
                self.trusted.observe_dhcp(sample);
                return Resolution::Ignored;
            }
            SampleKind::Dns | SampleKind::DnsAnswer => {}
            _ => return Resolution::Ignored,
        }
        let Ok(datagram) = Datagram::read(sample) else { return Resolution::Ignored };
        if !datagram.is_response() {
            if sample.kind != SampleKind::Dns || relayed || datagram.dst.port() != PORT_DNS {
                return Resolution::Ignored;
            }
            let exchange =
                Exchange { mac: sample.mac, device: datagram.src, resolver: datagram.dst, id: datagram.id() };
            let name = datagram.question.name.clone();
            self.queries.remember(exchange, datagram.question, sample.time);
            return Resolution::Query { name };
        }
        let device = match (sample.kind, relayed) {
            (SampleKind::DnsAnswer, _) => sample.mac,
            (SampleKind::Dns, true) => match device_of(datagram.dst.ip()) {
                Some(device) => device,
                None => return Resolution::Refused { device: None, reason: Refusal::Unsolicited },
            },
            // A device's own response on the LAN answers nobody the gateway follows.
            _ => return Resolution::Ignored,
        };
        self.answer(device, &datagram, sample.time)
    }

    fn answer(&mut self, device: Mac, datagram: &Datagram, at: SystemTime) -> Resolution {
        let exchange = Exchange { mac: device, device: datagram.dst, resolver: datagram.src, id: datagram.id() };
        if let Err(reason) = self.queries.answer(exchange, &datagram.question, at) {
            return Resolution::Refused { device: Some(device), reason };
        }
        let answers = Answers::from_message(&datagram.message, &datagram.question);
        let chain = answers.chain(&datagram.question);
        let addresses: Vec<IpAddr> = answers.resolve(&chain, 0).into_iter().map(|(addr, _)| addr).collect();
        if !self.trusted.trusts(datagram.src.ip()) {
            return Resolution::Untrusted {
                device,
                asked_from: datagram.dst,
                resolver: datagram.src,
                question: datagram.question.name.clone(),
                addresses,
            };
        }
        for addr in &addresses {
            if self.names.len() >= MAX_NAMED_ADDRESSES && !self.names.contains_key(addr) {
                self.names.clear();
            }
            self.names.insert(*addr, datagram.question.name.clone());
        }
        Resolution::Named { device, resolver: datagram.src, named: addresses.len() }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::Ipv4Addr,
        time::{Duration, SystemTime},
    };

    use super::*;
    use crate::{datapath::events::DatapathEvent, detect::synthetic, pipeline::Input};

    const CAMERA: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const ROUTER: Mac = Mac([2, 0, 0, 0, 0, 0xfe]);
    const CLOUD: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const C2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);

    fn at(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000) + Duration::from_millis(millis)
    }

    fn sample(input: Input) -> PacketSample {
        let Input::Datapath(DatapathEvent::Sample(sample)) = input else { unreachable!("a DNS sample") };
        sample
    }

    fn trusting(resolver: IpAddr) -> Resolutions {
        Resolutions::new(TrustedResolvers::new([resolver], []))
    }

    fn lookup(resolver: Ipv4Addr, name: &str, addr: Ipv4Addr) -> (PacketSample, PacketSample) {
        let [query, answer] = synthetic::dns_lookup_via(CAMERA, at(0), resolver, name, addr);
        (sample(query), sample(answer))
    }

    #[test]
    fn a_trusted_resolvers_answer_to_the_devices_query_names_the_address() {
        let mut resolutions = trusting(IpAddr::V4(synthetic::GATEWAY));
        let (query, answer) = lookup(synthetic::GATEWAY, "cloud.camera.example", CLOUD);
        assert_eq!(
            resolutions.observe(&query, false, |_| None),
            Resolution::Query { name: "cloud.camera.example".into() }
        );
        assert!(matches!(resolutions.observe(&answer, false, |_| None), Resolution::Named { named: 1, .. }));
        assert_eq!(resolutions.name_of(CLOUD.into()), Some("cloud.camera.example"));
    }

    #[test]
    fn an_answer_from_a_resolver_the_device_chose_names_nothing_and_is_reported() {
        let mut resolutions = trusting(IpAddr::V4(synthetic::GATEWAY));
        let own = IpAddr::V4(C2);
        let (query, answer) = lookup(C2, "cloud.camera.example", C2);
        resolutions.observe(&query, false, |_| None);
        let resolution = resolutions.observe(&answer, false, |_| None);
        assert_eq!(
            resolution,
            Resolution::Untrusted {
                device: CAMERA,
                asked_from: SocketAddr::new(synthetic::DEVICE_ADDRESS.into(), 53_000),
                resolver: SocketAddr::new(own, 53),
                question: "cloud.camera.example".into(),
                addresses: vec![own],
            }
        );
        assert_eq!(resolutions.name_of(own), None);
    }

    #[test]
    fn answers_without_their_query_or_sent_by_the_device_itself_name_nothing() {
        let mut resolutions = trusting(IpAddr::V4(synthetic::GATEWAY));
        let (query, answer) = lookup(synthetic::GATEWAY, "cloud.camera.example", C2);
        // Unsolicited: no query was seen.
        assert!(matches!(
            resolutions.observe(&answer, false, |_| None),
            Resolution::Refused { reason: Refusal::Unsolicited, .. }
        ));
        // The device's own response on the LAN, even to its own query.
        resolutions.observe(&query, false, |_| None);
        let own = PacketSample { kind: SampleKind::Dns, ..answer.clone() };
        assert_eq!(resolutions.observe(&own, false, |_| None), Resolution::Ignored);
        // Another id.
        let mut forged = answer.clone();
        let id_at = forged.payload_offset;
        forged.data[id_at] ^= 0xff;
        assert!(matches!(resolutions.observe(&forged, false, |_| None), Resolution::Refused { .. }));
        assert_eq!(resolutions.name_of(C2.into()), None);
        // The genuine answer still counts, once.
        assert!(matches!(resolutions.observe(&answer, false, |_| None), Resolution::Named { .. }));
        assert!(matches!(
            resolutions.observe(&answer, false, |_| None),
            Resolution::Refused { reason: Refusal::Duplicate, .. }
        ));
    }

    #[test]
    fn a_router_relayed_answer_goes_to_the_device_at_its_destination_address() {
        let mut resolutions = trusting(IpAddr::V4(synthetic::GATEWAY));
        let (query, answer) = lookup(synthetic::GATEWAY, "cloud.camera.example", CLOUD);
        resolutions.observe(&query, false, |_| None);
        let relayed = PacketSample { kind: SampleKind::Dns, mac: ROUTER, ..answer };
        let device = IpAddr::V4(synthetic::DEVICE_ADDRESS);
        let resolution = resolutions.observe(&relayed, true, |addr| (addr == device).then_some(CAMERA));
        assert!(matches!(resolution, Resolution::Named { device: CAMERA, .. }), "{resolution:?}");
    }

    #[test]
    fn a_trusted_dhcp_servers_announced_resolvers_are_trusted_and_no_one_elses() {
        use dhcproto::{Encodable as _, Encoder, v4};
        let announced = Ipv4Addr::new(192, 168, 1, 53);
        let ack = |server: Mac| {
            let mut message = v4::Message::default();
            message.set_opcode(v4::Opcode::BootReply);
            message.opts_mut().insert(v4::DhcpOption::MessageType(v4::MessageType::Ack));
            message.opts_mut().insert(v4::DhcpOption::DomainNameServer(vec![announced]));
            let mut data = Vec::new();
            message.encode(&mut Encoder::new(&mut data)).unwrap();
            PacketSample {
                time: at(0),
                mac: server,
                kind: SampleKind::Dhcp,
                frame_bytes: 300,
                data,
                payload_offset: 0,
                verdict: gateway_ebpf::verdict::PASS,
            }
        };
        let mut resolutions = Resolutions::new(TrustedResolvers::new([], [ROUTER]));
        resolutions.observe(&ack(CAMERA), false, |_| None);
        assert!(!resolutions.trusted.trusts(announced.into()), "a device's DHCP server is not trusted");
        resolutions.observe(&ack(ROUTER), false, |_| None);
        assert!(resolutions.trusted.trusts(announced.into()));
    }
}
