//! Renewal (EST simplereenroll): a device authenticated by its current certificate gets a new
//! one for the same identity; the old one is superseded.
//!
//! Writes `identity_devices` (activation), `identity_certificates`, `identity_revocations`
//! and the audit trail, in one transaction.
use time::OffsetDateTime;

use super::{
    Identity, IdentityError,
    enrollment::{Enrolled, check_binding, issue, store_issued},
    known_device, write,
};
use crate::{
    device::Mac,
    identity::{
        check,
        registry::{self, unix},
    },
};

impl Identity {
    /// simplereenroll: the device authenticates with its current certificate (`leaf`, from
    /// mTLS) and gets a new one for the same identity; the old one is superseded.
    pub fn reenroll(
        &mut self,
        csr_der: &[u8],
        leaf: Option<&[u8]>,
        observed: Option<Mac>,
        now: OffsetDateTime,
    ) -> Result<Enrolled, IdentityError> {
        let leaf = leaf.ok_or(IdentityError::NoClientCertificate)?;
        let presented = self.verify_presented(leaf, observed, now)?;
        let csr = check::csr(csr_der)?;
        check_binding(&csr.requested, &presented.device, presented.mac)?;
        let t = unix(now);
        let tx = write(&mut self.conn)?;
        let device = known_device(&tx, &presented.device)?;
        let active = device.lifecycle.activate().map_err(IdentityError::lifecycle(&device.device))?;
        if active != device.lifecycle {
            registry::set_lifecycle(&tx, &device.device, active, t)?;
        }
        let issued = issue(&self.ca, &self.policy, csr, &device, now)?;
        let enrolled = store_issued(&tx, &device, issued, "renewal", t)?;
        tx.commit()?;
        Ok(enrolled)
    }
}
