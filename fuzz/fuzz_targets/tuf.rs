//! OTA metadata (TUF): `ota::metadata::verify` for each role (root, targets, snapshot,
//! timestamp; what the repository and the device client run on downloaded metadata), then the
//! checks callers make on a verified document (expiry, rollback, delegations, firmware
//! versions). The first input byte picks the role and whether the harness signs the rest with
//! the trusted key first: unsigned input reaches the signature checks only, signed input the
//! typed parsing behind them.
#![no_main]
use std::{collections::BTreeMap, sync::OnceLock};

use iotgw::ota::metadata::{
    self, FirmwareVersion, KeyId, PublicKey, Role, RoleKeys, Root, Signed, SigningKey, Snapshot, Targets, Timestamp,
};

struct Trust {
    key: SigningKey,
    keys: BTreeMap<KeyId, PublicKey>,
    role_keys: RoleKeys,
}

fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let key = SigningKey::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
        let keys = BTreeMap::from([(key.keyid(), key.public())]);
        let role_keys = RoleKeys { keyids: vec![key.keyid()], threshold: 1 };
        Trust { key, keys, role_keys }
    })
}

fn check<T: Role>(raw: &[u8], role: &str) -> Option<T> {
    let trust = trust();
    let doc = metadata::verify::<T>(raw, role, &trust.keys, &trust.role_keys).ok()?;
    let _ = metadata::check_expiry(&doc, role, time::OffsetDateTime::UNIX_EPOCH);
    let _ = metadata::check_rollback(role, 1, doc.version());
    Some(doc)
}

fn targets(doc: &Targets) {
    for (path, file) in &doc.targets {
        let _ = file.custom.version.parse::<FirmwareVersion>().map(|v| v.to_string());
        if let Some(delegations) = &doc.delegations {
            for role in &delegations.roles {
                let _ = role.covers(path);
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let signed;
    let raw = if mode & 0x80 != 0 {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
        // Canonical JSON has no floats: such a document is refused unsigned (mode 0) instead.
        if metadata::try_canonical(&value).is_err() {
            return;
        }
        signed = Signed::sign(value, &[&trust().key]).to_bytes();
        &signed[..]
    } else {
        rest
    };
    match mode & 0x03 {
        0 => {
            if let Some(root) = check::<Root>(raw, "root") {
                for role in ["root", "targets", "snapshot", "timestamp"] {
                    let _ = metadata::root_role(&root, role);
                }
            }
        }
        1 => {
            if let Some(doc) = check::<Targets>(raw, "targets") {
                targets(&doc);
            }
        }
        2 => {
            let _ = check::<Snapshot>(raw, "snapshot");
        }
        _ => {
            let _ = check::<Timestamp>(raw, "timestamp");
        }
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = text.parse::<FirmwareVersion>();
    }
});
