//! Authentication (the mTLS hello): a device proves it holds one of our certificates and
//! becomes active. A MAC presenting another MAC's identity is held as a suspected clone.
//!
//! Writes `identity_devices` (activation), `identity_holds` and the audit trail.
use rusqlite::Connection;
use time::OffsetDateTime;

use super::{Identity, IdentityError, known_device, write};
use crate::{
    device::Mac,
    identity::{
        check::{self, CheckedCert},
        lifecycle::Lifecycle,
        names::{DeviceId, Serial},
        registry::{self, CertStatus, DeviceRecord, unix},
    },
};

/// A successful mTLS authentication with one of our certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub device: DeviceId,
    pub mac: Mac,
    pub serial: Serial,
    pub from: Lifecycle,
    pub to: Lifecycle,
}

impl Identity {
    /// A device proved, over mTLS, that it holds `leaf`: it becomes active.
    pub fn authenticate(
        &mut self,
        leaf: Option<&[u8]>,
        observed: Option<Mac>,
        now: OffsetDateTime,
    ) -> Result<Authenticated, IdentityError> {
        let presented = self.verify_presented(leaf, observed, now)?;
        let t = unix(now);
        let tx = write(&mut self.conn)?;
        let device = known_device(&tx, &presented.device)?;
        let to = activate(&tx, &device, t)?;
        if to != device.lifecycle {
            registry::audit(
                &tx,
                t,
                Some(&device.device),
                Some(device.mac),
                "mtls",
                "activate",
                &format!("first authentication with certificate {}", presented.serial),
            )?;
        }
        tx.commit()?;
        Ok(Authenticated {
            device: device.device,
            mac: device.mac,
            serial: presented.serial,
            from: device.lifecycle,
            to,
        })
    }

    /// Checks a presented client certificate (`leaf`, from mTLS) against the CA, the registry
    /// and the MAC it came from. A MAC presenting another MAC's identity holds both
    /// (committed) and fails.
    pub(super) fn verify_presented(
        &mut self,
        leaf: Option<&[u8]>,
        observed: Option<Mac>,
        now: OffsetDateTime,
    ) -> Result<CheckedCert, IdentityError> {
        let leaf = leaf.ok_or(IdentityError::NoClientCertificate)?;
        let t = unix(now);
        let ca = check::parse_cert(self.ca.cert_der())?;
        let presented = check::device_cert(leaf, &ca, t)?;
        let record = registry::cert(&self.conn, &presented.serial)?
            .ok_or_else(|| IdentityError::CertUnknown(presented.serial.clone()))?;
        match record.status {
            CertStatus::Valid => {}
            CertStatus::Revoked => return Err(IdentityError::CertRevoked(presented.serial)),
            CertStatus::Superseded => return Err(IdentityError::CertSuperseded(presented.serial)),
        }
        if let Some(seen) = observed.filter(|seen| *seen != presented.mac) {
            let tx = write(&mut self.conn)?;
            let reason = format!(
                "MAC {seen} presented certificate {} of device {} (bound to {})",
                presented.serial, presented.device, presented.mac
            );
            for mac in [seen, presented.mac] {
                registry::add_hold(&tx, mac, &reason, t)?;
            }
            registry::audit(&tx, t, Some(&presented.device), Some(seen), "mtls", "clone_suspected", &reason)?;
            tx.commit()?;
            return Err(IdentityError::CloneSuspected { seen, device: presented.device, bound: presented.mac });
        }
        if registry::is_held(&self.conn, presented.mac)? {
            return Err(IdentityError::Held(presented.mac));
        }
        Ok(presented)
    }
}

/// A device that proved it holds its certificate is active from now on (stored if it was
/// not already). Returns the lifecycle it is in now.
pub(super) fn activate(tx: &Connection, device: &DeviceRecord, t: i64) -> Result<Lifecycle, IdentityError> {
    let active = device.lifecycle.activate().map_err(IdentityError::lifecycle(&device.device))?;
    if active != device.lifecycle {
        registry::set_lifecycle(tx, &device.device, active, t)?;
    }
    Ok(active)
}
