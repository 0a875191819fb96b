//! TUF metadata: the four top-level roles (root, targets, snapshot, timestamp) and delegated
//! vendor targets roles, in the shapes of the TUF specification (`signed` + `signatures`,
//! `_type`, `spec_version`, `version`, `expires`, key ids = sha256 of the canonical key).
//!
//! Reads: raw metadata bytes (from disk or the network, hostile). Writes: nothing; it signs and
//! verifies in memory. Signatures are Ed25519 over the OLPC canonical JSON of `signed`
//! (`olpc-cjson`), as TUF requires, so any JSON re-encoding of a document still verifies.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    str::FromStr,
};

use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// The TUF specification version these documents follow.
pub const SPEC_VERSION: &str = "1.0.31";
/// Key type and signature scheme of every key here.
pub const KEY_TYPE_ED25519: &str = "ed25519";

/// Why a metadata document was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Not JSON, or not the shape of the role.
    #[error("{role} metadata is malformed: {detail}")]
    Malformed { role: String, detail: String },
    /// `_type` names another role.
    #[error("expected {expected} metadata, found _type {found:?}")]
    WrongType { expected: &'static str, found: String },
    /// Fewer distinct authorised keys signed than the threshold.
    #[error("{role} metadata has {valid} valid signature(s), threshold is {threshold}")]
    Threshold { role: String, valid: usize, threshold: u32 },
    /// `expires` is in the past.
    #[error("{role} metadata expired at {expires}")]
    Expired { role: String, expires: OffsetDateTime },
    /// A lower version than the one already trusted (or accepted).
    #[error("{role} metadata version {offered} is lower than the trusted version {trusted} (rollback)")]
    Rollback { role: String, trusted: u64, offered: u64 },
    /// The version differs from what the referring role says.
    #[error("{role} metadata version {found} differs from the {expected} its referrer names")]
    VersionMismatch { role: String, expected: u64, found: u64 },
    /// Length or sha256 differs from what the referring role says.
    #[error("{what} does not match its signed length/hash")]
    HashMismatch { what: String },
    /// A key is not an Ed25519 key we can use.
    #[error("key {keyid} is unusable: {detail}")]
    BadKey { keyid: String, detail: String },
    /// A firmware version string that is not dotted numbers.
    #[error("{0:?} is not a firmware version (expected dotted numbers like 1.4.2)")]
    BadVersion(String),
}

/// Canonical JSON (OLPC, as TUF signs) of our own metadata types.
pub fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // Our metadata types hold only strings, integers, booleans, maps with string keys and
    // timestamps, all of which canonical JSON encodes; floats (which it refuses) never occur.
    try_canonical(value).expect("metadata types always serialise to canonical JSON")
}

/// Canonical JSON of any value; fails on what canonical JSON cannot encode (floats), which
/// hostile documents may contain.
pub fn try_canonical<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, olpc_cjson::CanonicalFormatter::new());
    value.serialize(&mut ser)?;
    Ok(buf)
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A key id: hex sha256 of the canonical JSON of the public key object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `keyval` of an Ed25519 key: the 32-byte public key in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVal {
    pub public: String,
}

/// A public key as TUF writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub keytype: String,
    pub scheme: String,
    pub keyval: KeyVal,
}

impl PublicKey {
    pub fn ed25519(key: &ed25519_dalek::VerifyingKey) -> Self {
        Self {
            keytype: KEY_TYPE_ED25519.into(),
            scheme: KEY_TYPE_ED25519.into(),
            keyval: KeyVal { public: hex::encode(key.as_bytes()) },
        }
    }

    pub fn keyid(&self) -> KeyId {
        KeyId(sha256_hex(&canonical(self)))
    }

    fn verifying_key(&self, keyid: &KeyId) -> Result<ed25519_dalek::VerifyingKey, MetadataError> {
        let bad = |detail: &str| MetadataError::BadKey { keyid: keyid.0.clone(), detail: detail.into() };
        if self.keytype != KEY_TYPE_ED25519 || self.scheme != KEY_TYPE_ED25519 {
            return Err(bad("only ed25519 keys are supported"));
        }
        let bytes: [u8; 32] = hex::decode(&self.keyval.public)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("public key is not 32 hex bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| bad(&e.to_string()))
    }
}

/// A private signing key with its TUF identity.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    pub fn new(key: ed25519_dalek::SigningKey) -> Self {
        Self { key }
    }

    pub fn generate() -> Self {
        Self::new(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::ed25519(&self.key.verifying_key())
    }

    pub fn keyid(&self) -> KeyId {
        self.public().keyid()
    }

    pub fn inner(&self) -> &ed25519_dalek::SigningKey {
        &self.key
    }
}

