//! The checks between an announced URL and a class, in order: the URL (`url`), the cache
//! (`store`), the file (`fetch`, size-capped), what the file says of itself (its `mud-url`,
//! `mud-signature` and `cache-validity`), the signature's URL, the signature (`signature`), and
//! the import (`policy::mud::import`). The first that fails is the outcome, said exactly;
//! nothing is stored here (the MUD step stores what the policy accepted).
use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use reqwest::Url;
use rusqlite::Connection;
use serde_json::Value;

use super::{
    config::{Config, DEFAULT_FILE_CACHE_VALIDITY_HOURS},
    fetch::{FetchError, Fetcher},
    signature::{self, Anchors, SignatureError},
    store::{self, CachedFile, StoreError},
    url::{self as mud_url, UrlError},
};
use crate::untrusted;

/// RFC 8520 §3.5: `cache-validity` is 1..=168 hours.
const FILE_CACHE_VALIDITY_HOURS: std::ops::RangeInclusive<u64> = 1..=168;

/// Why an announced URL did not become (or stay) a class. Device- and file-controlled text in
/// the messages is escaped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MudError {
    #[error("MUD URL refused: {0}")]
    Url(UrlError),
    #[error("MUD file: {0}")]
    Fetch(FetchError),
    #[error("MUD file refused: {0}")]
    File(String),
    #[error("signature URL refused: {0}")]
    SignatureUrl(UrlError),
    #[error("signature file: {0}")]
    SignatureFetch(FetchError),
    #[error("signature refused: {0}")]
    Signature(SignatureError),
    #[error("MUD file not imported: {0}")]
    Import(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A URL's class, as the checks found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The cached file is still valid: nothing was fetched.
    Cached(CachedFile),
    /// Fetched and checked now; `rules` and `refused` (ACEs not imported) are what the import said.
    Fetched { file: CachedFile, rules: usize, refused: usize },
}

impl Resolved {
    pub fn file(&self) -> &CachedFile {
        match self {
            Resolved::Cached(file) | Resolved::Fetched { file, .. } => file,
        }
    }
}

/// What the file says of itself.
struct Claims {
    signature: String,
    cache_validity_hours: u64,
}

/// The checks, with what they need.
#[derive(Debug)]
pub struct Resolver {
    config: Config,
    fetcher: Fetcher,
    anchors: Anchors,
}

impl Resolver {
    /// From `[mud]`: reads the anchors file and builds the HTTPS client.
    pub fn new(config: &Config) -> Result<Self, String> {
        let path = config.trust_anchors.as_ref().ok_or("mud.trust_anchors is not set")?;
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let anchors = Anchors::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        let fetcher = Fetcher::new(config).map_err(|e| e.to_string())?;
        Ok(Self { config: config.clone(), fetcher, anchors })
    }

    /// Runs the checks on an announced URL at `now`. `store` holds the `mud_files` table.
    pub async fn resolve(
        &self,
        announced: &[u8],
        store: &Mutex<Connection>,
        now: SystemTime,
    ) -> Result<Resolved, MudError> {
        let url = mud_url::check(announced, &self.config).map_err(MudError::Url)?;
        let lock = || store.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = store::file(&lock(), url.as_str())?;
        if let Some(cached) = cached.filter(|file| file.valid_until > store::millis(now)) {
            return Ok(Resolved::Cached(cached));
        }
        let file = self.fetcher.fetch(&url, self.config.max_file_bytes).await.map_err(MudError::Fetch)?;
        let json = std::str::from_utf8(&file).map_err(|_| MudError::File("not UTF-8".into()))?;
        let claims = claims(json, &url)?;
        let signature_url =
            mud_url::check(claims.signature.as_bytes(), &self.config).map_err(MudError::SignatureUrl)?;
        let signature = self
            .fetcher
            .fetch(&signature_url, self.config.max_signature_bytes)
            .await
            .map_err(MudError::SignatureFetch)?;
        let signer = signature::verify(&file, &signature, &self.anchors, now).map_err(MudError::Signature)?;
        let class_id = store::class_id_for(&lock(), url.as_str())?;
        let imported = crate::policy::mud::import(json, &store::class_name(class_id), class_id)
            .map_err(|error| MudError::Import(untrusted::escape(&error.to_string()).into_owned()))?;
        let hours = claims
            .cache_validity_hours
            .clamp(u64::from(self.config.min_cache_validity_hours), u64::from(self.config.max_cache_validity_hours));
        let valid_until = now + Duration::from_secs(hours * 3_600);
        let file = CachedFile {
            url: url.to_string(),
            class_id,
            sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &file)),
            signer: untrusted::escape(&signer.subject).into_owned(),
            fetched: store::millis(now),
            valid_until: store::millis(valid_until),
            policy: imported.toml,
        };
        Ok(Resolved::Fetched { file, rules: imported.rules, refused: imported.refused.len() })
    }
}

