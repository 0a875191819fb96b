//! A device resolving names through a server the site does not trust: the matched answer to
//! its own query came from neither the gateway, a resolver DHCP hands out, a configured one
//! (`detect.trusted_resolvers`) nor a well-known public one. An IoT device has no reason to
//! choose its own resolver; an implant that answers its own lookups, or asks its operator's
//! server, does exactly that to pass its command-and-control server off under a name the
//! device is known to use. Such answers name nothing (`baseline::resolutions`); this raises
//! the alert. Needs no baseline.
use gateway_ebpf::proto;

use super::{DetectorKind, Observation, Trigger};
use crate::{
    baseline::{Baselines, Resolution},
    device::Mac,
};

/// Score of one answer from an untrusted resolver: suspicious on its own, but a device with
/// a hard-coded resolver (an ISP's, a vendor's) does it too.
pub const UNTRUSTED_RESOLVER_SCORE: f64 = 0.6;
/// Answered addresses listed in the alert at most.
const LISTED_ADDRESSES: usize = 4;

/// The alert an untrusted answer raises, and for which device.
pub(super) fn untrusted_resolver(baselines: &Baselines, resolution: Resolution) -> Option<(Mac, Trigger)> {
    let Resolution::Untrusted { device, asked_from, resolver, question, addresses } = resolution else { return None };
    let question = crate::untrusted::escape(&question);
    let listed: Vec<String> = addresses.iter().take(LISTED_ADDRESSES).map(ToString::to_string).collect();
    let more = addresses.len().saturating_sub(LISTED_ADDRESSES);
    let answered = match (listed.is_empty(), more) {
        (true, _) => "no address".to_owned(),
        (false, 0) => listed.join(", "),
        (false, more) => format!("{} and {more} more", listed.join(", ")),
    };
    Some((
        device,
        Trigger {
            detector: DetectorKind::UntrustedResolver,
            score: UNTRUSTED_RESOLVER_SCORE,
            expected: "DNS answers from the gateway, the resolvers DHCP hands out, detect.trusted_resolvers or a \
                       public resolver"
                .to_owned(),
            observed: format!(
                "{resolver} answered the device's query for {question} ({answered}); its answers name nothing; \
                 score = {UNTRUSTED_RESOLVER_SCORE:.1}"
            ),
            flows: vec![format!("udp {asked_from} -> {resolver}")],
            observation: Some(Observation::Destination {
                prefix: baselines.config().prefix_of(resolver.ip()),
                proto: proto::UDP,
                port: resolver.port(),
            }),
        },
    ))
}
