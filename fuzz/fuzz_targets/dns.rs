//! DNS: the fingerprint parser (`fingerprint::dns::parse`, also after stripping a TCP length
//! prefix) and the policy's DNS tracker (`policy::DnsTracker::sample`), which opens addresses
//! for DNS-name rules from the answers to devices' queries, with the shipped policies loaded.
//! The input is sent as a device's query (the same bytes with the QR bit clear) and as the
//! resolver's answer, so whatever parses as a response reaches the answer's records.
#![no_main]
use std::{
    path::PathBuf,
    sync::OnceLock,
    time::{Instant, SystemTime},
};

use iotgw::{
    datapath::events::{PacketSample, SampleKind},
    device::Mac,
    fingerprint::dns,
    policy::{CompiledPolicy, DnsTracker, PolicyId, dns::Outcome},
};

const DEVICE: ([u8; 4], u16) = ([10, 77, 0, 10], 40_000);
const RESOLVER: ([u8; 4], u16) = ([10, 78, 0, 53], 53);

/// `payload` in an IPv4/UDP datagram from `src` to `dst`, as the datapath samples it.
fn sample(kind: SampleKind, src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> PacketSample {
    let builder = etherparse::PacketBuilder::ipv4(src.0, dst.0, 64).udp(src.1, dst.1);
    let mut data = Vec::with_capacity(builder.size(payload.len()));
    if builder.write(&mut data, payload).is_err() {
        data.clear();
    }
    PacketSample {
        time: SystemTime::UNIX_EPOCH,
        mac: Mac([2, 0, 0, 0, 0, 1]),
        kind,
        payload_offset: data.len().saturating_sub(payload.len()),
        frame_bytes: data.len() as u32,
        data,
        verdict: gateway_ebpf::verdict::PASS,
    }
}

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
    let mut tracker = DnsTracker::new(policy, &Default::default());
    let ids: Vec<PolicyId> = policy.classes.iter().map(|c| c.policy_id).collect();
    let now = Instant::now();
    let mut query = data.to_vec();
    if let Some(flags) = query.get_mut(2) {
        *flags &= 0x7f;
    }
    let _ = tracker.sample(&sample(SampleKind::Dns, DEVICE, RESOLVER, &query), |_| Vec::new(), now);
    let answer = sample(SampleKind::DnsAnswer, RESOLVER, DEVICE, data);
    if let Outcome::Answer(update) = tracker.sample(&answer, |_| ids, now) {
        assert_eq!(tracker.len(), update.added.len(), "a fresh tracker holds exactly what one answer added");
        let _ = tracker.tick(now);
    }
});
