//! Certificate requests: `identity::check::csr` (PKCS#10 DER from an enrolling device:
//! parse, signature, key strength, requested SANs). Invariant: an accepted request asks only
//! for our URNs and carries a public key.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(checked) = iotgw::identity::check::csr(data) {
        assert!(!checked.public_key.is_empty(), "an accepted CSR has a public key");
    }
});
