//! What rustls does not check, checked with `x509-parser`: CSR structure and signature, key
//! strength, the SAN form of `names`, validity, key usage and extended key usage, and which
//! CA signed a certificate.
//!
//! Reads DER bytes, writes nothing. Every refusal is a `CheckError` naming what was wrong.
use x509_parser::{
    certificate::X509Certificate,
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_SHA1WITHRSA,
        OID_SHA1_WITH_RSA, OID_SIG_ED25519, OID_X509_SERIALNUMBER,
    },
    prelude::FromDer as _,
    x509::SubjectPublicKeyInfo,
};

use super::names::{DeviceId, Serial, Urn, UrnError, parse_urn};
use crate::device::Mac;

/// Smallest RSA modulus accepted, in bits (NIST SP 800-57: 112-bit security).
pub const MIN_RSA_BITS: usize = 2_048;

/// Why a CSR or a certificate was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckError {
    /// Not DER, not a PKCS#10 request, or bytes after it.
    #[error("malformed certificate request: {0}")]
    MalformedCsr(String),
    /// The CSR is not signed by the key it carries (proof of possession failed).
    #[error("certificate request signature does not verify: {0}")]
    CsrSignature(String),
    /// Signed with SHA-1.
    #[error("certificate request signed with a weak algorithm (SHA-1); use SHA-256 or better")]
    WeakSignature,
    /// RSA below `MIN_RSA_BITS`.
    #[error("weak key: RSA {bits} bits (at least {MIN_RSA_BITS} required)")]
    WeakKey { bits: usize },
    /// Not RSA, EC P-256/P-384 or Ed25519.
    #[error("unsupported key: {0} (use RSA >= 2048, EC P-256, EC P-384 or Ed25519)")]
    UnsupportedKey(String),
    /// A SAN entry that is not one of our URNs, or a malformed one.
    #[error("unsupported subject alternative name: {0}")]
    UnsupportedSan(String),
    /// Not DER, or not an X.509 certificate.
    #[error("malformed certificate: {0}")]
    MalformedCert(String),
    /// Not signed by the expected CA.
    #[error("certificate {serial} was not issued by {expected}")]
    WrongIssuer { serial: String, expected: &'static str },
    #[error("certificate {serial} expired at {not_after}")]
    Expired { serial: String, not_after: String },
    #[error("certificate {serial} is not valid before {not_before}")]
    NotYetValid { serial: String, not_before: String },
    /// Key usage lacks digitalSignature, or the certificate is a CA.
    #[error("certificate {serial}: {reason}")]
    BadUsage { serial: String, reason: String },
    /// Missing or duplicated `urn:iotgw:device:` / `urn:iotgw:mac:` SAN entries.
    #[error("certificate {serial}: SAN must hold exactly one urn:iotgw:device: and one urn:iotgw:mac: URI ({reason})")]
    BadSanForm { serial: String, reason: String },
    /// A factory certificate from which no MAC can be read.
    #[error(
        "factory certificate {serial} names no MAC (neither a urn:iotgw:mac: SAN nor a MAC as subject serialNumber)"
    )]
    FactoryCertWithoutMac { serial: String },
}

/// The key algorithms issued for, with what the SPKI says about them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcP256,
    EcP384,
    Ed25519,
}

/// A CSR that passed every check.
#[derive(Clone, Debug)]
pub struct CheckedCsr {
    pub key: KeyKind,
    /// The `subjectPublicKey` BIT STRING content (what rcgen re-wraps into the certificate).
    pub public_key: Vec<u8>,
    /// Our URNs the CSR asked for (checked against the binding by the caller).
    pub requested: Vec<Urn>,
}

/// Parses a PKCS#10 request and checks signature, key strength and requested SANs.
pub fn csr(der: &[u8]) -> Result<CheckedCsr, CheckError> {
    let (rest, request) =
        X509CertificationRequest::from_der(der).map_err(|e| CheckError::MalformedCsr(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CheckError::MalformedCsr(format!("{} bytes after the request", rest.len())));
    }
    let sig_alg = &request.signature_algorithm.algorithm;
    if *sig_alg == OID_PKCS1_SHA1WITHRSA || *sig_alg == OID_SHA1_WITH_RSA {
        return Err(CheckError::WeakSignature);
    }
    let info = &request.certification_request_info;
    let key = key_kind(&info.subject_pki)?;
    request.verify_signature().map_err(|e| CheckError::CsrSignature(e.to_string()))?;
    let mut requested = Vec::new();
    for extension in request.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            for name in &san.general_names {
                requested.push(our_urn(name).map_err(CheckError::UnsupportedSan)?);
            }
        }
        // Other requested extensions are ignored: the gateway decides usages and validity.
    }
    Ok(CheckedCsr { key, public_key: info.subject_pki.subject_public_key.data.to_vec(), requested })
}

