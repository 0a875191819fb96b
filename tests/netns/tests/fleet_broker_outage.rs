//! The fleet's broker killed under load (issue 16's lab). Three lab gateways (real XDP, each in
//! its own namespaces) publish steadily while new devices keep joining their sites; nats-server
//! is SIGKILLed, kept down 30 s and restarted on the same store. While it is down every gateway
//! shows it in its `/metrics` (`iotgw_fleet_connected 0`, `iotgw_fleet_backlog_events` above 0)
//! and keeps the backlog in its outbox; once it is back the backlogs drain, and PostgreSQL holds
//! every event each gateway's outbox ever held exactly once, the backlog under the event ids the
//! outbox gave it. The gateways still take policy bundles: a bundle published afterwards is
//! enforced by all three (their watches of the bucket came back with the broker).
//!
//! Run as root through `cargo xtask test`.
use std::time::{Duration, Instant};

use netns_tests::{
    api::metric,
    fleet::{Fleet, GROUP, LabGateway, THREE_SITES, churn::Churn, eventually, site_labs},
    scenario::POLICY,
};

/// New devices a second at each site, and at most that many (bounded: about 75 s worth).
const JOINS_PER_SECOND: u32 = 8;
const MAX_JOINS: usize = 600;
/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// How long the load goes on after the broker is back, so publishing resumes under load.
const LOAD_AFTER_RESTART: Duration = Duration::from_secs(3);
/// How long the gateways have to drain their backlogs and the hub to store them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(45);
const SCRAPE_EVERY: Duration = Duration::from_millis(500);

/// `iotgw_fleet_connected` and `iotgw_fleet_backlog_events` of one scrape.
fn link(gateway: &LabGateway) -> (f64, f64) {
    let scrape = gateway.metrics();
    let value = |name| metric(&scrape, name).unwrap_or_else(|| panic!("no {name} in {scrape}"));
    (value("iotgw_fleet_connected"), value("iotgw_fleet_backlog_events"))
}

#[test]
fn a_broker_killed_for_30_s_under_load_loses_nothing_and_duplicates_nothing() {
    let mut fleet = Fleet::start(&THREE_SITES);
    let labs = site_labs(THREE_SITES.len());
    let gateways = fleet.start_gateways(&labs, &[("scenario.toml", POLICY)]);
    let churn = Churn::at_every_site(&labs, JOINS_PER_SECOND, MAX_JOINS);
    let started = Instant::now();
    fleet.wait_stored(&gateways, 1);
    // The gauge is sampled every second: a gateway's first report can be stored before it is.
    eventually("every gateway connected before the outage", Duration::from_secs(5), || {
        let links: Vec<f64> = gateways.iter().map(|g| link(g).0).collect();
        if links.iter().all(|&connected| connected == 1.0) { Ok(()) } else { Err(format!("connected {links:?}")) }
    });

    // The outage: every gateway sees the link down and its backlog grow, scrape after scrape.
    fleet.nats.kill9();
    let killed = Instant::now();
    let mut peak_backlog = vec![0.0_f64; gateways.len()];
    while killed.elapsed() < OUTAGE {
        for (gateway, peak) in gateways.iter().zip(&mut peak_backlog) {
            let (connected, backlog) = link(gateway);
            if killed.elapsed() > Duration::from_secs(5) {
                assert_eq!(
                    connected, 0.0,
                    "{}/{} says it is connected to a dead broker",
                    gateway.site, gateway.gateway
                );
            }
            *peak = peak.max(backlog);
        }
        std::thread::sleep(SCRAPE_EVERY);
    }
    let backlogs: Vec<_> = gateways.iter().map(|g| g.outbox().unpublished).collect();
    for ((gateway, peak), backlog) in gateways.iter().zip(&peak_backlog).zip(&backlogs) {
        assert!(
            *peak > 0.0 && !backlog.is_empty(),
            "{}/{} showed no backlog while the broker was down",
            gateway.site,
            gateway.gateway
        );
    }

    fleet.nats.restart();
    let restarted = Instant::now();
    std::thread::sleep(LOAD_AFTER_RESTART);
    let joined: Vec<usize> = churn.into_iter().map(Churn::stop).collect();
    let outboxes = fleet.wait_every_event_once(&gateways, DRAIN_TIMEOUT);
    let drained = restarted.elapsed();
    for (gateway, backlog) in gateways.iter().zip(&backlogs) {
        assert_eq!(
            link(gateway),
            (1.0, 0.0),
            "{}/{} reconnected with its backlog drained",
            gateway.site,
            gateway.gateway
        );
        let (first, last) = (backlog[0].0, backlog[backlog.len() - 1].0);
        assert_eq!(
            &fleet.stored_ids(gateway, first, last),
            backlog,
            "{}/{}: the backlog is stored under the outbox's event ids",
            gateway.site,
            gateway.gateway
        );
    }
    // The gateways still take bundles: their watches of the policy bucket came back with the broker.
    let bundle = fleet.dir.join("bundle-after-the-outage");
    std::fs::create_dir_all(&bundle).expect("bundle folder");
    std::fs::write(bundle.join("scenario.toml"), POLICY).expect("bundle policy");
    fleet.publish_policy(&format!("group:{GROUP}"), &bundle, "olga");
    fleet.wait_gateways("enforcing the bundle published after the outage", |g| g["policy_version"] == 1);
    for ((gateway, outbox), (peak, joined)) in gateways.iter().zip(&outboxes).zip(peak_backlog.iter().zip(&joined)) {
        println!(
            "fleet outage: {}/{}: {joined} devices joined, {} events, backlog peaked at {peak} during the {OUTAGE:?} outage",
            gateway.site, gateway.gateway, outbox.written
        );
    }
    println!(
        "fleet outage: every backlog drained and stored {drained:?} after the restart ({:?} in all)",
        started.elapsed()
    );
}
