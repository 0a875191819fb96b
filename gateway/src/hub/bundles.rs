//! Publishing policy bundles: the hub reads a policy folder, runs on it the checks
//! `iotgw policy check` runs, signs it with `signing_key` as the next version of its scope and
//! puts it into the `iotgw_policy` bucket, where every gateway of the scope watches
//! (`fleet::bundle_watch`). PostgreSQL keeps every version published (`policy_bundles`) and
//! who published it (`hub_audit`).
//!
//! The version is one more than the highest the table or the bucket holds, taken under a
//! per-scope lock; the row is written in a transaction that commits only after the bucket took
//! the bundle, and the bucket put expects the revision read, so two publishers never both win.
//! Reads the policy folder, the signing key, the table and the bucket; writes the latter two.
use std::{collections::BTreeMap, path::Path};

use async_nats::jetstream::{
    self, kv,
    stream::{self, DiscardPolicy, StorageType},
};

use super::Hub;
use crate::{
    fleet::{
        bundle::{self, Bundle, BundleError, Scope},
        subjects,
    },
    policy::PolicyError,
};

/// Versions of each key the bucket keeps (the table keeps them all).
pub const BUCKET_HISTORY: i64 = 16;

/// Why a bundle was not published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The policy files fail `iotgw policy check`; nothing was published.
    #[error("the policy files fail the checks ({} error(s))", .0.len())]
    Policy(Vec<PolicyError>),
    #[error("cannot read the policy folder {dir}: {source}")]
    Read { dir: String, source: std::io::Error },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("the hub configuration has no signing_key")]
    NoSigningKey,
    #[error("signing_key: {0}")]
    Key(#[from] crate::ota::keys::KeyError),
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// The bucket could not be reached or refused the put (another publisher was first).
    #[error("bucket {bucket}: {detail}")]
    Bucket { bucket: &'static str, detail: String },
}

/// What was published.
#[derive(Clone, Debug)]
pub struct Published {
    pub scope: Scope,
    pub version: u64,
    /// The bucket's revision of the entry.
    pub revision: u64,
    pub files: usize,
}

fn bucket_error(error: impl std::fmt::Display) -> PublishError {
    PublishError::Bucket { bucket: subjects::POLICY_BUCKET, detail: error.to_string() }
}

/// Creates the `iotgw_policy` bucket if there is none, and opens it.
pub async fn ensure_bucket(js: &jetstream::Context) -> Result<kv::Store, async_nats::Error> {
    if let Ok(store) = js.get_key_value(subjects::POLICY_BUCKET).await {
        return Ok(store);
    }
    // The bucket's stream, as `create_key_value` makes it: that call first asks for the
    // account's information, which async-nats 0.52 cannot parse from nats-server 2.9 (and
    // does not use).
    let bucket = subjects::POLICY_BUCKET;
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("signed iotgw policy bundles, keys site.<site> and group.<group>".to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: BUCKET_HISTORY,
        max_message_size: i32::try_from(bundle::MAX_ENCODED_BYTES).unwrap_or(i32::MAX),
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    js.create_stream(config).await?;
    Ok(js.get_key_value(bucket).await?)
}

/// The `*.toml` files of `dir` (as the gateway's loader takes them), each name checked as a
/// bundle file name.
pub fn read_policy_dir(dir: &Path) -> Result<BTreeMap<String, String>, PublishError> {
    let read = |source| PublishError::Read { dir: dir.display().to_string(), source };
    let mut files = BTreeMap::new();
    for path in crate::policy::load::toml_files(dir).map_err(read)? {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        bundle::check_file_name(&name)?;
        files.insert(name, std::fs::read_to_string(&path).map_err(read)?);
    }
    Ok(files)
}

/// A policy folder that passed the checks, with the key to sign it: what `publish` takes.
pub struct Draft {
    key: crate::ota::metadata::SigningKey,
    actor: String,
    files: BTreeMap<String, String>,
}

/// Reads the signing key and the policy folder `dir` and runs on its files the checks
/// `iotgw policy check` runs; touches neither the bucket nor the database.
pub fn prepare(signing_key: Option<&Path>, dir: &Path, actor: &str) -> Result<Draft, PublishError> {
    bundle::check_actor(actor)?;
    let key = crate::ota::keys::load_private(signing_key.ok_or(PublishError::NoSigningKey)?)?;
    let files = read_policy_dir(dir)?;
    // The very texts signed are the ones checked, with their folder's paths in the messages.
    let sources: Vec<_> = files.iter().map(|(name, text)| (dir.join(name), text.clone())).collect();
    crate::policy::check_sources(&sources, crate::respond::rules::policy_errors).map_err(PublishError::Policy)?;
    Ok(Draft { key, actor: actor.to_owned(), files })
}

/// Signs `draft` as the next version for `scope`, records it and puts it into the bucket.
pub async fn publish(hub: &Hub, scope: &Scope, draft: Draft) -> Result<Published, PublishError> {
    let Draft { key, actor, files } = draft;
    let actor = actor.as_str();
    let store = ensure_bucket(&hub.jetstream).await.map_err(bucket_error)?;
    let kv_key = scope.kv_key();
    let mut tx = hub.pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind(&kv_key).execute(&mut *tx).await?;
    let recorded: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM policy_bundles WHERE scope = $1")
        .bind(&kv_key)
        .fetch_one(&mut *tx)
        .await?;
    let current = store.entry(kv_key.as_str()).await.map_err(bucket_error)?;
    // A bundle the bucket took but whose row was lost (the commit failed) still counts.
    let in_bucket = current
        .as_ref()
        .filter(|entry| entry.operation == kv::Operation::Put)
        .and_then(|entry| Bundle::decode(&entry.value).ok())
        .map_or(0, |bundle| bundle.version);
    let version = u64::try_from(recorded).unwrap_or(0).max(in_bucket) + 1;
    let created = time::OffsetDateTime::now_utc();
    let created_ms = i64::try_from(created.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let file_count = files.len();
    let mut signed = Bundle::new(scope.clone(), version, created_ms, actor, files);
    signed.sign(key.inner())?;

    let version_column = i64::try_from(version).map_err(|e| bucket_error(format!("version {version}: {e}")))?;
    sqlx::query("INSERT INTO policy_bundles (scope, version, actor, created_at, bundle) VALUES ($1, $2, $3, $4, $5)")
        .bind(&kv_key)
        .bind(version_column)
        .bind(actor)
        .bind(created)
        .bind(sqlx::types::Json(&signed))
        .execute(&mut *tx)
        .await?;
    let site = match scope {
        Scope::Site(site) => Some(site.as_str()),
        Scope::Group(_) => None,
    };
    sqlx::query("INSERT INTO hub_audit (time, actor, action, site, detail) VALUES ($1, $2, 'policy_publish', $3, $4)")
        .bind(created)
        .bind(actor)
        .bind(site)
        .bind(format!("published policy bundle {scope} v{version} ({file_count} files)"))
        .execute(&mut *tx)
        .await?;
    let value: bytes::Bytes = signed.encode().into();
    let revision = match current {
        Some(entry) => store.update(kv_key.as_str(), value, entry.revision).await.map_err(bucket_error)?,
        None => store.create(kv_key.as_str(), value).await.map_err(bucket_error)?,
    };
    tx.commit().await?;
    tracing::info!(%scope, version, revision, files = file_count, actor, "policy bundle published");
    Ok(Published { scope: scope.clone(), version, revision, files: file_count })
}
