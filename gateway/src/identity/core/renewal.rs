//! Renewal (EST simplereenroll): a device authenticated by its current certificate gets a new
//! one for the same identity; the old one is superseded.
//!
//! Writes `identity_devices` (activation), `identity_certificates`, `identity_revocations`
//! and the audit trail, in one transaction.
use time::OffsetDateTime;

use super::{
    Identity, IdentityError,
    authentication::activate,
    enrollment::{Enrolled, check_binding, issue, store_issued},
    known_device, write,
};
use crate::{
    device::Mac,
    identity::{check, registry::unix},
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
        let presented = self.verify_presented(leaf, observed, now)?;
        let csr = check::csr(csr_der)?;
        check_binding(&csr.requested, &presented.device, presented.mac)?;
        let t = unix(now);
        let tx = write(&mut self.conn)?;
        let device = known_device(&tx, &presented.device)?;
        activate(&tx, &device, t)?;
        let issued = issue(&self.ca, &self.policy, csr, &device, now)?;
        let enrolled = store_issued(&tx, &device, issued, "renewal", t)?;
        tx.commit()?;
        Ok(enrolled)
    }
}
