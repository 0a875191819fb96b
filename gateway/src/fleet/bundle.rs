//! A signed policy bundle: the whole set of policy files the hub publishes for a site or a
//! group, with a version that only grows per scope. The hub signs it (Ed25519, the key in its
//! `signing_key`), each gateway verifies it with the public key it was provisioned with
//! (`fleet.bundle_key`) before it looks at anything else in it.
//!
//! Signed bytes: `SIGNING_DOMAIN`, then the canonical JSON (OLPC, as the OTA metadata signs) of
//! every field but the signature, so the signature of a bundle can never be taken for that of
//! another kind of document, and any JSON re-encoding of the same bundle still verifies.
//! Unknown fields are refused: a field the signature does not cover must not be trusted.
//! Reads and writes nothing; the hub (`hub::bundles`) publishes, `bundle_watch` applies.
use std::{collections::BTreeMap, fmt, str::FromStr};

use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};

use super::subjects;

/// Format version of `Bundle`.
pub const VERSION: u32 = 1;
/// Prefix of the signed bytes (domain separation).
pub const SIGNING_DOMAIN: &[u8] = b"iotgw policy bundle v1\n";
/// Most files in one bundle.
pub const MAX_FILES: usize = 256;
/// Largest policy file in a bundle.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// Largest sum of a bundle's files; with JSON escaping the bundle stays within NATS's default
/// message size (1 MiB).
pub const MAX_TOTAL_BYTES: usize = 640 * 1024;
/// Largest encoded bundle a gateway reads.
pub const MAX_ENCODED_BYTES: usize = 1024 * 1024;
/// Longest file name (`.toml` included) and actor name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Not JSON, or not the shape of a bundle (unknown fields included).
    #[error("not a policy bundle: {0}")]
    Malformed(String),
    #[error("bundle format version {0} is not supported (this gateway reads version {VERSION})")]
    FormatVersion(u32),
    /// The signature is not the key's over these contents: altered, or signed by another key.
    #[error("signature does not verify with the bundle key (altered, or signed with another key)")]
    BadSignature,
    /// A file name that is not a plain `*.toml` name.
    #[error("file name {0:?} is not a policy file name (1 to 64 of A-Z a-z 0-9 . - _, ending .toml)")]
    BadFileName(String),
    #[error("actor {0:?} must be 1 to 64 of A-Z a-z 0-9 . - _ @")]
    BadActor(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("bundle holds no policy file")]
    Empty,
    #[error("bad scope {0:?}: expected site:<site> or group:<group>")]
    BadScope(String),
}

/// Whom a bundle is for: every gateway of a site, or every gateway in a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Site(String),
    Group(String),
}

impl Scope {
    /// Its key in the `iotgw_policy` bucket.
    pub fn kv_key(&self) -> String {
        match self {
            Self::Site(site) => subjects::site_bundle_key(site),
            Self::Group(group) => subjects::group_bundle_key(group),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Site(site) => write!(f, "site:{site}"),
            Self::Group(group) => write!(f, "group:{group}"),
        }
    }
}

impl FromStr for Scope {
    type Err = BundleError;

