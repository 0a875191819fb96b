//! The device side of an update (used by tests and the lab's device simulator): it trusts only
//! the root it was provisioned with, and checks every metadata file itself before installing.
//!
//! One `Device::update` runs the TUF client workflow against the gateway over mTLS: update the
//! root (each new root signed by a threshold of the old AND its own keys), then timestamp →
//! snapshot → targets → the vendor roles it delegates, checking signatures and thresholds,
//! expiry, version numbers against what it trusted before (rollback), and lengths/hashes. It
//! picks the newest image for its class above what it runs, downloads it into a part file and
//! resumes with HTTP Range after an interruption, checks length and sha256, installs it, and
//! reports the outcome to the gateway.
//!
//! Reads and writes only its state folder: `metadata/*.json` (trusted metadata),
//! `installed.json`, `download-*.part`.
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::{
    metadata::{self, FirmwareVersion, MetadataError, Root, Snapshot, TargetFile, Targets, Timestamp},
    rollout::{Report, ReportStatus},
};
use crate::fsutil;

/// Largest metadata file the client accepts (a hostile server could send gigabytes).
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;
/// Most root versions walked in one update.
pub const MAX_ROOT_ROTATIONS: u64 = 32;
/// Most download attempts (first try plus resumes) for one image.
pub const MAX_DOWNLOAD_ATTEMPTS: u32 = 20;
/// Pause between download attempts.
pub const RESUME_BACKOFF: Duration = Duration::from_millis(50);
/// Per-request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an update did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    /// A metadata file failed a check; nothing was installed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The downloaded image does not match its signed length and sha256.
    #[error("image {target} does not match its signed length/sha256; not installed")]
    ImageMismatch { target: String },
    #[error("download of {target} did not finish after {attempts} attempts")]
    DownloadIncomplete { target: String, attempts: u32 },
    /// The installer refused the image (simulated boot failure, flash error...).
    #[error("installing {target} failed: {detail}")]
    Install { target: String, detail: String },
    #[error("client setup: {0}")]
    Setup(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io { path: path.to_owned(), source }
}

/// How a device reaches the gateway and who it is.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://host:port` of the update service.
    pub base_url: String,
    /// PEM of the CA that signed the server's certificate.
    pub server_ca_pem: Vec<u8>,
    /// The device's certificate chain and key (PEM), issued by the gateway's device CA.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub device_class: String,
    pub state_dir: PathBuf,
}

/// What the device runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub version: String,
    pub target: Option<String>,
}

/// Applies a verified image. Real devices flash; the simulator copies or fails on purpose.
pub trait Installer: Send {
    fn install(&mut self, image: &Path, target: &str, version: &str) -> Result<(), String>;
}

/// Moves the image to `dest` (the simulated flash).
pub struct FileInstaller {
    pub dest: PathBuf,
}

impl Installer for FileInstaller {
    fn install(&mut self, image: &Path, _target: &str, _version: &str) -> Result<(), String> {
        fsutil::rename_durable(image, &self.dest).map_err(|e| e.to_string())
    }
}

/// Result of one update run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing newer is offered.
    UpToDate { version: String },
    /// A new image was verified and installed; `attempts` > 1 means the download resumed.
    Installed { from: String, to: String, target: String, attempts: u32 },
}

/// A target chosen from verified metadata.
#[derive(Clone, Debug)]
struct Chosen {
    path: String,
    file: TargetFile,
}

/// A device's update client.
pub struct Device {
    config: ClientConfig,
    http: reqwest::Client,
    installer: Box<dyn Installer>,
}

impl Device {
    /// Writes the provisioning state: the trusted root (shipped with the device) and the
    /// firmware it runs.
    pub fn provision(state_dir: &Path, root: &[u8], version: &str) -> Result<(), ClientError> {
        let path = state_dir.join("metadata").join("root.json");
        fsutil::write_atomic(&path, root).map_err(io(&path))?;
        let installed = state_dir.join("installed.json");
        let record = Installed { version: version.to_owned(), target: None };
        fsutil::write_atomic(&installed, &serde_json::to_vec(&record).unwrap_or_default()).map_err(io(&installed))
    }

