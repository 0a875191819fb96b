//! DNS: the fingerprint parser (`fingerprint::dns::parse`, also after stripping a TCP length
//! prefix) and the policy's DNS tracker (`policy::DnsTracker::observe`), which opens addresses
//! for DNS-name rules from answers seen on the wire, with the shipped policies loaded.
#![no_main]
use std::{path::PathBuf, sync::OnceLock, time::Instant};

use iotgw::{
    fingerprint::dns,
    policy::{CompiledPolicy, DnsTracker, PolicyId},
};

fn shipped() -> &'static CompiledPolicy {
    static POLICY: OnceLock<CompiledPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
        let policy = iotgw::policy::load_paths(&[dir]).expect("the shipped policies load");
        iotgw::policy::compile(&policy).expect("the shipped policies compile")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(observation) = dns::parse(data) {
        for name in &observation.queries {
            let _ = dns::normalize_name(name);
        }
    }
    if let Ok(inner) = dns::strip_tcp_length(data) {
        let _ = dns::parse(inner);
    }
    let policy = shipped();
    let mut tracker = DnsTracker::new(policy);
    let ids: Vec<PolicyId> = policy.classes.iter().map(|c| c.policy_id).collect();
    let now = Instant::now();
    if let Ok(update) = tracker.observe(&ids, data, now) {
        assert_eq!(tracker.len(), update.added.len(), "a fresh tracker holds exactly what one answer added");
        let _ = tracker.tick(now);
    }
});
