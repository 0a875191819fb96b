//! The operator's side of the lifecycle: revoking a certificate, decommissioning or
//! suspending a device, and releasing a suspected clone's hold (`iotgw pki`, the API, SOAR).
//!
//! Writes `identity_devices`, `identity_certificates`, `identity_revocations`,
//! `identity_tokens` (voided), `identity_holds` and the audit trail.
use rcgen::RevocationReason;
use time::OffsetDateTime;

use super::{Identity, IdentityError, known_device, write};
use crate::{
    device::Mac,
    identity::{
        lifecycle::Lifecycle,
        names::{DeviceId, Serial},
        registry::{self, CertRecord, CertStatus, DeviceRecord, unix},
    },
};

impl Identity {
    /// Revokes one certificate; its device drops to onboarding unless it holds another valid one.
    pub fn revoke(
        &mut self,
        serial: &Serial,
        reason: RevocationReason,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CertRecord, IdentityError> {
        let t = unix(now);
        let tx = write(&mut self.conn)?;
        let record = registry::cert(&tx, serial)?.ok_or_else(|| IdentityError::UnknownSerial(serial.clone()))?;
        if record.status == CertStatus::Revoked {
            return Err(IdentityError::AlreadyRevoked(serial.clone()));
        }
        registry::revoke(&tx, serial, reason, t)?;
        registry::audit(
            &tx,
            t,
            Some(&record.device),
            Some(record.mac),
            actor,
            "revoke",
            &format!("certificate {serial} revoked ({})", registry::reason_text(reason)),
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// Retires a device: lifecycle decommissioned, certificates revoked, tokens void.
    pub fn decommission(
        &mut self,
        device: &DeviceId,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<DeviceRecord, IdentityError> {
        let t = unix(now);
        let tx = write(&mut self.conn)?;
        let record = known_device(&tx, device)?;
        let next = record.lifecycle.decommission().map_err(IdentityError::lifecycle(device))?;
        registry::set_lifecycle(&tx, device, next, t)?;
        for serial in registry::unrevoked_certs(&tx, device)? {
            registry::revoke(&tx, &serial, RevocationReason::CessationOfOperation, t)?;
        }
        registry::void_tokens(&tx, device, t)?;
        registry::audit(
            &tx,
            t,
            Some(device),
            Some(record.mac),
            actor,
            "decommission",
            &format!("{} -> {next}", record.lifecycle),
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// Suspends (`suspend = true`) or resumes a device.
    pub fn suspend(
        &mut self,
        device: &DeviceId,
        suspend: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(Lifecycle, Lifecycle), IdentityError> {
        let t = unix(now);
        let tx = write(&mut self.conn)?;
        let record = known_device(&tx, device)?;
        let from = record.lifecycle;
        let to = if suspend { from.suspend() } else { from.resume() }.map_err(IdentityError::lifecycle(device))?;
        registry::set_lifecycle(&tx, device, to, t)?;
        registry::audit(
            &tx,
            t,
            Some(device),
            Some(record.mac),
            actor,
            if suspend { "suspend" } else { "resume" },
            &format!("{from} -> {to}"),
        )?;
        tx.commit()?;
        Ok((from, to))
    }

    /// A human decided about a suspected clone: the MAC's holds are cleared.
    pub fn release_hold(&mut self, mac: Mac, actor: &str, now: OffsetDateTime) -> Result<(), IdentityError> {
        let t = unix(now);
        let tx = write(&mut self.conn)?;
        if registry::clear_holds(&tx, mac, actor, t)? == 0 {
            return Err(IdentityError::NoHold(mac));
        }
        registry::audit(&tx, t, None, Some(mac), actor, "release_hold", "clone hold cleared by an operator")?;
        tx.commit()?;
        Ok(())
    }
}
