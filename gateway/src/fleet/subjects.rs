//! NATS subjects, streams and buckets of the fleet, in one place.
//!
//! Gateways publish reports on `iotgw.<site>.<gateway>.<kind>` (stream `IOTGW`) and take
//! commands from `iotgw.<site>.<gateway>.cmd` (stream `IOTGW_CMD`). Site and gateway are single
//! NATS tokens, so a broker permission `iotgw.<site>.<gateway>.>` confines one gateway's
//! credentials to its own subjects.

/// Stream of every gateway report (events, inventory, health, command results).
pub const REPORT_STREAM: &str = "IOTGW";
/// Subjects of `REPORT_STREAM`.
pub const REPORT_SUBJECTS: [&str; 4] =
    ["iotgw.*.*.event", "iotgw.*.*.inventory", "iotgw.*.*.health", "iotgw.*.*.cmd_result"];
/// Stream of commands from the hub, kept until they expire.
pub const COMMAND_STREAM: &str = "IOTGW_CMD";
pub const COMMAND_SUBJECTS: [&str; 1] = ["iotgw.*.*.cmd"];
/// Key-value bucket of signed policy bundles, keys `site.<site>` and `group.<group>`.
pub const POLICY_BUCKET: &str = "iotgw_policy";

/// What a gateway publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Event,
    Inventory,
    Health,
    CommandResult,
}

impl ReportKind {
    pub fn token(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Inventory => "inventory",
            Self::Health => "health",
            Self::CommandResult => "cmd_result",
        }
    }
}

/// `iotgw.<site>.<gateway>.<kind>`.
pub fn report(site: &str, gateway: &str, kind: ReportKind) -> String {
    format!("iotgw.{site}.{gateway}.{}", kind.token())
}

/// `iotgw.<site>.<gateway>.cmd`.
pub fn command(site: &str, gateway: &str) -> String {
    format!("iotgw.{site}.{gateway}.cmd")
}

/// Durable consumer name of one gateway on `COMMAND_STREAM`: `gw_<site>~<gateway>`. The
/// separator is one no site or gateway name holds (`check_token`), so no two gateways share a
/// name: with `_`, site `a_b` gateway `c` and site `a` gateway `b_c` would, and the broker
/// permissions that name the consumer would let each take the other's commands.
pub fn command_consumer(site: &str, gateway: &str) -> String {
    format!("gw_{site}~{gateway}")
}

/// Where a gateway's replies arrive (its connection's inbox prefix, instead of `_INBOX`): its
/// broker credentials let it subscribe to `<prefix>.>` only (`hub::credentials`).
pub fn inbox_prefix(site: &str, gateway: &str) -> String {
    format!("_INBOX.{site}.{gateway}")
}

/// KV key of a site's bundle.
pub fn site_bundle_key(site: &str) -> String {
    format!("site.{site}")
}

/// KV key of a group's bundle.
pub fn group_bundle_key(group: &str) -> String {
    format!("group.{group}")
}

/// `(site, gateway, kind)` of a report subject, or `None` when it is not one.
pub fn parse_report(subject: &str) -> Option<(&str, &str, ReportKind)> {
    let mut tokens = subject.split('.');
    let (Some("iotgw"), Some(site), Some(gateway), Some(kind), None) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return None;
    };
    let kind = [ReportKind::Event, ReportKind::Inventory, ReportKind::Health, ReportKind::CommandResult]
        .into_iter()
        .find(|k| k.token() == kind)?;
    Some((site, gateway, kind))
}

/// A site, gateway or group name must be one NATS token that is safe in a subject, a consumer
/// name and a KV key: 1 to 64 of `A-Z a-z 0-9 - _`.
pub fn check_token(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{name:?} must be 1 to 64 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("{name:?} may hold only letters, digits, '-' and '_'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_subjects_round_trip() {
        for kind in [ReportKind::Event, ReportKind::Inventory, ReportKind::Health, ReportKind::CommandResult] {
            let subject = report("berlin-3", "gw_1", kind);
            assert_eq!(parse_report(&subject), Some(("berlin-3", "gw_1", kind)));
        }
        assert_eq!(parse_report("iotgw.a.b.cmd"), None);
        assert_eq!(parse_report("iotgw.a.b.event.x"), None);
        assert_eq!(parse_report("other.a.b.event"), None);
    }

    #[test]
    fn no_two_gateways_share_a_command_consumer() {
        assert_ne!(command_consumer("a_b", "c"), command_consumer("a", "b_c"));
        assert_ne!(inbox_prefix("a_b", "c"), inbox_prefix("a", "b_c"));
    }

    #[test]
    fn tokens_with_subject_syntax_are_refused() {
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
        assert!(check_token("site-1_a").is_ok());
    }
}
