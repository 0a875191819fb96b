//! Certificates a device presents: `identity::check::device_cert` (ours: issuer, signature,
//! validity, usage, SAN binding) and `identity::check::factory_cert` (IDevIDs chained to a
//! manufacturer CA, with intermediates the device sent). The CA is the fixed
//! `fixtures/ca.der`, which signed the seeds. Input: a big-endian u16 leaf length, the leaf, then
//! one intermediate.
#![no_main]
use iotgw::identity::check::{device_cert, factory_cert, parse_cert};

const CA: &[u8] = include_bytes!("../fixtures/ca.der");
/// 2027-01-15, inside the seeds' validity (issued 2026-12-06 for 100 years).
const NOW: i64 = 1_800_000_000;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let ca = parse_cert(CA).expect("the fixture CA parses");
    let (leaf, intermediates): (&[u8], Vec<&[u8]>) = match data {
        [high, low, rest @ ..] => {
            let at = usize::from(u16::from_be_bytes([*high, *low])).min(rest.len());
            let (leaf, rest) = rest.split_at(at);
            (leaf, if rest.is_empty() { Vec::new() } else { vec![rest] })
        }
        _ => return,
    };
    if let Ok(checked) = device_cert(leaf, &ca, NOW) {
        assert!(!checked.device.as_str().is_empty());
    }
    let _ = factory_cert(leaf, &intermediates, std::slice::from_ref(&ca), NOW);
});
