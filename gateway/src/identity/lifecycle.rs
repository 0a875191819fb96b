//! A device identity's lifecycle: provisioned → active → suspended → decommissioned.
//!
//! Reads and writes nothing; `registry` stores the state as text (`as_str`/`from_str`).
//! Each transition takes the current state by value and returns the next one or a
//! `TransitionError`, so an impossible move cannot be written down by accident.
use std::{fmt, str::FromStr};

/// Where a device identity is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// Known to the gateway (token created or factory certificate accepted), not yet seen
    /// authenticating with a certificate of ours.
    Provisioned,
    /// Authenticated with a certificate of ours at least once: access follows its certificate.
    Active,
    /// Held back by an operator: onboarding lane only, no enrollment, until resumed.
    Suspended,
    /// Retired for good: certificates revoked, tokens void. The audit trail stays.
    Decommissioned,
}

/// A transition that the lifecycle does not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot {action} a device that is {from}")]
pub struct TransitionError {
    pub from: Lifecycle,
    pub action: &'static str,
}

impl Lifecycle {
    /// First successful mTLS authentication (also fine when already active).
    pub fn activate(self) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Provisioned | Lifecycle::Active => Ok(Lifecycle::Active),
            from => Err(TransitionError { from, action: "activate" }),
        }
    }

    /// An operator holds the device back.
    pub fn suspend(self) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Provisioned | Lifecycle::Active => Ok(Lifecycle::Suspended),
            from => Err(TransitionError { from, action: "suspend" }),
        }
    }

    /// An operator lifts a suspension; the device is active again (it had authenticated or
    /// will on its next connection).
    pub fn resume(self) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Suspended => Ok(Lifecycle::Active),
            from => Err(TransitionError { from, action: "resume" }),
        }
    }

    /// Retires the device; there is no way back (a new enrollment makes a new device).
    pub fn decommission(self) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Decommissioned => Err(TransitionError { from: self, action: "decommission" }),
            _ => Ok(Lifecycle::Decommissioned),
        }
    }

    /// May the device obtain a certificate (enroll or renew) in this state?
    pub fn may_enroll(self) -> Result<(), TransitionError> {
        match self {
            Lifecycle::Provisioned | Lifecycle::Active => Ok(()),
            from => Err(TransitionError { from, action: "enroll" }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Provisioned => "provisioned",
            Lifecycle::Active => "active",
            Lifecycle::Suspended => "suspended",
            Lifecycle::Decommissioned => "decommissioned",
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Lifecycle {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "provisioned" => Lifecycle::Provisioned,
            "active" => Lifecycle::Active,
            "suspended" => Lifecycle::Suspended,
            "decommissioned" => Lifecycle::Decommissioned,
            other => return Err(format!("unknown lifecycle state {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_life_provisioned_to_decommissioned() {
        let state = Lifecycle::Provisioned.activate().unwrap();
        let state = state.suspend().unwrap();
        let state = state.resume().unwrap();
        assert_eq!(state, Lifecycle::Active);
        assert_eq!(state.decommission().unwrap(), Lifecycle::Decommissioned);
    }

    #[test]
    fn decommissioned_is_terminal() {
        let gone = Lifecycle::Decommissioned;
        assert!(gone.activate().is_err());
        assert!(gone.suspend().is_err());
        assert!(gone.resume().is_err());
        assert!(gone.decommission().is_err());
        assert!(gone.may_enroll().is_err());
    }

    #[test]
    fn suspended_cannot_activate_or_enroll() {
        assert!(Lifecycle::Suspended.activate().is_err());
        assert!(Lifecycle::Suspended.may_enroll().is_err());
        assert!(Lifecycle::Active.resume().is_err());
    }

    #[test]
    fn text_round_trips() {
        for state in [Lifecycle::Provisioned, Lifecycle::Active, Lifecycle::Suspended, Lifecycle::Decommissioned] {
            assert_eq!(state.as_str().parse::<Lifecycle>().unwrap(), state);
        }
    }
}
