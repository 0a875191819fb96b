//! DHCP fingerprints: `fingerprint::dhcp::parse` over a sampled UDP payload (a device's DHCP
//! message, untrusted), then what the inventory renders from it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(fingerprint) = iotgw::fingerprint::dhcp::parse(data) {
        let _ = fingerprint.parameter_list_text();
    }
});
