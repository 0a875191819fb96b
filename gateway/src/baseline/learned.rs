//! Learnt as normal: what an analyst, resolving an alert as a false positive, fed into the
//! device's baseline (`POST /api/v1/alerts/{id}/learn`). Each exception belongs to the alert it
//! came from, so taking that alert's learning back (`DELETE`) removes exactly what it added and
//! the detector flags the observation again.
//!
//! What an exception covers is bounded on purpose, so that learning never switches a detector
//! off for a device:
//! - a destination: that prefix on that service only (not the prefix on any other port, nor
//!   the service anywhere else);
//! - a LAN peer: that host on that service;
//! - an ARP claim: that address, by that device (the detector never offers a claim on the
//!   gateway's own address, nor a forged sender, for learning);
//! - a rate: up to the observed value × `LEARN_MARGIN`, above which the detector fires again.
//!   A value more than `MAX_LEARN_FACTOR` × the limit in force is refused: that far above is
//!   not a limit set a little too low, and `[detect]` is the place to change limits wholesale.
//!
//! Reads and writes `baseline_learned`: the alert store writes it in the same transaction as
//! the audit record (`alerts::AlertStore::learn`), the pipeline reads it at start (`load`)
//! and is told of every change through its queue (`Edit`).
use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::{profile::proto_name, store::StoreError};
use crate::{
    device::Mac,
    event::{Measure, Observation},
};

/// Headroom a learnt rate gets over the value observed: the next busy day is a little busier.
pub const LEARN_MARGIN: f64 = 1.25;
/// Times the limit in force an observed rate may be and still be learnt.
pub const MAX_LEARN_FACTOR: f64 = 10.0;

/// Why an observation cannot be learnt as normal.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum NotLearnable {
    /// The rate was far beyond the limit: an attack or a misconfigured limit, not a miss.
    #[error(
        "{} of {observed:.0} is more than {MAX_LEARN_FACTOR}× the limit of {limit:.0} in force: too far above to learn \
         as normal (raise the [detect] limits if it really is)",
        measure.as_str()
    )]
    TooFar { measure: Measure, observed: f64, limit: f64 },
    /// A rate that is not a finite positive number (never written by a detector).
    #[error("{} of {observed} is not a rate", measure.as_str())]
    NotARate { measure: Measure, observed: f64 },
}

/// Whether `observation` may be learnt (see the module's bounds).
pub fn check(observation: &Observation) -> Result<(), NotLearnable> {
    match *observation {
        Observation::Rate { measure, observed, limit } => {
            if !(observed.is_finite() && observed > 0.0 && limit.is_finite()) {
                return Err(NotLearnable::NotARate { measure, observed });
            }
            if observed > MAX_LEARN_FACTOR * limit {
                return Err(NotLearnable::TooFar { measure, observed, limit });
            }
            Ok(())
        }
        Observation::Destination { .. } | Observation::Peer { .. } | Observation::Claim { .. } => Ok(()),
    }
}

/// True when the learnt observation `learnt` makes `seen` normal.
pub fn covers(learnt: &Observation, seen: &Observation) -> bool {
    match (*learnt, *seen) {
        (
            Observation::Destination { prefix, proto, port },
            Observation::Destination { prefix: seen_prefix, proto: seen_proto, port: seen_port },
        ) => (proto, port) == (seen_proto, seen_port) && prefix.contains(&seen_prefix),
        (Observation::Peer { .. }, Observation::Peer { .. })
        | (Observation::Claim { .. }, Observation::Claim { .. }) => learnt == seen,
        (
            Observation::Rate { measure, observed, .. },
            Observation::Rate { measure: seen_measure, observed: seen_observed, .. },
        ) => measure == seen_measure && seen_observed <= observed * LEARN_MARGIN,
        _ => false,
    }
}

/// The observation in words, for the audit log and the CLI.
pub fn describe(observation: &Observation) -> String {
    match *observation {
        Observation::Destination { prefix, proto, port } => format!("{}/{port} to {prefix}", proto_name(proto)),
        Observation::Peer { addr, proto, port } => format!("{}/{port} to LAN host {addr}", proto_name(proto)),
        Observation::Claim { addr } => format!("ARP claim of {addr}"),
        Observation::Rate { measure, observed, .. } => {
            format!("{} up to {:.0} (observed {observed:.0})", measure.as_str(), observed * LEARN_MARGIN)
        }
    }
}

/// One learnt observation of one device, from one alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Exception {
    pub alert_id: i64,
    pub mac: Mac,
    pub observation: Observation,
}

/// A change to the learnt exceptions, for the pipeline (`pipeline::Command::Learned`), sent
/// after it is committed to the store.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    Learn(Vec<Exception>),
    Unlearn { alert_id: i64, mac: Mac },
}

/// Every device's learnt exceptions, as the detectors consult them.
#[derive(Clone, Debug, Default)]
pub struct Exceptions {
    devices: HashMap<Mac, Vec<(i64, Observation)>>,
}

impl Exceptions {
    pub fn apply(&mut self, edit: Edit) {
        match edit {
            Edit::Learn(exceptions) => {
                for Exception { alert_id, mac, observation } in exceptions {
                    let learnt = self.devices.entry(mac).or_default();
                    if !learnt.contains(&(alert_id, observation)) {
                        learnt.push((alert_id, observation));
                    }
                }
            }
            Edit::Unlearn { alert_id, mac } => {
                if let Some(learnt) = self.devices.get_mut(&mac) {
                    learnt.retain(|(id, _)| *id != alert_id);
                    if learnt.is_empty() {
                        self.devices.remove(&mac);
                    }
                }
            }
        }
    }