    pub fn new(config: ClientConfig, installer: Box<dyn Installer>) -> Result<Self, ClientError> {
        let setup = |e: &dyn std::fmt::Display| ClientError::Setup(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut config.server_ca_pem.as_slice()) {
            roots.add(cert.map_err(|e| setup(&e))?).map_err(|e| setup(&e))?;
        }
        let chain: Result<Vec<_>, _> = rustls_pemfile::certs(&mut config.cert_pem.as_slice()).collect();
        let key = rustls_pemfile::private_key(&mut config.key_pem.as_slice())
            .map_err(|e| setup(&e))?
            .ok_or_else(|| ClientError::Setup("no private key in the device key PEM".into()))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.map_err(|e| setup(&e))?, key)
            .map_err(|e| setup(&e))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| setup(&e))?;
        Ok(Self { config, http, installer })
    }

    pub fn installed(&self) -> Result<Installed, ClientError> {
        let path = self.config.state_dir.join("installed.json");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Setup(format!("{}: {e}", path.display())))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/ota/v1/{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// Tells the gateway what the device runs (a check-in), so campaigns can count it.
    pub async fn check_in(&self) -> Result<(), ClientError> {
        let installed = self.installed()?;
        self.report(ReportStatus::Current, &installed.version, installed.target, String::new()).await
    }

    async fn report(
        &self,
        status: ReportStatus,
        version: &str,
        target: Option<String>,
        detail: String,
    ) -> Result<(), ClientError> {
        let url = self.url("report");
        let body = Report {
            device_class: self.config.device_class.clone(),
            version: version.to_owned(),
            status,
            target,
            detail,
        };
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|source| ClientError::Http { url: url.clone(), source })?;
        if !response.status().is_success() {
            return Err(ClientError::Status { url, status: response.status() });
        }
        Ok(())
    }

    /// One full update run: verify metadata, and if a newer image is offered, download,
    /// verify, install and report it. A failure after a target was chosen is reported too.
    pub async fn update(&mut self) -> Result<Outcome, ClientError> {
        let installed = self.installed()?;
        let current: FirmwareVersion = installed.version.parse()?;
        let Some(chosen) = self.refresh_and_choose(&current).await? else {
            return Ok(Outcome::UpToDate { version: installed.version });
        };
        match self.fetch_and_install(&chosen).await {
            Ok(attempts) => {
                let record =
                    Installed { version: chosen.file.custom.version.clone(), target: Some(chosen.path.clone()) };
                let path = self.config.state_dir.join("installed.json");
                fsutil::write_atomic(&path, &serde_json::to_vec(&record).unwrap_or_default()).map_err(io(&path))?;
                self.report(
                    ReportStatus::Success,
                    &record.version,
                    Some(chosen.path.clone()),
                    format!("{attempts} attempt(s)"),
                )
                .await?;
                Ok(Outcome::Installed { from: installed.version, to: record.version, target: chosen.path, attempts })
            }
            Err(e) => {
                // Best effort: the device still runs its old firmware and says why.
                let _ = self
                    .report(ReportStatus::Failure, &installed.version, Some(chosen.path.clone()), e.to_string())
                    .await;
                Err(e)
            }
        }
    }

    async fn fetch_metadata(&self, name: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let url = self.url(&format!("metadata/{name}"));
        let mut response =
            self.http.get(&url).send().await.map_err(|source| ClientError::Http { url: url.clone(), source })?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(ClientError::Status { url, status: response.status() });
        }
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|source| ClientError::Http { url: url.clone(), source })?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_METADATA_BYTES {
                return Err(MetadataError::Malformed {
                    role: name.to_owned(),
                    detail: "larger than the metadata limit".into(),
                }
                .into());
            }
        }
        Ok(Some(body))
    }

    async fn require_metadata(&self, name: &str) -> Result<Vec<u8>, ClientError> {
        let url = self.url(&format!("metadata/{name}"));
        self.fetch_metadata(name).await?.ok_or(ClientError::Status { url, status: reqwest::StatusCode::NOT_FOUND })
    }

    fn trusted_path(&self, role: &str) -> PathBuf {
        self.config.state_dir.join("metadata").join(format!("{role}.json"))
    }

    fn trusted_raw(&self, role: &str) -> Option<Vec<u8>> {
        std::fs::read(self.trusted_path(role)).ok()
    }

    /// A trusted document's `signed` part (already verified when it was stored).
    fn trusted<T: metadata::Role>(&self, role: &str) -> Option<T> {
        let raw = self.trusted_raw(role)?;
        serde_json::from_slice::<metadata::Signed<T>>(&raw).ok().map(|s| s.signed)
    }

    fn trust(&self, role: &str, bytes: &[u8]) -> Result<(), ClientError> {
        let path = self.trusted_path(role);
        fsutil::write_atomic(&path, bytes).map_err(io(&path))
    }

    /// The TUF workflow up to choosing a target.
    async fn refresh_and_choose(&self, current: &FirmwareVersion) -> Result<Option<Chosen>, ClientError> {
        let now = OffsetDateTime::now_utc();
        let root = self.update_root(now).await?;

        // Timestamp.
        let raw = self.require_metadata("timestamp.json").await?;
        let timestamp: Timestamp =
            metadata::verify(&raw, "timestamp", &root.keys, metadata::root_role(&root, "timestamp")?)?;
        if let Some(trusted) = self.trusted::<Timestamp>("timestamp") {
            metadata::check_rollback("timestamp", trusted.0.version, timestamp.0.version)?;
        }
        metadata::check_expiry(&timestamp, "timestamp", now)?;
        let snapshot_meta =
            timestamp.0.meta.get("snapshot.json").cloned().ok_or_else(|| MetadataError::Malformed {
                role: "timestamp".into(),
                detail: "no snapshot.json".into(),
            })?;
        let trusted_snapshot = self.trusted::<Snapshot>("snapshot");
        if let Some(trusted) = &trusted_snapshot {
            metadata::check_rollback("snapshot", trusted.0.version, snapshot_meta.version)?;
        }
        self.trust("timestamp", &raw)?;

        // Snapshot.
        let raw = self.require_metadata(&format!("{}.snapshot.json", snapshot_meta.version)).await?;
        let length_ok = snapshot_meta.length.is_none_or(|l| l == raw.len() as u64);
        let hash_ok = snapshot_meta.hashes.as_ref().is_none_or(|h| h.sha256 == metadata::sha256_hex(&raw));
        if !length_ok || !hash_ok {
            return Err(MetadataError::HashMismatch { what: "snapshot".into() }.into());
        }
        let snapshot: Snapshot =
            metadata::verify(&raw, "snapshot", &root.keys, metadata::root_role(&root, "snapshot")?)?;
        if snapshot.0.version != snapshot_meta.version {
            return Err(MetadataError::VersionMismatch {
                role: "snapshot".into(),
                expected: snapshot_meta.version,
                found: snapshot.0.version,
            }
            .into());
        }
        if let Some(trusted) = &trusted_snapshot {
            for (file, old) in &trusted.0.meta {
                let new = snapshot.0.meta.get(file).map_or(0, |m| m.version);
                metadata::check_rollback(file, old.version, new)?;
            }
        }
        metadata::check_expiry(&snapshot, "snapshot", now)?;
        self.trust("snapshot", &raw)?;

        // Top-level targets.
        let version_of = |file: &str| snapshot.0.meta.get(file).map(|m| m.version);
        let targets_version = version_of("targets.json")
            .ok_or_else(|| MetadataError::Malformed { role: "snapshot".into(), detail: "no targets.json".into() })?;
        let targets: Targets = self
            .fetch_role("targets", targets_version, &root.keys, metadata::root_role(&root, "targets")?, now)
            .await?;

        // Delegated vendor roles the snapshot offers.
        let delegations = targets.delegations.clone().unwrap_or_default();
        let mut candidates: BTreeMap<String, TargetFile> = BTreeMap::new();
        for role in &delegations.roles {
            let Some(version) = version_of(&format!("{}.json", role.name)) else { continue };
            let vendor: Targets =
                self.fetch_role(&role.name, version, &delegations.keys, &role.role_keys(), now).await?;
            for (path, file) in vendor.targets {
                // A vendor may only sign for its delegated paths.
                if role.covers(&path) {
                    candidates.entry(path).or_insert(file);
                }
            }
        }
        let best = candidates
            .into_iter()
            .filter(|(_, f)| f.custom.device_classes.contains(&self.config.device_class))
            .filter_map(|(path, file)| Some((file.custom.version.parse::<FirmwareVersion>().ok()?, path, file)))
            .filter(|(version, _, _)| version > current)
            .max_by(|a, b| a.0.cmp(&b.0));
        Ok(best.map(|(_, path, file)| Chosen { path, file }))
    }

    /// Fetches `{version}.{role}.json`, verifies it, checks version, rollback and expiry.
    async fn fetch_role(
        &self,
        role: &str,
        version: u64,
        keys: &BTreeMap<metadata::KeyId, metadata::PublicKey>,
        role_keys: &metadata::RoleKeys,
        now: OffsetDateTime,
    ) -> Result<Targets, ClientError> {
        let raw = self.require_metadata(&format!("{version}.{role}.json")).await?;
        let doc: Targets = metadata::verify(&raw, role, keys, role_keys)?;
        if doc.version != version {
            return Err(
                MetadataError::VersionMismatch { role: role.into(), expected: version, found: doc.version }.into()
            );
        }
        if let Some(trusted) = self.trusted::<Targets>(role) {
            metadata::check_rollback(role, trusted.version, doc.version)?;
        }
        metadata::check_expiry(&doc, role, now)?;
        self.trust(role, &raw)?;
        Ok(doc)
    }

    /// Walks root versions N+1, N+2, ... until the server has none newer.
    async fn update_root(&self, now: OffsetDateTime) -> Result<Root, ClientError> {
        let raw = self
            .trusted_raw("root")
            .ok_or_else(|| ClientError::Setup("no trusted root; provision the device first".into()))?;
        let unverified: metadata::Signed<Root> = serde_json::from_slice(&raw)
            .map_err(|e| MetadataError::Malformed { role: "root".into(), detail: e.to_string() })?;
        // The provisioned root is trusted as shipped, but must at least be self-consistent.
        let mut root: Root =
            metadata::verify(&raw, "root", &unverified.signed.keys, metadata::root_role(&unverified.signed, "root")?)?;
        for _ in 0..MAX_ROOT_ROTATIONS {
            let next = root.version + 1;
            let Some(raw) = self.fetch_metadata(&format!("{next}.root.json")).await? else { break };
            let new: Root = metadata::verify(&raw, "root", &root.keys, metadata::root_role(&root, "root")?)?;
            let new: Root = metadata::verify(&raw, "root", &new.keys, metadata::root_role(&new, "root")?)?;
            if new.version != next {
                return Err(
                    MetadataError::VersionMismatch { role: "root".into(), expected: next, found: new.version }.into()
                );
            }
            // TUF 5.3.11: new timestamp/snapshot keys make the trusted copies unverifiable.
            for role in ["timestamp", "snapshot"] {
                if root.roles.get(role) != new.roles.get(role) {
                    let _ = std::fs::remove_file(self.trusted_path("timestamp"));
                    let _ = std::fs::remove_file(self.trusted_path("snapshot"));
                }
            }
            self.trust("root", &raw)?;
            root = new;
        }
        metadata::check_expiry(&root, "root", now)?;
        Ok(root)
    }

    /// Downloads (resuming), verifies and installs; returns the number of attempts.
    async fn fetch_and_install(&mut self, chosen: &Chosen) -> Result<u32, ClientError> {
        // Named by hash, so a part file of another image is never resumed into this one.
        let part = self
            .config
            .state_dir
            .join(format!("download-{}.part", &chosen.file.hashes.sha256[..16.min(chosen.file.hashes.sha256.len())]));
        let attempts = self.download(chosen, &part).await?;
        let (length, sha256) = hash_file(&part)?;
        if length != chosen.file.length || sha256 != chosen.file.hashes.sha256 {
            let _ = std::fs::remove_file(&part);
            return Err(ClientError::ImageMismatch { target: chosen.path.clone() });
        }
        self.installer
            .install(&part, &chosen.path, &chosen.file.custom.version)
            .map_err(|detail| ClientError::Install { target: chosen.path.clone(), detail })?;
        let _ = std::fs::remove_file(&part);
        Ok(attempts)
    }

    fn image_url(&self, chosen: &Chosen) -> String {
        let (dir, name) = chosen.path.rsplit_once('/').map_or(("", chosen.path.as_str()), |(d, n)| (d, n));
        let file = format!("{}.{name}", chosen.file.hashes.sha256);
        if dir.is_empty() { self.url(&format!("targets/{file}")) } else { self.url(&format!("targets/{dir}/{file}")) }
    }

    /// Fills `part` up to the signed length, resuming with `Range` after each interruption.
    async fn download(&self, chosen: &Chosen, part: &Path) -> Result<u32, ClientError> {
        let url = self.image_url(chosen);
        let length = chosen.file.length;
        for attempt in 1..=MAX_DOWNLOAD_ATTEMPTS {
            let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
            if have == length {
                return Ok(attempt - 1);
            }
            if have > length {
                std::fs::remove_file(part).map_err(io(part))?;
                continue;
            }
            let mut request = self.http.get(&url);
            if have > 0 {
                request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let mut response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "ota download request failed; retrying");
                    tokio::time::sleep(RESUME_BACKOFF).await;
                    continue;
                }
            };
            let mut file = match response.status() {
                reqwest::StatusCode::PARTIAL_CONTENT if content_range_start(&response) == Some(have) => {
                    std::fs::OpenOptions::new().append(true).open(part).map_err(io(part))?
                }
                // Whole body (server ignored Range, or first try): start over.
                reqwest::StatusCode::OK => std::fs::File::create(part).map_err(io(part))?,
                reqwest::StatusCode::RANGE_NOT_SATISFIABLE | reqwest::StatusCode::PARTIAL_CONTENT => {
                    let _ = std::fs::remove_file(part);
                    continue;
                }
                status => return Err(ClientError::Status { url, status }),
            };
            let mut written = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        written += chunk.len() as u64;
                        // Endless-data attack: never store more than the signed length.
                        if written > length {
                            drop(file);
                            let _ = std::fs::remove_file(part);
                            return Err(ClientError::ImageMismatch { target: chosen.path.clone() });
                        }
                        file.write_all(&chunk).map_err(io(part))?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, attempt, written, "ota download interrupted; will resume");
                        break;
                    }
                }
            }
            file.sync_data().map_err(io(part))?;
            if written == length {
                return Ok(attempt);
            }
            tokio::time::sleep(RESUME_BACKOFF).await;
        }
        Err(ClientError::DownloadIncomplete { target: chosen.path.clone(), attempts: MAX_DOWNLOAD_ATTEMPTS })
    }
}

/// First byte of a `Content-Range: bytes A-B/N` header.
fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    value.strip_prefix("bytes ")?.split('-').next()?.parse().ok()
}

fn hash_file(path: &Path) -> Result<(u64, String), ClientError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut length = 0;
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        length += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((length, hex::encode(hasher.finalize())))
}
