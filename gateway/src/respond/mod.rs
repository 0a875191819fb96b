//! respond: what to do about an alert. Reads `detect::Alert`s and the `[[response]]` rules of
//! the policy files (`rules`); writes the device's access through `datapath::DeviceControl`
//! (quarantine, update lane, block, and release by a human) and returns the `Action` and
//! `Audit` events to publish. `pipeline` runs baseline → detect → respond on one thread.
use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use gateway_ebpf::lane;

use crate::{
    datapath::{Control, ControlError, DeviceAccess},
    detect::Alert,
    device::{Access, Mac},
    event::{EventKind, GatewayEvent, Severity},
};

pub mod rules;

pub use rules::{ActionKind, ResponsePolicy, ResponseRule, RuleError};

/// Why a response or a release failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// The datapath refused the change; what it enforced before stays.
    #[error("datapath refused to change {mac}: {source}")]
    Control { mac: Mac, source: ControlError },
    /// `release` for a device no response holds.
    #[error("{mac} is not held by an automated response")]
    NotHeld { mac: Mac },
}

/// What a response did to a device, kept until a human releases it.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    pub action: ActionKind,
    /// What the datapath enforced before the first action (`None`: not in the table).
    pub previous: Option<DeviceAccess>,
    pub incident: String,
    pub rule: String,
    pub since: SystemTime,
}

/// A device-table change respond made, for the pipeline to record in the store
/// (`datapath::AccessLedger`), so a restart restores it.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessRecord {
    pub mac: Mac,
    pub enforced: DeviceAccess,
    pub actor: String,
    pub reason: String,
}

/// The respond step.
pub struct Responder {
    policy: ResponsePolicy,
    control: Control,
    /// Changes made since the last `take_changes`.
    changes: Vec<AccessRecord>,
    classes: HashMap<Mac, String>,
    holds: HashMap<Mac, Hold>,
    /// Per rule index: per device, when it acted.
    device_history: HashMap<(usize, Mac), VecDeque<SystemTime>>,
    /// Per rule index: when it acted, any device.
    global_history: HashMap<usize, VecDeque<SystemTime>>,
}

impl Responder {
    pub fn new(policy: ResponsePolicy, control: Control) -> Self {
        Self {
            policy,
            control,
            changes: Vec::new(),
            classes: HashMap::new(),
            holds: HashMap::new(),
            device_history: HashMap::new(),
            global_history: HashMap::new(),
        }
    }

    /// Replaces the rules (policy reload); holds and rate-limit history stay.
    pub fn set_policy(&mut self, policy: ResponsePolicy) {
        self.policy = policy;
    }

    pub fn set_class(&mut self, mac: Mac, class: &str) {
        self.classes.insert(mac, class.to_owned());
    }

    pub fn hold(&self, mac: Mac) -> Option<&Hold> {
        self.holds.get(&mac)
    }

