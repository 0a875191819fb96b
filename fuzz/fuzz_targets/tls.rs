//! TLS fingerprints: `fingerprint::tls::parse` over a sampled TCP payload that starts like a
//! handshake record (a device's ClientHello, untrusted, possibly truncated).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = iotgw::fingerprint::tls::parse(data);
});
