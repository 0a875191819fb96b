//! Verifies a MUD file's detached signature (RFC 8520 §13.2): a DER CMS `SignedData`
//! (RFC 5652) over the file's bytes, by one signer whose certificate chains to a configured
//! trust anchor. Decoding is RustCrypto's `cms`; the chain (validity, CA constraints, name
//! constraints, path building through the certificates the signature carries) and the
//! signature itself are rustls-webpki over ring. Reads bytes only.
//!
//! Taken: one `SignerInfo`; content type id-data, content absent (detached); digest SHA-256,
//! SHA-384 or SHA-512; ECDSA (P-256, P-384), RSA PKCS #1 v1.5 (2048 bits or more) or
//! Ed25519; signed attributes, when present, with exactly one content-type (id-data) and one
//! message-digest equal to the file's digest. Everything else is refused.
use std::time::SystemTime;

use cms::{
    cert::{
        CertificateChoices,
        x509::{
            Certificate,
            der::{
                Decode as _, Encode as _,
                asn1::{ObjectIdentifier, OctetString},
            },
            ext::pkix::SubjectKeyIdentifier,
        },
    },
    content_info::ContentInfo,
    signed_data::{SignedData, SignerIdentifier, SignerInfo},
};
use ring::digest;
use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage, ring as algs};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Extended key usages a signer certificate may carry (when it carries any): code signing
/// (what signs a manufacturer's artefacts) and e-mail protection (what `openssl smime`/`cms`
/// signers usually hold). DER contents of 1.3.6.1.5.5.7.3.3 and 1.3.6.1.5.5.7.3.4.
const SIGNER_USAGES: [&[u8]; 2] =
    [&[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03], &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04]];

/// Why a signature was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("trust anchors: {0}")]
    Anchors(String),
    #[error("not a DER CMS SignedData: {0}")]
    Der(#[from] cms::cert::x509::der::Error),
    #[error("{0}")]
    Refused(&'static str),
    #[error("unsupported {what} {oid}")]
    Unsupported { what: &'static str, oid: ObjectIdentifier },
    #[error("the signer's certificate does not chain to a trust anchor: {0}")]
    Chain(webpki::Error),
    #[error("the signature does not verify with the signer's key")]
    BadSignature,
}

/// The CA certificates MUD signers must chain to.
#[derive(Clone, Debug)]
pub struct Anchors {
    certs: Vec<CertificateDer<'static>>,
}

impl Anchors {
    /// Every certificate of a PEM file; none is an error.
    pub fn from_pem(pem: &[u8]) -> Result<Self, SignatureError> {
        let certs = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| SignatureError::Anchors(error.to_string()))?;
        if certs.is_empty() {
            return Err(SignatureError::Anchors("no certificate in the file".into()));
        }
        let anchors = Self { certs };
        anchors.trust_anchors()?;
        Ok(anchors)
    }

    fn trust_anchors(&self) -> Result<Vec<TrustAnchor<'_>>, SignatureError> {
        self.certs
            .iter()
            .map(|cert| webpki::anchor_from_trusted_cert(cert).map_err(|e| SignatureError::Anchors(e.to_string())))
            .collect()
    }
}

/// Who signed a file that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// The signer certificate's subject, RFC 4514 (from the signature: untrusted text until
    /// escaped, though it chained to an anchor).
    pub subject: String,
}

