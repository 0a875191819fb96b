//! The hub killed mid-ingest (issue 16's lab). Three lab gateways (real XDP, each in its own
//! namespaces) report steadily while new devices keep joining their sites; `iotgw hub` is
//! SIGKILLed while it holds reports it has taken and not acknowledged, stays down while the
//! gateways go on publishing into the stream, and is started again on the same configuration. It
//! resumes from its durable consumer's position: what it had acknowledged it is not given again,
//! what it had taken without acknowledging comes back after the acknowledgement wait and changes
//! nothing. PostgreSQL ends with every event each gateway's outbox ever held, exactly once.
//!
//! Run as root through `cargo xtask test`.
use std::time::Duration;

use netns_tests::{
    api::metric,
    fleet::{Fleet, OPERATOR_TOKEN, REPORT_TIMEOUT, ReportPosition, THREE_SITES, churn::Churn, eventually, site_labs},
    scenario::POLICY,
};

/// New devices a second at each site, and at most that many (bounded: about 50 s worth).
const JOINS_PER_SECOND: u32 = 10;
const MAX_JOINS: usize = 500;
/// Events the hub must have stored before it is killed, so it dies with a position to resume.
const STORED_BEFORE_KILL: i64 = 150;
/// Kills until one lands while the hub holds unacknowledged reports (each a restart more).
const KILL_ATTEMPTS: usize = 5;
/// How long the hub stays down while the gateways publish.
const DOWN: Duration = Duration::from_secs(5);
/// How long the load goes on after the restart, so the restarted hub ingests under load.
const LOAD_AFTER_RESTART: Duration = Duration::from_secs(3);
/// Long enough for the reports the killed hub held to come back (`hub::ACK_WAIT_SECS`).
const STORE_TIMEOUT: Duration = Duration::from_secs(45);

/// Waits until the hub holds reports it has not acknowledged, kills it with SIGKILL and returns
/// where its consumer was, if the kill came before it acknowledged them.
fn kill_mid_ingest(fleet: &mut Fleet) -> Option<ReportPosition> {
    eventually("the hub holding unacknowledged reports", REPORT_TIMEOUT, || {
        let position = fleet.report_position();
        if position.unacknowledged > 0 { Ok(()) } else { Err(format!("{position:?}")) }
    });
    fleet.hub.kill9();
    Some(fleet.report_position()).filter(|position| position.unacknowledged > 0)
}

#[test]
fn a_hub_killed_mid_ingest_resumes_from_its_consumer_and_stores_every_event_once() {
    let mut fleet = Fleet::start(&THREE_SITES);
    let labs = site_labs(THREE_SITES.len());
    let gateways = fleet.start_gateways(&labs, &[("scenario.toml", POLICY)]);
    let churn = Churn::at_every_site(&labs, JOINS_PER_SECOND, MAX_JOINS);
    fleet.wait_stored(&gateways, STORED_BEFORE_KILL);

    let mut kills = 1;
    let at_kill = loop {
        if let Some(position) = kill_mid_ingest(&mut fleet) {
            break position;
        }
        assert!(kills < KILL_ATTEMPTS, "{KILL_ATTEMPTS} kills, none while the hub held unacknowledged reports");
        kills += 1;
        fleet.hub.restart();
    };
    let stored_at_kill: i64 = gateways.iter().map(|g| fleet.stored(g).rows).sum();
    std::thread::sleep(DOWN);
    fleet.hub.restart();
    std::thread::sleep(LOAD_AFTER_RESTART);
    let joined: usize = churn.into_iter().map(Churn::stop).sum();
    let outboxes = fleet.wait_every_event_once(&gateways, STORE_TIMEOUT);

    let scrape = fleet.api().get("/metrics", Some(OPERATOR_TOKEN)).body;
    let now = fleet.report_position();
    assert_eq!(now.consumer_created_ns, at_kill.consumer_created_ns, "the restarted hub took up its durable consumer");
    let counter = |name| metric(&scrape, name).unwrap_or_else(|| panic!("no {name} in {scrape}")) as u64;
    let (reports, duplicates) = (counter("iotgw_hub_reports_total"), counter("iotgw_hub_duplicate_events_total"));
    // The broker gives a durable consumer what follows its acknowledged position, and again what
    // it delivered without an acknowledgement within the wait (the killed hub's batch, or a slow
    // commit on a loaded machine): printed, not bounded.
    let its_to_take = now.stream_last - at_kill.acknowledged;
    assert_eq!(counter("iotgw_hub_reports_refused_total"), 0, "{scrape}");
    let events: i64 = outboxes.iter().map(|o| o.written).sum();
    println!(
        "fleet hub crash: killed (attempt {kills}) holding {} unacknowledged reports, {stored_at_kill} events stored, \
         stream at {}, acknowledged to {}; restarted: took {reports} reports, {its_to_take} followed that \
         ({duplicates} events already stored); {joined} devices joined, {events} events stored once",
        at_kill.unacknowledged, at_kill.stream_last, at_kill.acknowledged
    );
}
