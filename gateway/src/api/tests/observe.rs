//! What the API shows about itself: metrics, the OpenAPI document, the policy in force, and
//! the `[api]` section of the gateway configuration.
use reqwest::StatusCode;

use super::*;

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text")
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: (&str, &str)) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1)).map(|s| match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    })
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_actions_and_devices() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, None).await;
    let mut stats = vec![0u64; gateway_ebpf::counter::COUNT as usize];
    stats[(gateway_ebpf::counter::DROPS_BASE + gateway_ebpf::reason::QUARANTINE) as usize] = 17;
    server.state.metrics.set_datapath_counters(DatapathCounters::from_global_stats(&stats));
    server.state.metrics.set_integration_backlog("syslog", 3);

    let response = get(&server, "/metrics", Some(VIEWER_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let scrape = scrape(&response.text().await.unwrap());
    assert_eq!(sample(&scrape, "iotgw_devices", ("state", "quarantined")), Some(1.0));
    assert_eq!(sample(&scrape, "iotgw_devices", ("state", "unknown")), Some(1.0));
    assert_eq!(sample(&scrape, "iotgw_devices", ("state", "enrolled")), Some(0.0));
    assert_eq!(sample(&scrape, "iotgw_actions_total", ("action", "quarantine")), Some(1.0));
    let reason = gateway_ebpf::reason::NAMES[gateway_ebpf::reason::QUARANTINE as usize];
    assert_eq!(sample(&scrape, "iotgw_datapath_drops_total", ("reason", reason)), Some(17.0));
    assert_eq!(sample(&scrape, "iotgw_integration_backlog", ("sink", "syslog")), Some(3.0));

    let status = json(get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await).await;
    assert_eq!(status["datapath"]["counters"]["drops"][reason], 17);
    assert_eq!(status["integration_backlog"]["syslog"], 3);
    server.stop().await;

    let fixture = Fixture::new();
    let open = Server::start(fixture.directory(), true).await;
    assert_eq!(get(&open, "/metrics", None).await.status(), StatusCode::OK);
    assert_eq!(get(&open, "/api/v1/status", None).await.status(), StatusCode::UNAUTHORIZED);
    open.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_every_route_and_the_bearer_scheme() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let response = get(&server, "/api/v1/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let document = json(response).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (path, method) in [
        ("/api/v1/status", "get"),
        ("/api/v1/devices", "get"),
        ("/api/v1/devices/{mac}", "get"),
        ("/api/v1/devices/{mac}/flows", "get"),
        ("/api/v1/policies", "get"),
        ("/api/v1/devices/{mac}/quarantine", "post"),
        ("/api/v1/devices/{mac}/release", "post"),
        ("/api/v1/devices/{mac}/block", "post"),
        ("/metrics", "get"),
        ("/api/v1/soar/actions", "post"),
        ("/api/v1/audit", "get"),
        ("/api/v1/summary", "get"),
    ] {
        assert!(document["paths"][path][method].is_object(), "{method} {path} missing");
    }
    assert!(document["components"]["schemas"]["DeviceDetail"].is_object());
    assert!(document["components"]["schemas"]["InventorySummary"].is_object());
    let devices = &document["paths"]["/api/v1/devices"]["get"];
    let params: Vec<&str> =
        devices["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["state", "type", "vendor", "class", "q", "sort", "limit", "cursor"]);
    assert!(devices["responses"]["200"]["headers"]["next-cursor"].is_object(), "{devices:#}");
    server.stop().await;
}

#[tokio::test]
async fn policies_show_what_the_policy_component_published() {
    let policies = Arc::new(SharedPolicy::default());
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let state = server.state.clone().with_policies(policies.clone());
    let (trigger, shutdown) = crate::shutdown::channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(serve_on(listener, router(state), None, shutdown));

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let compiled = crate::policy::check(&[dir], crate::respond::rules::policy_errors).unwrap();
    policies.set(policy_view::PolicyInForce::new(Arc::new(compiled.clone()), Default::default()));
    policies.refused("camera.toml:3:1: bad".into());
    let read = |path: &str| {
        let request = client().get(format!("{base}{path}")).bearer_auth(VIEWER_TOKEN);
        async move { json(request.send().await.unwrap()).await }
    };
    let body = read("/api/v1/policies").await;
    assert_eq!(body["classes"].as_array().unwrap().len(), compiled.classes.len());
    assert_eq!(body["version"], policy_view::version(&compiled));
    assert_eq!(body["last_refused"], "camera.toml:3:1: bad");
    assert_eq!(body["last_reload"]["accepted"], false, "{body}");
    assert_eq!(body["last_reload"]["at"], body["last_refused_at"], "{body}");
    // An accepted reload ends the refusal and is the last reload.
    policies.set(policy_view::PolicyInForce::new(Arc::new(compiled.clone()), Default::default()));
    let body = read("/api/v1/policies").await;
    assert_eq!((&body["last_refused"], &body["last_reload"]["accepted"]), (&serde_json::Value::Null, &true.into()));
    assert_eq!(body["last_reload"]["at"], body["loaded_at"], "{body}");
    let status = read("/api/v1/status").await;
    assert_eq!(status["policy_version"], policy_view::version(&compiled));
    trigger.trigger();
    iotgw_test_support::wait::within("the server's stop at shutdown", Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    server.stop().await;
}

#[test]
fn api_section_of_the_gateway_config_parses_and_bad_hashes_point_at_their_line() {
    let path = std::path::Path::new("gateway.toml");
    let config = crate::config::parse(path, "").unwrap();
    assert_eq!(config.api.listen, DEFAULT_LISTEN);
    assert!(config.api.listen.ip().is_loopback());
    assert!(!config.api.metrics_public);

    let hash = auth::TokenHash::of(OPERATOR_TOKEN);
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:9090\"\nmetrics_public = true\ntokens = [\n  {{ name = \"otto\", role = \"operator\", token_sha256 = \"{}\" }},\n]\n",
        hex::encode(hash.0)
    );
    let config = crate::config::parse(path, &text).unwrap();
    assert_eq!(config.api.listen.port(), 9090);
    let set = TokenSet::load(&config.api).unwrap();
    assert_eq!(set.authenticate(OPERATOR_TOKEN).map(|c| c.role), Some(Role::Operator));

    let bad = "[api]\ntokens = [\n  { name = \"otto\", role = \"operator\", token_sha256 = \"plain-token\" },\n]\n";
    let error = crate::config::parse(path, bad).unwrap_err().to_string();
    assert!(error.starts_with("gateway.toml:3:") && error.contains("64 hex digits"), "{error}");
    let error = crate::config::parse(path, "[api]\nrole = \"admin\"\n").unwrap_err().to_string();
    assert!(error.contains("unknown field"), "{error}");
}
