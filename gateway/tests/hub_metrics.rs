//! The hub's `/metrics` and the ingest part of its status, over a real nats-server and
//! PostgreSQL with reports stored by the real ingest: the counters are ingest's, the backlog is
//! the broker's, the fleet counts PostgreSQL's; a scrape needs a token unless `metrics_public`.
#[path = "hub_ingest/support.rs"]
mod support;

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use iotgw::hub::{self, ingest::IngestStats};
use sha2::{Digest as _, Sha256};
use support::{Fleet, T0_MS, action, alert, inventory, mac};
use tower::ServiceExt as _;

const TOKEN: &str = "prometheus-secret";

fn api_section(extra: &str) -> String {
    let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
    format!("[api]\n{extra}tokens = [{{ name = \"prom\", role = \"viewer\", token_sha256 = \"{hash}\" }}]\n")
}

async fn router(fleet: &Fleet, api_extra: &str, stats: Arc<IngestStats>) -> Router {
    let hub = fleet.hub(&fleet.config_file(&api_section(api_extra))).await;
    hub::api::router(hub::api::HubApi::new(hub, stats).expect("credentials"))
}

async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition text")
}

/// The value of `name` (with `label` when given); panics when the scrape lacks it.
fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("{name} {label:?} not in the scrape"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

#[tokio::test]
async fn metrics_show_what_ingest_stored_and_what_waits_for_it() {
    let fleet = Fleet::start().await;
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000;
    let reports = [
        alert("a", "gw-1", 1, "inc-1", false),
        alert("a", "gw-1", 2, "inc-2", false),
        action("a", "gw-1", 3),
        inventory("a", "gw-1", mac(1), T0_MS, None),
        inventory("b", "gw-2", mac(2), now_ms, None),
    ];
    for report in &reports {
        fleet.publish(report).await;
    }
    // Republished under another id: the broker takes it, ingest finds its event stored.
    let again = &reports[0];
    fleet.publish_as(&again.subject(), "republished", &serde_json::to_vec(again).unwrap()).await;
    fleet.publish_as("iotgw.a.gw-1.event", "junk", b"not a report").await;
    sqlx::query(
        "INSERT INTO commands (id, site, gateway, mac, action, actor, reason, issued_at, expires_at) \
         VALUES (gen_random_uuid(), 'b', 'gw-2', $1, 'quarantine', 'api:otto', 'scan', now(), now() + interval '1 hour')",
    )
    .bind(mac(2).to_string())
    .execute(&fleet.pool)
    .await
    .unwrap();

    let ingest = fleet.ingest("").await;
    ingest.wait_handled(7).await;
    fleet.wait_consumer_done().await;
    let app = router(&fleet, "", ingest.stats.clone()).await;

    let (status, text) = get(&app, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let scrape = parse(&text);
    assert_eq!(value(&scrape, "iotgw_hub_reports_total", None), 6.0);
    assert_eq!(value(&scrape, "iotgw_hub_reports_refused_total", None), 1.0);
    assert_eq!(value(&scrape, "iotgw_hub_duplicate_events_total", None), 1.0);
    assert!(value(&scrape, "iotgw_hub_batches_total", None) >= 1.0);
    assert_eq!(value(&scrape, "iotgw_hub_failed_batches_total", None), 0.0);
    assert_eq!(value(&scrape, "iotgw_hub_clone_alerts_total", None), 0.0);
    assert_eq!(value(&scrape, "iotgw_hub_consumer_pending", None), 0.0);
    assert!(value(&scrape, "iotgw_hub_ingest_lag_seconds", None) >= 0.0);
    for stage in ["pull", "hand", "decode", "held", "store", "acknowledge"] {
        let seconds = value(&scrape, "iotgw_hub_ingest_stage_seconds_total", Some(("stage", stage)));
        assert!(seconds >= 0.0, "{stage}: {seconds}");
    }
    let store = value(&scrape, "iotgw_hub_ingest_stage_seconds_total", Some(("stage", "store")));
    assert!(store > 0.0, "storing six reports took time: {store}");
    assert_eq!(value(&scrape, "iotgw_hub_gateways", None), 2.0);
    assert_eq!(value(&scrape, "iotgw_hub_gateways_stale", None), 1.0, "gw-1 reported at T0, long ago");
    assert_eq!(value(&scrape, "iotgw_hub_fleet_devices", None), 2.0);
    assert_eq!(value(&scrape, "iotgw_hub_commands_pending", None), 1.0);
    assert_eq!(value(&scrape, "iotgw_hub_open_alerts", Some(("severity", "high"))), 2.0);
    assert_eq!(value(&scrape, "iotgw_hub_open_alerts", Some(("severity", "critical"))), 0.0);
    for line in text.lines().filter(|line| line.starts_with("# HELP")) {
        assert!(line.ends_with('.') && !line.ends_with(".."), "{line}");
    }
    // A client that prefers the classic text format (an old Prometheus, Telegraf) gets it.
    let request = Request::get("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::ACCEPT, "text/plain;q=0.9, application/openmetrics-text;q=0.5");
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let classic =
        String::from_utf8(axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    assert!(!classic.contains("# EOF"), "{classic}");
    assert_eq!(value(&parse(&classic), "iotgw_hub_gateways", None), 2.0);
    assert_eq!(value(&parse(&classic), "iotgw_hub_open_alerts", Some(("severity", "high"))), 2.0);

    // Reports arriving while ingest is stopped wait in the stream; the broker says how many.
    ingest.stop().await;
    for seq in 10..14 {
        fleet.publish(&action("a", "gw-1", seq)).await;
    }
    let (_, text) = get(&app, "/metrics", Some(TOKEN)).await;
    assert_eq!(value(&parse(&text), "iotgw_hub_consumer_pending", None), 4.0);
    let (status, body) = get(&app, "/api/v1/status", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ingest"]["pending"], 4, "{body}");
    assert!(body["ingest"]["lag_ms"].is_u64(), "{body}");
}

#[tokio::test]
async fn a_scrape_needs_a_token_unless_metrics_are_public() {
    let fleet = Fleet::start().await;
    // No consumer yet: the backlog comes from ingest's counters.
    let stats = Arc::new(IngestStats::default());
    let app = router(&fleet, "", stats.clone()).await;
    assert_eq!(get(&app, "/metrics", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&app, "/metrics", Some("wrong")).await.0, StatusCode::UNAUTHORIZED);
    let (status, text) = get(&app, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value(&parse(&text), "iotgw_hub_gateways", None), 0.0);

    let public = router(&fleet, "metrics_public = true\n", stats).await;
    let (status, text) = get(&public, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value(&parse(&text), "iotgw_hub_reports_total", None), 0.0);
    // Only the metrics: the rest of the API still wants a token.
    assert_eq!(get(&public, "/api/v1/status", None).await.0, StatusCode::UNAUTHORIZED);
}
