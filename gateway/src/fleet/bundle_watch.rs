//! The gateway's side of policy bundles: it watches the `iotgw_policy` bucket for its site's
//! bundle and its groups' (`site.<site>`, then `group.<group>` in `fleet.groups` order; the
//! site's overrides the groups'), from the current value on, so a gateway that was offline
//! catches up when it returns.
//!
//! Each new bundle is verified with `fleet.bundle_key`, must sit under its own scope's key and
//! be newer than the one enforced for that scope. Its files are then staged beside the policy
//! files (`policy::swap`) and the policy step is asked to install them (`InstallRequest`): it
//! runs the checks `iotgw policy check` runs on the staged files and, only when they pass,
//! swaps them in whole and puts them in force. So a bad bundle never replaces a good one.
//!
//! What is enforced is recorded in `ENFORCED_FILE`, staged with the bundle's files so it
//! changes with them; after a restart the watcher starts from it and never re-applies an older
//! bundle. Every outcome goes into `SharedBundleStatus` (the health report) and, as a
//! `PolicyChange` event audited as `hub:<actor>`, onto the bus (the hub gets it through the
//! outbox). Reads the bucket and the policy folder; writes the staging folder only.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{
    SharedBundleStatus,
    bundle::{Bundle, Scope},
    connect, subjects,
    wire::BundleRefusal,
};
use crate::{
    event::{EventBus, EventKind, GatewayEvent, Severity},
    policy::swap,
    shutdown::Shutdown,
};

/// The record of the bundle in force, in the policy folder (hidden: the loader reads `*.toml`).
pub const ENFORCED_FILE: &str = ".fleet-bundle.json";
/// Who the events of a bundle whose signature failed name: its claimed actor is not trusted.
pub const ACTOR_UNVERIFIED: &str = "fleet-bundle";
/// Install requests waiting for the policy step (the watcher waits for each answer).
const INSTALL_QUEUE: usize = 1;
/// Wait before watching again after the bucket was unreachable, doubling up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Asks the policy step to install the set staged in `swap::staging_dir` of the policy folder.
#[derive(Debug)]
pub struct InstallRequest {
    pub reply: oneshot::Sender<InstallOutcome>,
}

/// The policy step's answer.
#[derive(Clone, Debug)]
pub struct InstallOutcome {
    /// The staged files are now the folder's (they passed the checks).
    pub swapped: bool,
    /// They are in force in every part (a datapath write may fail after the swap).
    pub accepted: bool,
    /// What was done, or every reason not, in words.
    pub detail: String,
}

/// The policy step's end: requests to serve (`PolicyStore::install`, then answer).
pub type Installs = mpsc::Receiver<InstallRequest>;

/// The bundle in force, as `ENFORCED_FILE` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforced {
    pub scope: Scope,
    pub version: u64,
    pub actor: String,
    pub created_ms: i64,
}

/// The bundle recorded in force in `policy_dir`, if any.
pub fn read_enforced(policy_dir: &Path) -> Option<Enforced> {
    let bytes = std::fs::read(policy_dir.join(ENFORCED_FILE)).ok()?;
    serde_json::from_slice(&bytes)
        .inspect_err(|error| tracing::warn!(%error, "unreadable {ENFORCED_FILE}; any bundle is taken as new"))
        .ok()
}

/// What to do with a verified bundle for `scope`, given what is enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    Apply,
    /// Nothing to do, and nothing wrong (already enforced, or a site bundle overrides it).
    Skip(String),
    Refuse(String),
}

/// `precedence` is the gateway's scopes, strongest first (its site, then its groups).
pub fn judge(enforced: Option<&Enforced>, precedence: &[Scope], scope: &Scope, version: u64) -> Judgement {
    let Some(enforced) = enforced else { return Judgement::Apply };
    let rank = |s: &Scope| precedence.iter().position(|p| p == s);
    if &enforced.scope == scope {
        return match version.cmp(&enforced.version) {
            std::cmp::Ordering::Greater => Judgement::Apply,
            std::cmp::Ordering::Equal => Judgement::Skip(format!("{scope} v{version} is already enforced")),
            std::cmp::Ordering::Less => Judgement::Refuse(format!(
                "{scope} v{version} is older than the enforced v{} (rollback refused)",
                enforced.version
            )),
        };
    }
    match (rank(scope), rank(&enforced.scope)) {
        (Some(new), Some(old)) if new > old => {
            Judgement::Skip(format!("{scope} v{version} is overridden by the enforced {} bundle", enforced.scope))
        }
        // Stronger, or the enforced scope is no longer this gateway's.
        _ => Judgement::Apply,
    }
}

/// What became of one bundle.
#[derive(Clone, Debug, PartialEq)]
pub enum Handled {
    Enforced(u64),
    Skipped(String),
    Refused(BundleRefusal),
    /// The policy step is gone (shutting down).
    Stopped,
}

/// Why the watcher cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleWatchError {
    #[error("fleet.bundle_key: {0}")]
    Key(#[from] crate::ota::keys::KeyError),
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
}