    /// The device-table changes made since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<AccessRecord> {
        std::mem::take(&mut self.changes)
    }

    /// Applies the rules to one alert. Of the rules that match, are not exempt and are
    /// within their rate limits, the strongest action is taken (ties: the first in file
    /// order); a device already held at that strength or stronger is left alone. Returns the
    /// events to publish: one `Action` and one `Audit` per action, or an `Audit` of the
    /// failure.
    pub fn handle(&mut self, alert: &Alert) -> Vec<GatewayEvent> {
        if alert.resolved {
            return Vec::new();
        }
        let class = self.classes.get(&alert.mac).map(String::as_str);
        let mut chosen: Option<(usize, &ResponseRule)> = None;
        let mut skipped = Vec::new();
        for (index, rule) in self.policy.rules.iter().enumerate() {
            if !rule.matches(alert.detector, alert.score) {
                continue;
            }
            if rule.exempts(alert.mac, class) {
                skipped.push(format!("rule {:?} ({}) exempts this device", rule.name, rule.origin));
                continue;
            }
            if let Some(limit) = limited(rule, index, alert, &self.device_history, &self.global_history) {
                skipped.push(limit);
                continue;
            }
            if chosen.is_none_or(|(_, c)| rule.action > c.action) {
                chosen = Some((index, rule));
            }
        }
        let mut events = Vec::new();
        for reason in &skipped {
            events.push(audit(alert.mac, "respond:rules", "respond.skip", format!("{}: {reason}", alert.incident)));
        }
        let Some((index, rule)) = chosen else { return events };
        let rule = rule.clone();
        if self.holds.get(&alert.mac).is_some_and(|h| h.action >= rule.action) {
            return events;
        }
        match self.apply(alert.mac, rule.action) {
            Ok((previous, next)) => {
                // Remember the action, forgetting what no longer counts against a limit.
                for (history, period) in [
                    (self.device_history.entry((index, alert.mac)).or_default(), rule.device_period),
                    (self.global_history.entry(index).or_default(), rule.global_period),
                ] {
                    history.retain(|t| alert.time.duration_since(*t).unwrap_or_default() < period);
                    history.push_back(alert.time);
                }
                if rule.action.enforces() {
                    let previous = self.holds.get(&alert.mac).map(|h| h.previous).unwrap_or(previous);
                    self.holds.insert(
                        alert.mac,
                        Hold {
                            action: rule.action,
                            previous,
                            incident: alert.incident.0.clone(),
                            rule: rule.name.clone(),
                            since: alert.time,
                        },
                    );
                }
                let actor = format!("respond:{}", rule.name);
                let reason = format!(
                    "{} scored {:.2} (rule {:?} at {}: {} from {:.2})",
                    alert.incident, alert.score, rule.name, rule.origin, rule.action, rule.min_score
                );
                tracing::warn!(device = %alert.mac, action = %rule.action, incident = %alert.incident, "response");
                if let Some(enforced) = next {
                    let (mac, actor, reason) = (alert.mac, actor.clone(), reason.clone());
                    self.changes.push(AccessRecord { mac, enforced, actor, reason });
                }
                let mut action = GatewayEvent::new(
                    if rule.action.enforces() { Severity::High } else { alert.severity() },
                    Some(alert.mac),
                    actor.clone(),
                    EventKind::Action { action: rule.action.as_str().to_owned(), reason: reason.clone() },
                );
                action.device_ip = alert.device_ip;
                action.responds_to = Some(alert.incident.0.clone());
                events.push(action);
                events.push(audit(alert.mac, &actor, &format!("respond.{}", rule.action), reason));
            }
            Err(error) => {
                tracing::error!(device = %alert.mac, action = %rule.action, %error, "response failed");
                events.push(audit(
                    alert.mac,
                    &format!("respond:{}", rule.name),
                    &format!("respond.{}.failed", rule.action),
                    format!("{}: {error}", alert.incident),
                ));
            }
        }
        events
    }

    /// A human lifts an automated response: the device gets back what it had before the
    /// first action. Returns the `Action` and `Audit` events to publish.
    pub fn release(&mut self, mac: Mac, actor: &str) -> Result<Vec<GatewayEvent>, RespondError> {
        let hold = self.holds.get(&mac).cloned().ok_or(RespondError::NotHeld { mac })?;
        let restore = hold.previous.unwrap_or(DeviceAccess { access: Access::Unknown, policy_id: 0, class_id: 0 });
        self.control.set_access(mac, restore).map_err(|source| RespondError::Control { mac, source })?;
        self.holds.remove(&mac);
        let reason = format!(
            "released from {} (rule {:?}, incident {}) back to {}",
            hold.action, hold.rule, hold.incident, restore.access
        );
        self.changes.push(AccessRecord { mac, enforced: restore, actor: actor.to_owned(), reason: reason.clone() });
        let mut release = GatewayEvent::new(
            Severity::Medium,
            Some(mac),
            actor,
            EventKind::Action { action: "release".to_owned(), reason: reason.clone() },
        );
        release.responds_to = Some(hold.incident);
        Ok(vec![release, audit(mac, actor, "respond.release", reason)])
    }

    /// Changes the datapath for `action`; returns what it enforced before and after (`None`
    /// when the action changes nothing).
    fn apply(
        &self,
        mac: Mac,
        action: ActionKind,
    ) -> Result<(Option<DeviceAccess>, Option<DeviceAccess>), RespondError> {
        let fail = |source| RespondError::Control { mac, source };
        let previous = self.control.access(mac).map_err(fail)?;
        let (policy_id, class_id) = previous.map(|p| (p.policy_id, p.class_id)).unwrap_or((lane::QUARANTINE, 0));
        let next = match action {
            ActionKind::Alert => return Ok((previous, None)),
            // Enrolled, but on the quarantine lane's allow-list (updates, DNS): everything
            // else meets a policy miss and is dropped, not redirected.
            ActionKind::UpdateLane => DeviceAccess { access: Access::Enrolled, policy_id: lane::QUARANTINE, class_id },
            ActionKind::Quarantine => DeviceAccess { access: Access::Quarantined, policy_id, class_id },
            ActionKind::Block => DeviceAccess { access: Access::Blocked, policy_id, class_id },
        };
        self.control.set_access(mac, next).map_err(fail)?;
        Ok((previous, Some(next)))
    }
}

/// Why a rule may not act now, if it may not.
fn limited(
    rule: &ResponseRule,
    index: usize,
    alert: &Alert,
    device_history: &HashMap<(usize, Mac), VecDeque<SystemTime>>,
    global_history: &HashMap<usize, VecDeque<SystemTime>>,
) -> Option<String> {
    let within = |history: Option<&VecDeque<SystemTime>>, period: Duration| {
        history.map_or(0, |h| h.iter().filter(|t| alert.time.duration_since(**t).unwrap_or_default() < period).count())
    };
    let device = within(device_history.get(&(index, alert.mac)), rule.device_period);
    if device >= rule.max_per_device as usize {
        return Some(format!(
            "rule {:?} already acted {device} time(s) on this device in {} s (max {})",
            rule.name,
            rule.device_period.as_secs(),
            rule.max_per_device
        ));
    }
    let global = within(global_history.get(&index), rule.global_period);
    if global >= rule.max_global as usize {
        return Some(format!(
            "rule {:?} already acted {global} time(s) in {} s over all devices (max {})",
            rule.name,
            rule.global_period.as_secs(),
            rule.max_global
        ));
    }
    None
}

/// An audit record: published on the bus and stored in the ledger by the pipeline.
fn audit(mac: Mac, actor: &str, action: &str, detail: String) -> GatewayEvent {
    GatewayEvent::new(Severity::Info, Some(mac), actor, EventKind::Audit { action: action.to_owned(), detail })
}

#[cfg(test)]
pub(crate) mod tests;
