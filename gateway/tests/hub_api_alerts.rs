//! The fleet alert queue at the hub, on a real PostgreSQL: filters and cursors; operators
//! acknowledge, resolve, reopen, assign and note alerts, each change audited in `hub_audit`
//! with its actor; viewers cannot; a console session works it with its CSRF token.
#[path = "hub_api/support.rs"]
mod support;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use serde_json::json;
use support::{CAMERA, Fleet, OPERATOR, PLUG, VIEWER};

#[tokio::test]
async fn the_queue_is_filtered_by_site_gateway_state_severity_and_device() {
    let fleet = Fleet::seeded().await;
    let (all, pages) = fleet.all_pages("/api/v1/alerts", 1).await;
    assert_eq!(pages, 3);
    let gateways: Vec<&str> = all.iter().map(|a| a["gateway"].as_str().unwrap()).collect();
    assert_eq!(gateways, ["gw-3", "gw-1", "gw-2"], "newest first");
    let camera = &all[0];
    assert_eq!((camera["site"].as_str(), camera["device"].as_str()), (Some("b"), Some(CAMERA)));
    assert_eq!(camera["severity"], "critical");
    assert_eq!(camera["state"], "open");
    assert_eq!(camera["observed"], "40 hosts");
    assert_eq!(camera["actor"], "detector:scan");
    for (query, count) in [
        ("site=a", 2),
        ("site=a&gateway=gw-2", 1),
        ("severity=high", 1),
        (&format!("device={PLUG}") as &str, 1),
        ("state=open", 3),
        ("state=resolved", 0),
        ("detector=scan", 3),
    ] {
        let (found, _) = fleet.all_pages(&format!("/api/v1/alerts?{query}"), 2).await;
        assert_eq!(found.len(), count, "{query}");
    }
}

#[tokio::test]
async fn operators_work_alerts_and_every_change_is_audited_with_its_actor() {
    let fleet = Fleet::seeded().await;
    let id = fleet.alert("b", "gw-3", CAMERA, 3, 1).await;
    let path = format!("/api/v1/alerts/{id}");

    let refused = fleet.call(Method::PATCH, &path, Some(VIEWER), Some(json!({"state": "acknowledged"}))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.error().contains("operator"), "{}", refused.body);

    let acked = fleet.call(Method::PATCH, &path, Some(OPERATOR), Some(json!({"state": "acknowledged"}))).await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.body);
    assert_eq!(acked.body["state"], "acknowledged");
    let again = fleet.call(Method::PATCH, &path, Some(OPERATOR), Some(json!({"state": "acknowledged"}))).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "acknowledged cannot become acknowledged: {}", again.body);
    let unresolved = fleet.call(Method::PATCH, &path, Some(OPERATOR), Some(json!({"state": "resolved"}))).await;
    assert_eq!(unresolved.status, StatusCode::BAD_REQUEST, "resolving needs a resolution");

    let assigned = fleet
        .call(Method::PATCH, &path, Some(OPERATOR), Some(json!({"assignee": "alice", "note": "on it\nnow"})))
        .await;
    assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.body);
    assert_eq!(assigned.body["assignee"], "alice");
    assert_eq!(assigned.body["notes"][0]["text"], "on it\\nnow", "a note is escaped");
    assert_eq!(assigned.body["notes"][0]["author"], "api:otto");

    let body = json!({"state": "resolved", "resolution": "true_positive"});
    let resolved = fleet.call(Method::PATCH, &path, Some(OPERATOR), Some(body)).await;
    assert_eq!(
        (resolved.body["state"].as_str(), resolved.body["resolution"].as_str()),
        (Some("resolved"), Some("true_positive"))
    );
    let reopened = fleet.call(Method::PATCH, &path, Some(OPERATOR), Some(json!({"state": "open"}))).await;
    assert_eq!(reopened.body["state"], "open");
    assert!(reopened.body["resolution"].is_null());

    let missing =
        fleet.call(Method::PATCH, "/api/v1/alerts/999999", Some(OPERATOR), Some(json!({"state": "open"}))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let shown = fleet.get(&path).await;
    assert_eq!((shown.status, shown.body["flows"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));

    let (audit, _) = fleet.all_pages("/api/v1/audit?actor=api:otto", 2).await;
    let actions: Vec<&str> = audit.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["alert_reopened", "alert_resolved", "alert_updated", "alert_acknowledged"], "newest first");
    for entry in &audit {
        assert_eq!(
            (entry["site"].as_str(), entry["gateway"].as_str(), entry["mac"].as_str()),
            (Some("b"), Some("gw-3"), Some(CAMERA))
        );
        assert!(entry["detail"].as_str().unwrap().starts_with(&format!("alert {id} (inc-1)")), "{entry}");
    }
    let (of_site, _) = fleet.all_pages("/api/v1/audit?site=b&action=alert_resolved", 5).await;
    assert_eq!(of_site.len(), 1);
}

#[tokio::test]
async fn a_console_session_works_alerts_with_its_csrf_token_and_is_audited() {
    let fleet = Fleet::seeded().await;
    let sign_in = Request::post("/api/v1/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "token": OPERATOR }).to_string()))
        .unwrap();
    let session = fleet.send(sign_in).await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.body);
    let cookie = session.headers[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let csrf = session.body["csrf_token"].as_str().unwrap().to_owned();
    let id = fleet.alert("a", "gw-1", PLUG, 1, 2).await;
    let patch = |csrf: Option<&str>| {
        let mut request = Request::patch(format!("/api/v1/alerts/{id}"))
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.body(Body::from(json!({"state": "acknowledged"}).to_string())).unwrap()
    };
    let forged = fleet.send(patch(None)).await;
    assert_eq!((forged.status, forged.body["code"].as_str()), (StatusCode::FORBIDDEN, Some("csrf")));
    let worked = fleet.send(patch(Some(&csrf))).await;
    assert_eq!(worked.status, StatusCode::OK, "{}", worked.body);

    let (audit, _) = fleet.all_pages("/api/v1/audit", 10).await;
    let actions: Vec<(&str, &str)> =
        audit.iter().map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap())).collect();
    assert_eq!(actions, [("alert_acknowledged", "api:otto"), ("sign_in", "api:otto")]);
}
