//! Identifiers of the identity component and the SAN form that binds them into a certificate.
//!
//! Reads and writes nothing: pure parsing and formatting.
//!
//! An issued device certificate carries exactly two SAN entries, both URIs:
//! - `urn:iotgw:device:<device id>` (the gateway's id for the device, `DeviceId`);
//! - `urn:iotgw:mac:<aa:bb:cc:dd:ee:ff>` (the MAC the certificate is bound to, lower case).
//!
//! URIs rather than an `otherName` because every TLS stack and `openssl x509 -text` shows them,
//! and a CSR can ask for them with `openssl req -addext subjectAltName=URI:...`.
use std::{fmt, str::FromStr};

use crate::device::Mac;

/// Prefix of the SAN URI naming the device.
pub const DEVICE_URN_PREFIX: &str = "urn:iotgw:device:";
/// Prefix of the SAN URI naming the MAC the certificate is bound to.
pub const MAC_URN_PREFIX: &str = "urn:iotgw:mac:";
/// Longest device id accepted (it becomes a CN, limited to 64 characters by RFC 5280).
pub const DEVICE_ID_MAX_LEN: usize = 64;

/// The gateway's id for a device, stable across certificate renewals.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

/// Why a string is not a device id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a device id (1 to 64 characters of a-z, A-Z, 0-9, '-', '_', '.')")]
pub struct ParseDeviceIdError {
    pub input: String,
}

impl DeviceId {
    /// A fresh random id, `d-` and 16 hex digits.
    pub fn generate() -> Self {
        DeviceId(format!("d-{}", hex::encode(rand::random::<[u8; 8]>())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SAN URI naming this device.
    pub fn urn(&self) -> String {
        format!("{DEVICE_URN_PREFIX}{}", self.0)
    }
}

impl FromStr for DeviceId {
    type Err = ParseDeviceIdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if input.is_empty() || input.len() > DEVICE_ID_MAX_LEN || !input.chars().all(valid_char) {
            return Err(ParseDeviceIdError { input: input.to_owned() });
        }
        Ok(DeviceId(input.to_owned()))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A certificate serial number, as lower-case hex of its DER content bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(String);

/// Why a string is not a serial number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a serial number (hex digits, ':' separators allowed)")]
pub struct ParseSerialError {
    pub input: String,
}

impl Serial {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Serial(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Invariant: built only from bytes or from text checked by `from_str`.
        hex::decode(&self.0).expect("a Serial always holds an even number of hex digits")
    }
}

impl FromStr for Serial {
    type Err = ParseSerialError;

    /// Accepts what `openssl x509 -serial` prints (`serial=0A1B...`) and colon-separated hex.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseSerialError { input: input.to_owned() };
        let digits: String = input.trim().trim_start_matches("serial=").chars().filter(|c| *c != ':').collect();
        let mut bytes = hex::decode(&digits).map_err(|_| error())?;
        // DER drops redundant leading zero bytes; so must we, or lookups miss.
        while bytes.len() > 1 && bytes[0] == 0 && bytes[1] & 0x80 == 0 {
            bytes.remove(0);
        }
        if bytes.is_empty() {
            return Err(error());
        }
        Ok(Serial::from_bytes(&bytes))
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// The SAN URI binding a certificate to `mac`.
pub fn mac_urn(mac: Mac) -> String {
    format!("{MAC_URN_PREFIX}{mac}")
}

/// One SAN URI of ours, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Urn {
    Device(DeviceId),
    Mac(Mac),
}

/// Why a SAN URI is not one of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrnError {
    /// Not under `urn:iotgw:device:` or `urn:iotgw:mac:`.
    #[error("SAN URI {0:?} is neither urn:iotgw:device:<id> nor urn:iotgw:mac:<mac>")]
    Foreign(String),
    #[error("SAN URI {uri:?}: {reason}")]
    Invalid { uri: String, reason: String },
}

/// Parses a SAN URI of the form this module documents.
pub fn parse_urn(uri: &str) -> Result<Urn, UrnError> {
    let invalid = |reason: String| UrnError::Invalid { uri: uri.to_owned(), reason };
    if let Some(id) = uri.strip_prefix(DEVICE_URN_PREFIX) {
        return id.parse().map(Urn::Device).map_err(|e: ParseDeviceIdError| invalid(e.to_string()));
    }
    if let Some(mac) = uri.strip_prefix(MAC_URN_PREFIX) {
        return mac.parse().map(Urn::Mac).map_err(|e: crate::device::ParseMacError| invalid(e.to_string()));
    }
    Err(UrnError::Foreign(uri.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urns_round_trip() {
        let id: DeviceId = "d-0011".parse().unwrap();
        let mac: Mac = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(parse_urn(&id.urn()), Ok(Urn::Device(id)));
        assert_eq!(parse_urn(&mac_urn(mac)), Ok(Urn::Mac(mac)));
    }

    #[test]
    fn foreign_and_invalid_urns_are_refused() {
        assert!(matches!(parse_urn("https://example.com"), Err(UrnError::Foreign(_))));
        assert!(matches!(parse_urn("urn:iotgw:mac:02:00"), Err(UrnError::Invalid { .. })));
        assert!(matches!(parse_urn("urn:iotgw:device:a b"), Err(UrnError::Invalid { .. })));
    }

    #[test]
    fn serial_accepts_openssl_forms() {
        let a: Serial = "serial=0A1B".parse().unwrap();
        let b: Serial = "0a:1b".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "0a1b");
        assert!("xyz".parse::<Serial>().is_err());
    }

    #[test]
    fn generated_device_ids_parse() {
        let id = DeviceId::generate();
        assert_eq!(id.as_str().parse::<DeviceId>().unwrap(), id);
    }
}
