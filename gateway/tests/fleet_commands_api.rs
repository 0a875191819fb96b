//! The hub API's command routes over real HTTP, with the real hub (nats-server, PostgreSQL) and
//! a gateway's command consumer on its real store, behind the hub API's own authentication
//! (bearer tokens of an operator and a viewer).
use std::time::Duration;

use std::sync::Arc;

use iotgw::{
    api::auth::{Role, TokenEntry, TokenHash},
    device::Access,
    hub::api::{HubApi, router},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "fleet_commands/support.rs"]
mod support;
use support::{ABSENT, CAMERA, Fleet, GATEWAY, SITE};

const OPERATOR_TOKEN: &str = "alice-operator-token";
const VIEWER_TOKEN: &str = "vic-viewer-token";

/// Serves the hub API with an operator `alice` and a viewer `vic`; returns the base URL.
async fn serve(fleet: &Fleet) -> String {
    let mut hub = fleet.hub.clone();
    let mut config = (*hub.config).clone();
    config.api.tokens = vec![
        TokenEntry { name: "alice".into(), role: Role::Operator, token_sha256: TokenHash::of(OPERATOR_TOKEN) },
        TokenEntry { name: "vic".into(), role: Role::Viewer, token_sha256: TokenHash::of(VIEWER_TOKEN) },
    ];
    hub.config = Arc::new(config);
    let app = router(HubApi::new(hub, Default::default()).expect("hub API"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// An HTTP client that sends `token` with every request (`None`: no credentials).
fn client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    }
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

#[tokio::test]
async fn an_operator_quarantines_and_releases_from_the_hub_and_reads_the_outcomes() {
    let fleet = Fleet::start(3600).await;
    let (_running, _task) = fleet.gateway();
    let operator = serve(&fleet).await;
    let http = client(Some(OPERATOR_TOKEN));

    let answered = http
        .post(format!("{operator}/api/v1/devices/{CAMERA}/quarantine"))
        .json(&json!({"reason": "scan seen at site B", "wait_secs": 15}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    let command: Value = answered.json().await.unwrap();
    assert_eq!((command["outcome"].as_str(), command["actor"].as_str()), (Some("done"), Some("hub:alice")));
    assert_eq!((command["site"].as_str(), command["gateway"].as_str()), (Some(SITE), Some(GATEWAY)));
    assert_eq!(fleet.access(), Access::Quarantined);
    assert_eq!(fleet.gateway_audit().last().unwrap().0, "hub:alice");

    // Without waiting: 202, pending; the outcome is there to read later.
    let pending = http.post(format!("{operator}/api/v1/devices/{CAMERA}/release")).send().await.unwrap();
    assert_eq!(pending.status(), StatusCode::ACCEPTED);
    let id = pending.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + support::ANSWER;
    loop {
        let shown: Value =
            http.get(format!("{operator}/api/v1/commands/{id}")).send().await.unwrap().json().await.unwrap();
        if shown["outcome"] == "done" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "release not answered: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fleet.access(), Access::Enrolled);
    let listed: Vec<Value> =
        http.get(format!("{operator}/api/v1/commands?mac={CAMERA}")).send().await.unwrap().json().await.unwrap();
    let actions: Vec<_> = listed.iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["release", "quarantine"], "newest first");

    // Refusals: a device no gateway reported, half a target, an unknown command.
    let status = |response: reqwest::Response| response.status();
    let absent = http.post(format!("{operator}/api/v1/devices/{ABSENT}/block")).send().await.unwrap();
    assert_eq!(status(absent), StatusCode::NOT_FOUND);
    let half = http.post(format!("{operator}/api/v1/devices/{CAMERA}/block")).json(&json!({"site": SITE}));
    assert_eq!(status(half.send().await.unwrap()), StatusCode::BAD_REQUEST);
    let unknown = http.get(format!("{operator}/api/v1/commands/{}", uuid::Uuid::new_v4())).send().await.unwrap();
    assert_eq!(status(unknown), StatusCode::NOT_FOUND);

    // A viewer reads but does not act; nobody unauthenticated does either.
    let viewer = client(Some(VIEWER_TOKEN));
    let refused = viewer.post(format!("{operator}/api/v1/devices/{CAMERA}/block")).send().await.unwrap();
    assert_eq!(status(refused), StatusCode::FORBIDDEN);
    assert_eq!(status(viewer.get(format!("{operator}/api/v1/commands/{id}")).send().await.unwrap()), StatusCode::OK);
    let refused = client(None).get(format!("{operator}/api/v1/commands")).send().await.unwrap();
    assert_eq!(status(refused), StatusCode::UNAUTHORIZED);
    assert_eq!(fleet.access(), Access::Enrolled, "no refused request changed the device");
}

#[tokio::test]
async fn a_command_the_broker_does_not_take_is_refused_as_unavailable_and_recorded() {
    let mut fleet = Fleet::start(3600).await;
    let operator = serve(&fleet).await;
    let http = client(Some(OPERATOR_TOKEN));
    fleet.nats.kill9();

    let refused = http.post(format!("{operator}/api/v1/devices/{CAMERA}/quarantine")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(body["error"].as_str().unwrap().contains("try again"), "{body}");

    let listed: Vec<Value> =
        http.get(format!("{operator}/api/v1/commands?mac={CAMERA}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["outcome"], "refused", "the command is on record as refused: {listed:?}");
    assert_eq!(fleet.access(), Access::Enrolled, "nothing reached the gateway");
}
