//! Learning an alert as normal in the store: only a false positive of a device with something
//! learnable, all or nothing with its audit record, refused changes change nothing, and a
//! learnt record keeps its resolution until it is unlearnt.
use super::*;
use crate::{
    baseline::learned::{self, Edit},
    event::{Measure, Observation},
};

fn hosts(observed: f64) -> Observation {
    Observation::Rate { measure: Measure::ScanHosts, observed, limit: 24.0 }
}

/// A scan alert that observed `observations`, and its calm end carrying `peak`.
fn observed_scan(store: &mut AlertStore, observations: &[Observation], peak: Observation) -> i64 {
    let mut raised = alert(CAMERA, "scan", 0.9, 0, &[]);
    raised.observations = observations.to_vec();
    let mut calmed = calm(CAMERA, "scan", 120);
    calmed.observations = vec![peak];
    store.record(&[raised, calmed]).unwrap();
    only_id(store)
}

fn resolve(store: &mut AlertStore, id: i64, resolution: Resolution) {
    let change = Change { state: Some(State::Resolved), resolution: Some(resolution), ..Change::default() };
    store.change(id, change, "api:otto").unwrap();
}

fn learnt_rows(store: &AlertStore) -> Vec<learned::Exception> {
    learned::load(&store.conn).unwrap()
}

fn audit_actions(store: &AlertStore) -> Vec<String> {
    audit_rows(store).into_iter().map(|(actor, action, _)| format!("{actor} {action}")).collect()
}

#[test]
fn a_false_positive_learns_what_it_observed_and_its_peak_and_unlearns_it_all() {
    let mut store = store();
    let id = observed_scan(&mut store, &[hosts(30.0)], hosts(45.0));
    let detail = store.get(id).unwrap();
    assert_eq!((detail.learned, detail.observations.clone()), (false, vec![hosts(30.0), hosts(45.0)]));
    resolve(&mut store, id, Resolution::FalsePositive);

    let (detail, event, edit) = store.learn(id, "api:otto").unwrap();
    assert!(detail.learned);
    let EventKind::Audit { action, detail: said } = &event.kind else { panic!("{event:?}") };
    assert_eq!((event.actor.as_str(), action.as_str(), event.device), ("api:otto", "learn_normal", Some(CAMERA)));
    assert!(said.contains("scan_hosts up to 56 (observed 45)"), "{said}");
    let Edit::Learn(exceptions) = &edit else { panic!("{edit:?}") };
    assert_eq!(exceptions, &learnt_rows(&store), "the pipeline is told what the store keeps");
    assert_eq!(exceptions.len(), 2);

    let reopen = Change { state: Some(State::Open), ..Change::default() };
    let error = store.change(id, reopen.clone(), "api:otto").unwrap_err();
    assert!(matches!(&error, AlertsError::Conflict(why) if why.contains("unlearn it")), "{error}");
    assert!(matches!(store.learn(id, "api:otto"), Err(AlertsError::Conflict(_))), "learnt already");

    let (detail, event, edit) = store.unlearn(id, "api:ulla").unwrap();
    assert!(!detail.learned && learnt_rows(&store).is_empty());
    assert_eq!(edit, Edit::Unlearn { alert_id: id, mac: CAMERA });
    assert!(matches!(&event.kind, EventKind::Audit { action, .. } if action == "unlearn_normal"));
    assert!(matches!(store.unlearn(id, "api:ulla"), Err(AlertsError::Conflict(_))), "nothing left to unlearn");
    store.change(id, reopen, "api:otto").unwrap();
    assert_eq!(
        audit_actions(&store),
        ["api:otto alert_resolved", "api:otto learn_normal", "api:ulla unlearn_normal", "api:otto alert_reopened"]
    );
}

#[test]
fn learning_anything_but_a_learnable_false_positive_is_refused_and_changes_nothing() {
    let mut open = store();
    let id = observed_scan(&mut open, &[hosts(30.0)], hosts(30.0));
    let refused = |alerts: &mut AlertStore, why: &str| {
        let before = (alerts.get(id).unwrap(), audit_rows(alerts));
        let error = alerts.learn(id, "api:otto").unwrap_err();
        assert!(matches!(&error, AlertsError::Conflict(said) if said.contains(why)), "{error}");
        assert_eq!((alerts.get(id).unwrap(), audit_rows(alerts)), before);
        assert!(learnt_rows(alerts).is_empty());
    };
    refused(&mut open, "it is open");
    resolve(&mut open, id, Resolution::TruePositive);
    refused(&mut open, "it is resolved true_positive");
    assert!(matches!(open.learn(id + 99, "api:otto"), Err(AlertsError::NotFound(_))));

    // A rate far above its limit is no tuning miss.
    let mut far = store();
    let id = observed_scan(&mut far, &[hosts(30.0)], hosts(250.0));
    resolve(&mut far, id, Resolution::FalsePositive);
    let error = far.learn(id, "api:otto").unwrap_err();
    assert!(error.to_string().contains("too far above"), "{error}");
    assert!(learnt_rows(&far).is_empty() && !far.get(id).unwrap().learned);

    // An alert whose detector observed nothing learnable (identity, a forged ARP sender).
    let mut nothing = store();
    let id = observed_scan(&mut nothing, &[], hosts(30.0));
    nothing.conn.execute("DELETE FROM alert_observations", []).unwrap();
    resolve(&mut nothing, id, Resolution::FalsePositive);
    let error = nothing.learn(id, "api:otto").unwrap_err();
    assert!(error.to_string().contains("observed nothing"), "{error}");
}
