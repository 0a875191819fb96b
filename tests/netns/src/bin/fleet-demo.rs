//! The fleet demo (`cargo xtask demo --fleet`): three sites, each a lab gateway with the
//! shipped policies and real XDP in namespaces the demo makes and removes, report through a
//! private nats-server (per-gateway credentials) to the real `iotgw hub` on a private
//! PostgreSQL. The meter at site B is compromised and scans; gateway B quarantines it on its
//! own; the hub's queue and device page show it; an operator releases it from the hub, and
//! gateway B enforces the release. `--hold SECS` keeps everything up that long at the end, to
//! look at the hub's console in a browser. Every traffic loop is bounded.
use std::{path::PathBuf, time::Duration};

use iotgw::device::Access;
use netns_tests::{
    fleet::{Fleet, OPERATOR_TOKEN, THREE_SITES, site_labs},
    lab::format_mac,
};
use serde_json::{Value, json};

const SITE_B: usize = 1;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let policy_dir = args.iter().find(|a| !a.starts_with("--")).map(PathBuf::from).unwrap_or_else(|| "policies".into());
    let hold = args
        .iter()
        .position(|a| a == "--hold")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let files = netns_tests::policies::shipped(Some(&policy_dir));
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();

    step("provisioning the hub and three gateways (NKeys), starting nats-server, PostgreSQL and `iotgw hub`");
    let fleet = Fleet::start(&THREE_SITES);
    report(&format!("hub console: http://{}/ (operator token {OPERATOR_TOKEN})", fleet.hub.api_addr));

    step("building three sites, each a gateway with its meter, and starting iotgw at each");
    let labs = site_labs(THREE_SITES.len());
    let mut gateways = fleet.start_gateways(&labs, &refs);
    for gateway in &mut gateways {
        gateway.scenario.send_normal_reading(41_000);
    }
    let reported = fleet.wait_for("three gateways", "/api/v1/gateways", |g| list(g).len() == THREE_SITES.len());
    for gateway in list(&reported) {
        report(&format!("hub sees {}/{}", text(&gateway["site"]), text(&gateway["gateway"])));
    }

    step("site B: the meter reports on its rhythm while gateway B learns, then starts a telnet scan");
    gateways[SITE_B].scenario.learn_normal_behaviour();
    let outcome = gateways[SITE_B].scenario.telnet_scan_until_quarantined();
    let meter = format_mac(gateways[SITE_B].scenario.mac);
    if outcome.latency == Duration::MAX {
        fail("gateway B did not quarantine the scanning meter");
    }
    report(&format!("gateway B quarantined {meter} in XDP {:?} after the first scan frame", outcome.latency));

    step("the hub: the alert in the fleet queue, the quarantine on the device's page");
    let alerts = fleet.wait_for("site B's alert", "/api/v1/alerts?site=site-b", |a| {
        list(a).iter().any(|alert| alert["device"] == meter.as_str())
    });
    for alert in list(&alerts) {
        report(&format!(
            "alert {} {} at {}/{}: {}",
            alert["severity"], alert["detector"], alert["site"], alert["gateway"], alert["observed"]
        ));
    }
    fleet.wait_for("the quarantine", &format!("/api/v1/devices/{meter}"), |d| d["views"][0]["state"] == "quarantined");
    report(&format!("device {meter}: quarantined, as gateway B reports it"));

    step("an operator releases it from the hub");
    let answered = fleet
        .post(&format!("/api/v1/devices/{meter}/release"), &json!({ "reason": "checked by the SOC", "wait_secs": 20 }));
    let command = answered.json();
    report(&format!(
        "command {}: {} by {} ({})",
        command["id"], command["outcome"], command["actor"], command["detail"]
    ));
    let released = gateways[SITE_B].scenario.access() != Some(Access::Quarantined);
    report(&format!(
        "gateway B's device table now says: {:?}",
        gateways[SITE_B].scenario.access().unwrap_or(Access::Unknown)
    ));

    if !hold.is_zero() {
        step(&format!("holding for {hold:?}: open http://{}/ and sign in with the token above", fleet.hub.api_addr));
        std::thread::sleep(hold);
    }
    step("done: stopping the gateways, the hub, nats-server and PostgreSQL, and removing the labs");
    drop(gateways);
    drop(labs);
    drop(fleet);
    if !released {
        fail("the release from the hub did not reach gateway B");
    }
}

fn list(answer: &Value) -> &Vec<Value> {
    answer.as_array().unwrap_or_else(|| panic!("not a list: {answer}"))
}

/// A JSON string's text (anything else as JSON).
fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

fn fail(why: &str) -> ! {
    eprintln!("demo failed: {why}");
    std::process::exit(1);
}

fn step(text: &str) {
    println!("\n▶ {text}");
}

fn report(text: &str) {
    println!("  {text}");
}
