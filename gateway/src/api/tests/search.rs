//! The searchable inventory over real HTTP: device pages with filters, search, sorts and the
//! `Next-Cursor` header, the audit log, the overview's counts, and a 400 with the JSON error
//! body for every bad value.
use reqwest::StatusCode;

use super::*;

/// The rows of every page of `path` (which has a query), following `Next-Cursor`.
async fn every_page(server: &Server, path: &str) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(cursor) => format!("{path}&cursor={cursor}"),
            None => path.to_owned(),
        };
        let response = get(server, &url, Some(VIEWER_TOKEN)).await;
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        cursor = response.headers().get("next-cursor").map(|v| v.to_str().unwrap().to_owned());
        rows.extend(json(response).await.as_array().unwrap().iter().cloned());
        if cursor.is_none() {
            return rows;
        }
    }
    panic!("{path}: paging never stopped");
}

fn macs(rows: &[serde_json::Value]) -> Vec<&str> {
    rows.iter().map(|row| row["mac"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn devices_come_in_pages_filtered_searched_and_sorted() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let response = get(&server, "/api/v1/devices", Some(VIEWER_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("next-cursor").is_none(), "one page holds both");
    let rows = json(response).await;
    assert_eq!(macs(rows.as_array().unwrap()), [CAMERA, PLUG], "most recently seen first");

    assert_eq!(macs(&every_page(&server, "/api/v1/devices?limit=1").await), [CAMERA, PLUG]);
    assert_eq!(macs(&every_page(&server, "/api/v1/devices?limit=1&sort=first_seen").await), [CAMERA, PLUG]);
    assert_eq!(macs(&every_page(&server, "/api/v1/devices?sort=mac&limit=1").await), [PLUG, CAMERA]);
    assert_eq!(macs(&every_page(&server, "/api/v1/devices?state=enrolled&limit=1").await), [CAMERA]);
    assert_eq!(macs(&every_page(&server, "/api/v1/devices?class=camera").await), [CAMERA]);
    assert_eq!(macs(&every_page(&server, "/api/v1/devices?q=50-02-91").await), [PLUG]);
    assert_eq!(macs(&every_page(&server, "/api/v1/devices?q=192.168.1.2&sort=mac").await), [PLUG, CAMERA]);
    assert!(every_page(&server, "/api/v1/devices?type=camera&sort=type").await.is_empty(), "no type guessed");
    assert!(every_page(&server, "/api/v1/devices?vendor=Acme&sort=vendor").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bad_filters_sorts_limits_and_cursors_are_refused_with_a_json_error() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let first = get(&server, "/api/v1/devices?limit=1", Some(VIEWER_TOKEN)).await;
    let cursor = first.headers()["next-cursor"].to_str().unwrap().to_owned();
    for (path, says) in [
        ("/api/v1/devices?state=bogus", "state must be an access state"),
        ("/api/v1/devices?sort=size", "sort must be one of last_seen, first_seen, mac, vendor, type"),
        ("/api/v1/devices?limit=0", "limit must be between 1 and 1000"),
        ("/api/v1/devices?limit=1001", "limit must be between 1 and 1000"),
        ("/api/v1/devices?limit=many", "limit"),
        ("/api/v1/devices?vendor=", "vendor must not be empty"),
        ("/api/v1/devices?stat=enrolled", "unknown field"),
        ("/api/v1/devices?cursor=bm90IGEgY3Vyc29y", "is not one a previous page returned"),
        (&format!("/api/v1/devices?sort=mac&cursor={cursor}"), "is not one a previous page returned"),
        (&format!("/api/v1/devices?q={}", "x".repeat(257)), "q is longer than 256 bytes"),
        ("/api/v1/audit?since=yesterday", "since must be an RFC 3339 time"),
        ("/api/v1/audit?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since must be before until"),
        ("/api/v1/audit?device=98:90", "MAC"),
        (&format!("/api/v1/audit?cursor={cursor}"), "is not one a previous page returned"),
    ] {
        let response = get(&server, path, Some(VIEWER_TOKEN)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = json(response).await;
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{path}: no JSON error body: {body}"));
        assert!(error.contains(says), "{path}: {error}");
    }
    for path in ["/api/v1/devices", "/api/v1/audit", "/api/v1/summary"] {
        assert_eq!(get(&server, path, None).await.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_audit_log_pages_newest_first_and_filters_by_device_actor_action_and_time() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, Some(r#"{"reason":"INC-9"}"#)).await;
    let whole = every_page(&server, "/api/v1/audit?limit=1000").await;
    assert_eq!(every_page(&server, "/api/v1/audit?limit=1").await, whole, "pages of one, same entries");
    assert!(whole.len() >= 5, "{whole:?}");
    assert_eq!(whole[0]["actor"], "api:otto");
    assert_eq!((whole[0]["from"].as_str(), whole[0]["to"].as_str()), (Some("enrolled"), Some("quarantined")));
    assert_eq!(whole[0]["mac"], CAMERA);

    let camera = every_page(&server, &format!("/api/v1/audit?device={CAMERA}&limit=2")).await;
    assert!(!camera.is_empty() && camera.iter().all(|e| e["mac"] == CAMERA), "{camera:?}");
    let otto = every_page(&server, "/api/v1/audit?actor=api:otto&action=access_changed").await;
    assert_eq!(otto.len(), 1, "{otto:?}");
    assert!(every_page(&server, "/api/v1/audit?until=2000-01-01T00:00:00Z").await.is_empty());
    assert_eq!(every_page(&server, "/api/v1/audit?since=2000-01-01T00:00:00Z").await, whole);
    server.stop().await;
}

#[tokio::test]
async fn the_summary_counts_devices_by_state_type_and_class() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let response = get(&server, "/api/v1/summary", Some(VIEWER_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let summary = json(response).await;
    assert_eq!(summary["total"], 2);
    assert_eq!(
        summary["by_state"],
        serde_json::json!({"unknown": 1, "onboarding": 0, "enrolled": 1, "quarantined": 0, "blocked": 0})
    );
    assert_eq!(summary["by_type"], serde_json::json!({}));
    assert_eq!(summary["untyped"], 2);
    assert_eq!(summary["by_class"], serde_json::json!({"camera": 1}));
    assert_eq!(summary["unclassified"], 1);
    server.stop().await;
}
