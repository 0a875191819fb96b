//! `GET /api/v1/policies` shows what the console's policies page lists: default verdicts,
//! lanes, each class's own rules and the response rules in force, each with where it is
//! written.
use super::*;
use crate::{
    api::policy_view::{self, PolicyInForce},
    respond::ResponsePolicy,
};

const POLICY: &str = r#"[defaults]
policy_miss = "pass"
quarantine = "drop"

[lanes.onboarding]
description = "enrolment only"
[[lanes.onboarding.allow]]
nets = ["10.77.0.1"]
protocol = "udp"
ports = [53, 67]

[lanes.quarantine]
include_update = true
[[lanes.quarantine.allow]]
nets = ["10.77.0.1"]
protocol = "udp"
ports = [53]

[lanes.update]
[[lanes.update.allow]]
names = ["updates.example.com"]
protocol = "tcp"
ports = [8444]

[[class]]
name = "cam"
id = 5
include = ["base"]
update_lane = true
[[class.allow]]
description = "cloud"
nets = ["10.78.0.0/24"]
names = ["*.cloud.example.com"]
protocol = "tcp"
ports = [443, "8000-8100"]

[[class]]
name = "base"
id = 1

[[response]]
name = "quarantine scanners"
detectors = ["scan"]
min_score = 0.7
action = "quarantine"
exempt_classes = ["base"]
"#;

#[tokio::test]
async fn policies_carry_verdicts_lanes_class_rules_and_response_rules() {
    let compiled = crate::policy::check_text(POLICY);
    let responses = crate::respond::rules::from_policy(&compiled.source).unwrap();
    let shared = Arc::new(SharedPolicy::default());
    shared.set(PolicyInForce::new(Arc::new(compiled), responses));
    let fixture = Fixture::new();
    let options = Options { policies: Some(shared), ..Options::default() };
    let server = Server::start_with(fixture.directory(), false, options).await;
    let body = json(get(&server, "/api/v1/policies", Some(VIEWER_TOKEN)).await).await;
    server.stop().await;

    let verdicts = &body["verdicts"];
    assert_eq!((&verdicts["policy_miss"], &verdicts["quarantine"]), (&"pass".into(), &"drop".into()), "{body:#}");
    assert_eq!(verdicts["malformed"], "drop", "{body:#}");

    let lanes = body["lanes"].as_array().unwrap();
    let names: Vec<&str> = lanes.iter().map(|lane| lane["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["onboarding", "quarantine", "update"]);
    let onboarding = &lanes[0];
    assert_eq!(onboarding["description"], "enrolment only");
    assert_eq!(onboarding["allow"][0]["nets"][0], "10.77.0.1/32");
    assert_eq!(
        onboarding["allow"][0]["ports"],
        serde_json::json!([{"first": 53, "last": 53}, {"first": 67, "last": 67}])
    );
    assert_eq!(onboarding["allow"][0]["at"], "t.toml:7:1");
    assert_eq!(lanes[1]["includes_update"], true);
    assert_eq!(lanes[2]["allow"][0]["names"][0], "updates.example.com");

    let cam = body["classes"].as_array().unwrap().iter().find(|class| class["name"] == "cam").unwrap();
    assert_eq!(cam["rules"], 1, "the count stays for older readers");
    assert_eq!((&cam["include"][0], &cam["update_lane"]), (&"base".into(), &true.into()));
    assert_eq!(cam["at"], "t.toml:25:1");
    let rule = &cam["allow"][0];
    assert_eq!(rule["description"], "cloud");
    assert_eq!((&rule["nets"][0], &rule["names"][0]), (&"10.78.0.0/24".into(), &"*.cloud.example.com".into()));
    assert_eq!((&rule["protocol"], &rule["direction"]), (&"tcp".into(), &"outbound".into()));
    assert_eq!(rule["ports"][1], serde_json::json!({"first": 8000, "last": 8100}));
    assert_eq!(rule["at"], "t.toml:30:1");

    let response = &body["responses"][0];
    assert_eq!(response["name"], "quarantine scanners");
    assert_eq!(response["detectors"], serde_json::json!(["scan"]));
    assert_eq!((&response["min_score"], &response["action"]), (&0.7.into(), &"quarantine".into()));
    assert_eq!(response["exempt_classes"], serde_json::json!(["base"]));
    assert_eq!(response["at"], "t.toml:41:1");
}

#[test]
fn a_policy_without_lanes_or_responses_shows_empty_lanes_and_no_rules() {
    let compiled = crate::policy::check_text("[[class]]\nname = \"c\"\nid = 1\n");
    let snapshot = policy_view::view(&compiled, &ResponsePolicy::default());
    assert!(snapshot.lanes.iter().all(|lane| lane.allow.is_empty() && lane.at.is_none()), "{:?}", snapshot.lanes);
    assert!(snapshot.responses.is_empty());
    assert_eq!(snapshot.verdicts.map(|v| v.quarantine), Some("redirect".to_owned()));
}

/// The view is built on the first read and kept: a reload or a refusal after a read must
/// show at once, on `/policies` and on `/status`, never the view an earlier read built.
#[tokio::test]
async fn the_view_follows_every_reload_and_refusal_after_it_was_read() {
    let first = Arc::new(crate::policy::check_text(POLICY));
    let second = Arc::new(crate::policy::check_text(&POLICY.replace("name = \"cam\"", "name = \"doorbell\"")));
    let (first_version, second_version) = (policy_view::version(&first), policy_view::version(&second));
    assert_ne!(first_version, second_version);
    let shared = Arc::new(SharedPolicy::default());
    shared.set(PolicyInForce::new(Arc::clone(&first), ResponsePolicy::default()));
    let fixture = Fixture::new();
    let options = Options { policies: Some(shared.clone()), ..Options::default() };
    let server = Server::start_with(fixture.directory(), false, options).await;
    let read = |path: &'static str| {
        let server = &server;
        async move { json(get(server, path, Some(VIEWER_TOKEN)).await).await }
    };
    let class_names = |body: &serde_json::Value| -> Vec<String> {
        let mut names: Vec<String> = body["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|class| class["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };

    let body = read("/api/v1/policies").await;
    assert_eq!(body["version"], first_version.as_str());
    assert_eq!(class_names(&body), ["base", "cam"], "{body:#}");
    assert_eq!(body, read("/api/v1/policies").await, "a second read shows the same view");

    shared.set(PolicyInForce::new(Arc::clone(&second), ResponsePolicy::default()));
    let body = read("/api/v1/policies").await;
    assert_eq!(body["version"], second_version.as_str(), "the view after a reload is the new policy's");
    assert_eq!(class_names(&body), ["base", "doorbell"], "{body:#}");
    assert_eq!(read("/api/v1/status").await["policy_version"], second_version.as_str());

    shared.refused("t.toml:1:1: bad".into());
    let body = read("/api/v1/policies").await;
    assert_eq!((&body["version"], &body["last_refused"]), (&second_version.as_str().into(), &"t.toml:1:1: bad".into()));
    assert_eq!(body["last_reload"]["accepted"], false, "{body:#}");

    shared.set(PolicyInForce::new(first, ResponsePolicy::default()));
    let body = read("/api/v1/policies").await;
    assert_eq!((&body["version"], &body["last_refused"]), (&first_version.as_str().into(), &serde_json::Value::Null));
    assert_eq!(body["last_reload"]["at"], body["loaded_at"], "{body:#}");
    server.stop().await;
}
