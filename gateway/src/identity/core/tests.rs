use rcgen::{CertificateParams, DnType, KeyPair, RevocationReason, SanType};

use super::*;
use crate::identity::{ca::CaSource, check, lifecycle::Lifecycle};

struct Fixture {
    identity: Identity,
    /// The CA's state folder, removed when the test ends (also when it fails).
    _dir: iotgw_test_support::services::Scratch,
}

fn fixture(name: &str, manufacturers: Vec<CertificateDer<'static>>) -> Fixture {
    let dir = iotgw_test_support::services::scratch(&format!("core-{name}"));
    let ca = IssuingCa::open(&CaSource::Generated { state_dir: dir.join("ca") }).unwrap();
    let conn = crate::store::open_in_memory(&[crate::identity::MIGRATIONS]).unwrap();
    let policy = Policy { cert_validity: Duration::hours(1), crl_next_update: Duration::hours(1) };
    Fixture { identity: Identity::new(conn, ca, manufacturers, policy), _dir: dir }
}

fn mac(last: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, last])
}

fn csr(key: &KeyPair, sans: &[String]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "device");
    params.subject_alt_names = sans.iter().map(|s| SanType::URI(s.as_str().try_into().unwrap())).collect();
    params.serialize_request(key).unwrap().der().to_vec()
}

fn count(identity: &Identity, table: &str) -> i64 {
    identity.connection().query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A token for `m`, then an enrollment with it (from no particular MAC).
fn enroll_with_token(f: &mut Fixture, m: Mac) -> (KeyPair, Enrolled) {
    let token = f.identity.create_token(m, Duration::hours(1), "test", now()).unwrap();
    let key = KeyPair::generate().unwrap();
    let enrolled = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap();
    (key, enrolled)
}

/// A certificate for device `d-x` on MAC 1 signed by `identity`'s CA, never recorded.
fn issue_unrecorded(identity: &Identity, key: &KeyPair) -> crate::identity::ca::Issued {
    let device = "d-x".parse().unwrap();
    identity
        .ca()
        .issue_device(check::KeyKind::EcP256, key.public_key_raw(), &device, mac(1), now(), Duration::hours(1))
        .unwrap()
}

#[test]
fn token_enrollment_then_authentication_enrolls_the_mac() {
    let mut f = fixture("token", vec![]);
    let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
    let key = KeyPair::generate().unwrap();
    let enrolled = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), Some(mac(1)), now()).unwrap();
    assert_eq!(enrolled.mac, mac(1));
    // Issued but not yet used: still onboarding.
    assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Onboarding)]);
    let auth = f.identity.authenticate(Some(&enrolled.issued.der), Some(mac(1)), now()).unwrap();
    assert_eq!((auth.from, auth.to), (Lifecycle::Provisioned, Lifecycle::Active));
    assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Enrolled)]);
}

#[test]
fn reused_token_is_refused_and_stores_nothing() {
    let mut f = fixture("reuse", vec![]);
    let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
    let key = KeyPair::generate().unwrap();
    f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap();
    let certs = count(&f.identity, "identity_certificates");
    let err = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, now()).unwrap_err();
    assert!(matches!(err, IdentityError::TokenUsed), "{err}");
    assert_eq!(count(&f.identity, "identity_certificates"), certs);
}

#[test]
fn expired_and_unknown_tokens_are_refused() {
    let mut f = fixture("expired", vec![]);
    let token = f.identity.create_token(mac(1), Duration::seconds(10), "test", now()).unwrap();
    let key = KeyPair::generate().unwrap();
    let later = now() + Duration::seconds(11);
    let err = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), None, later).unwrap_err();
    assert!(matches!(err, IdentityError::TokenExpired { .. }), "{err}");
    let err = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token("no-such-token"), None, now()).unwrap_err();
    assert!(matches!(err, IdentityError::TokenUnknown), "{err}");
    assert_eq!(count(&f.identity, "identity_certificates"), 0);
}