    /// `site:<site>` or `group:<group>`, each a NATS token.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BundleError::BadScope(text.to_owned());
        let (kind, name) = text.split_once(':').ok_or_else(bad)?;
        subjects::check_token(name).map_err(|_| bad())?;
        match kind {
            "site" => Ok(Self::Site(name.to_owned())),
            "group" => Ok(Self::Group(name.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One published policy, as it travels in the bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub v: u32,
    pub scope: Scope,
    /// One more than the scope's previous bundle.
    pub version: u64,
    /// When the hub created it (unix ms).
    pub created_ms: i64,
    /// Who published it at the hub; gateways audit it as `hub:<actor>`.
    pub actor: String,
    /// Policy file name → TOML text: the gateway's whole policy folder.
    pub files: BTreeMap<String, String>,
    /// Hex Ed25519 signature over `signed_bytes`.
    pub signature: String,
}

/// What the signature covers: every field of `Bundle` but the signature.
#[derive(Serialize)]
struct Signed<'a> {
    v: u32,
    scope: &'a Scope,
    version: u64,
    created_ms: i64,
    actor: &'a str,
    files: &'a BTreeMap<String, String>,
}

impl Bundle {
    /// An unsigned bundle; `sign` it before publishing.
    pub fn new(scope: Scope, version: u64, created_ms: i64, actor: &str, files: BTreeMap<String, String>) -> Self {
        Self { v: VERSION, scope, version, created_ms, actor: actor.to_owned(), files, signature: String::new() }
    }

    /// The bytes the signature is over.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let signed = Signed {
            v: self.v,
            scope: &self.scope,
            version: self.version,
            created_ms: self.created_ms,
            actor: &self.actor,
            files: &self.files,
        };
        let mut bytes = SIGNING_DOMAIN.to_vec();
        // Strings and integers only: canonical JSON encodes them all.
        bytes.extend(crate::ota::metadata::canonical(&signed));
        bytes
    }

    /// Checks names and sizes, then signs.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) -> Result<(), BundleError> {
        self.check_contents()?;
        self.signature = hex::encode(key.sign(&self.signed_bytes()).to_bytes());
        Ok(())
    }

    /// Verifies the signature first, then that the contents are a usable policy folder.
    pub fn verify(&self, key: &ed25519_dalek::VerifyingKey) -> Result<(), BundleError> {
        if self.v != VERSION {
            return Err(BundleError::FormatVersion(self.v));
        }
        let signature = hex::decode(&self.signature)
            .ok()
            .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
            .ok_or(BundleError::BadSignature)?;
        key.verify(&self.signed_bytes(), &signature).map_err(|_| BundleError::BadSignature)?;
        self.check_contents()
    }

    /// Reads a bundle as it came from the bucket (hostile until `verify` passed).
    pub fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_ENCODED_BYTES {
            return Err(BundleError::TooLarge(format!(
                "bundle of {} bytes (at most {MAX_ENCODED_BYTES})",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))
    }

    /// The bytes put into the bucket.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, integers and maps with string keys: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn check_contents(&self) -> Result<(), BundleError> {
        check_actor(&self.actor)?;
        if self.files.is_empty() {
            return Err(BundleError::Empty);
        }
        if self.files.len() > MAX_FILES {
            return Err(BundleError::TooLarge(format!("{} files (at most {MAX_FILES})", self.files.len())));
        }
        let mut total = 0;
        for (name, text) in &self.files {
            check_file_name(name)?;
            if text.len() > MAX_FILE_BYTES {
                return Err(BundleError::TooLarge(format!(
                    "{name} has {} bytes (at most {MAX_FILE_BYTES})",
                    text.len()
                )));
            }
            total += text.len();
        }
        if total > MAX_TOTAL_BYTES {
            return Err(BundleError::TooLarge(format!("files total {total} bytes (at most {MAX_TOTAL_BYTES})")));
        }
        Ok(())
    }
}

/// A plain file name ending `.toml` that cannot name anything outside the policy folder nor
/// a hidden file: 1 to 64 of `A-Z a-z 0-9 . - _`, not starting with a dot.
pub fn check_file_name(name: &str) -> Result<(), BundleError> {
    let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let stem = name.strip_suffix(".toml").unwrap_or("");
    if plain && !stem.is_empty() && !name.starts_with('.') && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(BundleError::BadFileName(name.to_owned()))
    }
}