/// Verifies `signature` (DER `ContentInfo` holding a `SignedData`) over `file` at `now`.
pub fn verify(file: &[u8], signature: &[u8], anchors: &Anchors, now: SystemTime) -> Result<Signer, SignatureError> {
    let info = ContentInfo::from_der(signature)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(SignatureError::Refused("the content is not SignedData"));
    }
    let signed: SignedData = info.content.decode_as()?;
    if signed.encap_content_info.econtent_type != ID_DATA {
        return Err(SignatureError::Refused("the signed content type is not id-data"));
    }
    if signed.encap_content_info.econtent.is_some() {
        return Err(SignatureError::Refused("the signature is not detached (it carries content)"));
    }
    let [signer_info] = signed.signer_infos.0.as_slice() else {
        return Err(SignatureError::Refused("not exactly one signer"));
    };
    let certs: Vec<&Certificate> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(cert) => Some(cert),
            CertificateChoices::Other(_) => None,
        })
        .collect();
    let signer_cert = certs
        .iter()
        .find(|cert| identifies(&signer_info.sid, cert))
        .ok_or(SignatureError::Refused("the signer's certificate is not in the signature"))?;
    let signer_der = CertificateDer::from(signer_cert.to_der()?);
    let intermediates = certs
        .iter()
        .filter(|cert| !std::ptr::eq(**cert, *signer_cert))
        .map(|cert| cert.to_der().map(CertificateDer::from))
        .collect::<Result<Vec<_>, _>>()?;

    let digest_algorithm = digest_algorithm(&signer_info.digest_alg.oid)?;
    let message = signed_message(signer_info, file, digest_algorithm)?;
    let candidates = signature_algorithms(&signer_info.signature_algorithm.oid, &signer_info.digest_alg.oid)?;

    let end_entity = EndEntityCert::try_from(&signer_der).map_err(SignatureError::Chain)?;
    let verified = candidates
        .iter()
        .any(|alg| end_entity.verify_signature(*alg, &message, signer_info.signature.as_bytes()).is_ok());
    if !verified {
        return Err(SignatureError::BadSignature);
    }
    let anchors = anchors.trust_anchors()?;
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let time = UnixTime::since_unix_epoch(since_epoch);
    let mut chained = Err(SignatureError::Refused("no signer usage tried"));
    for usage in SIGNER_USAGES {
        let usage = KeyUsage::required_if_present(usage);
        chained = end_entity
            .verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &intermediates, time, usage, None, None)
            .map(|_| ())
            .map_err(SignatureError::Chain);
        if chained.is_ok() {
            break;
        }
    }
    chained?;
    Ok(Signer { subject: signer_cert.tbs_certificate.subject.to_string() })
}

/// Whether `cert` is the one `sid` names.
fn identifies(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    let tbs = &cert.tbs_certificate;
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => id.issuer == tbs.issuer && id.serial_number == tbs.serial_number,
        SignerIdentifier::SubjectKeyIdentifier(id) => tbs
            .extensions
            .iter()
            .flatten()
            .filter(|ext| ext.extn_id == ID_SUBJECT_KEY_IDENTIFIER)
            .any(|ext| SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).is_ok_and(|ski| ski == *id)),
    }
}

fn digest_algorithm(oid: &ObjectIdentifier) -> Result<&'static digest::Algorithm, SignatureError> {
    match *oid {
        ID_SHA256 => Ok(&digest::SHA256),
        ID_SHA384 => Ok(&digest::SHA384),
        ID_SHA512 => Ok(&digest::SHA512),
        oid => Err(SignatureError::Unsupported { what: "digest algorithm", oid }),
    }
}

/// What the signature is over (RFC 5652 §5.4): the file itself, or, with signed attributes,
/// their DER as a SET OF, after their message digest is checked against the file's.
fn signed_message(
    signer: &SignerInfo,
    file: &[u8],
    algorithm: &'static digest::Algorithm,
) -> Result<Vec<u8>, SignatureError> {
    let Some(attributes) = &signer.signed_attrs else { return Ok(file.to_vec()) };
    let single = |oid: ObjectIdentifier, missing: &'static str| {
        let mut matching = attributes.iter().filter(|attr| attr.oid == oid);
        match (matching.next(), matching.next()) {
            (Some(attr), None) if attr.values.len() == 1 => Ok(&attr.values.as_slice()[0]),
            _ => Err(SignatureError::Refused(missing)),
        }
    };
    let content_type: ObjectIdentifier =
        single(ID_CONTENT_TYPE, "the signed attributes lack one content-type")?.decode_as()?;
    if content_type != ID_DATA {
        return Err(SignatureError::Refused("the content-type attribute is not id-data"));
    }
    let claimed: OctetString =
        single(ID_MESSAGE_DIGEST, "the signed attributes lack one message-digest")?.decode_as()?;
    if claimed.as_bytes() != digest::digest(algorithm, file).as_ref() {
        return Err(SignatureError::Refused("the message-digest attribute is not the file's digest"));
    }
    Ok(attributes.to_der()?)
}

