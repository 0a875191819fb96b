//! TLS ClientHello fingerprint: reads the TLS record at the start of a TLS `PacketSample`
//! payload with `tls-parser` and computes the JA3 string and hash (Salesforce's JA3: version,
//! ciphers, extensions, curves, point formats, GREASE values left out).
//!
//! Samples are cut at `gateway_ebpf::SAMPLE_BYTES`, so a long ClientHello may be truncated:
//! the ciphers still parse, and the extensions that fit are kept (`truncated` says so).
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use tls_parser::{TlsExtension, parse_tls_extension, parse_tls_handshake_client_hello, parse_tls_record_header};

use super::FingerprintError;

/// TLS record content type "handshake".
const CONTENT_HANDSHAKE: u8 = 0x16;
/// Handshake message type "client_hello".
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
/// Record header (5) + handshake header (4).
const HELLO_BODY_OFFSET: usize = 9;

/// What a ClientHello says about the client's TLS stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub version: u16,
    pub ciphers: Vec<u16>,
    pub extensions: Vec<u16>,
    pub curves: Vec<u16>,
    pub point_formats: Vec<u8>,
    /// Server name indication, lower case.
    pub server_name: Option<String>,
    /// JA3 text: `version,ciphers,extensions,curves,point_formats`.
    pub ja3: String,
    /// MD5 of `ja3`, hex.
    pub ja3_hash: String,
    /// The sample ended inside the ClientHello: extensions after the cut are missing.
    pub truncated: bool,
}

/// GREASE values (RFC 8701) are random per connection; JA3 leaves them out.
fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

/// Parses the ClientHello starting `payload` (a TCP payload beginning with a TLS record).
pub fn parse(payload: &[u8]) -> Result<ClientHello, FingerprintError> {
    let error = |what: &str| FingerprintError::Tls(what.to_owned());
    let (_, header) = parse_tls_record_header(payload).map_err(|_| error("no TLS record header"))?;
    if u8::from(header.record_type) != CONTENT_HANDSHAKE {
        return Err(error("not a handshake record"));
    }
    if payload.get(5) != Some(&HANDSHAKE_CLIENT_HELLO) {
        return Err(error("not a ClientHello"));
    }
    let body = payload.get(HELLO_BODY_OFFSET..).ok_or_else(|| error("ClientHello header truncated"))?;
    let declared = payload.get(6..9).map(|l| usize::from(l[0]) << 16 | usize::from(l[1]) << 8 | usize::from(l[2]));
    let truncated = declared.is_none_or(|len| len > body.len());
    let (rest, hello) =
        parse_tls_handshake_client_hello(body).map_err(|_| error("ClientHello truncated before its extensions"))?;
    // Whole extension block when it fits; otherwise the extensions that fit in the sample.
    let extension_bytes = match hello.ext {
        Some(bytes) => bytes,
        None => rest.get(2..).unwrap_or_default(),
    };
    let mut extensions = Vec::new();
    let mut curves = Vec::new();
    let mut point_formats = Vec::new();
    let mut server_name = None;
    let mut input = extension_bytes;
    while !input.is_empty() {
        let Ok((next, extension)) = parse_tls_extension(input) else { break };
        // Raw type from the bytes: tls-parser maps unknown types to `Unknown`.
        let kind = u16::from_be_bytes([input[0], input[1]]);
        input = next;
        if is_grease(kind) {
            continue;
        }
        extensions.push(kind);
        match extension {
            TlsExtension::EllipticCurves(groups) => {
                curves = groups.iter().map(|g| g.0).filter(|g| !is_grease(*g)).collect();
            }
            TlsExtension::EcPointFormats(formats) => point_formats = formats.to_vec(),
            TlsExtension::SNI(names) => {
                server_name = names.first().map(|(_, name)| String::from_utf8_lossy(name).to_ascii_lowercase());
            }
            _ => {}
        }
    }
    let ciphers: Vec<u16> = hello.ciphers.iter().map(|c| c.0).filter(|c| !is_grease(*c)).collect();
    let version = u16::from(hello.version);
    let join = |values: Vec<String>| values.join("-");
    let ja3 = format!(
        "{version},{},{},{},{}",
        join(ciphers.iter().map(u16::to_string).collect()),
        join(extensions.iter().map(u16::to_string).collect()),
        join(curves.iter().map(u16::to_string).collect()),
        join(point_formats.iter().map(u8::to_string).collect()),
    );
    let ja3_hash = hex::encode(Md5::digest(ja3.as_bytes()));
    Ok(ClientHello { version, ciphers, extensions, curves, point_formats, server_name, ja3, ja3_hash, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal TLS 1.2 ClientHello: two ciphers (one GREASE), SNI, curves, point formats.
    fn client_hello() -> Vec<u8> {
        let sni_name = b"api.example.com";
        let mut sni = vec![];
        sni.extend_from_slice(&((sni_name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(sni_name.len() as u16).to_be_bytes());
        sni.extend_from_slice(sni_name);
        let mut ext = vec![];
        for (kind, data) in [
            (0x0a0a_u16, vec![]),
            (0x0000, sni),
            (0x000a, vec![0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]),
            (0x000b, vec![0x01, 0x00]),
        ] {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(&data);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x11; 32]);
        body.push(0);
        body.extend_from_slice(&[0x00, 0x04, 0x2a, 0x2a, 0xc0, 0x2f]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO, 0, 0, 0];
        handshake[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![CONTENT_HANDSHAKE, 0x03, 0x01];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[test]
    fn tls_client_hello_yields_ja3_without_grease() {
        let hello = parse(&client_hello()).unwrap();
        assert_eq!(hello.ja3, "771,49199,0-10-11,29-23,0");
        assert_eq!(hello.ja3_hash, hex::encode(Md5::digest(b"771,49199,0-10-11,29-23,0")));
        assert_eq!(hello.server_name.as_deref(), Some("api.example.com"));
        assert!(!hello.truncated);
    }

    #[test]
    fn tls_truncated_hello_keeps_the_extensions_that_fit() {
        let bytes = client_hello();
        // Cut inside the last extension (point formats).
        let hello = parse(&bytes[..bytes.len() - 1]).unwrap();
        assert!(hello.truncated);
        assert_eq!(hello.ciphers, vec![0xc02f]);
        assert_eq!(hello.extensions, vec![0x0000, 0x000a]);
    }

    #[test]
    fn tls_garbage_or_too_short_is_an_error() {
        let bytes = client_hello();
        for len in [0, 3, 5, 9, 40, 45] {
            assert!(parse(&bytes[..len]).is_err(), "len {len}");
        }
        assert!(parse(&[0x17, 0x03, 0x03, 0x00, 0x10, 0x01]).is_err());
        assert!(parse(&[0xff; 64]).is_err());
    }
}
