//! SOAR action requests: the HMAC signature check (`integrations::signature::verify`, its
//! timestamp and signature headers) and the body checks (`api::soar::check_request`:
//! JSON, idempotency key, reason escaping and bound, tag). Input: the Idempotency-Key line,
//! the timestamp line, the signature line, then the body, separated by newlines. Invariant: an
//! accepted reason holds no control or bidi character and fits the bound.
#![no_main]
use iotgw::{api::soar, integrations::signature};

const NOW: i64 = 1_796_083_200;

fn line(part: Option<&[u8]>) -> Option<&str> {
    part.and_then(|p| std::str::from_utf8(p).ok())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let key = line(parts.next());
    let timestamp = line(parts.next());
    let sig = line(parts.next());
    let body = parts.next().unwrap_or_default();
    let _ = signature::verify(b"fuzz-secret", timestamp, sig, body, NOW, 300);
    let key = key.filter(|k| !k.is_empty());
    if let Ok((key, request)) = soar::check_request(key, body) {
        assert!(!key.is_empty() && key.len() <= 200);
        if let Some(reason) = &request.reason {
            assert!(reason.len() <= soar::REASON_MAX);
            assert!(iotgw::untrusted::check("reason", reason).is_ok(), "escaped reason still unsafe: {reason:?}");
        }
    }
});
