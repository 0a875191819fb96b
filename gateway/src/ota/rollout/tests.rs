use time::OffsetDateTime;

use super::*;
use crate::device::Mac;

/// A campaign for class `cam`: a canary, then 50% and 100%.
pub(crate) fn spec() -> CampaignSpec {
    CampaignSpec {
        target: "acme/cam-2.bin".into(),
        role: "acme".into(),
        role_version: 2,
        firmware_version: "2.0".into(),
        device_classes: vec!["cam".into()],
        plan: Plan {
            canary: vec![Mac([2, 0, 0, 0, 0, 1])],
            stages: vec![Stage::Percent(50), Stage::Percent(100)],
            windows: vec![],
            failure_threshold: 0.2,
            soak_secs: 0,
            anomaly_devices: 1,
        },
    }
}

#[test]
fn lifecycle_transitions_follow_the_machine() {
    let id = CampaignId("c".into());
    let s = State::Draft.start(&id).unwrap();
    assert_eq!(s, State::Canary);
    let s = s.advance(&id, 2).unwrap();
    assert_eq!(s, State::Rolling { stage: 0 });
    let halted = s.clone().halt(&id, "x".into()).unwrap();
    assert_eq!(halted.clone().resume(&id).unwrap(), s);
    let s = s.advance(&id, 2).unwrap().advance(&id, 2).unwrap();
    assert_eq!(s, State::Completed);
    assert!(s.clone().halt(&id, "late".into()).is_err());
    assert!(State::Canary.resume(&id).is_err());
    let halted_draft = State::Draft.halt(&id, "not yet".into()).unwrap();
    assert_eq!(halted_draft.active_groups(2), None);
    assert_eq!(halted_draft.resume(&id).unwrap(), State::Draft);
}

#[test]
fn failing_canary_halts_and_clean_one_advances() {
    let spec = spec();
    let now = OffsetDateTime::now_utc();
    let failing = GroupStats { size: 1, successes: 0, failures: 1, anomalous: 0 };
    assert!(matches!(decide(&spec, &State::Canary, &failing, now, 0), Decision::Halt(_)));
    let clean = GroupStats { size: 1, successes: 1, failures: 0, anomalous: 0 };
    assert_eq!(decide(&spec, &State::Canary, &clean, now, 0), Decision::Advance);
    let pending = GroupStats { size: 2, successes: 1, failures: 0, anomalous: 0 };
    assert_eq!(decide(&spec, &State::Canary, &pending, now, 0), Decision::Wait);
    let anomalous = GroupStats { size: 1, successes: 1, failures: 0, anomalous: 1 };
    assert!(matches!(decide(&spec, &State::Canary, &anomalous, now, 0), Decision::Halt(r) if r.contains("anomal")));
}

#[test]
fn maintenance_window_gates_start_and_advance() {
    let mut spec = spec();
    let window: Window = "22:00-02:00".parse().unwrap();
    spec.plan.windows = vec![window];
    let at = |h: u8| OffsetDateTime::now_utc().replace_time(time::Time::from_hms(h, 30, 0).unwrap());
    assert!(window.contains(at(23)) && window.contains(at(1)) && !window.contains(at(12)));
    assert_eq!(decide(&spec, &State::Draft, &GroupStats::default(), at(12), 0), Decision::Wait);
    assert_eq!(decide(&spec, &State::Draft, &GroupStats::default(), at(23), 0), Decision::Start);
    let clean = GroupStats { size: 1, successes: 1, ..GroupStats::default() };
    assert_eq!(decide(&spec, &State::Canary, &clean, at(12), 0), Decision::Wait);
    assert!("25:00-01:00".parse::<Window>().is_err());
}

#[test]
fn groups_are_canary_then_cumulative_percent_buckets() {
    let spec = spec();
    let id = CampaignId("c".into());
    assert_eq!(spec.group_of(&id, Mac([2, 0, 0, 0, 0, 1]), None), Some(0));
    assert_eq!(spec.group_of(&id, Mac([2, 0, 0, 0, 0, 9]), Some("plug")), None);
    let groups: Vec<_> = (0..200u8).map(|i| spec.group_of(&id, Mac([2, 0, 0, 0, 1, i]), Some("cam"))).collect();
    assert!(groups.iter().all(|g| matches!(g, Some(1 | 2))));
    let first = groups.iter().filter(|g| **g == Some(1)).count();
    assert!((60..140).contains(&first), "about half in the 50% stage, got {first}");
    assert_eq!("class:cam".parse::<Stage>().unwrap(), Stage::Class("cam".into()));
    assert!("0%".parse::<Stage>().is_err());
}