    /// True when something learnt for `mac` makes `seen` normal.
    pub fn covers(&self, mac: Mac, seen: &Observation) -> bool {
        self.devices.get(&mac).is_some_and(|learnt| learnt.iter().any(|(_, o)| covers(o, seen)))
    }
}

/// Stores `exceptions`, learnt by `actor`. Call it inside the caller's transaction.
pub fn insert(conn: &Connection, exceptions: &[Exception], actor: &str) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(
        "INSERT OR IGNORE INTO baseline_learned (alert_id, mac, observation, actor) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for exception in exceptions {
        let key = exception.mac.to_string();
        let json = serde_json::to_string(&exception.observation)
            .map_err(|source| StoreError::Encode { key: key.clone(), source })?;
        statement.execute(params![exception.alert_id, key, json, actor])?;
    }
    Ok(())
}

/// Removes what alert `alert_id` learnt; returns how many exceptions it had.
pub fn remove(conn: &Connection, alert_id: i64) -> Result<usize, StoreError> {
    Ok(conn.execute("DELETE FROM baseline_learned WHERE alert_id = ?1", [alert_id])?)
}

/// Whether alert `alert_id` is learnt as normal.
pub fn is_learnt(conn: &Connection, alert_id: i64) -> Result<bool, StoreError> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM baseline_learned WHERE alert_id = ?1)", [alert_id], |row| {
        row.get(0)
    })?)
}

/// Every stored exception, of every device.
pub fn load(conn: &Connection) -> Result<Vec<Exception>, StoreError> {
    read(conn, "SELECT alert_id, mac, observation FROM baseline_learned ORDER BY alert_id, rowid", [])
}

/// The stored exceptions of one device, oldest alert first.
pub fn load_device(conn: &Connection, mac: Mac) -> Result<Vec<Exception>, StoreError> {
    read(
        conn,
        "SELECT alert_id, mac, observation FROM baseline_learned WHERE mac = ?1 ORDER BY alert_id, rowid",
        [mac.to_string()],
    )
}

fn read(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Exception>, StoreError> {
    let mut statement = conn.prepare(sql)?;
    let rows = statement.query_map(params, |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?)))?;
    let mut exceptions = Vec::new();
    for row in rows {
        let (alert_id, mac, json): (i64, String, String) = row?;
        let decode = |source| StoreError::Decode { key: format!("learnt exception of alert {alert_id}"), source };
        let mac = mac.parse().map_err(|e: crate::device::ParseMacError| decode(serde::de::Error::custom(e)))?;
        let observation = serde_json::from_str(&json).map_err(decode)?;
        exceptions.push(Exception { alert_id, mac, observation });
    }
    Ok(exceptions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(measure: Measure, observed: f64) -> Observation {
        Observation::Rate { measure, observed, limit: 24.0 }
    }

    #[test]
    fn a_learnt_rate_covers_up_to_its_margin_and_no_further() {
        let learnt = rate(Measure::ScanHosts, 40.0);
        assert!(covers(&learnt, &rate(Measure::ScanHosts, 50.0)));
        assert!(!covers(&learnt, &rate(Measure::ScanHosts, 51.0)));
        assert!(!covers(&learnt, &rate(Measure::NewFlows, 10.0)), "another measure");
    }

    #[test]
    fn a_learnt_destination_covers_its_prefix_on_its_service_only() {
        let learnt = Observation::Destination { prefix: "203.0.113.0/24".parse().unwrap(), proto: 6, port: 443 };
        let seen = |prefix: &str, port| Observation::Destination { prefix: prefix.parse().unwrap(), proto: 6, port };
        assert!(covers(&learnt, &seen("203.0.113.0/24", 443)));
        assert!(!covers(&learnt, &seen("203.0.113.0/24", 22)), "another port");
        assert!(!covers(&learnt, &seen("203.0.0.0/16", 443)), "a wider prefix");
    }

    #[test]
    fn rates_far_above_the_limit_are_not_learnable() {
        assert_eq!(check(&rate(Measure::ScanHosts, 240.0)), Ok(()));
        assert!(matches!(check(&rate(Measure::ScanHosts, 241.0)), Err(NotLearnable::TooFar { .. })));
        assert!(matches!(check(&rate(Measure::ScanHosts, f64::NAN)), Err(NotLearnable::NotARate { .. })));
    }

    #[test]
    fn unlearning_one_alert_keeps_what_another_learnt() {
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        let peer = Observation::Peer { addr: "192.168.1.9".parse().unwrap(), proto: 6, port: 22 };
        let mut exceptions = Exceptions::default();
        let learn = |alert_id| Edit::Learn(vec![Exception { alert_id, mac, observation: peer }]);
        exceptions.apply(learn(1));
        exceptions.apply(learn(2));
        exceptions.apply(Edit::Unlearn { alert_id: 1, mac });
        assert!(exceptions.covers(mac, &peer));
        exceptions.apply(Edit::Unlearn { alert_id: 2, mac });
        assert!(!exceptions.covers(mac, &peer));
    }
}
