//! The console's sessions, in memory: a restart signs everyone out.
//!
//! A session is made when a token or a local user signs in (`signin`). Its secret is 256 bits
//! from the operating system's CSPRNG, sent once as the cookie and kept only as its SHA-256,
//! so a memory dump or the session list reveals no usable cookie. Each session has a public
//! `id` (the first 64 bits of that hash, for the admin's list and revocation) and a CSRF token
//! the console sends back in `X-CSRF-Token`, compared in constant time.
//!
//! A session ends when it has been idle for `idle`, at `max` after it began whatever its use,
//! at sign-out or revocation. At most `MAX_SESSIONS` live at once: beyond that the least
//! recently used is dropped (expired ones first). Time comes from a `Clock`, so tests move it
//! rather than sleep.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::auth::Caller;

/// Sessions kept at once.
pub const MAX_SESSIONS: usize = 1_000;
/// Default idle timeout (`[api] session_idle_secs`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(1_800);
/// Default absolute lifetime (`[api] session_max_secs`).
pub const DEFAULT_MAX: Duration = Duration::from_secs(43_200);
/// Longest lifetime either setting may ask for: 30 days.
pub const LONGEST: Duration = Duration::from_secs(30 * 86_400);
/// Random bytes of a session secret and of a CSRF token.
const SECRET_BYTES: usize = 32;

/// Where the session store reads the time.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How long sessions live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// Ends a session not used for this long.
    pub idle: Duration,
    /// Ends a session this long after sign-in, used or not.
    pub max: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self { idle: DEFAULT_IDLE, max: DEFAULT_MAX }
    }
}

/// SHA-256 of a session secret: the store's key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SecretHash([u8; 32]);