#[test]
fn bad_csrs_leave_the_token_usable() {
    let mut f = fixture("badcsr", vec![]);
    let token = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
    let key = KeyPair::generate().unwrap();
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage".to_vec(), "malformed"),
        (csr(&key, &["urn:iotgw:mac:02:00:00:00:00:02".into()]), "SAN MAC mismatch"),
        (csr(&key, &["urn:iotgw:device:someone-else".into()]), "SAN device mismatch"),
    ];
    for (der, what) in bad {
        let err = f.identity.enroll(&der, Bootstrap::Token(&token.secret), None, now());
        assert!(err.is_err(), "{what} accepted");
    }
    let err = f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&token.secret), Some(mac(7)), now()).unwrap_err();
    assert!(matches!(err, IdentityError::MacMismatch { .. }), "{err}");
    assert_eq!(count(&f.identity, "identity_certificates"), 0);
    // The token survived every refusal.
    let ok = csr(&key, &["urn:iotgw:mac:02:00:00:00:00:01".into()]);
    f.identity.enroll(&ok, Bootstrap::Token(&token.secret), Some(mac(1)), now()).unwrap();
}

#[test]
fn renewal_supersedes_and_revocation_drops_to_onboarding() {
    let mut f = fixture("renew", vec![]);
    let (key, first) = enroll_with_token(&mut f, mac(1));
    let second = f.identity.reenroll(&csr(&key, &[]), Some(&first.issued.der), None, now()).unwrap();
    assert_eq!(second.superseded, vec![first.issued.serial.clone()]);
    assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Enrolled)]);
    let err = f.identity.authenticate(Some(&first.issued.der), None, now()).unwrap_err();
    assert!(matches!(err, IdentityError::CertSuperseded(_)), "{err}");
    f.identity.revoke(&second.issued.serial, RevocationReason::KeyCompromise, "test", now()).unwrap();
    assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Onboarding)]);
    let err = f.identity.reenroll(&csr(&key, &[]), Some(&second.issued.der), None, now()).unwrap_err();
    assert!(matches!(err, IdentityError::CertRevoked(_)), "{err}");
    assert!(matches!(
        f.identity.revoke(&second.issued.serial, RevocationReason::Unspecified, "t", now()),
        Err(IdentityError::AlreadyRevoked(_))
    ));
}

#[test]
fn expiry_drops_to_onboarding_and_expired_cert_cannot_renew() {
    let mut f = fixture("expiry", vec![]);
    let (key, enrolled) = enroll_with_token(&mut f, mac(1));
    f.identity.authenticate(Some(&enrolled.issued.der), None, now()).unwrap();
    let after = now() + Duration::hours(2);
    assert_eq!(f.identity.desired_access(after).unwrap(), vec![(mac(1), Access::Onboarding)]);
    let err = f.identity.reenroll(&csr(&key, &[]), Some(&enrolled.issued.der), None, after).unwrap_err();
    assert!(matches!(err, IdentityError::Check(CheckError::Expired { .. })), "{err}");
    let before = now() - Duration::hours(1);
    let err = f.identity.authenticate(Some(&enrolled.issued.der), None, before).unwrap_err();
    assert!(matches!(err, IdentityError::Check(CheckError::NotYetValid { .. })), "{err}");
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let mut f = fixture("wrongca", vec![]);
    let other = fixture("wrongca-other", vec![]);
    let key = KeyPair::generate().unwrap();
    let foreign = issue_unrecorded(&other.identity, &key);
    let err = f.identity.authenticate(Some(&foreign.der), None, now()).unwrap_err();
    assert!(matches!(err, IdentityError::Check(CheckError::WrongIssuer { .. })), "{err}");
    // Signed by our CA but never recorded: refused too.
    let unrecorded = issue_unrecorded(&f.identity, &key);
    assert!(matches!(f.identity.authenticate(Some(&unrecorded.der), None, now()), Err(IdentityError::CertUnknown(_))));
}

#[test]
fn clone_blocks_both_macs_until_released() {
    let mut f = fixture("clone", vec![]);
    let (_, enrolled) = enroll_with_token(&mut f, mac(1));
    f.identity.authenticate(Some(&enrolled.issued.der), Some(mac(1)), now()).unwrap();
    let err = f.identity.authenticate(Some(&enrolled.issued.der), Some(mac(2)), now()).unwrap_err();
    assert!(matches!(err, IdentityError::CloneSuspected { .. }), "{err}");
    let desired: std::collections::HashMap<_, _> = f.identity.desired_access(now()).unwrap().into_iter().collect();
    assert_eq!(desired[&mac(1)], Access::Blocked);
    assert_eq!(desired[&mac(2)], Access::Blocked);
    assert!(matches!(
        f.identity.authenticate(Some(&enrolled.issued.der), Some(mac(1)), now()),
        Err(IdentityError::Held(_))
    ));
    f.identity.release_hold(mac(1), "alice", now()).unwrap();
    f.identity.release_hold(mac(2), "alice", now()).unwrap();
    assert!(matches!(f.identity.release_hold(mac(2), "alice", now()), Err(IdentityError::NoHold(_))));
    let desired: std::collections::HashMap<_, _> = f.identity.desired_access(now()).unwrap().into_iter().collect();
    assert_eq!(desired[&mac(1)], Access::Enrolled);
    assert_eq!(desired[&mac(2)], Access::Unknown);
}

