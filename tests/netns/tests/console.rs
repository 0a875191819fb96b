//! The web console in a real browser: Debian's headless Chromium driven over WebDriver
//! (`iotgw_test_support::browser`) against the real `iotgw` binary in the lab, its API reached
//! through a loopback relay into the gateway namespace. An operator signs in with a local
//! user, sees the device appear, sees the alert a telnet scan raises arrive in the queue
//! without a reload, and works it to resolved; a viewer signed in with a token sees no action
//! buttons and a forged action is refused; requests without a cookie or a CSRF token are
//! refused. Screenshots of every page land in `target/tmp/console/<test>/`: look at them.
use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use iotgw::device::{Access, Mac};
use iotgw_test_support::{
    browser::{Browser, WAIT},
    checked,
};
use netns_tests::{
    api::{API_ADDR, ApiClient, Response, token_entry},
    controller::iotgw_bin,
    lab::Lab,
    relay::Relay,
    scenario::{self, Scenario},
};

const OPERATOR_USER: &str = "olga";
const OPERATOR_PASSWORD: &str = "correct horse battery staple";
const OPERATOR_TOKEN: &str = "console-operator-token-0123456789";
const VIEWER_TOKEN: &str = "console-viewer-token-0123456789";
/// How long a new alert may take to reach the open queue page.
const LIVE_UPDATE: Duration = Duration::from_secs(10);

/// The argon2id PHC string `iotgw user hash-password` prints for `password`.
fn hash_password(password: &str) -> String {
    let mut child = Command::new(iotgw_bin())
        .args(["user", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iotgw user hash-password");
    child.stdin.take().expect("stdin").write_all(password.as_bytes()).expect("writing the password");
    let output = iotgw_test_support::finish(child, "iotgw user hash-password", iotgw_test_support::RUN_LIMIT);
    assert!(output.status.success(), "hash-password failed: {}", String::from_utf8_lossy(&output.stderr));
    let hash = String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "not an argon2id PHC string: {hash}");
    hash
}

/// `[api]` with an operator user, an operator token and a viewer token.
fn console_config() -> String {
    format!(
        "\n[inventory]\ntraffic_bucket_secs = 1\n\n[api]\ntokens = [\n  {},\n  {},\n]\nusers = [\n  {{ name = \"{OPERATOR_USER}\", role = \"operator\", \
         password_argon2 = \"{}\" }},\n]\n",
        token_entry("otto", "operator", OPERATOR_TOKEN),
        token_entry("vera", "viewer", VIEWER_TOKEN),
        hash_password(OPERATOR_PASSWORD),
    )
}

/// The real gateway on the scenario's policy with the console's users and tokens, its API
/// reached from the host (where the browser runs) through a relay at `base`.
struct Gateway<'a> {
    s: Scenario<'a>,
    api: ApiClient,
    base: String,
    /// The scenario device's MAC, as the API writes it.
    mac: String,
    _relay: Relay,
}

