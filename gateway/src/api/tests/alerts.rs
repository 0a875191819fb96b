//! The alert endpoints over a real alert store: viewers read, operators move alerts through
//! their lifecycle with every change audited under their name, bad input is a 400.
use reqwest::StatusCode;
use serde_json::json;

use super::*;
use crate::{
    alerts::AlertStore,
    event::{EventKind, GatewayEvent, Severity},
};

fn scan_alert(mac: &str, at_secs: i64) -> GatewayEvent {
    let mac: Mac = mac.parse().unwrap();
    let mut event = GatewayEvent::new(
        Severity::High,
        Some(mac),
        "detector:scan",
        EventKind::Alert {
            incident_id: format!("scan:{mac}"),
            detector: "scan".into(),
            score: 0.9,
            expected: "at most 5 hosts a minute".into(),
            observed: "90 hosts".into(),
            flows: vec!["tcp 192.168.1.20:40000 -> 203.0.113.7:23".into()],
            resolved: false,
        },
    );
    event.time = time::OffsetDateTime::from_unix_timestamp(1_750_000_000 + at_secs).unwrap();
    event
}

fn quarantine_for(mac: &str) -> GatewayEvent {
    let mut event = GatewayEvent::new(
        Severity::High,
        Some(mac.parse().unwrap()),
        "respond:quarantine attacks",
        EventKind::Action { action: "quarantine".into(), reason: "scan scored 0.90".into() },
    );
    event.responds_to = Some(format!("scan:{mac}"));
    event
}

async fn start(fixture: &Fixture, events: &[GatewayEvent]) -> Server {
    let mut store = AlertStore::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    store.record(events).unwrap();
    Server::start_with(fixture.directory(), false, Options { alerts: Some(store), ..Options::default() }).await
}

