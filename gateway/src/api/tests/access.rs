//! Who may do what: viewers read, operators act, anyone else gets 401.
use reqwest::StatusCode;

use super::*;

#[tokio::test]
async fn viewer_reads_status_devices_device_flows_and_policies() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let status = get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await;
    assert_eq!(status.status(), StatusCode::OK);
    let status = json(status).await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["devices"]["enrolled"], 1);
    assert_eq!(status["devices"]["unknown"], 1);
    assert_eq!(status["devices"]["blocked"], 0);
    assert_eq!(status["datapath"]["interfaces"][0]["name"], "lan0");

    let devices = json(get(&server, "/api/v1/devices", Some(VIEWER_TOKEN)).await).await;
    assert_eq!(devices.as_array().unwrap().len(), 2);
    assert_eq!(devices[0]["mac"], CAMERA, "most recently seen first");
    assert_eq!(devices[0]["policy"], "camera");
    assert_eq!(devices[0]["ips"][0], "192.168.1.20");

    let device = json(get(&server, &format!("/api/v1/devices/{CAMERA}"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(device["ips"][0], "192.168.1.20");
    assert_eq!(device["flows_total"], 3);
    assert_eq!(device["enforcement"]["access"], "enrolled");
    assert!(device["restore_access"].is_null());

    let flows = get(&server, &format!("/api/v1/devices/{CAMERA}/flows?limit=2"), Some(VIEWER_TOKEN)).await;
    assert_eq!(flows.status(), StatusCode::OK);
    assert_eq!(json(flows).await.as_array().unwrap().len(), 2);

    let policies = get(&server, "/api/v1/policies", Some(VIEWER_TOKEN)).await;
    assert_eq!(policies.status(), StatusCode::OK);
    assert!(json(policies).await["classes"].is_array());
    server.stop().await;
}

#[tokio::test]
async fn unauthenticated_requests_get_401_with_a_bearer_challenge() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    for token in [None, Some("not-a-token")] {
        for path in ["/api/v1/status", "/api/v1/devices", "/api/v1/policies", "/metrics"] {
            let response = get(&server, path, token).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path} {token:?}");
            let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }
    let response = client().post(format!("{}/api/v1/devices/{CAMERA}/quarantine", server.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Basic credentials are not a bearer token.
    let response = client()
        .get(format!("{}/api/v1/status", server.base))
        .basic_auth("otto", Some(OPERATOR_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    server.stop().await;
}

#[tokio::test]
async fn viewer_actions_are_refused_with_403_and_change_nothing() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    for action in ["quarantine", "release", "block"] {
        let response = post(&server, &format!("/api/v1/devices/{CAMERA}/{action}"), VIEWER_TOKEN, None).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{action}");
        assert!(json(response).await["error"].as_str().unwrap().contains("operator"));
    }
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    assert_eq!(fixture.access_audit(CAMERA).len(), 1, "only the enrollment");
    assert_eq!(fixture.stored_access(CAMERA), "enrolled");
    server.stop().await;
}
