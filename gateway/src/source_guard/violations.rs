//! Violations into alerts: the datapath counts, per device, frames sent from an address
//! bound to another (`SOURCE_VIOLATIONS`); each check raises one `source_spoof` alert for
//! every device whose count grew since the last, so a spoofing device is reported once per
//! interval however many frames it sends. A sync core: reads nothing, writes nothing.
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use super::{Mode, bindings::Bindings};
use crate::{
    detect::{Alert, DetectorKind, IncidentId},
    device::Mac,
};

/// A spoofing device is sure evidence, not a statistical guess: `High`.
pub const SCORE: f64 = 0.9;

/// One device's violations as the datapath counted them, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub mac: Mac,
    pub frames: u64,
    /// The last source address it used that was not its own.
    pub last_source: IpAddr,
}

/// The counts of the last check.
#[derive(Debug, Default)]
pub struct Violations {
    counted: HashMap<Mac, u64>,
    primed: bool,
}

impl Violations {
    /// The alerts for the devices whose count grew since the last check. The first check
    /// only takes the counts in (they predate this controller: the map is pinned).
    pub fn check(
        &mut self,
        read: &[Violation],
        bindings: &Bindings,
        mode: Mode,
        interval: Duration,
        now: SystemTime,
    ) -> Vec<Alert> {
        let previous = std::mem::take(&mut self.counted);
        self.counted = read.iter().map(|v| (v.mac, v.frames)).collect();
        if !std::mem::replace(&mut self.primed, true) {
            return Vec::new();
        }
        read.iter()
            .filter_map(|v| {
                // Fewer than before: the LRU evicted the entry and it started again.
                let before = previous.get(&v.mac).copied().filter(|&n| n <= v.frames).unwrap_or(0);
                (v.frames > before).then(|| alert(v, v.frames - before, bindings, mode, interval, now))
            })
            .collect()
    }
}

fn alert(
    violation: &Violation,
    frames: u64,
    bindings: &Bindings,
    mode: Mode,
    interval: Duration,
    now: SystemTime,
) -> Alert {
    let own = bindings.addresses_of(violation.mac);
    let holder = bindings
        .holder(violation.last_source)
        .map_or_else(|| "bound to another device".to_owned(), |holder| format!("bound to {holder}"));
    let what = if mode == Mode::Enforce { "dropped" } else { "passed (source_guard = log)" };
    let expected = if own.is_empty() {
        "frames from no address bound to another device".to_owned()
    } else {
        let own: Vec<String> = own.iter().map(IpAddr::to_string).collect();
        format!("frames from its own addresses ({})", own.join(", "))
    };
    Alert {
        time: now,
        mac: violation.mac,
        device_ip: own.first().copied(),
        detector: DetectorKind::SourceSpoof,
        incident: IncidentId::new(violation.mac, DetectorKind::SourceSpoof),
        score: SCORE,
        expected,
        observed: format!(
            "{frames} frames in the last {} s from {} ({holder}), {what}; score {SCORE} (a bound address used by another device)",
            interval.as_secs(),
            violation.last_source
        ),
        flows: Vec::new(),
        // Sending as another device is never this network's normal: nothing to learn.
        observations: Vec::new(),
        resolved: false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::source_guard::bindings::Source;

    const SPOOFER: Mac = Mac([0x02, 0, 0, 0, 0, 0x05]);
    const OWNER: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    const STOLEN: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10));
    const MINUTE: Duration = Duration::from_secs(60);

    fn read(frames: u64) -> [Violation; 1] {
        [Violation { mac: SPOOFER, frames, last_source: STOLEN }]
    }

    #[test]
    fn a_spoofing_device_is_alerted_once_per_interval_in_which_it_spoofed() {
        let mut bindings = Bindings::new(Duration::from_secs(3_600), 16);
        bindings.observe(OWNER, STOLEN, Source::DhcpLease, Instant::now());
        bindings.observe(SPOOFER, Ipv4Addr::new(192, 168, 1, 11).into(), Source::Claim, Instant::now());
        let (mut violations, now) = (Violations::default(), SystemTime::now());
        assert!(violations.check(&read(4), &bindings, Mode::Enforce, MINUTE, now).is_empty(), "counts from before");
        let alerts = violations.check(&read(1_004), &bindings, Mode::Enforce, MINUTE, now);
        let [alert] = alerts.as_slice() else { panic!("{alerts:?}") };
        assert_eq!((alert.mac, alert.detector), (SPOOFER, DetectorKind::SourceSpoof));
        assert!(alert.observed.starts_with("1000 frames in the last 60 s from 192.168.1.10"), "{}", alert.observed);
        assert!(alert.observed.contains(&format!("bound to {OWNER}")) && alert.observed.contains("dropped"));
        assert_eq!(alert.expected, "frames from its own addresses (192.168.1.11)");
        assert!(alert.severity() == crate::event::Severity::High);
        assert!(violations.check(&read(1_004), &bindings, Mode::Enforce, MINUTE, now).is_empty(), "quiet since");
    }

    #[test]
    fn an_evicted_count_that_starts_again_still_alerts() {
        let bindings = Bindings::new(Duration::from_secs(3_600), 16);
        let (mut violations, now) = (Violations::default(), SystemTime::now());
        violations.check(&read(500), &bindings, Mode::Log, MINUTE, now);
        let alerts = violations.check(&read(3), &bindings, Mode::Log, MINUTE, now);
        assert_eq!(alerts.len(), 1);
        assert!(alerts[0].observed.starts_with("3 frames") && alerts[0].observed.contains("passed"));
    }

    #[test]
    fn an_ipv6_spoofer_is_alerted_with_the_address_and_its_holder() {
        let (owner_address, own) =
            (Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 5));
        let mut bindings = Bindings::new(Duration::from_secs(3_600), 16);
        bindings.observe(OWNER, owner_address.into(), Source::Claim, Instant::now());
        bindings.observe(SPOOFER, own.into(), Source::Claim, Instant::now());
        let (mut violations, now) = (Violations::default(), SystemTime::now());
        let read = |frames| [Violation { mac: SPOOFER, frames, last_source: owner_address.into() }];
        violations.check(&read(0), &bindings, Mode::Enforce, MINUTE, now);
        let alerts = violations.check(&read(7), &bindings, Mode::Enforce, MINUTE, now);
        let [alert] = alerts.as_slice() else { panic!("{alerts:?}") };
        assert!(alert.observed.starts_with("7 frames in the last 60 s from fd77::10"), "{}", alert.observed);
        assert!(alert.observed.contains(&format!("bound to {OWNER}")));
        assert_eq!(alert.expected, "frames from its own addresses (fe80::5)");
        assert_eq!(alert.device_ip, Some(own.into()));
    }
}
