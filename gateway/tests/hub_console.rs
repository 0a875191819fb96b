//! The console at the fleet hub, in a real browser (Debian's headless Chromium over WebDriver,
//! `iotgw_test_support::browser`): served by the hub's API on loopback over a real PostgreSQL
//! seeded with two sites and three gateways. The console learns the fleet scope from the
//! status: the gateways page replaces policies and OTA; devices and alerts carry site and
//! gateway columns and filters; a device shows its location history. Screenshots land in
//! `target/tmp/hub_console/`: look at them.
#[path = "hub_api/support.rs"]
mod support;

use std::path::PathBuf;

use iotgw_test_support::browser::{Browser, WAIT};
use support::{CAMERA, DEVICES_AT_GW2, Fleet, OPERATOR, PLUG};

/// `[data-testid=NAME]`.
fn id(name: &str) -> String {
    format!("[data-testid={name}]")
}

/// A JavaScript expression: how many `[data-testid=NAME]` the page holds.
fn count(name: &str) -> String {
    format!("document.querySelectorAll('[data-testid={name}]').length")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_console_shows_sites_gateways_and_where_devices_have_been() {
    let fleet = Fleet::seeded().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = iotgw::shutdown::channel();
    let server = tokio::spawn(iotgw::api::serve_on(listener, fleet.app.clone(), None, shutdown));
    let browser = Browser::start(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hub_console")).await;

    browser.goto(&format!("{base}/#/login")).await;
    browser.fill(&id("login-token"), OPERATOR).await;
    browser.click(&id("login-submit")).await;
    browser.wait_until("signed in", "document.body.dataset.scope === 'fleet'", WAIT).await;
    let visible = |name: &str| format!("!document.querySelector('[data-testid={name}]').hidden");
    assert_eq!(browser.run(&format!("return {}", visible("nav-gateways")), Vec::new()).await, true);
    for page in ["nav-policies", "nav-ota", "live-status"] {
        assert_eq!(browser.run(&format!("return {}", visible(page)), Vec::new()).await, false, "{page}");
    }
    browser.wait_until("fleet overview", &format!("{} === 1", count("fleet-gateways")), WAIT).await;
    let overview =
        browser.run("return document.querySelector('[data-testid=fleet-gateways]').innerText", Vec::new()).await;
    let overview = overview.as_str().unwrap();
    // Nothing ingested: no report waits for the hub.
    assert!(overview.contains("waiting for the hub") && overview.contains("0 reports"), "{overview}");
    browser.screenshot("overview").await;

    // Every site's devices, newest first, with where each was seen last.
    browser.goto(&format!("{base}/#/devices")).await;
    let all = 2 + DEVICES_AT_GW2;
    browser.wait_until("every fleet device", &format!("{} === {all}", count("device-row")), WAIT).await;
    let headings = browser
        .run(
            "return [...document.querySelectorAll('[data-testid=device-table] th')].map(th => th.innerText)",
            Vec::new(),
        )
        .await;
    let headings: Vec<String> = serde_json::from_value(headings).unwrap();
    assert_eq!(&headings[..3], ["MAC", "site", "gateway"], "{headings:?}");
    assert!(headings.iter().any(|h| h == "generic type"), "{headings:?}");
    let first = browser.run("return document.querySelector('[data-testid=device-row]').innerText", Vec::new()).await;
    let first = first.as_str().unwrap();
    assert!(first.contains(CAMERA) && first.contains("gw-3") && first.contains("quarantined"), "{first}");
    assert!(first.contains("ip-camera (95 %)"), "the generic type with its confidence: {first}");
    browser.screenshot("devices").await;
    browser.fill(&id("device-filter-site"), "b").await;
    browser.wait_until("the site filter applied", &format!("{} === 1", count("device-row")), WAIT).await;
    assert!(browser.run("return location.hash", Vec::new()).await.as_str().unwrap().contains("site=b"));
    // The type filter takes any level of the guess: the plug's generic type.
    browser.fill(&id("device-filter-site"), "").await;
    browser.fill(&id("device-filter-type"), "smart-plug").await;
    let rows = "[...document.querySelectorAll('[data-testid=device-row]')].map(row => row.dataset.mac)";
    browser.wait_until("the type filter applied", &format!("{rows}.join() === '{PLUG}'"), WAIT).await;
    assert!(browser.run("return location.hash", Vec::new()).await.as_str().unwrap().contains("type=smart-plug"));

    // The gateways page: sites, health, the stale one.
    browser.click(&id("nav-gateways")).await;
    browser.wait_until("three gateways", &format!("{} === 3", count("gateway-row")), WAIT).await;
    let stale = browser
        .run("return [...document.querySelectorAll('[data-stale=true]')].map(r => r.dataset.gateway)", Vec::new())
        .await;
    assert_eq!(stale, serde_json::json!(["a/gw-2"]));
    browser.screenshot("gateways").await;

    // The camera moved from site a to site b: both places, most recent first.
    browser.goto(&format!("{base}/#/devices/{CAMERA}")).await;
    browser.wait_until("location history", &format!("{} === 2", count("device-location")), WAIT).await;
    let places = browser
        .run(
            "return [...document.querySelectorAll('[data-testid=device-location]')].map(r => r.cells[0].innerText)",
            Vec::new(),
        )
        .await;
    assert_eq!(places, serde_json::json!(["b", "a"]));
    assert_eq!(browser.run(&format!("return {}", count("device-view")), Vec::new()).await, 2);
    browser.screenshot("device").await;

    // The fleet queue with its site and gateway filters.
    browser.goto(&format!("{base}/#/alerts?site=a")).await;
    browser.wait_until("site a's alerts", &format!("{} === 2", count("alert-row")), WAIT).await;
    assert!(!browser.has(&id("alert-sort")).await, "the hub sorts its queue newest first only");
    browser.screenshot("alerts").await;

    browser.close().await;
    trigger.trigger();
    iotgw_test_support::wait::within("the hub's server to stop at shutdown", WAIT, server).await.unwrap().unwrap();
}
