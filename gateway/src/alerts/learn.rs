//! "Learn this as normal": an analyst who resolved an alert as a false positive feeds what its
//! detector observed into the device's baseline (`baseline::learned`), or takes it back. Both
//! are all or nothing: the exceptions and their audit record (`learn_normal`,
//! `unlearn_normal`) commit in one transaction, and a refusal changes nothing. The caller
//! publishes the `Audit` event and hands the `Edit` to the pipeline, which applies it from its
//! next input on; the store is what a restart restores.
//!
//! Reads `alerts` and `alert_observations`; writes `alert_observations` (as alerts are recorded),
//! `baseline_learned`, and `inventory_audit` through the ledger.
use rusqlite::{Connection, params};

use super::{AlertDetail, AlertStore, AlertsError, MAX_OBSERVATIONS_PER_ALERT, Resolution, State, store::get};
use crate::{
    baseline::learned::{self, Edit, Exception},
    event::{EventKind, GatewayEvent, Observation, Severity},
};

impl AlertStore {
    /// Learns alert `id`'s observations as its device's normal, as `actor`. Only a record
    /// resolved `false_positive`, of a device, not learnt yet, with observations a baseline
    /// may take (`learned::check`). Returns the record as it now is, the `Audit` event to
    /// publish and the pipeline's `Edit`.
    pub fn learn(&mut self, id: i64, actor: &str) -> Result<(AlertDetail, GatewayEvent, Edit), AlertsError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = get(&tx, id)?;
        let alert = &current.alert;
        let refuse = |why: String| AlertsError::Conflict(format!("alert {id} cannot be learnt as normal: {why}"));
        if (alert.state, alert.resolution) != (State::Resolved, Some(Resolution::FalsePositive)) {
            let now = alert.resolution.map_or_else(|| alert.state.to_string(), |r| format!("{} {r}", alert.state));
            return Err(refuse(format!("it is {now}; resolve it as false_positive first")));
        }
        let Some(mac) = alert.device else { return Err(refuse("it concerns no device".into())) };
        if current.learned {
            return Err(refuse("it is learnt already".into()));
        }
        if current.observations.is_empty() {
            return Err(refuse(format!("its detector ({}) observed nothing a baseline may take", alert.detector)));
        }
        for observation in &current.observations {
            learned::check(observation).map_err(|why| refuse(why.to_string()))?;
        }
        let exceptions: Vec<Exception> =
            current.observations.iter().map(|&observation| Exception { alert_id: id, mac, observation }).collect();
        learned::insert(&tx, &exceptions, actor)?;
        let said: Vec<String> = current.observations.iter().map(learned::describe).collect();
        let detail = format!("alert {id} ({}): learnt as normal: {}", alert.incident_id, said.join("; "));
        let event = audit(&tx, actor, mac, "learn_normal", detail)?;
        let now = get(&tx, id)?;
        tx.commit()?;
        Ok((now, event, Edit::Learn(exceptions)))
    }

    /// Takes back what alert `id` learnt, as `actor`: its device's detectors flag those
    /// observations again. Refused when it learnt nothing.
    pub fn unlearn(&mut self, id: i64, actor: &str) -> Result<(AlertDetail, GatewayEvent, Edit), AlertsError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = get(&tx, id)?;
        let mac =
            current.alert.device.filter(|_| current.learned).ok_or_else(|| {
                AlertsError::Conflict(format!("alert {id} is not learnt as normal: nothing to unlearn"))
            })?;
        let removed = learned::remove(&tx, id)?;
        let detail = format!("alert {id} ({}): {removed} learnt observation(s) removed", current.alert.incident_id);
        let event = audit(&tx, actor, mac, "unlearn_normal", detail)?;
        let now = get(&tx, id)?;
        tx.commit()?;
        Ok((now, event, Edit::Unlearn { alert_id: id, mac }))
    }
}

/// Writes the audit record of a learning change and returns its event.
fn audit(
    conn: &Connection,
    actor: &str,
    mac: crate::device::Mac,
    action: &str,
    detail: String,
) -> Result<GatewayEvent, AlertsError> {
    crate::inventory::ledger::audit(conn, actor, Some(mac), action, &detail)?;
    Ok(GatewayEvent::new(Severity::Info, Some(mac), actor, EventKind::Audit { action: action.into(), detail }))
}

/// Adds what a detector observed to record `id`, up to `MAX_OBSERVATIONS_PER_ALERT`.
pub(super) fn add_observations(conn: &Connection, id: i64, observations: &[Observation]) -> Result<(), AlertsError> {
    let mut add = conn.prepare_cached(
        "INSERT OR IGNORE INTO alert_observations (alert_id, observation)
         SELECT ?1, ?2 WHERE (SELECT COUNT(*) FROM alert_observations WHERE alert_id = ?1) < ?3",
    )?;
    for observation in observations {
        // JSON has no NaN nor infinity: such a rate could not be read back (nor learnt).
        if let Observation::Rate { observed, limit, .. } = observation
            && !(observed.is_finite() && limit.is_finite())
        {
            continue;
        }
        let json = serde_json::to_string(observation)
            .map_err(|error| AlertsError::Invalid(format!("cannot encode an observation: {error}")))?;
        add.execute(params![id, json, MAX_OBSERVATIONS_PER_ALERT])?;
    }
    Ok(())
}

/// What was observed for record `id`, first seen first.
pub(super) fn observations(conn: &Connection, id: i64) -> Result<Vec<Observation>, AlertsError> {
    let mut statement =
        conn.prepare_cached("SELECT observation FROM alert_observations WHERE alert_id = ?1 ORDER BY rowid")?;
    let rows = statement.query_map([id], |row| row.get::<_, String>(0))?;
    let mut observations = Vec::new();
    for json in rows {
        let json = json?;
        let observation = serde_json::from_str(&json).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(error))
        })?;
        observations.push(observation);
    }
    Ok(observations)
}
