//! Stage progression and halting: the campaign's state machine, the pure decision taken from
//! a group's reports and alerts (`decide`), and `Rollouts::tick`, which applies it.
//!
//! Reads `ota_devices`, `ota_reports`, `ota_campaign_alerts`; writes campaign states through
//! `Rollouts::save`.
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Campaign, CampaignId, CampaignSpec, RolloutError, Rollouts};
use crate::{device::Mac, ota::db};

/// A campaign's lifecycle. Transitions take `self` and return the next state or an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Draft,
    Canary,
    Rolling {
        stage: usize,
    },
    Completed,
    /// `group`: the last group offered the release; None when halted before it started.
    Halted {
        group: Option<usize>,
        reason: String,
    },
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Draft => f.write_str("draft"),
            State::Canary => f.write_str("canary"),
            State::Rolling { stage } => write!(f, "rolling(stage {})", stage + 1),
            State::Completed => f.write_str("completed"),
            State::Halted { group: Some(group), reason } => write!(f, "halted(group {group}: {reason})"),
            State::Halted { group: None, reason } => write!(f, "halted(before start: {reason})"),
        }
    }
}

impl State {
    /// Groups `0..=n` are offered the release; None when no group is.
    pub fn active_groups(&self, stages: usize) -> Option<usize> {
        match self {
            State::Draft => None,
            State::Canary => Some(0),
            State::Rolling { stage } => Some(stage + 1),
            State::Completed => Some(stages + 1),
            State::Halted { group, .. } => *group,
        }
    }

    /// The group whose reports decide the next step (the active stage).
    pub fn current_group(&self) -> Option<usize> {
        match self {
            State::Canary => Some(0),
            State::Rolling { stage } => Some(stage + 1),
            _ => None,
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(self, State::Completed)
    }

    fn refuse(self, id: &CampaignId, action: &'static str) -> RolloutError {
        RolloutError::Transition { id: id.0.clone(), action, from: self.to_string() }
    }

    pub fn start(self, id: &CampaignId) -> Result<State, RolloutError> {
        match self {
            State::Draft => Ok(State::Canary),
            other => Err(other.refuse(id, "start")),
        }
    }

    pub fn advance(self, id: &CampaignId, stages: usize) -> Result<State, RolloutError> {
        let next = |k: usize| if k < stages { State::Rolling { stage: k } } else { State::Completed };
        match self {
            State::Canary => Ok(next(0)),
            State::Rolling { stage } => Ok(next(stage + 1)),
            other => Err(other.refuse(id, "advance")),
        }
    }

    pub fn halt(self, id: &CampaignId, reason: String) -> Result<State, RolloutError> {
        match self {
            State::Draft => Ok(State::Halted { group: None, reason }),
            State::Canary => Ok(State::Halted { group: Some(0), reason }),
            State::Rolling { stage } => Ok(State::Halted { group: Some(stage + 1), reason }),
            other => Err(other.refuse(id, "halt")),
        }
    }

    pub fn resume(self, id: &CampaignId) -> Result<State, RolloutError> {
        match self {
            State::Halted { group: None, .. } => Ok(State::Draft),
            State::Halted { group: Some(0), .. } => Ok(State::Canary),
            State::Halted { group: Some(group), .. } => Ok(State::Rolling { stage: group - 1 }),
            other => Err(other.refuse(id, "resume")),
        }
    }
}

/// A state change, for the event bus and the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub id: CampaignId,
    pub from: State,
    pub to: State,
}

/// What the current group has shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    pub size: usize,
    pub successes: usize,
    /// Failures reported since the campaign was last resumed.
    pub failures: usize,
    /// Devices updated by this campaign that raised alerts since the last resume.
    pub anomalous: usize,
}

/// The decision `decide` takes for an open campaign.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Start,
    Advance,
    Halt(String),
    Wait,
}

/// The pure core of a rollout: from state, the group's stats and the clock, the next step.
pub fn decide(
    spec: &CampaignSpec,
    state: &State,
    stats: &GroupStats,
    now: OffsetDateTime,
    stage_started_at: i64,
) -> Decision {
    match state {
        State::Draft if spec.in_window(now) => return Decision::Start,
        State::Canary | State::Rolling { .. } => {}
        _ => return Decision::Wait,
    }
    if spec.plan.anomaly_devices > 0 && stats.anomalous >= spec.plan.anomaly_devices as usize {
        return Decision::Halt(format!("{} updated device(s) behave anomalously (alerts)", stats.anomalous));
    }
    if stats.size > 0 {
        let rate = stats.failures as f64 / stats.size as f64;
        if rate > spec.plan.failure_threshold {
            return Decision::Halt(format!(
                "failure rate {:.0}% ({}/{}) above {:.0}%",
                rate * 100.0,
                stats.failures,
                stats.size,
                spec.plan.failure_threshold * 100.0
            ));
        }
    }
    let done = stats.successes + stats.failures >= stats.size;
    let soaked = stats.size == 0 || now.unix_timestamp() - stage_started_at >= spec.plan.soak_secs as i64;
    if done && soaked && spec.in_window(now) { Decision::Advance } else { Decision::Wait }
}

impl Rollouts<'_> {
    /// The current group's stats.
    pub fn stats(&self, c: &Campaign) -> Result<GroupStats, RolloutError> {
        let Some(group) = c.state.current_group() else { return Ok(GroupStats::default()) };
        let devices = db::devices(self.conn)?;
        let mut members: Vec<Mac> = devices
            .iter()
            .filter(|d| c.spec.group_of(&c.id, d.mac, Some(&d.device_class)) == Some(group))
            .map(|d| d.mac)
            .collect();
        if group == 0 {
            // Canary devices count even before they ever checked in: they are expected.
            for mac in &c.spec.plan.canary {
                if !members.contains(mac) {
                    members.push(*mac);
                }
            }
        }
        let outcomes = db::campaign_outcomes(self.conn, &c.id.0)?;
        let mut stats = GroupStats { size: members.len(), ..GroupStats::default() };
        for (mac, status, at) in &outcomes {
            if !members.contains(mac) {
                continue;
            }
            match status.as_str() {
                "success" => stats.successes += 1,
                "failure" if *at >= c.resumed_at => stats.failures += 1,
                _ => {}
            }
        }
        let updated: Vec<Mac> = outcomes.iter().filter(|(_, s, _)| s == "success").map(|(m, _, _)| *m).collect();
        stats.anomalous =
            db::campaign_alerted(self.conn, &c.id.0, c.resumed_at)?.iter().filter(|m| updated.contains(m)).count();
        Ok(stats)
    }

    /// Applies `decide` to every open campaign.
    pub fn tick(&self, now: OffsetDateTime) -> Result<Vec<Transition>, RolloutError> {
        let mut out = Vec::new();
        for c in self.all()? {
            if !c.state.is_open() || matches!(c.state, State::Halted { .. }) {
                continue;
            }
            let stats = self.stats(&c)?;
            let to = match decide(&c.spec, &c.state, &stats, now, c.stage_started_at) {
                Decision::Wait => continue,
                Decision::Start => c.state.clone().start(&c.id)?,
                Decision::Advance => c.state.clone().advance(&c.id, c.spec.plan.stages.len())?,
                Decision::Halt(reason) => c.state.clone().halt(&c.id, reason)?,
            };
            out.push(self.save(&c, &to, false)?);
        }
        Ok(out)
    }
}