impl<'a> Gateway<'a> {
    fn start(lab: &'a Lab) -> Gateway<'a> {
        let s = Scenario::start_with_config(lab, &[("scenario.toml", scenario::POLICY)], &console_config());
        let relay = Relay::start(&lab.gw, API_ADDR);
        let (base, mac) = (format!("http://{}", relay.addr), Mac(s.mac).to_string());
        Gateway { s, api: ApiClient::new(&lab.gw), base, mac, _relay: relay }
    }
}

/// A signed release and a draft campaign with `canary` as its canary, written with the CLI into
/// the running gateway's store (as an operator would), so the OTA page has one to show.
fn create_campaign(dir: &std::path::Path, canary: &str) {
    let (repo, store, vendor_key) = (dir.join("ota"), dir.join("iotgw.db"), dir.join("vendor.pem"));
    let ota = |args: &[&str]| {
        checked(Command::new(iotgw_bin()).arg("ota").args(args).arg("--repo").arg(&repo).arg("--store").arg(&store));
    };
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_owned();
    ota(&["init", "--root-keys", "1", "--root-threshold", "1"]);
    checked(Command::new(iotgw_bin()).args(["ota", "key", "generate", "--out"]).arg(&vendor_key));
    ota(&["delegate", "--role", "acme", "--key", &path(&dir.join("vendor.pub.pem"))]);
    let image = dir.join("cam-2.0.bin");
    std::fs::write(&image, vec![7u8; 4096]).expect("image");
    let publish = ["publish", &path(&image), "--version", "2.0", "--device-class", "meter", "--key"];
    ota(&[&publish[..], &[&path(&vendor_key), "--role", "acme"]].concat());
    ota(&["campaign", "create", "--target", "acme/cam-2.0.bin", "--canary", canary]);
}

fn screenshots(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console").join(test)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// `[data-testid=NAME]`.
fn id(name: &str) -> String {
    format!("[data-testid={name}]")
}

/// A JavaScript expression: the text of `[data-testid=NAME]`, or "".
fn text_of(name: &str) -> String {
    format!("(document.querySelector('[data-testid={name}]')?.innerText ?? '')")
}

/// Opens the console's sign-in page and signs in with a local user.
async fn sign_in_as_user(browser: &Browser, base: &str, user: &str, password: &str) {
    browser.goto(&format!("{base}/#/login")).await;
    browser.fill(&id("login-user"), user).await;
    browser.fill(&id("login-password"), password).await;
    browser.click(&id("login-submit")).await;
    browser.wait_until("signed in", &format!("{}.includes('{user}')", text_of("whoami")), WAIT).await;
}

/// Opens the sign-in page and signs in with an API token.
async fn sign_in_with_token(browser: &Browser, base: &str, token: &str, name: &str) {
    browser.goto(&format!("{base}/#/login")).await;
    browser.fill(&id("login-token"), token).await;
    browser.click(&id("login-submit")).await;
    browser.wait_until("signed in", &format!("{}.includes('{name}')", text_of("whoami")), WAIT).await;
}

/// Clicks `button`, then `confirm-yes` in the confirmation dialog it must open.
async fn confirmed_click(browser: &Browser, button: &str) {
    browser.click(&id(button)).await;
    browser.element(&id("confirm-dialog")).await;
    browser.click(&id("confirm-yes")).await;
}

/// A `fetch` from inside the page (same origin, with the session cookie): its status.
async fn page_fetch(browser: &Browser, method: &str, path: &str, csrf: Option<&str>) -> u64 {
    let script = "const [method, path, csrf, done] = arguments;
        const headers = { 'Content-Type': 'application/json' };
        if (csrf) headers['X-CSRF-Token'] = csrf;
        fetch(path, { method, headers, body: method === 'GET' ? undefined : '{}', credentials: 'same-origin' })
            .then(r => done(r.status), e => done(String(e)));";
    let args = vec![method.into(), path.into(), csrf.map_or(serde_json::Value::Null, Into::into)];
    let status = browser.run_async(script, args).await;
    status.as_u64().unwrap_or_else(|| panic!("fetch {method} {path} failed: {status}"))
}

/// The CSRF token of the page's session, as the console reads it.
async fn page_csrf(browser: &Browser) -> String {
    let script = "const done = arguments[0];
        fetch('/api/v1/session', { credentials: 'same-origin' }).then(r => r.json())
            .then(s => done(s.csrf_token), e => done(''));";
    let token = browser.run_async(script, Vec::new()).await;
    token.as_str().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("no CSRF token: {token}")).to_owned()
}

/// The id of the newest alert of `detector`, once the recorder has stored it.
fn recorded_alert(api: &ApiClient, detector: &str) -> i64 {
    let deadline = std::time::Instant::now() + LIVE_UPDATE;
    loop {
        let alerts = api.get(&format!("/api/v1/alerts?detector={detector}"), Some(OPERATOR_TOKEN)).json();
        if let Some(id) = alerts.as_array().and_then(|a| a.first()).and_then(|alert| alert["id"].as_i64()) {
            return id;
        }
        assert!(std::time::Instant::now() < deadline, "no {detector} alert recorded within {LIVE_UPDATE:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_refused(response: &Response, status: u16, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.body);
}

#[test]
fn an_operator_works_a_scan_alert_from_open_to_resolved_in_the_browser() {
    let lab = Lab::new(1);
    let Gateway { mut s, api, base, mac, _relay } = Gateway::start(&lab);
    let shots = screenshots("operator");

    runtime().block_on(async {
        let browser = Browser::start(&shots).await;
        browser.goto(&format!("{base}/")).await;
        browser.element(&id("login-submit")).await;
        browser.screenshot("login").await;
        sign_in_as_user(&browser, &base, OPERATOR_USER, OPERATOR_PASSWORD).await;
        assert!(
            browser.run(&format!("return {}", text_of("whoami")), Vec::new()).await.to_string().contains("operator")
        );

        // A device appears in the open list while it learns, without a reload.
        browser.goto(&format!("{base}/#/devices")).await;
        browser.element(&id("device-table")).await;
        browser.wait_until("live stream connected", &format!("{} === 'live'", text_of("live-status")), WAIT).await;
        browser.run("window.iotgwNoReload = true;", Vec::new()).await;
        s.learn_normal_behaviour();
        let row = format!("[data-testid=device-row][data-mac='{mac}']");
        browser
            .wait_until("the device's row", &format!("window.iotgwNoReload && document.querySelector(\"{row}\")"), WAIT)
            .await;
        browser.screenshot("devices").await;

        // The scan's alert reaches the open queue page without a reload.
        browser.click(&id("nav-alerts")).await;
        browser.element(&id("alert-table")).await;
        browser.run("window.iotgwNoReload = true;", Vec::new()).await;
        let outcome = s.telnet_scan_until_quarantined();
        assert_eq!(s.access(), Some(Access::Quarantined), "the scan is quarantined");
        let alert_id = recorded_alert(&api, "scan");
        let alert_row = format!("[data-testid=alert-row][data-id='{alert_id}']");
        let shown = browser
            .wait_until(
                "the scan alert in the queue",
                &format!("window.iotgwNoReload && document.querySelector(\"{alert_row}\")"),
                LIVE_UPDATE,
            )
            .await;
        println!("scan quarantined in {:?}; its alert was on the queue page {shown:?} after that", outcome.latency);
        browser.screenshot("alerts").await;

        // Acknowledge, then resolve as a true positive, each after a confirmation.
        // The row's id link is what the keyboard reaches; a click anywhere on the row opens it.
        browser.element(&format!("{alert_row} a[href='#/alerts/{alert_id}']")).await;
        browser.click(&format!("{alert_row} td:nth-child(3)")).await;
        let page = format!("[data-testid=alert-page][data-id='{alert_id}']");
        browser.element(&page).await;
        confirmed_click(&browser, "alert-ack").await;
        let state_is = |state: &str| format!("document.querySelector(\"{page}\")?.dataset.state === '{state}'");
        browser.wait_until("acknowledged", &state_is("acknowledged"), WAIT).await;
        browser.element(&id("alert-resolution")).await.select_by_value("true_positive").await.expect("resolution");
        confirmed_click(&browser, "alert-resolve").await;
        browser.wait_until("resolved", &state_is("resolved"), WAIT).await;
        browser.screenshot("alert").await;
        let stored = api.get(&format!("/api/v1/alerts/{alert_id}"), Some(OPERATOR_TOKEN)).json();
        assert_eq!(stored["state"], "resolved", "{stored}");
        assert_eq!(stored["resolution"], "true_positive", "{stored}");
        let trail = api.get("/api/v1/audit?actor=user:olga", Some(OPERATOR_TOKEN)).body;
        for action in ["sign_in", "acknowledged", "resolved"] {
            assert!(trail.contains(action), "audit trail of user:olga lacks {action}: {trail}");
        }

        // The device page draws its traffic.
        browser.goto(&format!("{base}/#/devices/{mac}")).await;
        browser.element(&format!("[data-testid=device-page][data-mac='{mac}']")).await;
        // Seconds of traffic in one-second buckets: a line of several points per direction.
        let plotted = "[...document.querySelectorAll('[data-testid=traffic-chart] path.series')]
            .some(path => (path.getAttribute('d').match(/L/g) || []).length >= 2)";
        browser.wait_until("the traffic chart draws a line over time", plotted, WAIT).await;
        browser.element(&id("action-release")).await;
        browser.screenshot("device").await;

        for (nav, page) in
            [("nav-overview", "alerts-over-time"), ("nav-policies", "policies"), ("nav-ota", "ota-campaigns")]
        {
            browser.click(&id(nav)).await;
            browser.element(&id(page)).await;
            if page == "policies" {
                // Lanes with their rules, classes and response rules, each rule with where it is written.
                browser.element("[data-testid=policy-lanes] [data-testid=policy-rule]").await;
                for part in ["policy-lanes", "policy-classes", "policy-responses"] {
                    browser.element(&id(part)).await;
                    browser.run(&format!("document.querySelector('{}').scrollIntoView()", id(part)), Vec::new()).await;
                    browser.screenshot(part).await;
                }
                browser.run("window.scrollTo(0, 0)", Vec::new()).await;
            }
            browser.screenshot(page).await;
        }

        // Pages left behind close their event streams: more loads than a browser's six
        // connections per host still each finish (a stream left open would hold one).
        for round in 0..8 {
            let took = browser.load_time(&format!("{base}/#/devices/{mac}"), &id("device-audit")).await;
            assert!(took < Duration::from_secs(5), "load {round} of the device page took {took:?}");
        }

        // Without the CSRF token, or from another origin, the session's cookie changes nothing.
        let cookie = browser.client.get_named_cookie("iotgw_session").await.expect("the session cookie");
        assert_eq!(cookie.http_only(), Some(true), "the session cookie is HttpOnly");
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)", "the session cookie is SameSite=Strict");
        let block = format!("/api/v1/devices/{mac}/block");
        assert_eq!(page_fetch(&browser, "POST", &block, None).await, 403, "a page request without CSRF token");
        let csrf = page_csrf(&browser).await;
        let cookie_header = format!("iotgw_session={}", cookie.value());
        let body = Some("{}");
        assert_refused(&api.request_with("POST", &block, &[("Cookie", &cookie_header)], body), 403, "cookie, no CSRF");
        let forged = [("Cookie", cookie_header.as_str()), ("X-CSRF-Token", &csrf), ("Origin", "http://attacker.test")];
        assert_refused(&api.request_with("POST", &block, &forged, body), 403, "cookie and CSRF from another origin");
        assert_refused(&api.request_with("POST", &block, &[], body), 401, "no cookie, no token");
        assert_eq!(s.access(), Some(Access::Quarantined), "refused requests changed nothing");
        browser.close().await;
    });
}

#[test]
fn a_viewer_sees_no_actions_and_a_forged_action_is_refused() {
    let lab = Lab::new(1);
    let Gateway { mut s, api, base, mac, _relay } = Gateway::start(&lab);
    for port in 0..4 {
        s.send_normal_reading(30_000 + port);
    }

    runtime().block_on(async {
        let browser = Browser::start(&screenshots("viewer")).await;
        sign_in_with_token(&browser, &base, VIEWER_TOKEN, "vera").await;
        browser.goto(&format!("{base}/#/devices/{mac}")).await;
        browser.element(&format!("[data-testid=device-page][data-mac='{mac}']")).await;
        browser.element(&id("device-audit")).await;
        for action in ["action-quarantine", "action-release", "action-block"] {
            assert!(!browser.has(&id(action)).await, "a viewer is shown {action}");
        }
        browser.screenshot("device-viewer").await;

        // The OTA page shows a real campaign: its target, state and canary stage.
        create_campaign(&s.ctl.dir, &mac);
        browser.goto(&format!("{base}/#/ota")).await;
        let campaign = "[data-testid=ota-campaigns] section.campaign";
        let shown = format!(
            "document.querySelector('{campaign}')?.innerText.includes('acme/cam-2.0.bin') && \
             document.querySelector('{campaign} tbody tr')?.innerText.includes('canary')"
        );
        browser.wait_until("the campaign on the OTA page", &shown, WAIT).await;
        browser.screenshot("ota-campaign").await;

        // The request the button would send, forged with the viewer's own valid session.
        let csrf = page_csrf(&browser).await;
        let quarantine = format!("/api/v1/devices/{mac}/quarantine");
        assert_eq!(page_fetch(&browser, "POST", &quarantine, Some(&csrf)).await, 403, "a viewer's quarantine");
        let alerts = api.get("/api/v1/alerts", Some(VIEWER_TOKEN));
        assert_eq!(alerts.status, 200, "a viewer reads alerts: {}", alerts.body);
        assert_eq!(s.access(), Some(Access::Enrolled), "the refused quarantine changed nothing");
        browser.close().await;
    });
}
