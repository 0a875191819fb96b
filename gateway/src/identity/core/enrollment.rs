//! Enrollment (EST simpleenroll): a token or a factory certificate vouches for a device, and
//! its CSR becomes its first certificate. Also the issuing step renewal shares.
//!
//! Writes `identity_certificates`, `identity_revocations` (superseded), `identity_tokens`
//! (consumed) and the audit trail, in one transaction.
use rusqlite::Connection;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{Identity, IdentityError, Policy, provisioning, write};
use crate::{
    device::Mac,
    identity::{
        ca::{Issued, IssuingCa},
        check::{self, CheckedCsr},
        names::{DeviceId, Serial, Urn, mac_urn},
        registry::{self, CertRecord, CertStatus, DeviceRecord, unix},
    },
};

/// What vouches for an enrolling device.
#[derive(Clone, Copy, Debug)]
pub enum Bootstrap<'a> {
    /// A one-time enrollment token (the secret as the device sent it).
    Token(&'a str),
    /// A factory certificate (IDevID) presented over mTLS, with the intermediates sent with it.
    Factory { leaf: &'a [u8], intermediates: &'a [CertificateDer<'static>] },
}

/// A certificate issued by `enroll` or `reenroll`.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub device: DeviceId,
    pub mac: Mac,
    pub issued: Issued,
    /// The certificates this one replaced.
    pub superseded: Vec<Serial>,
}

impl Identity {
    /// simpleenroll: checks the CSR and the bootstrap credential, issues, and stores the
    /// certificate (consuming the token) in one transaction. `observed` is the MAC the request
    /// came from, when the gateway can tell.
    pub fn enroll(
        &mut self,
        csr_der: &[u8],
        bootstrap: Bootstrap,
        observed: Option<Mac>,
        now: OffsetDateTime,
    ) -> Result<Enrolled, IdentityError> {
        let csr = check::csr(csr_der)?;
        let t = unix(now);
        let tx = write(&mut self.conn)?;
        let (device, token, source) = match bootstrap {
            Bootstrap::Token(secret) => {
                let hash = provisioning::token_hash(secret);
                let record = registry::token(&tx, &hash)?.ok_or(IdentityError::TokenUnknown)?;
                if record.used_at.is_some() {
                    return Err(IdentityError::TokenUsed);
                }
                if record.expires_at <= t {
                    return Err(IdentityError::TokenExpired { expires_at: registry::rfc3339(record.expires_at) });
                }
                let device = registry::device(&tx, &record.device)?.ok_or(IdentityError::TokenUnknown)?;
                (device, Some(hash), "token")
            }
            Bootstrap::Factory { leaf, intermediates } => {
                let makers = self.manufacturers.iter().map(|d| check::parse_cert(d)).collect::<Result<Vec<_>, _>>()?;
                let chain: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
                let mac = check::factory_cert(leaf, &chain, &makers, t)?;
                let device = provisioning::live_or_provisioned(
                    &tx,
                    mac,
                    "enrollment",
                    "identity created for a factory certificate",
                    t,
                )?;
                (device, None, "factory")
            }
        };
        if let Some(seen) = observed.filter(|seen| *seen != device.mac) {
            return Err(IdentityError::MacMismatch { bound: device.mac, observed: seen });
        }
        check_binding(&csr.requested, &device.device, device.mac)?;
        device.lifecycle.may_enroll().map_err(IdentityError::lifecycle(&device.device))?;
        if registry::is_held(&tx, device.mac)? {
            return Err(IdentityError::Held(device.mac));
        }
        let issued = issue(&self.ca, &self.policy, csr, &device, now)?;
        if let Some(hash) = token {
            // The check above ran in this same IMMEDIATE transaction, so this only fails if
            // the clock moved past expiry meanwhile; it is the atomic guard either way.
            if !registry::consume_token(&tx, &hash, t, &issued.serial)? {
                return Err(IdentityError::TokenUsed);
            }
        }
        let enrolled = store_issued(&tx, &device, issued, source, t)?;
        tx.commit()?;
        Ok(enrolled)
    }
}

/// Signs the CSR's key into a certificate for `device`, valid for the policy's lifetime.
pub(super) fn issue(
    ca: &IssuingCa,
    policy: &Policy,
    csr: CheckedCsr,
    device: &DeviceRecord,
    now: OffsetDateTime,
) -> Result<Issued, IdentityError> {
    Ok(ca.issue_device(csr.key, &csr.public_key, &device.device, device.mac, now, policy.cert_validity)?)
}

/// The CSR may repeat the bound device id and MAC, nothing else.
pub(super) fn check_binding(requested: &[Urn], device: &DeviceId, mac: Mac) -> Result<(), IdentityError> {
    for urn in requested {
        match urn {
            Urn::Device(id) if id != device => {
                return Err(IdentityError::SanMismatch { requested: id.urn(), bound: device.urn() });
            }
            Urn::Mac(m) if *m != mac => {
                return Err(IdentityError::SanMismatch { requested: mac_urn(*m), bound: mac_urn(mac) });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Records `issued` as the device's current certificate, superseding the ones it had.
pub(super) fn store_issued(
    tx: &Connection,
    device: &DeviceRecord,
    issued: Issued,
    bootstrap: &str,
    t: i64,
) -> Result<Enrolled, IdentityError> {
    let superseded = registry::valid_certs(tx, &device.device)?;
    registry::supersede_valid(tx, &device.device, t)?;
    let record = CertRecord {
        serial: issued.serial.clone(),
        device: device.device.clone(),
        mac: device.mac,
        subject: issued.subject.clone(),
        not_before: unix(issued.not_before),
        not_after: unix(issued.not_after),
        status: CertStatus::Valid,
        bootstrap: bootstrap.to_owned(),
        issued_at: t,
    };
    registry::insert_cert(tx, &record, &issued.der)?;
    registry::audit(
        tx,
        t,
        Some(&device.device),
        Some(device.mac),
        bootstrap,
        "issue",
        &format!("certificate {} issued, valid until {}", issued.serial, registry::rfc3339(record.not_after)),
    )?;
    Ok(Enrolled { device: device.device.clone(), mac: device.mac, issued, superseded })
}
