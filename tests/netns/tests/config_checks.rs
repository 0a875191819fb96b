//! The whole configuration is checked before anything is attached, and a reload says what it
//! refused: `iotgw run` with a bad `[[response]]` rule exits 78 (EX_CONFIG) leaving the
//! interfaces without XDP and no pin behind, and a hot reload adding one is refused whole,
//! logged and shown in `GET /api/v1/policies`.
//!
//! Run as root through `cargo xtask test` (one test at a time).
use std::time::{Duration, Instant};

use netns_tests::{
    api::{ApiClient, token_entry},
    controller::Controller,
    lab::{Lab, XdpAttached, xdp_attached},
    policies::{self, LANES},
};

/// sysexits EX_CONFIG.
const EX_CONFIG: i32 = 78;
/// How long `iotgw run` may take to refuse its configuration.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a refused reload may take to be logged.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

const VIEWER_TOKEN: &str = "lab-viewer-41d0e2";

/// A good rule.
const RESPONSES: &str = r#"
[[response]]
name = "isolate scanners"
detectors = ["scan"]
min_score = 0.5
action = "quarantine"
"#;

/// A rule with a misspelt action (line 2 is the table).
const BAD_RESPONSE: &str =
    "# added by hand\n[[response]]\nname = \"nuke\"\ndetectors = [\"scan\"]\naction = \"nuke\"\n";

fn defaults() -> String {
    policies::defaults("drop")
}

fn links(ctl: &Controller) -> usize {
    std::fs::read_dir(ctl.pin_path.join("links")).map(|entries| entries.count()).unwrap_or(0)
}

#[test]
fn run_with_a_bad_response_rule_exits_78_and_attaches_nothing() {
    let lab = Lab::new(1);
    let defaults = defaults();
    let files = [("lanes.toml", LANES), ("defaults.toml", defaults.as_str()), ("responses.toml", BAD_RESPONSE)];
    let mut ctl = Controller::configure(&lab, &files, "");
    let (code, stderr) = ctl.run_to_exit(EXIT_TIMEOUT);
    assert_eq!(code, Some(EX_CONFIG), "{stderr}");
    assert!(
        stderr.contains("responses.toml:2:1: [[response]] \"nuke\": unknown action \"nuke\""),
        "the refusal says where and why: {stderr}"
    );
    assert!(stderr.contains("nothing attached"), "{stderr}");
    for interface in ["lan0", "wan0", "quar0"] {
        assert_eq!(xdp_attached(&lab.gw, interface), XdpAttached::None, "{interface} has a program");
    }
    assert_eq!(links(&ctl), 0, "no link pinned");
    assert!(!ctl.dir.join("iotgw.db").exists(), "not even the store was opened");
}

#[test]
fn reload_with_a_bad_response_rule_is_refused_and_reported() {
    let lab = Lab::new(1);
    let defaults = defaults();
    let files = [("lanes.toml", LANES), ("defaults.toml", defaults.as_str()), ("responses.toml", RESPONSES)];
    let config = format!("\n[api]\ntokens = [\n  {},\n]\n", token_entry("vera", "viewer", VIEWER_TOKEN));
    let ctl = Controller::start(&lab, &files, &config);
    let api = ApiClient::new(&lab.gw);
    let running = api.get("/api/v1/policies", Some(VIEWER_TOKEN)).json();
    assert_eq!(running["last_refused"], serde_json::Value::Null, "{running:#}");
    let applied = ctl.log_count("policy applied");

    let aside = ctl.policy_dir.join(".zz-response.toml.partial");
    std::fs::write(&aside, BAD_RESPONSE).expect("policy file");
    std::fs::rename(&aside, ctl.policy_dir.join("zz-response.toml")).expect("rename");
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    while ctl.log_count("policy reload refused") == 0 {
        assert!(Instant::now() < deadline, "the reload was not refused within {RELOAD_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let expected = "zz-response.toml:2:1: [[response]] \"nuke\": unknown action \"nuke\"";
    assert!(ctl.log_count(expected) >= 1, "the log names the rule: {:#?}", ctl.log_lines("refused"));
    let shown = api.get("/api/v1/policies", Some(VIEWER_TOKEN)).json();
    let refused = shown["last_refused"].as_str().unwrap_or_else(|| panic!("no last_refused: {shown:#}"));
    assert!(refused.contains(expected), "the API says what was refused: {refused}");
    assert_eq!(shown["version"], running["version"], "the running policy stays");
    assert_eq!(ctl.log_count("policy applied"), applied, "nothing was written to the maps");
    assert_eq!(ctl.log_count("accepted"), 0, "never reported as accepted");
}
