//! How far a campaign got, group by group (canary, then each stage): how many devices the
//! group holds, whether it was offered the release, how many installed it and how many
//! failed. What the API's campaign pages show; the decision to advance stays `decide`'s.
//!
//! Reads `ota_devices` and `ota_reports`; writes nothing.
use rusqlite::Connection;

use super::{Campaign, RolloutError};
use crate::{device::Mac, ota::db};

/// One group of a campaign: 0 is the canary, `k + 1` the stage `k`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupProgress {
    pub group: usize,
    /// Devices in the group: the update service's devices of the campaign's classes that fall
    /// in it (the canary also counts listed devices that never checked in).
    pub devices: usize,
    /// Whether the group was offered the release (it is, or was, in an active stage).
    pub offered: bool,
    /// Devices whose latest report for the campaign is a success.
    pub installed: usize,
    /// Devices whose latest report for the campaign is a failure.
    pub failed: usize,
}

/// Every group of `campaign`, canary first.
pub fn progress(conn: &Connection, campaign: &Campaign) -> Result<Vec<GroupProgress>, RolloutError> {
    let stages = campaign.spec.plan.stages.len();
    let offered = campaign.state.active_groups(stages);
    let mut groups: Vec<GroupProgress> = (0..=stages)
        .map(|group| GroupProgress { group, offered: offered.is_some_and(|last| group <= last), ..Default::default() })
        .collect();
    let mut group_of = std::collections::HashMap::<Mac, usize>::new();
    for device in db::devices(conn)? {
        if let Some(group) = campaign.spec.group_of(&campaign.id, device.mac, Some(&device.device_class)) {
            group_of.insert(device.mac, group);
        }
    }
    for mac in &campaign.spec.plan.canary {
        group_of.insert(*mac, 0);
    }
    for group in group_of.values() {
        groups[*group].devices += 1;
    }
    for (mac, status, _) in db::campaign_outcomes(conn, &campaign.id.0)? {
        let Some(group) = group_of.get(&mac) else { continue };
        match status.as_str() {
            "success" => groups[*group].installed += 1,
            "failure" => groups[*group].failed += 1,
            _ => {}
        }
    }
    Ok(groups)
}
