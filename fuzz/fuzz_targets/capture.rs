//! Capture files: `datapath::replay::CaptureReplay` over arbitrary bytes, the libpcap and
//! pcapng readers (`pcap-file`) and `datapath::capture`'s pcapng handling (interfaces, time
//! units) behind `iotgw analyze`. A damaged file must end the replay, never panic.
#![no_main]
use std::{path::Path, time::Duration};

use iotgw::datapath::replay::CaptureReplay;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(replay) = CaptureReplay::new(data, Path::new("fuzz"), Duration::from_secs(1)) else { return };
    // Bounded: every item comes from bytes of the input.
    for _ in replay.take(100_000) {}
});