/// The watcher's state: what is enforced and which bucket revisions it has handled.
pub struct Watcher {
    key: ed25519_dalek::VerifyingKey,
    precedence: Vec<Scope>,
    policy_dir: PathBuf,
    enforced: Option<Enforced>,
    /// Last revision handled per key, so a value seen again (watch restarted) is not redone.
    handled: HashMap<String, u64>,
    status: SharedBundleStatus,
    bus: EventBus,
    installs: mpsc::Sender<InstallRequest>,
}

/// Starts the watcher when `[fleet]` is enabled with a `bundle_key`: returns its task and the
/// requests the policy step must serve. `policy_dir` is `[policy] dir`.
pub fn spawn(
    fleet: &super::Config,
    client: async_nats::Client,
    policy_dir: &Path,
    bus: EventBus,
    status: SharedBundleStatus,
    shutdown: Shutdown,
) -> Result<Option<(tokio::task::JoinHandle<()>, Installs)>, BundleWatchError> {
    let Some(key_path) = &fleet.bundle_key else { return Ok(None) };
    let key = crate::ota::keys::load_verifying(key_path)?;
    let (installs, requests) = mpsc::channel(INSTALL_QUEUE);
    let mut precedence = vec![Scope::Site(fleet.site.clone())];
    precedence.extend(fleet.groups.iter().map(|group| Scope::Group(group.clone())));
    let watcher = Watcher::new(key, precedence, policy_dir, status, bus, installs);
    let task = tokio::spawn(watcher.run(fleet.jetstream(client), shutdown));
    Ok(Some((task, requests)))
}

impl Watcher {
    /// Starts from the bundle recorded in `policy_dir`.
    pub fn new(
        key: ed25519_dalek::VerifyingKey,
        precedence: Vec<Scope>,
        policy_dir: &Path,
        status: SharedBundleStatus,
        bus: EventBus,
        installs: mpsc::Sender<InstallRequest>,
    ) -> Self {
        let enforced = read_enforced(policy_dir);
        status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).enforced =
            enforced.as_ref().map(|e| e.version);
        let policy_dir = policy_dir.to_owned();
        Self { key, precedence, policy_dir, enforced, handled: HashMap::new(), status, bus, installs }
    }

    /// Follows the bucket until shutdown, watching again after every failure.
    pub async fn run(mut self, js: jetstream::Context, mut shutdown: Shutdown) {
        let mut retry = RETRY_MIN;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                stopped = self.follow(&js) => match stopped {
                    Ok(()) => return,
                    Err(error) => tracing::warn!(%error, ?retry, "policy bundles: watching again"),
                },
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(retry) => retry = (retry * 2).min(RETRY_MAX),
            }
        }
    }

    /// The current values first, strongest scope first (so a site's bundle is tried before its
    /// groups'), then every change. `Ok` only when the policy step is gone.
    async fn follow(&mut self, js: &jetstream::Context) -> Result<(), async_nats::Error> {
        let store = js.get_key_value(subjects::POLICY_BUCKET).await?;
        for scope in self.precedence.clone() {
            if let Some(entry) = store.entry(scope.kv_key()).await?
                && self.take(&entry).await == Some(Handled::Stopped)
            {
                return Ok(());
            }
        }
        // One watch per key: nats-server 2.9 has no consumers with several filter subjects.
        let mut changes = futures::stream::SelectAll::new();
        for scope in &self.precedence {
            changes.push(store.watch_with_history(scope.kv_key()).await?);
        }
        while let Some(entry) = changes.next().await {
            if self.take(&entry?).await == Some(Handled::Stopped) {
                return Ok(());
            }
        }
        Err("the bucket watch ended".into())
    }

    /// Handles a bucket entry once; `None` for one already handled or a deletion.
    async fn take(&mut self, entry: &kv::Entry) -> Option<Handled> {
        if self.handled.get(&entry.key).is_some_and(|revision| *revision >= entry.revision) {
            return None;
        }
        self.handled.insert(entry.key.clone(), entry.revision);
        if entry.operation != kv::Operation::Put {
            tracing::info!(key = %entry.key, "policy bundle deleted at the hub; the policy in force stays");
            return None;
        }
        let handled = self.handle(&entry.key, &entry.value).await;
        tracing::info!(key = %entry.key, revision = entry.revision, ?handled, "policy bundle");
        Some(handled)
    }

    /// Verifies, judges, stages and installs one bundle found under `key`.
    pub async fn handle(&mut self, key: &str, bytes: &[u8]) -> Handled {
        let bundle = match Bundle::decode(bytes) {
            Ok(bundle) => bundle,
            Err(error) => return self.refuse(0, ACTOR_UNVERIFIED, format!("bundle under {key} refused: {error}")),
        };
        let label = format!("policy bundle {} v{}", bundle.scope, bundle.version);
        if let Err(error) = bundle.verify(&self.key) {
            return self.refuse(bundle.version, ACTOR_UNVERIFIED, format!("{label} refused: {error}"));
        }
        // Signed by the hub, still text someone typed: escaped before it reaches events and logs.
        let claimed = crate::untrusted::escape(&bundle.actor).into_owned();
        let actor = format!("hub:{claimed}");
        if bundle.scope.kv_key() != key {
            let reason = format!("{label} refused: it was put under {key}, not {}", bundle.scope.kv_key());
            return self.refuse(bundle.version, &actor, reason);
        }
        match judge(self.enforced.as_ref(), &self.precedence, &bundle.scope, bundle.version) {
            Judgement::Apply => {}
            Judgement::Skip(why) => return Handled::Skipped(why),
            Judgement::Refuse(why) => return self.refuse(bundle.version, &actor, format!("{label} refused: {why}")),
        }
        let enforced = Enforced {
            scope: bundle.scope.clone(),
            version: bundle.version,
            actor: claimed,
            created_ms: bundle.created_ms,
        };
        let dir = self.policy_dir.clone();
        let files = bundle.files;
        let record = enforced.clone();
        let staged = tokio::task::spawn_blocking(move || stage(&dir, &files, &record)).await;
        match staged {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return self.refuse(enforced.version, &actor, format!("{label} refused: cannot stage it: {error}"));
            }
            Err(error) => return self.refuse(enforced.version, &actor, format!("{label} refused: staging: {error}")),
        }
        let (reply, answer) = oneshot::channel();
        if self.installs.send(InstallRequest { reply }).await.is_err() {
            return Handled::Stopped;
        }
        let Ok(outcome) = answer.await else { return Handled::Stopped };
        if outcome.swapped {
            self.enforced = Some(enforced.clone());
            self.status().enforced = Some(enforced.version);
        }
        if !outcome.accepted {
            return self.refuse(enforced.version, &actor, format!("{label} refused: {}", outcome.detail));
        }
        self.status().refused = None;
        let detail = format!("{label} enforced: {}", outcome.detail);
        self.bus.publish(GatewayEvent::new(
            Severity::Info,
            None,
            actor,
            EventKind::PolicyChange { accepted: true, detail },
        ));
        Handled::Enforced(enforced.version)
    }

    fn refuse(&mut self, version: u64, actor: &str, reason: String) -> Handled {
        tracing::warn!(%reason, "policy bundle refused; the policy in force stays");
        let refusal = BundleRefusal { version, reason: reason.clone() };
        self.status().refused = Some(refusal.clone());
        self.bus.publish(GatewayEvent::new(
            Severity::Medium,
            None,
            actor,
            EventKind::PolicyChange { accepted: false, detail: reason },
        ));
        Handled::Refused(refusal)
    }

    fn status(&self) -> std::sync::MutexGuard<'_, super::BundleStatus> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes the bundle's files and its `ENFORCED_FILE` record into a fresh staging folder.
