//! The EST wire forms (RFC 7030): certs-only CMS SignedData (`application/pkcs7-mime`),
//! the CSR attributes list (`application/csrattrs`), and the base64 transfer encoding.
//!
//! Reads and writes bytes only; the DER is built by RustCrypto's `cms`/`der`, not by hand.
use base64::Engine as _;
use cms::{
    cert::x509::{
        Certificate, PkiPath,
        der::{Decode as _, Encode as _, asn1::ObjectIdentifier},
    },
    content_info::ContentInfo,
};

/// Length of the lines of base64 bodies (RFC 2045 allows up to 76).
pub const BASE64_LINE: usize = 64;

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("body is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("DER: {0}")]
    Der(#[from] cms::cert::x509::der::Error),
}

/// A certs-only SignedData holding `certs` in order, as DER.
pub fn certs_only<C: AsRef<[u8]>>(certs: &[C]) -> Result<Vec<u8>, WireError> {
    let path: PkiPath = certs.iter().map(|der| Certificate::from_der(der.as_ref())).collect::<Result<_, _>>()?;
    Ok(ContentInfo::try_from(path)?.to_der()?)
}

/// OIDs of the CSR attributes list: the gateway wants an EC P-256 key signed with
/// ECDSA-SHA256 (any key `check::key_kind` accepts is still taken) and honours the
/// extensionRequest attribute (for the SAN URIs of `names`).
const CSR_ATTRS: [&str; 3] = [
    "1.2.840.10045.2.1",     // id-ecPublicKey
    "1.2.840.10045.4.3.2",   // ecdsa-with-SHA256
    "1.2.840.113549.1.9.14", // extensionRequest
];

/// The `CsrAttrs` SEQUENCE OF AttrOrOID, as DER.
pub fn csr_attrs() -> Result<Vec<u8>, WireError> {
    let oids: Vec<ObjectIdentifier> = CSR_ATTRS
        .iter()
        // Invariant: the constants above are valid dotted OIDs (checked by a test).
        .map(|oid| ObjectIdentifier::new(oid).expect("constant OID is valid"))
        .collect();
    Ok(oids.to_der()?)
}

/// Base64 with line breaks, as EST bodies are sent.
pub fn encode_base64(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(text.len() + text.len() / BASE64_LINE + 1);
    for chunk in text.as_bytes().chunks(BASE64_LINE) {
        // Invariant: base64 output is ASCII, so any chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

/// Decodes a base64 body, ignoring whitespace and line breaks.
pub fn decode_base64(body: &[u8]) -> Result<Vec<u8>, WireError> {
    let compact: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(compact)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_only_holds_the_certificates_in_order() {
        let key = rcgen::KeyPair::generate().unwrap();
        let a = rcgen::CertificateParams::new(vec!["a".into()]).unwrap().self_signed(&key).unwrap();
        let b = rcgen::CertificateParams::new(vec!["b".into()]).unwrap().self_signed(&key).unwrap();
        let der = certs_only(&[a.der(), b.der()]).unwrap();
        let info = ContentInfo::from_der(&der).unwrap();
        assert_eq!(info.content_type.to_string(), "1.2.840.113549.1.7.2");
        let signed: cms::signed_data::SignedData = info.content.decode_as().unwrap();
        let certs = signed.certificates.unwrap().0;
        assert_eq!(certs.len(), 2);
        assert!(signed.signer_infos.0.is_empty());
    }

    #[test]
    fn garbage_certificate_is_an_error() {
        assert!(certs_only(&[b"nope".as_slice()]).is_err());
    }

    #[test]
    fn csr_attrs_encode() {
        let der = csr_attrs().unwrap();
        assert_eq!(der[0], 0x30, "a SEQUENCE");
    }

    #[test]
    fn base64_round_trips_with_line_breaks() {
        let data: Vec<u8> = (0..=255).collect();
        let text = encode_base64(&data);
        assert!(text.lines().all(|l| l.len() <= BASE64_LINE));
        assert_eq!(decode_base64(text.as_bytes()).unwrap(), data);
        assert!(decode_base64(b"!!!").is_err());
    }
}
