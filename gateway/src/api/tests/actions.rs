//! Actions through the API and SOAR: enforced in the datapath, audited, released, and
//! untrusted reasons escaped on their way to every sink.
use reqwest::StatusCode;
use serde_json::json;

use super::*;

#[tokio::test]
async fn operator_quarantine_enforces_in_the_datapath_and_is_audited() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let response = post(
        &server,
        &format!("/api/v1/devices/{CAMERA}/quarantine"),
        OPERATOR_TOKEN,
        Some(r#"{"reason":"INC-42 scan"}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(body["previous"], "enrolled");
    assert_eq!(body["access"], "quarantined");
    assert_eq!(body["changed"], true);
    assert_eq!(body["actor"], "api:otto");
    assert_eq!(server.access(CAMERA), Some(Access::Quarantined));
    // The class policy survives isolation, so release can give it back.
    let entry = server.datapath.access(CAMERA.parse().unwrap()).unwrap().unwrap();
    assert_eq!(entry.policy_id, gateway_ebpf::lane::FIRST_CLASS_POLICY + 1);
    assert_eq!(fixture.stored_access(CAMERA), "quarantined");
    let audit = fixture.access_audit(CAMERA);
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1], ("api:otto".to_owned(), "enrolled -> quarantined: quarantine: INC-42 scan".to_owned()));

    // A second quarantine changes and records nothing.
    let again = json(post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, None).await).await;
    assert_eq!(again["changed"], false);
    assert_eq!(fixture.access_audit(CAMERA).len(), 2);

    let detail = json(get(&server, &format!("/api/v1/devices/{CAMERA}"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(detail["restore_access"], "enrolled");
    assert_eq!(detail["audit"][0]["actor"], "api:otto");
    assert_eq!(detail["audit"][0]["from"], "enrolled");
    assert_eq!(detail["audit"][0]["to"], "quarantined");
    server.stop().await;
}

#[tokio::test]
async fn release_restores_the_access_held_before_quarantine_and_block() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let mac = CAMERA;
    for action in ["quarantine", "block"] {
        let response = post(&server, &format!("/api/v1/devices/{mac}/{action}"), OPERATOR_TOKEN, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{action}");
    }
    assert_eq!(server.access(mac), Some(Access::Blocked));
    let released = json(post(&server, &format!("/api/v1/devices/{mac}/release"), OPERATOR_TOKEN, None).await).await;
    assert_eq!(released["previous"], "blocked");
    assert_eq!(released["access"], "enrolled");
    assert_eq!(server.access(mac), Some(Access::Enrolled));
    assert_eq!(fixture.access_audit(mac).len(), 4);
    assert_eq!(fixture.stored_access(mac), "enrolled");

    // The plug was onboarding (no datapath entry): release puts it back there, not enrolled.
    post(&server, &format!("/api/v1/devices/{PLUG}/block"), OPERATOR_TOKEN, None).await;
    assert_eq!(server.access(PLUG), Some(Access::Blocked));
    let released = json(post(&server, &format!("/api/v1/devices/{PLUG}/release"), OPERATOR_TOKEN, None).await).await;
    assert_eq!(released["access"], "unknown");
    assert_eq!(server.access(PLUG), None);

    // Nothing to release any more.
    let response = post(&server, &format!("/api/v1/devices/{mac}/release"), OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    server.stop().await;
}

#[tokio::test]
async fn unknown_device_is_404_and_bad_input_is_400_with_nothing_changed() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    assert_eq!(
        get(&server, &format!("/api/v1/devices/{ABSENT}"), Some(VIEWER_TOKEN)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&server, &format!("/api/v1/devices/{ABSENT}/flows"), Some(VIEWER_TOKEN)).await.status(),
        StatusCode::NOT_FOUND
    );
    let response = post(&server, &format!("/api/v1/devices/{ABSENT}/quarantine"), OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.access(ABSENT), None);

    let response = get(&server, "/api/v1/devices/not-a-mac", Some(VIEWER_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(json(response).await["error"].as_str().unwrap().contains("not a MAC address"));
    assert_eq!(
        post(&server, "/api/v1/devices/98:90:96/block", OPERATOR_TOKEN, None).await.status(),
        StatusCode::BAD_REQUEST
    );
    for query in ["limit=0", "limit=100000", "limit=x", "bogus=1"] {
        let response = get(&server, &format!("/api/v1/devices/{CAMERA}/flows?{query}"), Some(VIEWER_TOKEN)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    // A reason with a line break is escaped, not refused: see
    // `an_api_reason_forging_a_syslog_line_is_escaped_in_the_audit_and_every_rendering`.
    for body in ["{", r#"{"reason": 5}"#, r#"{"why": "x"}"#] {
        let response = post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, Some(body)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let long = format!(r#"{{"reason": "{}"}}"#, "x".repeat(handlers::MAX_REASON_BYTES + 1));
    let response = post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, Some(&long)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    assert_eq!(fixture.access_audit(CAMERA).len(), 1);
    assert!(fixture.access_audit(ABSENT).is_empty());
    assert_eq!(get(&server, "/api/v1/nothing", Some(VIEWER_TOKEN)).await.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn unrecorded_action_is_undone_in_the_datapath() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    // The store refuses writes from the API's handle (as with a full disk or a lost lock).
    fixture.inventory.lock().unwrap().connection().pragma_update(None, "query_only", true).unwrap();
    let response = post(&server, &format!("/api/v1/devices/{CAMERA}/block"), OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    let response = post(&server, &format!("/api/v1/devices/{PLUG}/block"), OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(server.access(PLUG), None);
    assert_eq!(fixture.stored_access(CAMERA), "enrolled");
    assert_eq!(fixture.access_audit(CAMERA).len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_quarantined_through_soar_is_shown_and_released_through_the_api() {
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let quarantine = json!({ "action": "quarantine", "device": CAMERA.to_uppercase(), "reason": "XSOAR case 7" });
    let response = soar_post(&server, quarantine, "case-7").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.access(CAMERA), Some(Access::Quarantined));
    // The inventory knows what the playbook did, with who and why.
    assert_eq!(fixture.stored_access(CAMERA), "quarantined");
    assert_eq!(
        fixture.access_audit(CAMERA).last().unwrap(),
        &("soar:xsoar".to_owned(), "enrolled -> quarantined: quarantine: XSOAR case 7".to_owned())
    );
    let detail = json(get(&server, &format!("/api/v1/devices/{CAMERA}"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(detail["restore_access"], "enrolled");

    let release = post(&server, &format!("/api/v1/devices/{CAMERA}/release"), OPERATOR_TOKEN, None).await;
    assert_eq!(release.status(), StatusCode::OK, "{}", release.text().await.unwrap());
    let entry = server.datapath.access(CAMERA.parse().unwrap()).unwrap().unwrap();
    assert_eq!(entry.access, Access::Enrolled);
    assert_eq!(entry.policy_id, gateway_ebpf::lane::FIRST_CLASS_POLICY + 1, "class policy back");
    assert_eq!(fixture.stored_access(CAMERA), "enrolled");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_soar_quarantined_before_the_inventory_saw_it_is_released_through_the_api() {
    // Before: SOAR wrote only the datapath, so the API answered 404 for this MAC (listing,
    // showing and releasing it) while XDP kept it quarantined.
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let response = soar_post(&server, json!({ "action": "quarantine", "device": ABSENT }), "intel-1").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.access(ABSENT), Some(Access::Quarantined));
    let detail = get(&server, &format!("/api/v1/devices/{ABSENT}"), Some(VIEWER_TOKEN)).await;
    assert_eq!(detail.status(), StatusCode::OK);
    assert_eq!(json(detail).await["enforcement"]["access"], "quarantined");

    let release = post(&server, &format!("/api/v1/devices/{ABSENT}/release"), OPERATOR_TOKEN, None).await;
    assert_eq!(release.status(), StatusCode::OK, "{}", release.text().await.unwrap());
    assert_eq!(server.access(ABSENT), None, "back to what it was: no entry in the device table");
    assert_eq!(fixture.stored_access(ABSENT), "unknown");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soar_body_over_16_kib_is_refused_with_413_and_stores_nothing() {
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let reason = "x".repeat(MAX_BODY_BYTES);
    let response =
        soar_post(&server, json!({ "action": "quarantine", "device": CAMERA, "reason": reason }), "big").await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(json(response).await["error"].as_str().unwrap().contains("16384"));
    // A 1 MiB reason, the size that was stored before. The server may answer and close before
    // the client has written it all (the client then sees a reset): either way, nothing acts.
    let reason = "x".repeat(1 << 20);
    let body = json!({ "action": "quarantine", "device": CAMERA, "reason": reason }).to_string();
    let sent = client()
        .post(format!("{}/api/v1/soar/actions", server.base))
        .bearer_auth(SOAR_TOKEN)
        .header("idempotency-key", "huge")
        .body(body)
        .send()
        .await;
    if let Ok(response) = sent {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    let conn = crate::schema::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM integration_audit", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 0);
    server.stop().await;
}

/// A reason forging a syslog record, with a Unicode line separator and a bidi override.
const FORGED_REASON: &str = "INC-1\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - released\u{2028}ok\u{202e}gpj.exe";
/// The same, escaped (`untrusted`).
const FORGED_ESCAPED: &str = "INC-1\\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - released\\u2028ok\\u202egpj.exe";

#[tokio::test]
async fn an_api_reason_forging_a_syslog_line_is_escaped_in_the_audit_and_every_rendering() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let mut events = server.state.events.subscribe();
    let body = json!({ "reason": FORGED_REASON }).to_string();
    let response = post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, Some(&body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    crate::integrations::render::fixtures::assert_renders_safely(&event, FORGED_ESCAPED);
    let (_, detail) = fixture.access_audit(CAMERA).pop().unwrap();
    assert_eq!(detail, format!("enrolled -> quarantined: quarantine: {FORGED_ESCAPED}"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soar_reason_forging_a_syslog_line_is_escaped_in_the_audit_and_every_rendering() {
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let mut events = server.state.events.subscribe();
    let response =
        soar_post(&server, json!({ "action": "block", "device": CAMERA, "reason": FORGED_REASON }), "forge-1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    crate::integrations::render::fixtures::assert_renders_safely(&event, FORGED_ESCAPED);
    let conn = crate::schema::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    let detail: String = conn.query_row("SELECT detail FROM integration_audit", [], |r| r.get(0)).unwrap();
    assert_eq!(detail, FORGED_ESCAPED);
    // A key is an identifier: refused, not rewritten.
    let body = json!({ "action": "tag", "device": CAMERA, "tag": "x", "action_id": "k\nforged" });
    let response = client()
        .post(format!("{}/api/v1/soar/actions", server.base))
        .bearer_auth(SOAR_TOKEN)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(json(response).await["error"].as_str().unwrap().contains("k\\nforged"));
    server.stop().await;
}
