//! Throttling of failed authentication, per source: each source (an IPv4 address, an IPv6 /64)
//! holds a bucket of `FAILURE_BURST` failures that refills at `FAILURES_PER_SECOND`. A source
//! whose bucket is empty is answered 429 with `Retry-After` before its token is even looked
//! at, so guessing tokens costs one second per guess once the burst is spent. Successful
//! requests cost nothing. Shared by the API's bearer tokens and the SOAR callers.
//!
//! Reads and writes nothing but its own table, which holds at most `MAX_SOURCES` sources:
//! buckets back to full are dropped first, then the least recently failed.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Failures a source may make in a row before it is throttled.
pub const FAILURE_BURST: f64 = 10.0;
/// Failures per second a throttled source regains.
pub const FAILURES_PER_SECOND: f64 = 1.0;
/// Sources tracked at once.
pub const MAX_SOURCES: usize = 10_000;

/// A source of requests: its address, IPv6 cut to the /64 a single host usually holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let mut octets = v6.octets();
                    octets[8..].fill(0);
                    Source(IpAddr::V6(octets.into()))
                }
            },
            v4 => Source(v4),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant, limits: &Limits) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * limits.per_second).min(limits.burst)
    }
}

/// Burst and refill rate (tests use small ones).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub burst: f64,
    pub per_second: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { burst: FAILURE_BURST, per_second: FAILURES_PER_SECOND }
    }
}

/// The failure buckets of every source.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    limits: Limits,
    buckets: Mutex<HashMap<Source, Bucket>>,
}

impl FailureLimiter {
    pub fn new(limits: Limits) -> Self {
        Self { limits, buckets: Mutex::default() }
    }

    /// How long `source` must wait before its next attempt is looked at; `None` when it may
    /// try now.
    pub fn retry_after(&self, source: Source, now: Instant) -> Option<Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let tokens = buckets.get(&source)?.refilled(now, &self.limits);
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / self.limits.per_second))
    }

    /// Counts one failed attempt of `source`.
    pub fn failed(&self, source: Source, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            let limits = self.limits;
            buckets.retain(|_, bucket| bucket.refilled(now, &limits) < limits.burst);
            if buckets.len() >= MAX_SOURCES
                && let Some(oldest) = buckets.iter().min_by_key(|(_, bucket)| bucket.updated).map(|(s, _)| *s)
            {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(source).or_insert(Bucket { tokens: self.limits.burst, updated: now });
        let tokens = bucket.refilled(now, &self.limits);
        *bucket = Bucket { tokens: (tokens - 1.0).max(0.0), updated: now };
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source::of(text.parse().unwrap())
    }

    #[test]
    fn a_source_is_throttled_after_its_burst_and_regains_one_try_per_second() {
        let limiter = FailureLimiter::default();
        let start = Instant::now();
        let attacker = source("192.0.2.7");
        for _ in 0..10 {
            assert_eq!(limiter.retry_after(attacker, start), None);
            limiter.failed(attacker, start);
        }
        let wait = limiter.retry_after(attacker, start).expect("throttled after 10 failures");
        assert!((0.99..=1.0).contains(&wait.as_secs_f64()), "{wait:?}");
        assert_eq!(limiter.retry_after(attacker, start + Duration::from_secs(1)), None);
        limiter.failed(attacker, start + Duration::from_secs(1));
        assert!(limiter.retry_after(attacker, start + Duration::from_secs(1)).is_some());
        // Others are not affected.
        assert_eq!(limiter.retry_after(source("192.0.2.8"), start), None);
    }

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        assert_eq!(source("2001:db8:1:2::1"), source("2001:db8:1:2:ffff::9"));
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(source("::ffff:192.0.2.1"), source("192.0.2.1"));
    }

    #[test]
    fn the_table_stays_bounded_under_rotating_sources() {
        let limiter = FailureLimiter::default();
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 500) {
            limiter.failed(Source::of(IpAddr::V4(i.into())), now + Duration::from_micros(u64::from(i)));
        }
        assert_eq!(limiter.tracked(), MAX_SOURCES);
        // The newest source is still tracked.
        let last = MAX_SOURCES as u32 + 499;
        let (newest, then) = (Source::of(IpAddr::V4(last.into())), now + Duration::from_micros(u64::from(last)));
        for _ in 0..9 {
            limiter.failed(newest, then);
        }
        assert!(limiter.retry_after(newest, then).is_some());
    }
}