fn stage(policy_dir: &Path, files: &BTreeMap<String, String>, enforced: &Enforced) -> std::io::Result<()> {
    let staging = swap::fresh_staging(policy_dir)?;
    for (name, text) in files {
        // `Bundle::verify` checked every name is a plain `*.toml` name.
        swap::stage_file(&staging, name, text.as_bytes())?;
    }
    let record = serde_json::to_vec(enforced).map_err(std::io::Error::other)?;
    swap::stage_file(&staging, ENFORCED_FILE, &record)?;
    swap::sync_staging(&staging)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str) -> Scope {
        Scope::Site(name.into())
    }

    fn group(name: &str) -> Scope {
        Scope::Group(name.into())
    }

    fn enforced(scope: Scope, version: u64) -> Enforced {
        Enforced { scope, version, actor: "alice".into(), created_ms: 0 }
    }

    #[test]
    fn newer_versions_apply_the_same_is_skipped_and_older_is_refused() {
        let precedence = [site("s1"), group("retail")];
        let now = enforced(site("s1"), 3);
        assert_eq!(judge(None, &precedence, &site("s1"), 1), Judgement::Apply);
        assert_eq!(judge(Some(&now), &precedence, &site("s1"), 4), Judgement::Apply);
        assert!(matches!(judge(Some(&now), &precedence, &site("s1"), 3), Judgement::Skip(_)));
        let Judgement::Refuse(why) = judge(Some(&now), &precedence, &site("s1"), 2) else { panic!("rollback") };
        assert!(why.contains("older than the enforced v3"), "{why}");
    }

    #[test]
    fn the_site_bundle_overrides_the_groups_and_a_gone_scope_is_replaced() {
        let precedence = [site("s1"), group("retail"), group("eu")];
        let by_site = enforced(site("s1"), 1);
        assert!(matches!(judge(Some(&by_site), &precedence, &group("retail"), 9), Judgement::Skip(_)));
        let by_group = enforced(group("eu"), 7);
        assert_eq!(judge(Some(&by_group), &precedence, &site("s1"), 1), Judgement::Apply);
        assert_eq!(judge(Some(&by_group), &precedence, &group("retail"), 1), Judgement::Apply);
        let gone = enforced(group("old"), 5);
        assert_eq!(judge(Some(&gone), &precedence, &group("eu"), 1), Judgement::Apply);
    }
}
