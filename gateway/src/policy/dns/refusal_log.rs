//! How often refused DNS answers reach the log: the first of each reason at once, then at
//! most one line per reason every `LOG_INTERVAL`, saying how many were left out, so a flood
//! of forged answers cannot flood the journal (`/metrics` counts every one).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::Refusal;

/// Shortest time between two log lines of one reason.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct RefusalLog {
    /// Per reason: when it was last logged and how many were left out since.
    last: HashMap<Refusal, (Instant, u64)>,
}

impl RefusalLog {
    /// Whether a refusal for `reason` at `now` is logged; if so, with how many of that reason
    /// were left out since the last line.
    pub fn admit(&mut self, reason: Refusal, now: Instant) -> Option<u64> {
        match self.last.get_mut(&reason) {
            Some((logged, left_out)) if now.duration_since(*logged) < LOG_INTERVAL => {
                *left_out += 1;
                None
            }
            Some((logged, left_out)) => {
                *logged = now;
                Some(std::mem::take(left_out))
            }
            None => {
                self.last.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_counting_the_rest() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.admit(Refusal::Unsolicited, start), Some(0));
        assert_eq!(log.admit(Refusal::WrongId, start), Some(0), "reasons are limited apart");
        for n in 1..=100 {
            assert_eq!(log.admit(Refusal::Unsolicited, start + Duration::from_millis(n)), None);
        }
        assert_eq!(log.admit(Refusal::Unsolicited, start + LOG_INTERVAL), Some(100));
        assert_eq!(log.admit(Refusal::Unsolicited, start + LOG_INTERVAL), None);
    }
}
