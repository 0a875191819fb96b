use rcgen::RevocationReason;
use rusqlite::Connection;

use super::*;
use crate::{
    device::{Access, Mac},
    identity::{
        lifecycle::Lifecycle,
        names::{DeviceId, Serial},
    },
};

fn mac(last: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, last])
}

fn setup() -> Connection {
    crate::store::open_in_memory(&[crate::identity::MIGRATIONS]).unwrap()
}

fn add_device(conn: &Connection, id: &str, m: Mac, lifecycle: Lifecycle) -> DeviceId {
    let id: DeviceId = id.parse().unwrap();
    insert_device(conn, &DeviceRecord { device: id.clone(), mac: m, lifecycle, created_at: 0 }).unwrap();
    id
}

fn add_cert(conn: &Connection, serial: &str, id: &DeviceId, m: Mac, not_after: i64) -> Serial {
    let serial: Serial = serial.parse().unwrap();
    let record = CertRecord {
        serial: serial.clone(),
        device: id.clone(),
        mac: m,
        subject: "CN=x".into(),
        not_before: 0,
        not_after,
        status: CertStatus::Valid,
        bootstrap: "token".into(),
        issued_at: 0,
    };
    insert_cert(conn, &record, b"der").unwrap();
    serial
}

#[test]
fn token_is_consumed_exactly_once() {
    let conn = setup();
    let id = add_device(&conn, "d-1", mac(1), Lifecycle::Provisioned);
    insert_token(&conn, "h", mac(1), &id, 0, 100).unwrap();
    let serial: Serial = "01".parse().unwrap();
    assert!(consume_token(&conn, "h", 10, &serial).unwrap());
    assert!(!consume_token(&conn, "h", 11, &serial).unwrap());
}

#[test]
fn expired_token_is_not_consumed() {
    let conn = setup();
    let id = add_device(&conn, "d-1", mac(1), Lifecycle::Provisioned);
    insert_token(&conn, "h", mac(1), &id, 0, 100).unwrap();
    assert!(!consume_token(&conn, "h", 100, &"01".parse().unwrap()).unwrap());
    assert_eq!(token(&conn, "h").unwrap().unwrap().used_at, None);
}

#[test]
fn one_live_identity_per_mac() {
    let conn = setup();
    add_device(&conn, "d-1", mac(1), Lifecycle::Active);
    let again =
        DeviceRecord { device: "d-2".parse().unwrap(), mac: mac(1), lifecycle: Lifecycle::Provisioned, created_at: 0 };
    assert!(insert_device(&conn, &again).is_err());
}

#[test]
fn desired_access_follows_certificate_lifecycle_and_holds() {
    let conn = setup();
    let active = add_device(&conn, "d-1", mac(1), Lifecycle::Active);
    add_cert(&conn, "01", &active, mac(1), 1_000);
    let provisioned = add_device(&conn, "d-2", mac(2), Lifecycle::Provisioned);
    add_cert(&conn, "02", &provisioned, mac(2), 1_000);
    let gone = add_device(&conn, "d-3", mac(3), Lifecycle::Decommissioned);
    let revoked = add_device(&conn, "d-4", mac(4), Lifecycle::Active);
    let serial = add_cert(&conn, "04", &revoked, mac(4), 1_000);
    revoke(&conn, &serial, RevocationReason::KeyCompromise, 5).unwrap();
    add_hold(&conn, mac(9), "clone", 5).unwrap();
    let _ = gone;
    let desired: std::collections::HashMap<_, _> = desired_access(&conn, 10).unwrap().into_iter().collect();
    assert_eq!(desired[&mac(1)], Access::Enrolled);
    assert_eq!(desired[&mac(2)], Access::Onboarding);
    assert_eq!(desired[&mac(3)], Access::Unknown);
    assert_eq!(desired[&mac(4)], Access::Onboarding);
    assert_eq!(desired[&mac(9)], Access::Blocked);
    // At not_after the certificate no longer counts.
    let later: std::collections::HashMap<_, _> = desired_access(&conn, 1_000).unwrap().into_iter().collect();
    assert_eq!(later[&mac(1)], Access::Onboarding);
}

#[test]
fn superseded_certs_enter_the_crl_and_number_grows() {
    let conn = setup();
    let id = add_device(&conn, "d-1", mac(1), Lifecycle::Active);
    add_cert(&conn, "01", &id, mac(1), 1_000);
    let before = crl_number(&conn).unwrap();
    supersede_valid(&conn, &id, 5).unwrap();
    let after_supersede = crl_number(&conn).unwrap();
    revoke(&conn, &"01".parse().unwrap(), RevocationReason::KeyCompromise, 6).unwrap();
    let after_revoke = crl_number(&conn).unwrap();
    assert!(before < after_supersede && after_supersede < after_revoke);
    let list = revocations(&conn).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reason, RevocationReason::KeyCompromise);
}

#[test]
fn audit_trail_is_per_device() {
    let conn = setup();
    let id = add_device(&conn, "d-1", mac(1), Lifecycle::Active);
    audit(&conn, 1, Some(&id), Some(mac(1)), "test", "enroll", "x").unwrap();
    audit(&conn, 2, None, None, "test", "other", "y").unwrap();
    assert_eq!(audit_trail(&conn, Some(&id)).unwrap().len(), 1);
    assert_eq!(audit_trail(&conn, None).unwrap().len(), 2);
}