/// An actor name the gateways can audit as `hub:<actor>`.
pub fn check_actor(actor: &str) -> Result<(), BundleError> {
    let plain = actor.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'));
    if plain && !actor.is_empty() && actor.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(BundleError::BadActor(actor.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)
    }

    fn bundle() -> Bundle {
        let files = BTreeMap::from([("base.toml".to_owned(), "[defaults]\n".to_owned())]);
        Bundle::new(Scope::Site("berlin-3".into()), 4, 1_700_000_000_000, "alice", files)
    }

    #[test]
    fn a_signed_bundle_verifies_after_a_round_trip_through_json() {
        let key = key();
        let mut signed = bundle();
        signed.sign(&key).expect("sign");
        let decoded = Bundle::decode(&signed.encode()).expect("decode");
        assert_eq!(decoded, signed);
        decoded.verify(&key.verifying_key()).expect("verifies");
        assert_eq!(serde_json::to_value(&decoded).unwrap()["scope"], "site:berlin-3");
    }

    #[test]
    fn any_change_or_another_key_breaks_the_signature() {
        let key = key();
        let mut signed = bundle();
        signed.sign(&key).expect("sign");
        let public = key.verifying_key();
        let mut altered = signed.clone();
        altered.files.insert("base.toml".into(), "[defaults]\npolicy_miss = \"pass\"\n".into());
        let mut newer = signed.clone();
        newer.version += 1;
        let mut moved = signed.clone();
        moved.scope = Scope::Group("retail".into());
        for tampered in [altered, newer, moved] {
            assert!(matches!(tampered.verify(&public), Err(BundleError::BadSignature)), "{tampered:?}");
        }
        assert!(matches!(signed.verify(&self::key().verifying_key()), Err(BundleError::BadSignature)));
        let mut garbage = signed.clone();
        garbage.signature = "zz".into();
        assert!(matches!(garbage.verify(&public), Err(BundleError::BadSignature)));
    }

    #[test]
    fn the_signature_covers_a_domain_prefix() {
        assert!(bundle().signed_bytes().starts_with(SIGNING_DOMAIN));
    }

    #[test]
    fn unknown_fields_and_other_format_versions_are_refused() {
        let mut signed = bundle();
        signed.sign(&key()).expect("sign");
        let mut json = serde_json::to_value(&signed).unwrap();
        json["extra"] = "unsigned".into();
        assert!(matches!(Bundle::decode(json.to_string().as_bytes()), Err(BundleError::Malformed(_))));
        assert!(matches!(Bundle::decode(&vec![b' '; MAX_ENCODED_BYTES + 1]), Err(BundleError::TooLarge(_))));
        let mut v2 = signed;
        v2.v = 2;
        assert!(matches!(v2.verify(&key().verifying_key()), Err(BundleError::FormatVersion(2))));
    }

    #[test]
    fn names_that_leave_the_folder_or_are_not_toml_are_refused() {
        for bad in ["../x.toml", "a/b.toml", ".toml", ".hidden.toml", "a.txt", "a b.toml", "", &"x".repeat(70)] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        check_file_name("base-iot_2.toml").expect("plain name");
        let mut signed = bundle();
        signed.files.insert("../../etc/passwd.toml".into(), String::new());
        assert!(matches!(signed.sign(&key()), Err(BundleError::BadFileName(_))));
        let mut huge = bundle();
        huge.files.insert("big.toml".into(), "#".repeat(MAX_FILE_BYTES + 1));
        assert!(matches!(huge.sign(&key()), Err(BundleError::TooLarge(_))));
        let mut empty = bundle();
        empty.files.clear();
        assert!(matches!(empty.sign(&key()), Err(BundleError::Empty)));
        let mut actor = bundle();
        actor.actor = "alice\nbob".into();
        assert!(matches!(actor.sign(&key()), Err(BundleError::BadActor(_))));
    }

    #[test]
    fn scopes_parse_from_the_command_line_form() {
        assert_eq!("site:berlin-3".parse::<Scope>().unwrap(), Scope::Site("berlin-3".into()));
        assert_eq!("group:retail".parse::<Scope>().unwrap().kv_key(), "group.retail");
        for bad in ["berlin", "site:", "site:a.b", "region:x"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }
}
