//! Who may open an EST connection now. Enrollment is the one service an unauthenticated
//! device must reach, so no single source may hold it: each source address gets a few
//! connections at once and a token bucket of new ones per second. A refused connection is
//! closed before the TLS handshake costs anything; a source refused again and again is
//! reported once per [`ALERT_INTERVAL`] (the caller raises the alert).
//!
//! Pure bookkeeping over `Instant`s, no I/O: the EST server asks, a `Ticket` held by the
//! connection gives its place back on drop.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How often one source may be alerted on.
pub const ALERT_INTERVAL: Duration = Duration::from_secs(60);
/// Sources remembered at most; idle ones are forgotten first, so a spoofed-source flood
/// cannot grow the table without bound.
pub const MAX_SOURCES: usize = 16_384;

/// The per-source limits (from `[identity]`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections one source may have open at once.
    pub concurrent: u32,
    /// New connections per second one source may open, on average.
    pub per_second: u32,
    /// New connections one source may open in a burst.
    pub burst: u32,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The source already holds `Limits::concurrent` connections.
    TooManyOpen,
    /// The source opened connections faster than `Limits::per_second`.
    TooFast,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::TooManyOpen => "too many open connections",
            Refusal::TooFast => "connections opened too fast",
        })
    }
}

/// The answer to one connection attempt.
#[derive(Debug)]
pub enum Decision {
    Admit(Ticket),
    Refuse {
        why: Refusal,
        /// Refusals of this source since it was last alerted on (this one included).
        refused: u64,
        /// True when the caller should raise the alert now (once per `ALERT_INTERVAL`).
        alert: bool,
    },
}

#[derive(Debug)]
struct Source {
    open: u32,
    tokens: f64,
    refill_at: Instant,
    refused: u64,
    alerted_at: Option<Instant>,
}

/// The admission table shared by the EST listener's connections.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

/// A connection's place; gives it back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut sources = self.admission.lock();
        if let Some(source) = sources.get_mut(&self.source) {
            source.open = source.open.saturating_sub(1);
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission { limits, sources: Mutex::new(HashMap::new()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Source>> {
        // The table is counters only: a panic mid-update leaves nothing unsafe to reuse.
        self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides about a new connection from `source` at `now`.
    pub fn admit(self: &Arc<Self>, source: IpAddr, now: Instant) -> Decision {
        let limits = self.limits;
        let mut sources = self.lock();
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            forget_idle(&mut sources, limits, now);
        }
        let entry = sources.entry(source).or_insert_with(|| Source {
            open: 0,
            tokens: f64::from(limits.burst),
            refill_at: now,
            refused: 0,
            alerted_at: None,
        });
        let elapsed = now.saturating_duration_since(entry.refill_at).as_secs_f64();
        entry.tokens = (entry.tokens + elapsed * f64::from(limits.per_second)).min(f64::from(limits.burst));
        entry.refill_at = now;
        let why = if entry.open >= limits.concurrent {
            Some(Refusal::TooManyOpen)
        } else if entry.tokens < 1.0 {
            Some(Refusal::TooFast)
        } else {
            None
        };
        match why {
            None => {
                entry.tokens -= 1.0;
                entry.open += 1;
                Decision::Admit(Ticket { admission: self.clone(), source })
            }
            Some(why) => {
                entry.refused += 1;
                let alert = entry.alerted_at.is_none_or(|at| now.saturating_duration_since(at) >= ALERT_INTERVAL);
                let refused = entry.refused;
                if alert {
                    entry.alerted_at = Some(now);
                    entry.refused = 0;
                }
                Decision::Refuse { why, refused, alert }
            }
        }
    }

    /// Connections `source` holds now (metrics, tests).
    pub fn open(&self, source: IpAddr) -> u32 {
        self.lock().get(&source).map_or(0, |s| s.open)
    }
}

/// Drops sources with nothing open and a full bucket: they would start afresh anyway. If
/// the table is still full (thousands of sources within seconds: spoofed), every source with
/// nothing open goes; those with open connections are bounded by the listener's slots.
fn forget_idle(sources: &mut HashMap<IpAddr, Source>, limits: Limits, now: Instant) {
    let full_after = Duration::from_secs_f64(f64::from(limits.burst) / f64::from(limits.per_second.max(1)));
    sources.retain(|_, s| s.open > 0 || now.saturating_duration_since(s.refill_at) < full_after);
    if sources.len() >= MAX_SOURCES {
        sources.retain(|_, s| s.open > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { concurrent: 2, per_second: 2, burst: 4 };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn admission_caps_open_connections_per_source_and_gives_places_back() {
        let admission = Admission::new(LIMITS);
        let now = Instant::now();
        let first = admission.admit(ip(1), now);
        let second = admission.admit(ip(1), now);
        assert!(matches!(first, Decision::Admit(_)) && matches!(second, Decision::Admit(_)));
        assert!(matches!(admission.admit(ip(1), now), Decision::Refuse { why: Refusal::TooManyOpen, .. }));
        // Another source is not affected.
        assert!(matches!(admission.admit(ip(2), now), Decision::Admit(_)));
        drop(first);
        assert_eq!(admission.open(ip(1)), 1);
        assert!(matches!(admission.admit(ip(1), now), Decision::Admit(_)));
        drop(second);
    }

    #[test]
    fn admission_rate_limits_a_source_that_reconnects_fast_and_alerts_once() {
        let admission = Admission::new(LIMITS);
        let now = Instant::now();
        for _ in 0..LIMITS.burst {
            let Decision::Admit(ticket) = admission.admit(ip(3), now) else { panic!("within the burst") };
            drop(ticket);
        }
        let Decision::Refuse { why, alert, refused } = admission.admit(ip(3), now) else { panic!("past the burst") };
        assert_eq!((why, alert, refused), (Refusal::TooFast, true, 1));
        let Decision::Refuse { alert, .. } = admission.admit(ip(3), now) else { panic!("still past") };
        assert!(!alert, "one alert per interval");
        // Half a second refills one token at 2/s.
        assert!(matches!(admission.admit(ip(3), now + Duration::from_millis(500)), Decision::Admit(_)));
        // After the interval, a source still refused is alerted again, with the count since.
        let later = now + ALERT_INTERVAL + Duration::from_millis(500);
        for _ in 0..LIMITS.burst {
            let _ = admission.admit(ip(3), later);
        }
        let Decision::Refuse { alert, refused, .. } = admission.admit(ip(3), later) else { panic!("past the burst") };
        assert!(alert);
        assert!(refused >= 2, "refusals since the last alert: {refused}");
    }

    #[test]
    fn admission_table_stays_bounded_under_spoofed_sources() {
        let admission = Admission::new(LIMITS);
        let start = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            // All within a second: no bucket has refilled when the table fills.
            let later = start + Duration::from_micros(u64::from(i));
            let Decision::Admit(ticket) = admission.admit(IpAddr::from(i.to_be_bytes()), later) else { continue };
            drop(ticket);
        }
        assert!(admission.lock().len() <= MAX_SOURCES);
    }
}