/// Key algorithm and strength of a public key.
pub fn key_kind(spki: &SubjectPublicKeyInfo) -> Result<KeyKind, CheckError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let parsed = spki.parsed().map_err(|e| CheckError::UnsupportedKey(format!("RSA key: {e}")))?;
        let bits = parsed.key_size();
        return if bits >= MIN_RSA_BITS { Ok(KeyKind::Rsa { bits }) } else { Err(CheckError::WeakKey { bits }) };
    }
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyKind::EcP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyKind::EcP384),
            Some(c) => Err(CheckError::UnsupportedKey(format!("EC curve {c}"))),
            None => Err(CheckError::UnsupportedKey("EC key without a named curve".into())),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return Ok(KeyKind::Ed25519);
    }
    Err(CheckError::UnsupportedKey(format!("algorithm {alg}")))
}

fn our_urn(name: &GeneralName) -> Result<Urn, String> {
    match name {
        GeneralName::URI(uri) => parse_urn(uri).map_err(|e: UrnError| e.to_string()),
        // The name is the requester's text: written out escaped, so the refusal (answer, audit
        // row, event) cannot carry its line breaks or bidi characters (`untrusted`).
        other => Err(format!(
            "{} (only urn:iotgw:device: and urn:iotgw:mac: URIs are issued)",
            crate::untrusted::escape(&other.to_string())
        )),
    }
}

/// A device certificate of ours that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedCert {
    pub serial: Serial,
    pub device: DeviceId,
    pub mac: Mac,
}

/// Parses a certificate, refusing trailing bytes.
pub fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CheckError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CheckError::MalformedCert(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CheckError::MalformedCert(format!("{} bytes after the certificate", rest.len())));
    }
    Ok(cert)
}

/// Checks a client certificate that claims to be one of ours: signed by `ca`, valid at `now`
/// (unix seconds), usable for TLS client authentication, with our SAN form.
pub fn device_cert(der: &[u8], ca: &X509Certificate, now: i64) -> Result<CheckedCert, CheckError> {
    let cert = parse_cert(der)?;
    let serial = Serial::from_bytes(cert.raw_serial());
    signed_by(&cert, ca, "this gateway's CA")?;
    within_validity(&cert, now)?;
    client_usage(&cert, true)?;
    let (device, mac) =
        san_binding(&cert).map_err(|reason| CheckError::BadSanForm { serial: serial.to_string(), reason })?;
    Ok(CheckedCert { serial, device, mac })
}

/// Checks a factory certificate (IDevID, X.509 v3 as IEEE 802.1AR requires: rustls refuses
/// v1 client certificates): valid at `now`, fit for client authentication, and
/// chained to one of `manufacturers`, directly or through the `intermediates` the device sent.
/// Returns the MAC it names.
pub fn factory_cert(
    leaf: &[u8],
    intermediates: &[&[u8]],
    manufacturers: &[X509Certificate],
    now: i64,
) -> Result<Mac, CheckError> {
    let cert = parse_cert(leaf)?;
    let serial = Serial::from_bytes(cert.raw_serial()).to_string();
    within_validity(&cert, now)?;
    client_usage(&cert, false)?;
    let parsed: Vec<X509Certificate> = intermediates.iter().map(|d| parse_cert(d)).collect::<Result<_, _>>()?;
    if !chains_to(&cert, &parsed, manufacturers, now, 0) {
        return Err(CheckError::WrongIssuer { serial, expected: "a manufacturer CA listed in the configuration" });
    }
    factory_mac(&cert).ok_or(CheckError::FactoryCertWithoutMac { serial })
}

/// Longest chain of intermediates followed between a factory certificate and its root.
const MAX_CHAIN_DEPTH: usize = 4;

