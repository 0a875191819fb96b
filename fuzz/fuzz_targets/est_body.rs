//! EST enrollment requests: the headers and body `simpleenroll` reads before any work
//! (`identity::est::csr_body`: content type and base64 body; `identity::est::credential`:
//! Basic or Bearer), then the request through `identity::check::csr`. Input: the
//! Content-Type line, the Authorization line, then the body, separated by newlines.
#![no_main]
use http::{HeaderMap, HeaderValue, header};
use iotgw::identity::{check, est};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let content_type = parts.next().unwrap_or_default();
    let authorization = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        headers.insert(header::AUTHORIZATION, value);
    }
    let _ = est::credential(&headers);
    if let Ok(der) = est::csr_body(&headers, body) {
        let _ = check::csr(&der);
    }
});
