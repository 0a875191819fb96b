//! The issuing CA: either generated on first start and kept in the state folder, or an
//! external intermediate loaded from PEM files. Issues device and server certificates
//! (rcgen) and signs CRLs.
//!
//! Reads and writes `ca.cert.pem` and `ca.key.pem` (mode 0600) in the state folder, or reads
//! the configured external files. Holds the CA key in memory only.
use std::{
    io::Write as _,
    net::IpAddr,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, RevocationReason, RevokedCertParams, SanType, SerialNumber,
    SignatureAlgorithm,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::{
    check::{self, KeyKind},
    names::{DeviceId, Serial, mac_urn},
};
use crate::device::Mac;

/// File name of the generated CA certificate in the state folder.
pub const CA_CERT_FILE: &str = "ca.cert.pem";
/// File name of the generated CA key in the state folder (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key.pem";
/// Lifetime of a generated CA.
pub const GENERATED_CA_VALIDITY: Duration = Duration::days(3_650);
/// Common name of a generated CA.
pub const GENERATED_CA_NAME: &str = "iotgw issuing CA";
/// Issued certificates start this long before issuance, so a device whose clock is a little
/// behind does not see them as not yet valid.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::minutes(5);
/// Bytes of randomness in a serial number (RFC 5280 allows up to 20 octets).
const SERIAL_BYTES: usize = 16;

/// Where the CA comes from.
#[derive(Clone, Debug)]
pub enum CaSource {
    /// Generated into (or loaded back from) this folder.
    Generated { state_dir: PathBuf },
    /// An external intermediate: its certificate, its PKCS#8 key and the chain above it.
    External { cert: PathBuf, key: PathBuf, chain: Option<PathBuf> },
}

/// Why the CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A file that does not hold what it should.
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// The key file does not belong to the certificate.
    #[error("{key} does not match the certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// Signing failed (should not happen with a good key).
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

/// One certificate issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub der: Vec<u8>,
    pub serial: Serial,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// One entry of the CRL.
#[derive(Clone, Debug)]
pub struct Revoked {
    pub serial: Serial,
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// The issuing CA, ready to sign.
pub struct IssuingCa {
    /// The CA certificate exactly as distributed (cacerts, trust anchors).
    cert: CertificateDer<'static>,
    /// Certificates above it, for an external intermediate; empty for a generated CA.
    chain: Vec<CertificateDer<'static>>,
    /// rcgen's view of the CA (subject and key identifier), used as the issuer of what we sign.
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl IssuingCa {
    /// Loads the CA from `source`, generating it first when `Generated` and absent.
    pub fn open(source: &CaSource) -> Result<Self, CaError> {
        match source {
            CaSource::Generated { state_dir } => {
                let (cert, key) = (state_dir.join(CA_CERT_FILE), state_dir.join(CA_KEY_FILE));
                if !cert.exists() && !key.exists() {
                    generate(state_dir)?;
                }
                Self::load(&cert, &key, None)
            }
            CaSource::External { cert, key, chain } => Self::load(cert, key, chain.as_deref()),
        }
    }

    /// Loads a CA certificate, its key and optionally the chain above it.
    pub fn load(cert_path: &Path, key_path: &Path, chain_path: Option<&Path>) -> Result<Self, CaError> {
        let mut certs = read_certs(cert_path)?;
        if certs.is_empty() {
            return Err(CaError::BadFile { path: cert_path.to_owned(), reason: "no CERTIFICATE block".into() });
        }
        let cert = certs.remove(0);
        let chain = match chain_path {
            Some(path) => read_certs(path)?,
            None => certs,
        };
        let key_pem =
            std::fs::read_to_string(key_path).map_err(|source| CaError::Io { path: key_path.to_owned(), source })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::BadFile {
            path: key_path.to_owned(),
            reason: format!("not a PKCS#8 private key: {e}"),
        })?;
        let parsed = check::parse_cert(&cert)
            .map_err(|e| CaError::BadFile { path: cert_path.to_owned(), reason: e.to_string() })?;
        if !parsed.is_ca() {
            return Err(CaError::BadFile { path: cert_path.to_owned(), reason: "not a CA certificate".into() });
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch { cert: cert_path.to_owned(), key: key_path.to_owned() });
        }
        let params = CertificateParams::from_ca_cert_der(&cert)
            .map_err(|e| CaError::BadFile { path: cert_path.to_owned(), reason: e.to_string() })?;
        let issuer = params.self_signed(&key)?;
        Ok(IssuingCa { cert, chain, issuer, key })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate followed by the chain above it, as `/cacerts` serves them.
    pub fn bundle(&self) -> Vec<CertificateDer<'static>> {
        std::iter::once(self.cert.clone()).chain(self.chain.iter().cloned()).collect()
    }

    /// Issues a TLS client certificate for `public_key`, bound to `device` and `mac`.
    pub fn issue_device(
        &self,
        key: KeyKind,
        public_key: &[u8],
        device: &DeviceId,
        mac: Mac,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<Issued, CaError> {
        let mut params = CertificateParams::default();
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now + validity;
        params.distinguished_name.push(DnType::CommonName, device.as_str());
        params.subject_alt_names = vec![san_uri(&device.urn())?, san_uri(&mac_urn(mac))?];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let (not_before, not_after) = (params.not_before, params.not_after);
        let subject_key = CsrKey { raw: public_key, alg: signature_algorithm(key) };
        let cert = params.signed_by(&subject_key, &self.issuer, &self.key)?;
        Ok(Issued {
            der: cert.der().to_vec(),
            serial: Serial::from_bytes(&serial),
            subject: format!("CN={device}"),
            not_before,
            not_after,
        })
    }

    /// A fresh TLS server identity for the EST listener: certificate chain and key. Names that
    /// parse as IP addresses become IP SANs, the rest DNS SANs.
    pub fn issue_server(
        &self,
        names: &[String],
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now + validity;
        params.distinguished_name.push(DnType::CommonName, names.first().map_or("iotgw", String::as_str));
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.as_str().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.bundle());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }

    /// Signs a CRL listing `revoked`. `number` must grow whenever the list does.
    pub fn crl(
        &self,
        revoked: &[Revoked],
        number: u64,
        now: OffsetDateTime,
        next_update: Duration,
    ) -> Result<Vec<u8>, CaError> {
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + next_update,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial.to_bytes()),
                    revocation_time: r.revoked_at,
                    reason_code: Some(r.reason),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: self.issuer.params().key_identifier_method.clone(),
        };
        Ok(params.signed_by(&self.issuer, &self.key)?.der().to_vec())
    }
}

