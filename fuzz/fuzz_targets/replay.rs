//! Packets: `datapath::replay::Replayer::frame`, the userspace decoder of Ethernet frames
//! (VLAN, ARP, IPv4/IPv6, TCP/UDP) behind `iotgw analyze`, then every sample it emits through
//! `fingerprint::sample::parse`. The first input byte is how much longer the frame was on the
//! wire than captured.
#![no_main]
use std::time::{Duration, SystemTime};

use iotgw::{
    datapath::events::DatapathEvent,
    datapath::replay::{ReplayItem, Replayer},
    fingerprint::sample,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((cut, frame)) = data.split_first() else { return };
    let mut replayer = Replayer::new(Duration::from_secs(1));
    let wire_len = u32::try_from(frame.len()).unwrap_or(u32::MAX).saturating_add(u32::from(*cut));
    let mut samples = Vec::new();
    let mut out = |item: ReplayItem| {
        if let ReplayItem::Event(DatapathEvent::Sample(packet)) = item {
            samples.push(packet);
        }
    };
    replayer.frame(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000), frame, wire_len, &mut out);
    replayer.finish(&mut out);
    for packet in &samples {
        let _ = sample::parse(packet);
    }
    assert_eq!(replayer.stats().frames, 1);
});