impl SecretHash {
    fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// The public id: 16 hex digits of the hash, which give nothing towards the secret.
    fn id(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

/// A session as the API shows it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub caller: Caller,
    pub csrf_token: String,
    pub created: SystemTime,
    pub last_seen: SystemTime,
    /// When it ends unless used again (idle) or at the latest (absolute).
    pub expires: SystemTime,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf_token.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

#[derive(Clone, Debug)]
struct Entry {
    caller: Caller,
    csrf_token: String,
    created: SystemTime,
    last_seen: SystemTime,
}

impl Entry {
    fn expires(&self, lifetimes: Lifetimes) -> SystemTime {
        (self.last_seen + lifetimes.idle).min(self.created + lifetimes.max)
    }

    fn live(&self, now: SystemTime, lifetimes: Lifetimes) -> bool {
        now < self.expires(lifetimes)
    }

    fn view(&self, key: &SecretHash, lifetimes: Lifetimes) -> Session {
        Session {
            id: key.id(),
            caller: self.caller.clone(),
            csrf_token: self.csrf_token.clone(),
            created: self.created,
            last_seen: self.last_seen,
            expires: self.expires(lifetimes),
        }
    }
}

/// Every live session.
pub struct SessionStore {
    lifetimes: Lifetimes,
    capacity: usize,
    clock: Clock,
    sessions: Mutex<HashMap<SecretHash, Entry>>,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore").field("lifetimes", &self.lifetimes).field("live", &self.len()).finish()
    }
}

/// 256 random bits from the operating system, base64url without padding (43 characters).
fn random_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SessionStore {
    /// With the system clock and room for `MAX_SESSIONS`. Lifetimes are cut to `LONGEST`
    /// (the config refuses longer ones), so expiry times never overflow.
    pub fn new(lifetimes: Lifetimes) -> Self {
        let lifetimes = Lifetimes { idle: lifetimes.idle.min(LONGEST), max: lifetimes.max.min(LONGEST) };
        Self { lifetimes, capacity: MAX_SESSIONS, clock: Arc::new(SystemTime::now), sessions: Mutex::default() }
    }

    /// Reads the time from `clock` instead.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps at most `capacity` sessions (at least one).
    #[cfg(test)]
    pub(crate) fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SecretHash, Entry>> {
        // Every change is one insert or remove: a panic elsewhere leaves the map whole.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session for `caller`: its secret (the cookie value, given out only here) and
    /// the session.
    pub fn create(&self, caller: Caller) -> (String, Session) {
        let now = (self.clock)();
        let mut sessions = self.lock();
        if sessions.len() >= self.capacity {
            sessions.retain(|_, entry| entry.live(now, self.lifetimes));
        }
        while sessions.len() >= self.capacity {
            let Some(oldest) = sessions.iter().min_by_key(|(_, entry)| entry.last_seen).map(|(key, _)| *key) else {
                break;
            };
            sessions.remove(&oldest);
        }
        let (secret, key) = loop {
            let secret = random_secret();
            let key = SecretHash::of(&secret);
            // Two secrets sharing a public id would make revocation ambiguous; at 64 bits
            // this never happens, and costs one more draw if it does.
            if !sessions.keys().any(|other| other.0[..8] == key.0[..8]) {
                break (secret, key);
            }
        };
        let entry = Entry { caller, csrf_token: random_secret(), created: now, last_seen: now };
        let session = entry.view(&key, self.lifetimes);
        sessions.insert(key, entry);
        (secret, session)
    }

    /// The live session of the cookie `secret`, marked as used now; an expired one is dropped.
    pub fn touch(&self, secret: &str) -> Option<Session> {
        let now = (self.clock)();
        let key = SecretHash::of(secret);
        let mut sessions = self.lock();
        let entry = sessions.get_mut(&key)?;
        if !entry.live(now, self.lifetimes) {
            sessions.remove(&key);
            return None;
        }
        entry.last_seen = now.max(entry.last_seen);
        Some(entry.view(&key, self.lifetimes))
    }

    /// Ends the session with the public `id` (sign-out, revocation).
    pub fn end(&self, id: &str) -> Option<Session> {
        let mut sessions = self.lock();
        let key = *sessions.keys().find(|key| key.id() == id)?;
        sessions.remove(&key).map(|entry| entry.view(&key, self.lifetimes))
    }

    /// Every live session, oldest first; expired ones are dropped.
    pub fn list(&self) -> Vec<Session> {
        let now = (self.clock)();
        let mut sessions = self.lock();
        sessions.retain(|_, entry| entry.live(now, self.lifetimes));
        let mut list: Vec<Session> = sessions.iter().map(|(key, entry)| entry.view(key, self.lifetimes)).collect();
        list.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        list
    }

    /// Sessions held now, expired ones included until they are next looked at.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A clock tests move by hand.
#[cfg(test)]
#[derive(Clone)]
pub(crate) struct ManualClock(Arc<Mutex<SystemTime>>);

#[cfg(test)]
impl ManualClock {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(SystemTime::now())))
    }

    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    pub(crate) fn clock(&self) -> Clock {
        let time = self.0.clone();
        Arc::new(move || *time.lock().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::{CallerKind, Role};

    fn caller(name: &str) -> Caller {
        Caller { name: name.into(), role: Role::Viewer, kind: CallerKind::User }
    }

    fn store(clock: &ManualClock) -> SessionStore {
        let lifetimes = Lifetimes { idle: Duration::from_secs(60), max: Duration::from_secs(300) };
        SessionStore::new(lifetimes).with_clock(clock.clock())
    }

    #[test]
    fn secrets_are_random_and_only_their_hash_is_kept() {
        let clock = ManualClock::new();
        let sessions = store(&clock);
        let (first, session) = sessions.create(caller("a"));
        let (second, _) = sessions.create(caller("a"));
        assert_ne!(first, second);
        assert_eq!(first.len(), 43, "256 bits in base64url");
        assert_eq!(session.csrf_token.len(), 43);
        assert_ne!(session.csrf_token, first);
        assert_eq!(session.id.len(), 16);
        assert!(!first.contains(&session.id) && !format!("{sessions:?}").contains(&first));
        assert_eq!(sessions.touch(&first).unwrap().caller, caller("a"));
        assert!(sessions.touch("not-a-session").is_none());
    }

    #[test]
    fn an_idle_session_ends_and_use_keeps_it_alive_until_the_absolute_limit() {
        let clock = ManualClock::new();
        let sessions = store(&clock);
        let (idle, _) = sessions.create(caller("idle"));
        let (busy, started) = sessions.create(caller("busy"));
        assert_eq!(started.expires, started.created + Duration::from_secs(60));
        for _ in 0..4 {
            clock.advance(Duration::from_secs(59));
            assert!(sessions.touch(&busy).is_some());
        }
        assert!(sessions.touch(&idle).is_none(), "idle for 236 s > 60 s");
        assert_eq!(sessions.len(), 1, "the expired session was dropped");
        clock.advance(Duration::from_secs(59));
        let last = sessions.touch(&busy).expect("295 s after sign-in");
        assert_eq!(last.expires, started.created + Duration::from_secs(300), "capped by the absolute limit");
        clock.advance(Duration::from_secs(5));
        assert!(sessions.touch(&busy).is_none(), "300 s after sign-in, though used 5 s ago");
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        let sessions = SessionStore::new(Lifetimes::default());
        let (_, session) = sessions.create(caller("a"));
        assert!(session.csrf_matches(&session.csrf_token.clone()));
        assert!(!session.csrf_matches(&session.csrf_token[..42]));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches(&format!("{}x", session.csrf_token)));
    }

    #[test]
    fn sign_out_and_revocation_end_a_session() {
        let clock = ManualClock::new();
        let sessions = store(&clock);
        let (first, one) = sessions.create(caller("a"));
        clock.advance(Duration::from_secs(1));
        let (second, two) = sessions.create(caller("b"));
        assert_eq!(sessions.list().iter().map(|s| &s.id).collect::<Vec<_>>(), [&one.id, &two.id]);
        assert_eq!(sessions.end(&one.id).unwrap().caller, caller("a"));
        assert!(sessions.touch(&first).is_none());
        assert!(sessions.end(&one.id).is_none());
        assert!(sessions.end(&first).is_none(), "the cookie is not the id");
        assert_eq!(sessions.end(&two.id).unwrap().caller, caller("b"));
        assert!(sessions.touch(&second).is_none());
        assert!(sessions.is_empty());
    }

    #[test]
    fn beyond_the_cap_the_least_recently_used_session_goes_first() {
        let clock = ManualClock::new();
        let sessions = store(&clock).with_capacity(3);
        let (oldest, _) = sessions.create(caller("a"));
        clock.advance(Duration::from_secs(1));
        let (unused, _) = sessions.create(caller("b"));
        clock.advance(Duration::from_secs(1));
        let (third, _) = sessions.create(caller("c"));
        clock.advance(Duration::from_secs(1));
        assert!(sessions.touch(&oldest).is_some());
        let (fourth, _) = sessions.create(caller("d"));
        assert_eq!(sessions.len(), 3);
        assert!(sessions.touch(&unused).is_none(), "least recently used");
        for kept in [&oldest, &third, &fourth] {
            assert!(sessions.touch(kept).is_some());
        }
        // Expired sessions make room before any live one is dropped.
        clock.advance(Duration::from_secs(61));
        sessions.create(caller("e"));
        assert_eq!(sessions.list().len(), 1);
    }
}
