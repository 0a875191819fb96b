//! The fleet over the real datapath: three lab gateways (sites A, B and C, each with real XDP
//! in its own namespaces) report through a private nats-server, with per-gateway credentials,
//! to the real `iotgw hub` on PostgreSQL. A meter at site B is compromised and scans; gateway B
//! quarantines it in XDP on its own; the hub shows the alert and the quarantine; an operator
//! releases it from the hub, gateway B enforces the release and both sides audit it with the
//! operator's name; a quarantine issued at the hub is enforced in B's XDP. A policy bundle published to site A becomes A's policy, and A reports its
//! version. Every frame stays inside the labs; the broker, the database and the hub are on the
//! host's loopback.
use std::time::{Duration, Instant};

use iotgw::device::Access;
use netns_tests::{
    fleet::{Fleet, OPERATOR_TOKEN, THREE_SITES, VIEWER_TOKEN, site_labs},
    lab::format_mac,
    scenario::POLICY,
};
use serde_json::{Value, json};

const SITE_B: usize = 1;

fn rows(answer: &Value) -> &Vec<Value> {
    answer.as_array().unwrap_or_else(|| panic!("not a list: {answer}"))
}

#[test]
fn three_sites_one_hub_a_scan_quarantined_at_site_b_and_released_from_the_hub() {
    let fleet = Fleet::start(&THREE_SITES);
    let labs = site_labs(THREE_SITES.len());
    let mut members = fleet.start_gateways(&labs, &[("scenario.toml", POLICY)]);
    for member in &mut members {
        for port in 0..3 {
            member.scenario.send_normal_reading(41_000 + port);
        }
    }

    // Every gateway reports its health and its meter.
    let gateways = fleet.wait_for("three gateways with health", "/api/v1/gateways", |answer| {
        rows(answer).len() == THREE_SITES.len() && rows(answer).iter().all(|g| !g["health"].is_null())
    });
    for gateway in rows(&gateways) {
        assert_eq!(gateway["stale"], false, "{gateway}");
        assert_eq!(gateway["health"]["xdp_mode"], "driver", "{gateway}");
    }
    let meters: Vec<String> = members.iter().map(|m| format_mac(m.scenario.mac)).collect();
    for ((site, _), meter) in THREE_SITES.iter().zip(&meters) {
        fleet.wait_for(&format!("{meter} at {site}"), &format!("/api/v1/devices?site={site}"), |answer| {
            rows(answer).iter().any(|d| d["mac"] == meter.as_str() && d["site"] == *site)
        });
    }

    // Site B: the meter learns its rhythm, then scans; gateway B quarantines it on its own.
    let site_b = &mut members[SITE_B].scenario;
    site_b.learn_normal_behaviour();
    let outcome = site_b.telnet_scan_until_quarantined();
    assert_ne!(outcome.latency, Duration::MAX, "gateway B did not quarantine the scanning meter");
    let meter_b = &meters[SITE_B];

    // The hub shows it: the alert in the fleet queue, the quarantine in the device's view. How
    // long the alert took from gateway B's quarantine to the hub's queue is printed (the
    // issue's 2 s is a figure for the record here, not a timed assertion).
    let quarantined_at = Instant::now();
    let alerts = fleet.wait_for("site B's alert", "/api/v1/alerts?site=site-b", |answer| {
        rows(answer).iter().any(|a| a["device"] == meter_b.as_str())
    });
    println!("fleet: site B's alert in the hub's queue {:?} after B's quarantine", quarantined_at.elapsed());
    assert!(rows(&alerts).iter().all(|a| a["site"] == "site-b"), "the site filter holds: {alerts}");
    let quiet = fleet.api().get("/api/v1/alerts?site=site-a", Some(VIEWER_TOKEN)).json();
    assert!(rows(&quiet).is_empty(), "nothing happened at site A: {quiet}");
    fleet.wait_for("the quarantine at site B", &format!("/api/v1/devices/{meter_b}"), |device| {
        device["site"] == "site-b" && device["views"][0]["state"] == "quarantined"
    });

    // A viewer may look but not act; the operator releases it from the hub.
    let release = format!("/api/v1/devices/{meter_b}/release");
    let refused = fleet.api().post(&release, Some(VIEWER_TOKEN), "{}");
    assert_eq!(refused.status, 403, "{refused:?}");
    let answered = fleet.post(&release, &json!({ "reason": "checked by the SOC", "wait_secs": 20 }));
    assert_eq!(answered.status, 200, "{answered:?}");
    let command = answered.json();
    assert_eq!(command["outcome"], "done", "{command}");
    assert_eq!((command["site"].as_str(), command["actor"].as_str()), (Some("site-b"), Some("hub:olga")));
    assert_ne!(members[SITE_B].scenario.access(), Some(Access::Quarantined), "XDP still quarantines the meter");

    // Audited on both sides with the same actor: gateway B's own record of the release, as it
    // reported it, and the hub's record of the command.
    let events = fleet.wait_for("gateway B's release event", &format!("/api/v1/events?device={meter_b}"), |answer| {
        rows(answer).iter().any(|e| e["event"]["action"] == "release" && e["actor"] == "hub:olga")
    });
    assert!(rows(&events).iter().all(|e| e["site"] == "site-b"), "{events}");
    let audit = fleet.api().get("/api/v1/audit", Some(OPERATOR_TOKEN)).json();
    assert!(
        rows(&audit).iter().any(|a| a["actor"] == "hub:olga" && a["mac"] == meter_b.as_str()),
        "the hub audits the command: {audit}"
    );
    // And back: a quarantine issued at the hub is enforced in B's XDP. The request returns once
    // B's answer reached the hub, so its duration bounds the time to enforcement from above.
    let issued_at = Instant::now();
    let answered = fleet.post(&format!("/api/v1/devices/{meter_b}/quarantine"), &json!({ "wait_secs": 20 }));
    let round_trip = issued_at.elapsed();
    assert_eq!(answered.json()["outcome"], "done", "{answered:?}");
    assert_eq!(members[SITE_B].scenario.access(), Some(Access::Quarantined), "the hub's quarantine is not in XDP");
    println!("fleet: a quarantine from the hub enforced in gateway B's XDP and answered within {round_trip:?}");
    for (n, member) in members.iter().enumerate().filter(|(n, _)| *n != SITE_B) {
        assert_ne!(member.scenario.access(), Some(Access::Quarantined), "site {n} quarantined nothing");
    }

    // Policy to the edge: a signed bundle for site A becomes A's policy; A reports its version.
    let bundle = fleet.dir.join("bundle-site-a");
    std::fs::create_dir_all(&bundle).expect("bundle folder");
    std::fs::write(bundle.join("scenario.toml"), POLICY.replace("\"10.78.0.40/32\"", "\"10.78.0.0/24\""))
        .expect("bundle policy");
    fleet.publish_policy("site:site-a", &bundle, "olga");
    fleet.wait_for("site A enforcing bundle 1", "/api/v1/gateways?site=site-a", |answer| {
        rows(answer).first().is_some_and(|g| g["policy_version"] == 1)
    });
    let enforced = std::fs::read_to_string(members[0].scenario.ctl.policy_dir.join("scenario.toml")).expect("policy");
    assert!(enforced.contains("10.78.0.0/24"), "gateway A's policy files are the bundle's");
    let others = fleet.api().get("/api/v1/gateways?site=site-c", Some(OPERATOR_TOKEN)).json();
    assert!(rows(&others)[0]["policy_version"].is_null(), "site C took no bundle: {others}");
}
