//! Identifiers and states of a device, shared by every controller step.
use std::{fmt, str::FromStr};

use gateway_ebpf::device_state;
use serde::{Deserialize, Serialize};

/// A device's MAC address, the key of the inventory and of the XDP device table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The first three bytes, the IEEE OUI of the vendor (for universally administered MACs).
    pub fn oui(&self) -> [u8; 3] {
        [self.0[0], self.0[1], self.0[2]]
    }

    /// Locally administered MACs (randomised or set by software) carry no vendor.
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    pub fn key(&self) -> gateway_ebpf::MacKey {
        gateway_ebpf::MacKey::new(self.0)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a MAC address (expected six hex bytes like 02:00:00:00:00:01)")]
pub struct ParseMacError {
    pub input: String,
}

impl FromStr for Mac {
    type Err = ParseMacError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseMacError { input: input.to_owned() };
        let mut bytes = [0u8; 6];
        let mut parts = input.split([':', '-']);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(error)?;
            if part.len() != 2 {
                return Err(error());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| error())?;
        }
        if parts.next().is_some() {
            return Err(error());
        }
        Ok(Mac(bytes))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What the datapath enforces for a device (`gateway_ebpf::device_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Onboarding lane only (no entry in the device table).
    Unknown,
    /// Enrolling: onboarding lane only.
    Onboarding,
    /// Holds a valid certificate: its policy applies.
    Enrolled,
    /// Quarantine allow-list; the rest redirected or dropped.
    Quarantined,
    /// Everything dropped.
    Blocked,
}

impl Access {
    pub fn code(self) -> u8 {
        match self {
            Access::Unknown => device_state::UNKNOWN,
            Access::Onboarding => device_state::ONBOARDING,
            Access::Enrolled => device_state::ENROLLED,
            Access::Quarantined => device_state::QUARANTINED,
            Access::Blocked => device_state::BLOCKED,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            device_state::UNKNOWN => Access::Unknown,
            device_state::ONBOARDING => Access::Onboarding,
            device_state::ENROLLED => Access::Enrolled,
            device_state::QUARANTINED => Access::Quarantined,
            device_state::BLOCKED => Access::Blocked,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Unknown => "unknown",
            Access::Onboarding => "onboarding",
            Access::Enrolled => "enrolled",
            Access::Quarantined => "quarantined",
            Access::Blocked => "blocked",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Access {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "unknown" => Access::Unknown,
            "onboarding" => Access::Onboarding,
            "enrolled" => Access::Enrolled,
            "quarantined" => Access::Quarantined,
            "blocked" => Access::Blocked,
            other => return Err(format!("unknown access state {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let mac: Mac = "98:90:96:9A:86:df".parse().unwrap();
        assert_eq!(mac.to_string(), "98:90:96:9a:86:df");
        assert_eq!(mac.oui(), [0x98, 0x90, 0x96]);
    }

    #[test]
    fn mac_parse_rejects_bad_input() {
        for bad in ["", "98:90:96:9a:86", "98:90:96:9a:86:df:00", "zz:90:96:9a:86:df", "989:0:96:9a:86:df"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn access_codes_match_the_abi() {
        for access in [Access::Unknown, Access::Onboarding, Access::Enrolled, Access::Quarantined, Access::Blocked] {
            assert_eq!(Access::from_code(access.code()), Some(access));
        }
    }
}