/// Creates a CA in `state_dir`: the folder (mode 0700), the key (0600) and the certificate.
/// Refuses to overwrite an existing key.
pub fn generate(state_dir: &Path) -> Result<(), CaError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CaError::Io { path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(state_dir).map_err(io(state_dir))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + GENERATED_CA_VALIDITY;
    params.distinguished_name.push(DnType::OrganizationName, "iotgw");
    params.distinguished_name.push(DnType::CommonName, GENERATED_CA_NAME);
    // pathlen 0: this CA signs devices and the EST server, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    let key_path = state_dir.join(CA_KEY_FILE);
    // create_new: never clobber a CA key that devices already trust.
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_path).map_err(io(&key_path))?;
    file.write_all(key.serialize_pem().as_bytes()).and_then(|()| file.sync_all()).map_err(io(&key_path))?;
    let cert_path = state_dir.join(CA_CERT_FILE);
    std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    tracing::info!(path = %cert_path.display(), "generated the issuing CA");
    Ok(())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let bytes = std::fs::read(path).map_err(|source| CaError::Io { path: path.to_owned(), source })?;
    rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::BadFile { path: path.to_owned(), reason: format!("bad PEM: {e}") })
}

fn san_uri(uri: &str) -> Result<SanType, rcgen::Error> {
    Ok(SanType::URI(uri.try_into()?))
}