#[test]
fn decommission_revokes_voids_tokens_and_keeps_audit() {
    let mut f = fixture("decom", vec![]);
    let (key, enrolled) = enroll_with_token(&mut f, mac(1));
    let spare = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
    f.identity.decommission(&enrolled.device, "alice", now()).unwrap();
    assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Unknown)]);
    assert!(matches!(
        f.identity.enroll(&csr(&key, &[]), Bootstrap::Token(&spare.secret), None, now()),
        Err(IdentityError::TokenUsed)
    ));
    let crl = f.identity.crl(now()).unwrap();
    let (_, parsed) =
        <x509_parser::revocation_list::CertificateRevocationList as x509_parser::prelude::FromDer<_>>::from_der(&crl)
            .unwrap();
    assert_eq!(parsed.iter_revoked_certificates().count(), 1);
    let trail = registry::audit_trail(f.identity.connection(), Some(&enrolled.device)).unwrap();
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["provision", "token", "issue", "token", "decommission"]);
    assert!(matches!(f.identity.decommission(&enrolled.device, "alice", now()), Err(IdentityError::Lifecycle { .. })));
    // A new token for the MAC makes a new identity.
    let again = f.identity.create_token(mac(1), Duration::hours(1), "test", now()).unwrap();
    assert_ne!(again.device, enrolled.device);
}

#[test]
fn suspended_device_stays_onboarding_and_cannot_renew() {
    let mut f = fixture("suspend", vec![]);
    let (key, enrolled) = enroll_with_token(&mut f, mac(1));
    f.identity.authenticate(Some(&enrolled.issued.der), None, now()).unwrap();
    f.identity.suspend(&enrolled.device, true, "alice", now()).unwrap();
    assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Onboarding)]);
    assert!(matches!(
        f.identity.reenroll(&csr(&key, &[]), Some(&enrolled.issued.der), None, now()),
        Err(IdentityError::Lifecycle { .. })
    ));
    f.identity.suspend(&enrolled.device, false, "alice", now()).unwrap();
    assert_eq!(f.identity.desired_access(now()).unwrap(), vec![(mac(1), Access::Enrolled)]);
}

#[test]
fn factory_certificate_bootstraps_without_token() {
    let maker_key = KeyPair::generate().unwrap();
    let mut maker = CertificateParams::default();
    maker.distinguished_name.push(DnType::CommonName, "maker CA");
    maker.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let maker = maker.self_signed(&maker_key).unwrap();
    let device_key = KeyPair::generate().unwrap();
    let mut idevid = CertificateParams::default();
    idevid.subject_alt_names = vec![SanType::URI("urn:iotgw:mac:02:00:00:00:00:05".try_into().unwrap())];
    let idevid = idevid.signed_by(&device_key, &maker, &maker_key).unwrap();
    let mut f = fixture("factory", vec![maker.der().clone()]);
    let enrolled = f
        .identity
        .enroll(
            &csr(&device_key, &[]),
            Bootstrap::Factory { leaf: idevid.der(), intermediates: &[] },
            Some(mac(5)),
            now(),
        )
        .unwrap();
    assert_eq!(enrolled.mac, mac(5));
    let mut stranger = fixture("factory-stranger", vec![]);
    let err = stranger
        .identity
        .enroll(&csr(&device_key, &[]), Bootstrap::Factory { leaf: idevid.der(), intermediates: &[] }, None, now())
        .unwrap_err();
    assert!(matches!(err, IdentityError::Check(CheckError::WrongIssuer { .. })), "{err}");
    assert_eq!(count(&stranger.identity, "identity_devices"), 0, "nothing stored on refusal");
}