async fn patch(server: &Server, path: &str, token: &str, body: &str) -> reqwest::Response {
    client()
        .patch(format!("{}{path}", server.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn alert_audit(fixture: &Fixture) -> Vec<(String, String, String)> {
    let conn = crate::schema::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    let mut statement = conn
        .prepare("SELECT actor, action, detail FROM inventory_audit WHERE action LIKE 'alert_%' ORDER BY id")
        .unwrap();
    statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test]
async fn viewers_read_alerts_with_the_responses_they_triggered() {
    let fixture = Fixture::new();
    let server = start(&fixture, &[scan_alert(CAMERA, 0), quarantine_for(CAMERA), scan_alert(CAMERA, 30)]).await;
    let response = get(&server, "/api/v1/alerts", Some(VIEWER_TOKEN)).await;
    assert!(response.headers().get("next-cursor").is_none(), "one page only");
    let page = json(response).await;
    assert_eq!(page.as_array().unwrap().len(), 1, "{page}");
    let alert = &page[0];
    assert_eq!((alert["count"].as_u64(), alert["state"].as_str()), (Some(2), Some("open")));
    assert_eq!(alert["device"], CAMERA);
    let id = alert["id"].as_i64().unwrap();
    let detail = json(get(&server, &format!("/api/v1/alerts/{id}"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(detail["responses"][0]["action"], "quarantine");
    assert_eq!(detail["flows"][0], "tcp 192.168.1.20:40000 -> 203.0.113.7:23");
    assert_eq!(get(&server, "/api/v1/alerts", None).await.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn operators_acknowledge_and_resolve_viewers_may_not_and_every_change_is_audited() {
    let fixture = Fixture::new();
    let server = start(&fixture, &[scan_alert(CAMERA, 0)]).await;
    let mut events = server.state.events.subscribe();
    let id = json(get(&server, "/api/v1/alerts", Some(VIEWER_TOKEN)).await).await[0]["id"].as_i64().unwrap();
    let path = format!("/api/v1/alerts/{id}");

    let response = patch(&server, &path, VIEWER_TOKEN, r#"{"state":"acknowledged"}"#).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(json(response).await["error"].as_str().unwrap().contains("operator"));
    assert!(alert_audit(&fixture).is_empty());

    let body = json!({"state": "acknowledged", "assignee": "alice", "note": "looking\ninto it"}).to_string();
    let response = patch(&server, &path, OPERATOR_TOKEN, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let detail = json(response).await;
    assert_eq!((detail["state"].as_str(), detail["assignee"].as_str()), (Some("acknowledged"), Some("alice")));
    assert_eq!(detail["notes"][0]["author"], "api:otto");
    assert_eq!(detail["notes"][0]["text"], "looking\\ninto it", "escaped, one line");
    let published = events.try_recv().expect("an audit event on the bus");
    assert_eq!(published.actor, "api:otto");
    assert!(matches!(&published.kind, EventKind::Audit { action, .. } if action == "alert_acknowledged"));

    let response = patch(&server, &path, OPERATOR_TOKEN, r#"{"state":"resolved"}"#).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "resolving needs a resolution");
    assert!(json(response).await["error"].as_str().unwrap().contains("resolution"));
    let response = patch(&server, &path, OPERATOR_TOKEN, r#"{"state":"resolved","resolution":"true_positive"}"#).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["resolution"], "true_positive");
    let response = patch(&server, &path, OPERATOR_TOKEN, r#"{"state":"acknowledged"}"#).await;
    assert_eq!(response.status(), StatusCode::CONFLICT, "resolved -> acknowledged is refused");
    assert!(json(response).await["error"].as_str().unwrap().contains("is resolved"));

    let audit = alert_audit(&fixture);
    let actions: Vec<(&str, &str)> = audit.iter().map(|(actor, action, _)| (actor.as_str(), action.as_str())).collect();
    assert_eq!(actions, [("api:otto", "alert_acknowledged"), ("api:otto", "alert_resolved")]);
    assert!(audit[1].2.contains("acknowledged -> resolved; resolution true_positive"), "{audit:?}");
    server.stop().await;
}

#[tokio::test]
async fn bad_filters_ids_and_bodies_are_400_and_unknown_ids_404() {
    let fixture = Fixture::new();
    let server = start(&fixture, &[scan_alert(CAMERA, 0)]).await;
    for query in [
        "state=closed",
        "severity=urgent",
        "device=not-a-mac",
        "since=yesterday",
        "until=2025-13-01T00:00:00Z",
        "sort=name",
        "order=up",
        "limit=0",
        "limit=501",
        "cursor=bogus",
        "colour=red",
    ] {
        let response = get(&server, &format!("/api/v1/alerts?{query}"), Some(VIEWER_TOKEN)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(json(response).await["error"].is_string(), "{query}: the JSON error body");
    }
    assert_eq!(get(&server, "/api/v1/alerts/abc", Some(VIEWER_TOKEN)).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(get(&server, "/api/v1/alerts/999", Some(VIEWER_TOKEN)).await.status(), StatusCode::NOT_FOUND);
    let path = "/api/v1/alerts/1";
    for body in ["", "{}", "[1]", r#"{"state":"gone"}"#, r#"{"resolution":"benign"}"#, r#"{"colour":"red"}"#] {
        let response = patch(&server, path, OPERATOR_TOKEN, body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(
        patch(&server, "/api/v1/alerts/999", OPERATOR_TOKEN, r#"{"note":"x"}"#).await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(alert_audit(&fixture).is_empty(), "nothing refused was audited");
    let page = json(
        get(&server, "/api/v1/alerts?state=open&severity=high&since=2025-01-01T00:00:00Z", Some(VIEWER_TOKEN)).await,
    )
    .await;
    assert_eq!(page.as_array().unwrap().len(), 1, "{page}");
    server.stop().await;
}

#[tokio::test]
async fn cursor_pages_walk_every_alert_once() {
    let fixture = Fixture::new();
    let events: Vec<GatewayEvent> =
        (0..7u8).map(|i| scan_alert(&format!("02:00:00:00:00:{i:02x}"), i64::from(i))).collect();
    let server = start(&fixture, &events).await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/alerts?limit=3&sort=first_seen".to_owned();
    // Bounded: a cursor that led back to a page already read would otherwise loop forever.
    for page in 1.. {
        assert!(page <= events.len() + 1, "still paging after {page} pages of 3 for {} alerts: {seen:?}", events.len());
        let response = get(&server, &path, Some(VIEWER_TOKEN)).await;
        let next = response.headers().get("next-cursor").map(|v| v.to_str().unwrap().to_owned());
        let page = json(response).await;
        seen.extend(page.as_array().unwrap().iter().map(|a| a["device"].as_str().unwrap().to_owned()));
        match next {
            Some(cursor) => path = format!("/api/v1/alerts?limit=3&sort=first_seen&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7u8).rev().map(|i| format!("02:00:00:00:00:{i:02x}")).collect();
    assert_eq!(seen, expected, "newest first, each once");
    server.stop().await;
}

async fn delete(server: &Server, path: &str, token: &str) -> reqwest::Response {
    client().delete(format!("{}{path}", server.base)).bearer_auth(token).send().await.unwrap()
}

#[tokio::test]
async fn operators_learn_a_false_positive_as_normal_and_take_it_back_with_both_audited() {
    use crate::{
        baseline::learned::Edit,
        event::{Measure, Observation},
        pipeline::Command,
    };
    let fixture = Fixture::new();
    let mut scan = scan_alert(CAMERA, 0);
    scan.observations = vec![Observation::Rate { measure: Measure::ScanHosts, observed: 80.0, limit: 24.0 }];
    let mut store = AlertStore::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    store.record(&[scan]).unwrap();
    let (pipeline, mut commands) = tokio::sync::mpsc::channel(8);
    let options = Options { alerts: Some(store), pipeline: Some(pipeline.clone()), ..Options::default() };
    let server = Server::start_with(fixture.directory(), false, options).await;
    let id = json(get(&server, "/api/v1/alerts", Some(VIEWER_TOKEN)).await).await[0]["id"].as_i64().unwrap();
    let (path, learn) = (format!("/api/v1/alerts/{id}"), format!("/api/v1/alerts/{id}/learn"));
    let learn_audit = || {
        let conn = crate::schema::open(&fixture.dir.0.join("iotgw.db")).unwrap();
        let mut statement = conn
            .prepare("SELECT actor, action, detail FROM inventory_audit WHERE action LIKE '%learn_normal' ORDER BY id")
            .unwrap();
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        rows.collect::<Result<Vec<(String, String, String)>, _>>().unwrap()
    };
    let refused = |response: reqwest::Response, status: StatusCode| async move {
        assert_eq!(response.status(), status);
        json(response).await["error"].as_str().unwrap().to_owned()
    };

    // Refusals change nothing: a viewer, an open alert, a true positive, an unknown alert.
    refused(post(&server, &learn, VIEWER_TOKEN, None).await, StatusCode::FORBIDDEN).await;
    let why = refused(post(&server, &learn, OPERATOR_TOKEN, None).await, StatusCode::CONFLICT).await;
    assert!(why.contains("it is open"), "{why}");
    let resolve = |resolution: &str| json!({"state": "resolved", "resolution": resolution}).to_string();
    assert_eq!(patch(&server, &path, OPERATOR_TOKEN, &resolve("true_positive")).await.status(), StatusCode::OK);
    let why = refused(post(&server, &learn, OPERATOR_TOKEN, None).await, StatusCode::CONFLICT).await;
    assert!(why.contains("true_positive"), "{why}");
    refused(post(&server, "/api/v1/alerts/999/learn", OPERATOR_TOKEN, None).await, StatusCode::NOT_FOUND).await;
    refused(delete(&server, &learn, OPERATOR_TOKEN).await, StatusCode::CONFLICT).await;
    assert!(learn_audit().is_empty() && commands.try_recv().is_err());
    assert_eq!(json(get(&server, &path, Some(VIEWER_TOKEN)).await).await["learned"], false);

    // Resolved as a false positive, it is learnt: audited, shown, and handed to the pipeline.
    patch(&server, &path, OPERATOR_TOKEN, r#"{"state":"open"}"#).await;
    patch(&server, &path, OPERATOR_TOKEN, &resolve("false_positive")).await;
    let response = post(&server, &learn, OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let detail = json(response).await;
    assert_eq!(
        (detail["learned"].as_bool(), detail["learnable"][0].as_str()),
        (Some(true), Some("scan_hosts up to 100 (observed 80)"))
    );
    assert_eq!(json(get(&server, &path, Some(VIEWER_TOKEN)).await).await["learned"], true);
    let baseline_path = format!("/api/v1/devices/{CAMERA}/baseline");
    let baseline = json(get(&server, &baseline_path, Some(VIEWER_TOKEN)).await).await;
    assert_eq!(
        (baseline["learned"][0]["alert_id"].as_i64(), baseline["learned"][0]["description"].as_str()),
        (Some(id), Some("scan_hosts up to 100 (observed 80)")),
        "the device's baseline shows what was learnt: {baseline}"
    );
    let Ok(Command::Learned(Edit::Learn(exceptions))) = commands.try_recv() else { panic!("the pipeline is told") };
    assert_eq!((exceptions.len(), exceptions[0].alert_id, exceptions[0].mac.to_string()), (1, id, CAMERA.to_owned()));
    refused(post(&server, &learn, OPERATOR_TOKEN, None).await, StatusCode::CONFLICT).await;
    let why = refused(patch(&server, &path, OPERATOR_TOKEN, r#"{"state":"open"}"#).await, StatusCode::CONFLICT).await;
    assert!(why.contains("unlearn it"), "{why}");

    // ... and taken back.
    refused(delete(&server, &learn, VIEWER_TOKEN).await, StatusCode::FORBIDDEN).await;
    let response = delete(&server, &learn, OPERATOR_TOKEN).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["learned"], false);
    let baseline = json(get(&server, &baseline_path, Some(VIEWER_TOKEN)).await).await;
    assert_eq!(baseline["learned"], json!([]), "unlearnt: {baseline}");
    let unlearn = commands.try_recv().unwrap();
    assert!(matches!(unlearn, Command::Learned(Edit::Unlearn { alert_id, .. }) if alert_id == id), "{unlearn:?}");
    let audit = learn_audit();
    let actions: Vec<(&str, &str)> = audit.iter().map(|(actor, action, _)| (actor.as_str(), action.as_str())).collect();
    assert_eq!(actions, [("api:otto", "learn_normal"), ("api:otto", "unlearn_normal")]);
    assert!(audit[0].2.contains("scan_hosts up to 100"), "{audit:?}");
    drop(pipeline);
    server.stop().await;
}
