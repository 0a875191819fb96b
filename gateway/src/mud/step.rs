//! One announcement at a time, from URL to class: `Resolver`'s checks; a new or changed
//! file's class put in force through the `PolicyGate` (the policy step, which may refuse it:
//! then nothing changes) and only then stored; every outcome, with exactly why, recorded in the
//! device's inventory record and the audit log (`inventory::mud::record`). Reads and writes
//! the store (`mud_files`, `inventory_mud`); the class step then moves enrolled devices onto
//! their class.
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use rusqlite::Connection;

use super::{Resolved, Resolver, announce::Announcement, store};
use crate::{
    device::Mac,
    inventory::mud::{MudFile, MudOutcome},
    policy::store::Sources,
    untrusted,
};

/// The same device announcing the same URL again within this time is not checked again
/// (DHCP sends DISCOVER and REQUEST, and retransmits).
pub const RECHECK_AFTER: Duration = Duration::from_secs(60);
/// (device, URL) pairs remembered for the recheck time; beyond this the old ones are forgotten.
const RECENT_CAPACITY: usize = 4_096;

/// Puts a set of MUD classes in force beside the policy files (the policy step), or says why
/// not.
pub trait PolicyGate {
    fn put_in_force(&self, sources: Sources) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// The MUD classes stored before, as policy sources (put in force before attaching).
pub fn stored_classes(conn: &Connection) -> Result<Sources, store::StoreError> {
    Ok(store::policy_sources(&store::files(conn)?))
}

/// The step's state: the checks, the store and the recent announcements.
pub struct MudStep<G> {
    /// `None` when `[mud]` names no authority: every announcement is recorded as refused.
    resolver: Option<Resolver>,
    conn: Mutex<Connection>,
    gate: G,
    recheck_after: Duration,
    recent: HashMap<(Mac, Vec<u8>), Instant>,
}

impl<G: PolicyGate> MudStep<G> {
    /// `conn` holds the inventory's and `mud`'s tables; the same announcement is checked at
    /// most once per `recheck_after` (`RECHECK_AFTER`).
    pub fn new(resolver: Option<Resolver>, conn: Connection, gate: G, recheck_after: Duration) -> Self {
        Self { resolver, conn: Mutex::new(conn), gate, recheck_after, recent: HashMap::new() }
    }

    /// Checks an announcement (unless the same one was checked within the recheck time) and
    /// records the outcome; returns it.
    pub async fn handle(&mut self, announcement: Announcement) -> Option<MudOutcome> {
        let now = Instant::now();
        if self.recent.len() >= RECENT_CAPACITY {
            let recheck_after = self.recheck_after;
            self.recent.retain(|_, at| now.duration_since(*at) < recheck_after);
        }
        let key = (announcement.mac, announcement.url.clone());
        if self.recent.get(&key).is_some_and(|at| now.duration_since(*at) < self.recheck_after) {
            return None;
        }
        self.recent.insert(key, now);
        let (outcome, detail) = self.check(&announcement, SystemTime::now()).await;
        let url = untrusted::escape_bounded(&String::from_utf8_lossy(&announcement.url), 512);
        let mac = announcement.mac;
        match &outcome {
            MudOutcome::Applied(file) => {
                tracing::info!(device = %mac, %url, class = %file.class, %detail, "MUD file applied")
            }
            MudOutcome::Refused(_) => tracing::warn!(device = %mac, %url, %detail, "MUD file refused"),
        }
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = announcement.channel.as_str();
        if let Err(error) = crate::inventory::mud::record(&conn, mac, &url, channel, &outcome, &detail) {
            tracing::error!(%error, device = %mac, "MUD outcome not recorded in the inventory");
        }
        Some(outcome)
    }

    /// The outcome of one announcement at `now` and what to say about it.
    async fn check(&self, announcement: &Announcement, now: SystemTime) -> (MudOutcome, String) {
        let Some(resolver) = &self.resolver else {
            let reason = "MUD is off ([mud] authorities is empty)".to_owned();
            return (MudOutcome::Refused(reason.clone()), reason);
        };
        let resolved = match resolver.resolve(&announcement.url, &self.conn, now).await {
            Ok(resolved) => resolved,
            Err(error) => {
                let reason = error.to_string();
                return (MudOutcome::Refused(reason.clone()), reason);
            }
        };
        let detail = match &resolved {
            Resolved::Cached(file) => format!("class {} from the cached file", file.class_name()),
            Resolved::Fetched { file, rules, refused } => {
                format!("class {}: {rules} rule(s), {refused} ACE(s) refused", file.class_name())
            }
        };
        if let Resolved::Fetched { file, .. } = &resolved
            && let Err(reason) = self.adopt(file).await
        {
            return (MudOutcome::Refused(reason.clone()), reason);
        }
        (MudOutcome::Applied(applied(resolved.file())), detail)
    }

    /// Puts a freshly fetched file in force: a changed or new class through the gate, then the
    /// store; an unchanged one only renews its validity.
    async fn adopt(&self, file: &store::CachedFile) -> Result<(), String> {
        let lock = || self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = store::file(&lock(), &file.url).map_err(|e| e.to_string())?;
        if previous.is_none_or(|previous| previous.sha256 != file.sha256 || previous.policy != file.policy) {
            let mut files = store::files(&lock()).map_err(|e| e.to_string())?;
            files.retain(|known| known.url != file.url);
            files.push(file.clone());
            self.gate
                .put_in_force(store::policy_sources(&files))
                .await
                .map_err(|detail| format!("the policy with class {} is refused: {detail}", file.class_name()))?;
        }
        store::save(&lock(), file).map_err(|e| e.to_string())
    }
}

fn applied(file: &store::CachedFile) -> MudFile {
    MudFile {
        url: file.url.clone(),
        class: file.class_name(),
        class_id: file.class_id,
        sha256: file.sha256.clone(),
        valid_until: time::OffsetDateTime::from_unix_timestamp(file.valid_until / 1_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        signer: file.signer.clone(),
    }
}