/// One signature: which key, and the hex Ed25519 signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub keyid: KeyId,
    pub sig: String,
}

/// A signed document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Signed<T> {
    pub signatures: Vec<Signature>,
    pub signed: T,
}

impl<T: Serialize> Signed<T> {
    /// Signs `signed` with every key given (in order, duplicates dropped).
    pub fn sign(signed: T, keys: &[&SigningKey]) -> Self {
        let bytes = canonical(&signed);
        let mut seen = BTreeSet::new();
        let signatures = keys
            .iter()
            .filter(|k| seen.insert(k.keyid()))
            .map(|k| Signature { keyid: k.keyid(), sig: hex::encode(k.key.sign(&bytes).to_bytes()) })
            .collect();
        Self { signatures, signed }
    }

    /// The document as stored and served (canonical JSON, so its hash is stable).
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical(self)
    }
}

/// Which keys may sign a role, and how many must.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    pub keyids: Vec<KeyId>,
    pub threshold: u32,
}

/// The `root` role: the keys of every top-level role.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Root {
    #[serde(rename = "_type")]
    pub kind: String,
    pub spec_version: String,
    pub consistent_snapshot: bool,
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub keys: BTreeMap<KeyId, PublicKey>,
    /// `root`, `targets`, `snapshot`, `timestamp`.
    pub roles: BTreeMap<String, RoleKeys>,
}

/// Hashes of a file; only sha256 is produced and required here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    pub sha256: String,
}

/// What the gateway and devices need to know about a firmware image beyond its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCustom {
    /// The firmware version the image installs (dotted numbers).
    pub version: String,
    /// Device classes the image is for.
    pub device_classes: Vec<String>,
}

/// One target file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFile {
    pub length: u64,
    pub hashes: Hashes,
    pub custom: TargetCustom,
}

/// A targets role delegated to a vendor key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedRole {
    pub name: String,
    pub keyids: Vec<KeyId>,
    pub threshold: u32,
    /// Path patterns (`prefix/*`) the role may sign for.
    pub paths: Vec<String>,
    pub terminating: bool,
}

impl DelegatedRole {
    /// Whether this role may sign for `path`: a pattern ending in `*` is a prefix, else exact.
    pub fn covers(&self, path: &str) -> bool {
        self.paths.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == pattern,
        })
    }

    pub fn role_keys(&self) -> RoleKeys {
        RoleKeys { keyids: self.keyids.clone(), threshold: self.threshold }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegations {
    pub keys: BTreeMap<KeyId, PublicKey>,
    pub roles: Vec<DelegatedRole>,
}

/// The top-level `targets` role, or a delegated vendor targets role.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Targets {
    #[serde(rename = "_type")]
    pub kind: String,
    pub spec_version: String,
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub targets: BTreeMap<String, TargetFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegations: Option<Delegations>,
}

/// What snapshot and timestamp say about another metadata file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaFile {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<Hashes>,
}

/// `snapshot` (meta = every targets role file) and `timestamp` (meta = `snapshot.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    #[serde(rename = "_type")]
    pub kind: String,
    pub spec_version: String,
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub meta: BTreeMap<String, MetaFile>,
}

/// The `_type` of a role, checked on every verification.
pub trait Role: Serialize + DeserializeOwned {
    const TYPE: &'static str;
    fn version(&self) -> u64;
    fn expires(&self) -> OffsetDateTime;
}

/// Implements `Role` for a role type; `inner` names the field holding `version` and
/// `expires` when they are not the type's own (snapshot and timestamp wrap a `Meta`).
macro_rules! role {
    ($name:ident, $ty:literal $(, $inner:tt)?) => {
        impl Role for $name {
            const TYPE: &'static str = $ty;
            fn version(&self) -> u64 {
                self$(.$inner)?.version
            }
            fn expires(&self) -> OffsetDateTime {
                self$(.$inner)?.expires
            }
        }
    };
}
role!(Root, "root");
role!(Targets, "targets");

/// Snapshot and timestamp share a shape; the wrapper fixes which `_type` is expected.
macro_rules! meta_role {
    ($name:ident, $ty:literal) => {
        #[derive(Clone, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Meta);
        role!($name, $ty, 0);
    };
}
meta_role!(Snapshot, "snapshot");
meta_role!(Timestamp, "timestamp");