/// The webpki algorithms a `SignerInfo`'s signature algorithm may be, given its digest: one
/// per key type it may have been made with (webpki refuses a key of another type).
fn signature_algorithms(
    signature: &ObjectIdentifier,
    digest: &ObjectIdentifier,
) -> Result<Vec<&'static dyn SignatureVerificationAlgorithm>, SignatureError> {
    let mismatch = SignatureError::Refused("the signature algorithm's hash is not the digest algorithm");
    Ok(match (*signature, *digest) {
        (ECDSA_WITH_SHA256, ID_SHA256) => vec![algs::ECDSA_P256_SHA256, algs::ECDSA_P384_SHA256],
        (ECDSA_WITH_SHA384, ID_SHA384) => vec![algs::ECDSA_P384_SHA384, algs::ECDSA_P256_SHA384],
        (RSA_ENCRYPTION | SHA256_WITH_RSA, ID_SHA256) => vec![algs::RSA_PKCS1_2048_8192_SHA256],
        (RSA_ENCRYPTION | SHA384_WITH_RSA, ID_SHA384) => vec![algs::RSA_PKCS1_2048_8192_SHA384],
        (RSA_ENCRYPTION | SHA512_WITH_RSA, ID_SHA512) => vec![algs::RSA_PKCS1_2048_8192_SHA512],
        (ED25519, _) => vec![algs::ED25519],
        (ECDSA_WITH_SHA256 | ECDSA_WITH_SHA384 | SHA256_WITH_RSA | SHA384_WITH_RSA | SHA512_WITH_RSA, _) => {
            return Err(mismatch);
        }
        (oid, _) => return Err(SignatureError::Unsupported { what: "signature algorithm", oid }),
    })
}

#[cfg(test)]
mod tests {
    use cms::cert::x509::{attr::Attribute, der::Any, spki::AlgorithmIdentifierOwned};
    use cms::{
        cert::{CertificateChoices, IssuerAndSerialNumber, x509::der::asn1::SetOfVec},
        content_info::CmsVersion,
        signed_data::{CertificateSet, EncapsulatedContentInfo, SignerInfos},
    };

    use super::*;

    /// A CA and a signer it issued, with their keys.
    struct Pki {
        ca: rcgen::Certificate,
        signer: rcgen::Certificate,
        signer_key: rcgen::KeyPair,
    }

    fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "MUD test anchor");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        (params.self_signed(&key).unwrap(), key)
    }

    fn pki(usages: Vec<rcgen::ExtendedKeyUsagePurpose>) -> Pki {
        let (ca, ca_key) = ca();
        let signer_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "MUD signer");
        params.extended_key_usages = usages;
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(1);
        let signer = params.signed_by(&signer_key, &ca, &ca_key).unwrap();
        Pki { ca, signer, signer_key }
    }

    fn anchors(ca: &rcgen::Certificate) -> Anchors {
        Anchors::from_pem(ca.pem().as_bytes()).unwrap()
    }

    fn oid_attribute(oid: ObjectIdentifier, value: Any) -> Attribute {
        Attribute { oid, values: SetOfVec::try_from(vec![value]).unwrap() }
    }

    /// How the test signature is built.
    struct Build {
        signed_attributes: bool,
        /// The message digest the attributes claim (default: the file's).
        claimed_digest: Option<Vec<u8>>,
        signers: usize,
        content: Option<Any>,
    }

    const PLAIN: Build = Build { signed_attributes: true, claimed_digest: None, signers: 1, content: None };

    fn sign(file: &[u8], pki: &Pki, build: Build) -> Vec<u8> {
        let cert = Certificate::from_der(pki.signer.der()).unwrap();
        let sha256 = AlgorithmIdentifierOwned { oid: ID_SHA256, parameters: None };
        let signed_attrs = build.signed_attributes.then(|| {
            let digest =
                build.claimed_digest.clone().unwrap_or_else(|| digest::digest(&digest::SHA256, file).as_ref().to_vec());
            SetOfVec::try_from(vec![
                oid_attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA).unwrap()),
                oid_attribute(ID_MESSAGE_DIGEST, Any::encode_from(&OctetString::new(digest).unwrap()).unwrap()),
            ])
            .unwrap()
        });
        let message = match &signed_attrs {
            Some(attrs) => attrs.to_der().unwrap(),
            None => file.to_vec(),
        };
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pki.signer_key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let signature = key.sign(&ring::rand::SystemRandom::new(), &message).unwrap();
        let info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: cert.tbs_certificate.issuer.clone(),
                serial_number: cert.tbs_certificate.serial_number.clone(),
            }),
            digest_alg: sha256.clone(),
            signed_attrs,
            signature_algorithm: AlgorithmIdentifierOwned { oid: ECDSA_WITH_SHA256, parameters: None },
            signature: OctetString::new(signature.as_ref()).unwrap(),
            unsigned_attrs: None,
        };
        let mut infos = vec![info.clone()];
        if build.signers == 2 {
            let mut other = info;
            other.signature = OctetString::new(vec![1, 2, 3]).unwrap();
            infos.push(other);
        }
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![sha256]).unwrap(),
            encap_content_info: EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: build.content },
            certificates: Some(CertificateSet(
                SetOfVec::try_from(vec![CertificateChoices::Certificate(cert)]).unwrap(),
            )),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(infos).unwrap()),
        };
        ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&signed).unwrap() }.to_der().unwrap()
    }

    const FILE: &[u8] = br#"{"ietf-mud:mud":{"mud-version":1}}"#;

    #[test]
    fn a_detached_signature_by_an_anchored_signer_verifies() {
        let plain = pki(Vec::new());
        let signer = verify(FILE, &sign(FILE, &plain, PLAIN), &anchors(&plain.ca), SystemTime::now()).unwrap();
        assert_eq!(signer.subject, "CN=MUD signer");
        let bare = Build { signed_attributes: false, ..PLAIN };
        verify(FILE, &sign(FILE, &plain, bare), &anchors(&plain.ca), SystemTime::now()).unwrap();
        let code_signing = pki(vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning]);
        verify(FILE, &sign(FILE, &code_signing, PLAIN), &anchors(&code_signing.ca), SystemTime::now()).unwrap();
    }

    #[test]
    fn a_changed_file_is_refused() {
        let pki = pki(Vec::new());
        let changed = br#"{"ietf-mud:mud":{"mud-version":2}}"#;
        let error = verify(changed, &sign(FILE, &pki, PLAIN), &anchors(&pki.ca), SystemTime::now()).unwrap_err();
        assert!(error.to_string().contains("message-digest"), "{error}");
        let bare = Build { signed_attributes: false, ..PLAIN };
        let error = verify(changed, &sign(FILE, &pki, bare), &anchors(&pki.ca), SystemTime::now()).unwrap_err();
        assert!(matches!(error, SignatureError::BadSignature), "{error}");
    }

    #[test]
    fn a_digest_attribute_that_lies_does_not_verify() {
        // The attributes claim the changed file's digest: the signature over them is still
        // the signer's, so only the digest check stands between the lie and acceptance.
        let pki = pki(Vec::new());
        let changed = br#"{"ietf-mud:mud":{"mud-version":2}}"#;
        let claimed = Some(digest::digest(&digest::SHA256, changed).as_ref().to_vec());
        let signature = sign(FILE, &pki, Build { claimed_digest: claimed, ..PLAIN });
        assert!(verify(FILE, &signature, &anchors(&pki.ca), SystemTime::now()).is_err());
    }

    #[test]
    fn another_anchor_is_refused() {
        let pki = pki(Vec::new());
        let (other, _) = ca();
        let error = verify(FILE, &sign(FILE, &pki, PLAIN), &anchors(&other), SystemTime::now()).unwrap_err();
        assert!(matches!(error, SignatureError::Chain(_)), "{error}");
    }

    #[test]
    fn a_signer_for_other_purposes_is_refused() {
        let pki = pki(vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]);
        let error = verify(FILE, &sign(FILE, &pki, PLAIN), &anchors(&pki.ca), SystemTime::now()).unwrap_err();
        assert!(matches!(error, SignatureError::Chain(_)), "{error}");
    }

    #[test]
    fn an_expired_signer_is_refused() {
        let pki = pki(Vec::new());
        let later = SystemTime::now() + std::time::Duration::from_secs(2 * 86_400);
        let error = verify(FILE, &sign(FILE, &pki, PLAIN), &anchors(&pki.ca), later).unwrap_err();
        assert!(matches!(error, SignatureError::Chain(_)), "{error}");
    }

    #[test]
    fn other_shapes_are_refused() {
        let pki = pki(Vec::new());
        let anchors = anchors(&pki.ca);
        let two = sign(FILE, &pki, Build { signers: 2, ..PLAIN });
        assert!(verify(FILE, &two, &anchors, SystemTime::now()).unwrap_err().to_string().contains("one signer"));
        let attached = sign(
            FILE,
            &pki,
            Build { content: Some(Any::encode_from(&OctetString::new(FILE).unwrap()).unwrap()), ..PLAIN },
        );
        assert!(verify(FILE, &attached, &anchors, SystemTime::now()).unwrap_err().to_string().contains("detached"));
        assert!(matches!(verify(FILE, b"not DER", &anchors, SystemTime::now()), Err(SignatureError::Der(_))));
        let good = sign(FILE, &pki, PLAIN);
        for cut in [1, 10, good.len() / 2] {
            assert!(verify(FILE, &good[..good.len() - cut], &anchors, SystemTime::now()).is_err());
        }
    }

    #[test]
    fn anchors_must_hold_a_certificate() {
        assert!(Anchors::from_pem(b"").is_err());
        assert!(Anchors::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
