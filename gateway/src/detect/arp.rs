//! ARP spoofing: a forged sender, a claim on the gateway's address, a binding that changes
//! within its lifetime, an ARP storm.
use super::*;

impl Detector {
    pub(super) fn check_arp(&mut self, sample: &PacketSample) -> Vec<Trigger> {
        let Some(claim) = baseline::arp_claim(sample) else { return Vec::new() };
        let (sender_mac, sender_ip, target_ip) = (claim.sender_mac, claim.sender_ip, claim.target_ip);
        let mut triggers = Vec::new();
        let time = sample.time;
        let is_gateway = self.config.gateway_ips.contains(&IpAddr::V4(sender_ip));
        if sender_mac != sample.mac {
            triggers.push(Trigger {
                detector: DetectorKind::ArpSpoof,
                score: 0.9,
                expected: format!("ARP sender hardware address equal to the frame's source {}", sample.mac),
                observed: format!(
                    "ARP from {} claims {sender_ip} is at {sender_mac}; score 0.9 (forged sender)",
                    sample.mac
                ),
                flows: Vec::new(),
                // A frame whose ARP sender is not its source is forged whatever the network.
                observation: None,
            });
        }
        let binding = Duration::from_secs(self.config.arp_binding_secs);
        // A second claimant seen doing so while it learnt is this network's normal (a
        // failover pair, a device's setup access point).
        let claim_learnt =
            self.baselines.device(sample.mac).is_some_and(|b| b.profile().arp_claims.contains(&sender_ip));
        match self.arp_bindings.get(&sender_ip).copied() {
            Some((owner, seen)) if owner != sample.mac && apart(time, seen) < binding && !claim_learnt => {
                let score = if is_gateway { 1.0 } else { 0.8 };
                triggers.push(Trigger {
                    detector: DetectorKind::ArpSpoof,
                    score,
                    expected: format!("{sender_ip} at {owner} (claimed by it {} ago)", describe_age(time, seen)),
                    observed: format!(
                        "{} claims {sender_ip}{}; score {score} (0.8 for a claimed address, 1.0 when it is the gateway's)",
                        sample.mac,
                        if is_gateway { ", the gateway's address" } else { "" }
                    ),
                    flows: Vec::new(),
                    // A claim on the gateway's address is the classic MITM: never normal.
                    observation: (!is_gateway).then_some(Observation::Claim { addr: sender_ip }),
                });
            }
            _ => {
                self.arp_bindings.insert(sender_ip, (sample.mac, time));
            }
        }
        let gratuitous = sender_ip == target_ip;
        let window = self.config.window();
        let state = self.devices.entry(sample.mac).or_default();
        state.ip.get_or_insert(IpAddr::V4(sender_ip));
        if gratuitous {
            while state.gratuitous_arps.front().is_some_and(|t| apart(time, *t) > window) {
                state.gratuitous_arps.pop_front();
            }
            state.gratuitous_arps.push_back(time);
            let count = state.gratuitous_arps.len();
            if count > self.config.arp_storm {
                let score = alert::ratio_score(count as f64, self.config.arp_storm as f64);
                triggers.push(Trigger {
                    detector: DetectorKind::ArpSpoof,
                    score,
                    expected: format!("at most {} gratuitous ARPs per {} s", self.config.arp_storm, window.as_secs()),
                    observed: format!(
                        "{count} gratuitous ARPs for {sender_ip} in {} s; score = 1 − ½·{}/{count} = {score:.2}",
                        window.as_secs(),
                        self.config.arp_storm
                    ),
                    flows: Vec::new(),
                    observation: Some(Observation::Rate {
                        measure: Measure::GratuitousArps,
                        observed: count as f64,
                        limit: self.config.arp_storm as f64,
                    }),
                });
            }
        }
        triggers
    }
}
