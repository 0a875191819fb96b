//! Key files of the firmware repository: Ed25519 private keys as PKCS#8 PEM (mode 0600) and
//! public keys as SPKI PEM (what a vendor hands the gateway operator to be delegated).
//!
//! Reads and writes key files only; the repository decides which key signs what.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _};

use super::metadata::SigningKey;
use crate::fsutil;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read key {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write key {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// The file is not an Ed25519 PKCS#8 (private) or SPKI (public) PEM.
    #[error("{path} is not an Ed25519 {kind} key PEM: {detail}")]
    Parse { path: PathBuf, kind: &'static str, detail: String },
    /// Refusing to overwrite a key: losing a private key loses the role.
    #[error("{0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
}

/// Reads a private key.
pub fn load_private(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(&text).map(SigningKey::new).map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        kind: "private",
        detail: e.to_string(),
    })
}

/// Reads a public key (SPKI PEM), or the public half of a private key file, as TUF writes it.
pub fn load_public(path: &Path) -> Result<super::metadata::PublicKey, KeyError> {
    load_verifying(path).map(|key| super::metadata::PublicKey::ed25519(&key))
}

/// Reads a public key (SPKI PEM), or the public half of a private key file.
pub fn load_verifying(path: &Path) -> Result<ed25519_dalek::VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
    if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(&text) {
        return Ok(key);
    }
    ed25519_dalek::SigningKey::from_pkcs8_pem(&text).map(|k| k.verifying_key()).map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        kind: "public",
        detail: e.to_string(),
    })
}

/// Writes a new private key (0600) and, beside it, `<name>.pub.pem`. Never overwrites.
pub fn save_new(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    if path.exists() {
        return Err(KeyError::Exists(path.to_owned()));
    }
    let write = |source| KeyError::Write { path: path.to_owned(), source };
    let pem = key.inner().to_pkcs8_pem(Default::default()).map_err(|e| write(std::io::Error::other(e.to_string())))?;
    fsutil::write_atomic_mode(path, pem.as_bytes(), 0o600).map_err(write)?;
    let public = key
        .inner()
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| write(std::io::Error::other(e.to_string())))?;
    let pub_path = public_path(path);
    let mut file =
        std::fs::File::create(&pub_path).map_err(|source| KeyError::Write { path: pub_path.clone(), source })?;
    file.write_all(public.as_bytes()).map_err(|source| KeyError::Write { path: pub_path, source })?;
    Ok(())
}

/// `dir/name.pem` → `dir/name.pub.pem`.
pub fn public_path(private: &Path) -> PathBuf {
    let stem = private.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    private.with_file_name(format!("{stem}.pub.pem"))
}

#[cfg(test)]
mod tests {
    use iotgw_test_support::services::{Scratch, scratch};

    use super::*;

    #[test]
    fn saved_key_loads_back_with_same_keyid_and_is_not_overwritten() {
        let dir = tempdir();
        let path = dir.join("vendor.pem");
        let key = SigningKey::generate();
        save_new(&path, &key).unwrap();
        assert_eq!(load_private(&path).unwrap().keyid(), key.keyid());
        assert_eq!(load_public(&public_path(&path)).unwrap().keyid(), key.keyid());
        assert!(matches!(save_new(&path, &SigningKey::generate()), Err(KeyError::Exists(_))));
    }

    fn tempdir() -> Scratch {
        scratch("ota-keys")
    }
}