/// A positive serial of `SERIAL_BYTES` bytes whose first byte is non-zero, so its DER
/// encoding is exactly these bytes (no sign or padding byte) and `Serial` round-trips.
fn random_serial() -> [u8; SERIAL_BYTES] {
    let mut serial: [u8; SERIAL_BYTES] = rand::random();
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

/// The rcgen algorithm whose SPKI encoding matches a key of this kind. rcgen writes the
/// SubjectPublicKeyInfo algorithm identifier from it; the signature hash is irrelevant here.
fn signature_algorithm(key: KeyKind) -> &'static SignatureAlgorithm {
    match key {
        KeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        KeyKind::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
    }
}

/// A public key taken from a CSR, for rcgen to put into the certificate.
struct CsrKey<'a> {
    raw: &'a [u8],
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.raw
    }

    fn algorithm(&self) -> &SignatureAlgorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use iotgw_test_support::services::{Scratch, scratch};

    use super::*;

    /// A folder named for the test, not yet created (the CA creates its state folder),
    /// removed when dropped.
    fn temp_dir(name: &str) -> Scratch {
        let dir = scratch(&format!("ca-{name}"));
        std::fs::remove_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn generated_ca_persists_with_private_key_mode() {
        let dir = temp_dir("persist");
        let source = CaSource::Generated { state_dir: dir.to_path_buf() };
        let first = IssuingCa::open(&source).unwrap();
        let mode = std::fs::metadata(dir.join(CA_KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = IssuingCa::open(&source).unwrap();
        assert_eq!(first.cert_der(), second.cert_der(), "a restart must reuse the CA");
    }

    #[test]
    fn issued_device_cert_passes_our_checks() {
        let dir = temp_dir("issue");
        let ca = IssuingCa::open(&CaSource::Generated { state_dir: dir.to_path_buf() }).unwrap();
        let device_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let id: DeviceId = "d-42".parse().unwrap();
        let mac: Mac = "02:00:00:00:00:42".parse().unwrap();
        let now = OffsetDateTime::now_utc();
        let issued =
            ca.issue_device(KeyKind::EcP384, device_key.public_key_raw(), &id, mac, now, Duration::hours(1)).unwrap();
        let ca_parsed = check::parse_cert(ca.cert_der()).unwrap();
        let checked = check::device_cert(&issued.der, &ca_parsed, now.unix_timestamp()).unwrap();
        assert_eq!((checked.device, checked.mac, checked.serial), (id, mac, issued.serial));
    }

    #[test]
    fn mismatched_key_file_is_refused() {
        let (a, b) = (temp_dir("mismatch-a"), temp_dir("mismatch-b"));
        generate(&a).unwrap();
        generate(&b).unwrap();
        let err = IssuingCa::load(&a.join(CA_CERT_FILE), &b.join(CA_KEY_FILE), None).err().unwrap();
        assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn generate_never_overwrites_a_key() {
        let dir = temp_dir("overwrite");
        generate(&dir).unwrap();
        assert!(matches!(generate(&dir), Err(CaError::Io { .. })));
    }

    #[test]
    fn crl_lists_revoked_serials() {
        let dir = temp_dir("crl");
        let ca = IssuingCa::open(&CaSource::Generated { state_dir: dir.to_path_buf() }).unwrap();
        let serial: Serial = "0badcafe".parse().unwrap();
        let now = OffsetDateTime::now_utc();
        let der = ca
            .crl(
                &[Revoked { serial: serial.clone(), revoked_at: now, reason: RevocationReason::KeyCompromise }],
                1,
                now,
                Duration::hours(1),
            )
            .unwrap();
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der_ok(&der);
        let listed: Vec<String> = crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect();
        assert_eq!(listed, vec![serial.to_string()]);
        let ca_parsed = check::parse_cert(ca.cert_der()).unwrap();
        crl.verify_signature(ca_parsed.public_key()).unwrap();
    }

    trait FromDerOk<'a>: Sized {
        fn from_der_ok(der: &'a [u8]) -> (&'a [u8], Self);
    }

    impl<'a> FromDerOk<'a> for x509_parser::revocation_list::CertificateRevocationList<'a> {
        fn from_der_ok(der: &'a [u8]) -> (&'a [u8], Self) {
            use x509_parser::prelude::FromDer as _;
            Self::from_der(der).unwrap()
        }
    }
}