fn chains_to(
    cert: &X509Certificate,
    intermediates: &[X509Certificate],
    roots: &[X509Certificate],
    now: i64,
    depth: usize,
) -> bool {
    if roots
        .iter()
        .any(|root| root.subject() == cert.issuer() && cert.verify_signature(Some(root.public_key())).is_ok())
    {
        return true;
    }
    if depth >= MAX_CHAIN_DEPTH {
        return false;
    }
    intermediates.iter().any(|next| {
        next.subject() == cert.issuer()
            && next.is_ca()
            && within_validity(next, now).is_ok()
            && cert.verify_signature(Some(next.public_key())).is_ok()
            && chains_to(next, intermediates, roots, now, depth + 1)
    })
}

fn signed_by(cert: &X509Certificate, ca: &X509Certificate, expected: &'static str) -> Result<(), CheckError> {
    if cert.issuer() != ca.subject() || cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(CheckError::WrongIssuer { serial: Serial::from_bytes(cert.raw_serial()).to_string(), expected });
    }
    Ok(())
}

/// Checks `now` (unix seconds) against the validity period; `notAfter` is treated as the
/// first invalid second so that expiry is enforced within a second, never late.
pub fn within_validity(cert: &X509Certificate, now: i64) -> Result<(), CheckError> {
    let serial = Serial::from_bytes(cert.raw_serial()).to_string();
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(CheckError::NotYetValid { serial, not_before: validity.not_before.to_string() });
    }
    if now >= validity.not_after.timestamp() {
        return Err(CheckError::Expired { serial, not_after: validity.not_after.to_string() });
    }
    Ok(())
}

/// Key usage must allow digitalSignature (TLS client auth signs the handshake), extended key
/// usage must allow clientAuth, and the certificate must not be a CA. `require_eku` demands
/// the extensions be present (ours always carry them; factory certificates may omit them).
fn client_usage(cert: &X509Certificate, require_eku: bool) -> Result<(), CheckError> {
    let serial = Serial::from_bytes(cert.raw_serial()).to_string();
    let bad = |reason: &str| CheckError::BadUsage { serial: serial.clone(), reason: reason.to_owned() };
    if cert.is_ca() {
        return Err(bad("is a CA certificate, not a device certificate"));
    }
    match cert.key_usage().map_err(|e| bad(&format!("key usage unreadable: {e}")))? {
        Some(ku) if !ku.value.digital_signature() => return Err(bad("key usage lacks digitalSignature")),
        None if require_eku => return Err(bad("key usage extension missing")),
        _ => {}
    }
    match cert.extended_key_usage().map_err(|e| bad(&format!("extended key usage unreadable: {e}")))? {
        Some(eku) if !eku.value.client_auth && !eku.value.any => {
            return Err(bad("extended key usage lacks clientAuth"));
        }
        None if require_eku => return Err(bad("extended key usage extension missing")),
        _ => {}
    }
    Ok(())
}

/// The device id and MAC our SAN form binds into a certificate.
fn san_binding(cert: &X509Certificate) -> Result<(DeviceId, Mac), String> {
    let san = cert.subject_alternative_name().map_err(|e| e.to_string())?.ok_or("no SAN extension")?;
    let (mut device, mut mac) = (None, None);
    for name in &san.value.general_names {
        match our_urn(name)? {
            Urn::Device(id) if device.is_none() => device = Some(id),
            Urn::Mac(m) if mac.is_none() => mac = Some(m),
            _ => return Err("duplicated entry".into()),
        }
    }
    match (device, mac) {
        (Some(device), Some(mac)) => Ok((device, mac)),
        _ => Err("entry missing".into()),
    }
}

