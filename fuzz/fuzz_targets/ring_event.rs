//! Ring-buffer records: `datapath::events::decode` (what the controller reads from the XDP
//! programs' ring buffer), then each decoded sample through `fingerprint::sample::parse` (its
//! DHCP, DNS, TLS or ARP content comes from devices) and both into the feature extractor the
//! classifier reads.
#![no_main]
use iotgw::{
    datapath::events::{Clock, DatapathEvent, decode},
    fingerprint::{DeviceFeatures, sample, syn},
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let clock = Clock::now();
    let Ok(event) = decode(data, &clock) else { return };
    let mut features = DeviceFeatures::new();
    match &event {
        DatapathEvent::Flow(flow) => {
            if let Some(fingerprint) = &flow.syn {
                let _ = syn::signature(fingerprint);
            }
            features.add_flow(flow);
        }
        DatapathEvent::Sample(packet) => {
            assert!(packet.payload_offset <= packet.data.len(), "payload offset within the sample");
            if let Ok(parsed) = sample::parse(packet) {
                features.add_sample(&parsed);
            }
        }
        // XDP's own counts against the controller's limits: nothing in it comes from a device.
        DatapathEvent::Budget(_) => {}
    }
    let _ = features.vector();
});