/// An `expires` time `lifetime` from now, in whole seconds.
pub fn header_now(lifetime: time::Duration) -> OffsetDateTime {
    // Whole seconds, so `expires` prints as TUF's `YYYY-MM-DDTHH:MM:SSZ`.
    let now = OffsetDateTime::now_utc();
    (now + lifetime).replace_nanosecond(0).unwrap_or(now + lifetime)
}

/// Parses and checks the signatures of `raw` as role `T` named `role`, signed by at least
/// `role_keys.threshold` distinct keys of `role_keys` found in `keys`. Does not check expiry
/// (callers decide: an intermediate root in a rotation may be expired).
pub fn verify<T: Role>(
    raw: &[u8],
    role: &str,
    keys: &BTreeMap<KeyId, PublicKey>,
    role_keys: &RoleKeys,
) -> Result<T, MetadataError> {
    let malformed = |detail: String| MetadataError::Malformed { role: role.to_owned(), detail };
    let document: Signed<serde_json::Value> = serde_json::from_slice(raw).map_err(|e| malformed(e.to_string()))?;
    let bytes = try_canonical(&document.signed).map_err(|e| malformed(e.to_string()))?;
    let authorised: BTreeSet<&KeyId> = role_keys.keyids.iter().collect();
    let mut valid = BTreeSet::new();
    for signature in &document.signatures {
        if !authorised.contains(&signature.keyid) || valid.contains(&signature.keyid) {
            continue;
        }
        let Some(public) = keys.get(&signature.keyid) else { continue };
        // A key whose id does not match its content cannot count: keyids are content hashes.
        if public.keyid() != signature.keyid {
            continue;
        }
        let Ok(verifying) = public.verifying_key(&signature.keyid) else { continue };
        let Some(sig) = hex::decode(&signature.sig).ok().and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
        else {
            continue;
        };
        if verifying.verify(&bytes, &sig).is_ok() {
            valid.insert(signature.keyid.clone());
        }
    }
    // A zero threshold would let an unsigned document through.
    if role_keys.threshold == 0 || valid.len() < role_keys.threshold as usize {
        return Err(MetadataError::Threshold {
            role: role.to_owned(),
            valid: valid.len(),
            threshold: role_keys.threshold,
        });
    }
    let found = document.signed.get("_type").and_then(|t| t.as_str()).unwrap_or_default().to_owned();
    if found != T::TYPE {
        return Err(MetadataError::WrongType { expected: T::TYPE, found });
    }
    serde_json::from_value(document.signed).map_err(|e| malformed(e.to_string()))
}

/// Refuses metadata whose `expires` is not after `now`.
pub fn check_expiry<T: Role>(doc: &T, role: &str, now: OffsetDateTime) -> Result<(), MetadataError> {
    if doc.expires() <= now {
        return Err(MetadataError::Expired { role: role.to_owned(), expires: doc.expires() });
    }
    Ok(())
}

/// Refuses a version lower than the trusted one.
pub fn check_rollback(role: &str, trusted: u64, offered: u64) -> Result<(), MetadataError> {
    if offered < trusted {
        return Err(MetadataError::Rollback { role: role.to_owned(), trusted, offered });
    }
    Ok(())
}

/// The keys the root role trusts for a top-level role.
pub fn root_role<'a>(root: &'a Root, role: &str) -> Result<&'a RoleKeys, MetadataError> {
    root.roles
        .get(role)
        .ok_or_else(|| MetadataError::Malformed { role: "root".into(), detail: format!("no {role} role") })
}

/// A firmware version: dotted non-negative integers, compared numerically (1.10 > 1.9).
#[derive(Clone, Debug)]
pub struct FirmwareVersion(Vec<u64>);

impl PartialEq for FirmwareVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for FirmwareVersion {}

impl FromStr for FirmwareVersion {
    type Err = MetadataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Result<Vec<u64>, _> = s.split('.').map(str::parse).collect();
        match parts {
            Ok(parts) if !parts.is_empty() => Ok(Self(parts)),
            _ => Err(MetadataError::BadVersion(s.to_owned())),
        }
    }
}

impl Ord for FirmwareVersion {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // 1.2 == 1.2.0: compare with missing parts as zeros.
        let len = self.0.len().max(other.0.len());
        let at = |v: &Vec<u64>, i| v.get(i).copied().unwrap_or(0);
        (0..len).map(|i| at(&self.0, i).cmp(&at(&other.0, i))).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
    }
}