/// A factory certificate names its MAC as a `urn:iotgw:mac:` SAN or, as IEEE 802.1AR
/// IDevIDs often do, as the subject's serialNumber.
fn factory_mac(cert: &X509Certificate) -> Option<Mac> {
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && let Ok(Urn::Mac(mac)) = parse_urn(uri)
            {
                return Some(mac);
            }
        }
    }
    cert.subject().iter_by_oid(&OID_X509_SERIALNUMBER).find_map(|attr| attr.as_str().ok().and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};

    use super::*;

    fn csr_der(key: &KeyPair, sans: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "device");
        params.subject_alt_names = sans.iter().map(|s| SanType::URI((*s).try_into().unwrap())).collect();
        params.serialize_request(key).unwrap().der().to_vec()
    }

    fn ca() -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "test CA");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.self_signed(&key).unwrap(), key)
    }

    fn device_params(sans: &[&str]) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.subject_alt_names = sans.iter().map(|s| SanType::URI((*s).try_into().unwrap())).collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
    }

    const SANS: [&str; 2] = ["urn:iotgw:device:d-1", "urn:iotgw:mac:02:00:00:00:00:01"];

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn p256_csr_with_our_sans_passes() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let checked = csr(&csr_der(&key, &SANS)).unwrap();
        assert_eq!(checked.key, KeyKind::EcP256);
        assert_eq!(checked.requested.len(), 2);
    }

    #[test]
    fn p384_and_ed25519_csrs_pass() {
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert_eq!(csr(&csr_der(&p384, &[])).unwrap().key, KeyKind::EcP384);
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(csr(&csr_der(&ed, &[])).unwrap().key, KeyKind::Ed25519);
    }

    #[test]
    fn garbage_csr_is_malformed() {
        assert!(matches!(csr(b"not der at all"), Err(CheckError::MalformedCsr(_))));
        assert!(matches!(csr(&[]), Err(CheckError::MalformedCsr(_))));
    }

    #[test]
    fn csr_with_trailing_bytes_is_malformed() {
        let key = KeyPair::generate().unwrap();
        let mut der = csr_der(&key, &[]);
        der.push(0);
        assert!(matches!(csr(&der), Err(CheckError::MalformedCsr(_))));
    }

    #[test]
    fn tampered_csr_signature_fails() {
        let key = KeyPair::generate().unwrap();
        let mut der = csr_der(&key, &["urn:iotgw:device:aaaa"]);
        // Flip one byte inside the device id: the structure stays valid, the signature not.
        let pos = der.windows(4).position(|w| w == b"aaaa").unwrap();
        der[pos] = b'b';
        assert!(matches!(csr(&der), Err(CheckError::CsrSignature(_))));
    }

    #[test]
    fn every_single_byte_corruption_of_a_csr_is_refused_or_harmless() {
        // A cheap exhaustive fuzz: flip each byte of a valid CSR. No panic, and whatever
        // still parses must carry the same key and the same requested names (a change
        // there would have broken the proof-of-possession signature).
        let key = KeyPair::generate().unwrap();
        let der = csr_der(&key, &SANS);
        let original = csr(&der).unwrap();
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            if let Ok(accepted) = csr(&bad) {
                assert_eq!(accepted.public_key, original.public_key, "byte {i}");
                assert_eq!(accepted.requested, original.requested, "byte {i}");
            }
        }
    }

    #[test]
    fn every_single_byte_corruption_of_a_device_cert_is_refused_or_harmless() {
        let (ca_cert, ca_key) = ca();
        let ca_parsed = parse_cert(ca_cert.der()).unwrap();
        let key = KeyPair::generate().unwrap();
        let der = device_params(&SANS).signed_by(&key, &ca_cert, &ca_key).unwrap().der().to_vec();
        let original = device_cert(&der, &ca_parsed, now()).unwrap();
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            if let Ok(accepted) = device_cert(&bad, &ca_parsed, now()) {
                assert_eq!(accepted, original, "byte {i}");
            }
        }
    }

    #[test]
    fn foreign_san_in_csr_is_refused() {
        let key = KeyPair::generate().unwrap();
        let err = csr(&csr_der(&key, &["https://evil.example"])).unwrap_err();
        assert!(matches!(err, CheckError::UnsupportedSan(_)), "{err}");
    }

    #[test]
    fn device_cert_signed_by_our_ca_passes() {
        let (ca_cert, ca_key) = ca();
        let key = KeyPair::generate().unwrap();
        let cert = device_params(&SANS).signed_by(&key, &ca_cert, &ca_key).unwrap();
        let ca_parsed = parse_cert(ca_cert.der()).unwrap();
        let checked = device_cert(cert.der(), &ca_parsed, now()).unwrap();
        assert_eq!(checked.device.as_str(), "d-1");
        assert_eq!(checked.mac.to_string(), "02:00:00:00:00:01");
    }

    #[test]
    fn device_cert_from_another_ca_is_wrong_issuer() {
        let (ca_cert, _) = ca();
        let (other_cert, other_key) = ca();
        let key = KeyPair::generate().unwrap();
        let cert = device_params(&SANS).signed_by(&key, &other_cert, &other_key).unwrap();
        let ca_parsed = parse_cert(ca_cert.der()).unwrap();
        assert!(matches!(device_cert(cert.der(), &ca_parsed, now()), Err(CheckError::WrongIssuer { .. })));
    }

    #[test]
    fn expired_and_not_yet_valid_certs_are_refused() {
        let (ca_cert, ca_key) = ca();
        let ca_parsed = parse_cert(ca_cert.der()).unwrap();
        let key = KeyPair::generate().unwrap();
        let t = time::OffsetDateTime::now_utc();
        let mut old = device_params(&SANS);
        old.not_before = t - time::Duration::days(2);
        old.not_after = t - time::Duration::days(1);
        let old = old.signed_by(&key, &ca_cert, &ca_key).unwrap();
        assert!(matches!(device_cert(old.der(), &ca_parsed, now()), Err(CheckError::Expired { .. })));
        let mut future = device_params(&SANS);
        future.not_before = t + time::Duration::days(1);
        future.not_after = t + time::Duration::days(2);
        let future = future.signed_by(&key, &ca_cert, &ca_key).unwrap();
        assert!(matches!(device_cert(future.der(), &ca_parsed, now()), Err(CheckError::NotYetValid { .. })));
    }

    #[test]
    fn cert_without_client_auth_is_refused() {
        let (ca_cert, ca_key) = ca();
        let ca_parsed = parse_cert(ca_cert.der()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = device_params(&SANS);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        assert!(matches!(device_cert(cert.der(), &ca_parsed, now()), Err(CheckError::BadUsage { .. })));
        let mut params = device_params(&SANS);
        params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        assert!(matches!(device_cert(cert.der(), &ca_parsed, now()), Err(CheckError::BadUsage { .. })));
    }

    #[test]
    fn cert_with_wrong_san_form_is_refused() {
        let (ca_cert, ca_key) = ca();
        let ca_parsed = parse_cert(ca_cert.der()).unwrap();
        let key = KeyPair::generate().unwrap();
        for sans in [&SANS[..1], &["urn:iotgw:device:a", "urn:iotgw:device:b", "urn:iotgw:mac:02:00:00:00:00:01"][..]] {
            let cert = device_params(sans).signed_by(&key, &ca_cert, &ca_key).unwrap();
            assert!(
                matches!(device_cert(cert.der(), &ca_parsed, now()), Err(CheckError::BadSanForm { .. })),
                "{sans:?}"
            );
        }
    }

    #[test]
    fn factory_cert_chained_to_manufacturer_gives_its_mac() {
        let (maker_cert, maker_key) = ca();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CustomDnType(vec![2, 5, 4, 5]), "02:00:00:00:00:09");
        let idevid = params.signed_by(&key, &maker_cert, &maker_key).unwrap();
        let makers = [parse_cert(maker_cert.der()).unwrap()];
        let mac = factory_cert(idevid.der(), &[], &makers, now()).unwrap();
        assert_eq!(mac.to_string(), "02:00:00:00:00:09");
        let (stranger, _) = ca();
        let strangers = [parse_cert(stranger.der()).unwrap()];
        assert!(matches!(factory_cert(idevid.der(), &[], &strangers, now()), Err(CheckError::WrongIssuer { .. })));
    }

    #[test]
    fn factory_cert_through_intermediate_chains() {
        let (root_cert, root_key) = ca();
        let inter_key = KeyPair::generate().unwrap();
        let mut inter = CertificateParams::new(Vec::new()).unwrap();
        inter.distinguished_name.push(DnType::CommonName, "maker intermediate");
        inter.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let inter = inter.signed_by(&inter_key, &root_cert, &root_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["x".into()]).unwrap();
        let mut leaf = leaf;
        leaf.subject_alt_names = vec![SanType::URI("urn:iotgw:mac:02:00:00:00:00:0a".try_into().unwrap())];
        let leaf = leaf.signed_by(&key, &inter, &inter_key).unwrap();
        let roots = [parse_cert(root_cert.der()).unwrap()];
        let mac = factory_cert(leaf.der(), &[inter.der().as_ref()], &roots, now()).unwrap();
        assert_eq!(mac.to_string(), "02:00:00:00:00:0a");
        assert!(factory_cert(leaf.der(), &[], &roots, now()).is_err());
    }
}