/// The file's `mud-url` (which must be the URL it came from), `mud-signature` (required: only
/// signed files are taken) and `cache-validity` (RFC 8520 §3.5, 48 hours when absent).
fn claims(json: &str, fetched_from: &Url) -> Result<Claims, MudError> {
    let refused = |reason: String| MudError::File(reason);
    let root: Value = serde_json::from_str(json).map_err(|e| refused(format!("not JSON: {e}")))?;
    let mud = root.get("ietf-mud:mud").ok_or_else(|| refused("no ietf-mud:mud container".into()))?;
    let text = |member: &str| mud.get(member).and_then(Value::as_str);
    let claimed = text("mud-url").ok_or_else(|| refused("no mud-url".into()))?;
    if Url::parse(claimed).ok().as_ref() != Some(fetched_from) {
        return Err(refused(format!(
            "its mud-url {:?} is not the URL it was fetched from",
            untrusted::escape_bounded(claimed, 256)
        )));
    }
    let signature =
        text("mud-signature").ok_or_else(|| refused("no mud-signature: only signed files are taken".into()))?;
    let cache_validity_hours = match mud.get("cache-validity") {
        None => u64::from(DEFAULT_FILE_CACHE_VALIDITY_HOURS),
        Some(value) => value
            .as_u64()
            .filter(|hours| FILE_CACHE_VALIDITY_HOURS.contains(hours))
            .ok_or_else(|| refused(format!("cache-validity {value} is not 1..=168 hours")))?,
    };
    Ok(Claims { signature: signature.to_owned(), cache_validity_hours })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://mud.example.com/bulb.json").unwrap()
    }

    #[test]
    fn claims_read_signature_and_validity() {
        let json = r#"{"ietf-mud:mud":{"mud-url":"https://mud.example.com/bulb.json",
            "mud-signature":"https://mud.example.com/bulb.p7s","cache-validity":12}}"#;
        let read = claims(json, &url()).unwrap();
        assert_eq!(read.signature, "https://mud.example.com/bulb.p7s");
        assert_eq!(read.cache_validity_hours, 12);
        let json = r#"{"ietf-mud:mud":{"mud-url":"https://mud.example.com/bulb.json","mud-signature":"x"}}"#;
        assert_eq!(claims(json, &url()).unwrap().cache_validity_hours, 48);
    }

    #[test]
    fn claims_refuse_another_url_no_signature_and_bad_validity() {
        let refused = |json: &str| claims(json, &url()).err().unwrap().to_string();
        assert!(
            refused(r#"{"ietf-mud:mud":{"mud-url":"https://mud.example.com/other.json","mud-signature":"x"}}"#)
                .contains("not the URL")
        );
        assert!(
            refused(r#"{"ietf-mud:mud":{"mud-url":"https://mud.example.com/bulb.json"}}"#).contains("mud-signature")
        );
        for validity in ["0", "169", "\"48\"", "-1"] {
            let json = format!(
                r#"{{"ietf-mud:mud":{{"mud-url":"https://mud.example.com/bulb.json","mud-signature":"x","cache-validity":{validity}}}}}"#
            );
            assert!(refused(&json).contains("cache-validity"), "{validity}");
        }
        assert!(refused("[").contains("not JSON"));
        let forged = "{\"ietf-mud:mud\":{\"mud-url\":\"https://x/\\n\\u202e\"}}";
        assert!(untrusted::is_safe(&refused(forged)));
    }
}