impl PartialOrd for FirmwareVersion {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(version: u64) -> Targets {
        Targets {
            kind: "targets".into(),
            spec_version: SPEC_VERSION.into(),
            version,
            expires: header_now(time::Duration::days(1)),
            targets: BTreeMap::new(),
            delegations: None,
        }
    }

    fn keyring(keys: &[&SigningKey]) -> (BTreeMap<KeyId, PublicKey>, Vec<KeyId>) {
        let map = keys.iter().map(|k| (k.keyid(), k.public())).collect();
        (map, keys.iter().map(|k| k.keyid()).collect())
    }

    #[test]
    fn canonical_json_sorts_keys_and_has_no_spaces() {
        let value = serde_json::json!({"b": 1, "a": {"d": [1, 2], "c": "x"}});
        assert_eq!(canonical(&value), br#"{"a":{"c":"x","d":[1,2]},"b":1}"#);
    }

    #[test]
    fn signed_document_verifies_with_threshold_of_distinct_keys() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let (keys, keyids) = keyring(&[&a, &b]);
        let doc = Signed::sign(targets(3), &[&a, &a]).to_bytes();
        let two = RoleKeys { keyids: keyids.clone(), threshold: 2 };
        // The same key twice counts once.
        let err = verify::<Targets>(&doc, "targets", &keys, &two).unwrap_err();
        assert!(matches!(err, MetadataError::Threshold { valid: 1, threshold: 2, .. }), "{err}");
        let doc = Signed::sign(targets(3), &[&a, &b]).to_bytes();
        assert_eq!(verify::<Targets>(&doc, "targets", &keys, &two).unwrap().version, 3);
    }

    #[test]
    fn tampered_signed_part_fails_signature() {
        let a = SigningKey::generate();
        let (keys, keyids) = keyring(&[&a]);
        let doc = String::from_utf8(Signed::sign(targets(3), &[&a]).to_bytes()).unwrap();
        let tampered = doc.replace("\"version\":3", "\"version\":4");
        let err = verify::<Targets>(tampered.as_bytes(), "targets", &keys, &RoleKeys { keyids, threshold: 1 });
        assert!(matches!(err, Err(MetadataError::Threshold { valid: 0, .. })));
    }

    #[test]
    fn float_in_hostile_metadata_is_an_error_not_a_panic() {
        let a = SigningKey::generate();
        let (keys, keyids) = keyring(&[&a]);
        let doc = br#"{"signatures":[],"signed":{"_type":"targets","version":1.5}}"#;
        let err = verify::<Targets>(doc, "targets", &keys, &RoleKeys { keyids, threshold: 1 }).unwrap_err();
        assert!(matches!(err, MetadataError::Malformed { .. }), "{err}");
    }

    #[test]
    fn wrong_role_type_is_refused_even_if_signed() {
        let a = SigningKey::generate();
        let (keys, keyids) = keyring(&[&a]);
        let doc = Signed::sign(targets(1), &[&a]).to_bytes();
        let err = verify::<Snapshot>(&doc, "snapshot", &keys, &RoleKeys { keyids, threshold: 1 }).unwrap_err();
        assert!(matches!(err, MetadataError::WrongType { expected: "snapshot", .. }), "{err}");
    }

    #[test]
    fn expired_and_rollback_are_refused() {
        let mut t = targets(2);
        t.expires = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        assert!(matches!(check_expiry(&t, "targets", OffsetDateTime::now_utc()), Err(MetadataError::Expired { .. })));
        assert!(matches!(check_rollback("targets", 5, 4), Err(MetadataError::Rollback { .. })));
        assert!(check_rollback("targets", 5, 5).is_ok());
    }

    #[test]
    fn firmware_versions_compare_numerically() {
        let v = |s: &str| s.parse::<FirmwareVersion>().unwrap();
        assert!(v("1.10") > v("1.9"));
        assert_eq!(v("1.2"), v("1.2"));
        assert_eq!(v("1.2.0"), v("1.2"));
        assert!("1.x".parse::<FirmwareVersion>().is_err());
    }

    #[test]
    fn delegation_paths_are_prefix_or_exact() {
        let role = DelegatedRole {
            name: "acme".into(),
            keyids: vec![],
            threshold: 1,
            paths: vec!["acme/*".into(), "shared/readme".into()],
            terminating: true,
        };
        assert!(role.covers("acme/cam-1.bin"));
        assert!(role.covers("shared/readme"));
        assert!(!role.covers("other/cam.bin"));
    }
}
