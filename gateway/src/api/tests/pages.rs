//! The console pages' read endpoints over real stores: a device's traffic, destinations and
//! baseline, the alert summary and the OTA campaigns; unknown devices and campaigns are 404,
//! bad queries 400.
use reqwest::StatusCode;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::*;
use crate::{
    alerts::AlertStore,
    baseline::{self, DeviceBaseline, Learning},
    datapath::{events::SampleKind, traffic::TrafficCounters},
    event::{EventKind, GatewayEvent, Severity},
    ota::{
        db,
        rollout::{CampaignId, Stage, State as CampaignState},
    },
};

const CLOUD: &str = "203.0.113.7";

/// The fixture's camera also got a DNS answer naming the cloud it talks to, sent NTP once and
/// has three minutes of traffic, one of them an hour ago.
fn camera_history(fixture: &Fixture) {
    let mut inventory = fixture.inventory.lock().unwrap();
    let camera: Mac = CAMERA.parse().unwrap();
    let now = SystemTime::now();
    let crate::pipeline::Input::Datapath(DatapathEvent::Sample(mut answer)) =
        crate::detect::synthetic::dns_answer(camera, now, "cloud.example", CLOUD.parse().unwrap())
    else {
        unreachable!("dns_answer makes a sample")
    };
    answer.kind = SampleKind::DnsAnswer;
    inventory.handle(&DatapathEvent::Sample(answer)).unwrap();
    let (camera_ip, ntp_server) = ("192.168.1.20".parse().unwrap(), "198.51.100.9".parse().unwrap());
    let crate::pipeline::Input::Datapath(DatapathEvent::Flow(mut ntp)) =
        crate::detect::synthetic::udp(camera, now, camera_ip, ntp_server, 123, 123)
    else {
        unreachable!("udp makes a flow")
    };
    ntp.verdict = gateway_ebpf::verdict::DROP;
    ntp.reason = gateway_ebpf::reason::POLICY_DENY;
    inventory.handle(&DatapathEvent::Flow(ntp)).unwrap();
    let counters = TrafficCounters { tx_bytes: 1_000, tx_packets: 10, rx_bytes: 500, rx_packets: 5 };
    for ago in [3_600, 120, 60] {
        inventory.record_traffic(camera, now - Duration::from_secs(ago), &counters).unwrap();
    }
}

#[tokio::test]
async fn a_devices_traffic_destinations_and_baseline_read_back() {
    let fixture = Fixture::new();
    camera_history(&fixture);
    let learning = Learning::new(SystemTime::now(), Duration::from_secs(1_800), None);
    let mut conn = crate::schema::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    let stored = baseline::store::DeviceRecord {
        mac: CAMERA.parse().unwrap(),
        class: Some("camera".into()),
        baseline: DeviceBaseline::Learning(learning),
    };
    baseline::store::save(&mut conn, &[stored], &[]).unwrap();
    let server = Server::start(fixture.directory(), false).await;

    let traffic = json(get(&server, &format!("/api/v1/devices/{CAMERA}/traffic"), Some(VIEWER_TOKEN)).await).await;
    let points = traffic.as_array().unwrap();
    assert_eq!(points.len(), 3, "three minutes within the default day: {traffic}");
    let starts: Vec<&str> = points.iter().map(|p| p["start"].as_str().unwrap()).collect();
    let parsed: Vec<OffsetDateTime> = starts.iter().map(|s| OffsetDateTime::parse(s, &Rfc3339).unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] < w[1]), "oldest first: {starts:?}");
    assert_eq!((points[0]["tx_bytes"].as_u64(), points[0]["seconds"].as_u64()), (Some(1_000), Some(60)));
    // A range that holds the last two minutes only, and a limit that keeps the newest.
    let since = (OffsetDateTime::now_utc() - time::Duration::minutes(10)).format(&Rfc3339).unwrap();
    let recent = get(&server, &format!("/api/v1/devices/{CAMERA}/traffic?since={since}"), Some(VIEWER_TOKEN)).await;
    assert_eq!(json(recent).await.as_array().unwrap().len(), 2);
    let newest =
        json(get(&server, &format!("/api/v1/devices/{CAMERA}/traffic?limit=1"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(newest[0]["start"], points[2]["start"], "the newest bucket: {newest}");

    let destinations =
        json(get(&server, &format!("/api/v1/devices/{CAMERA}/destinations"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(destinations.as_array().unwrap().len(), 2, "{destinations}");
    let busiest = &destinations[0];
    assert_eq!(
        (busiest["dst"].as_str(), busiest["dst_port"].as_u64(), busiest["proto"].as_u64()),
        (Some(CLOUD), Some(443), Some(6))
    );
    assert_eq!((busiest["flows"].as_u64(), busiest["bytes"].as_u64()), (Some(3), Some(3 * 74)));
    assert_eq!(busiest["names"], serde_json::json!(["cloud.example"]), "the name the device resolved");
    assert_eq!(busiest["verdict"], "pass");
    let ntp = &destinations[1];
    assert_eq!((ntp["flows"].as_u64(), ntp["verdict"].as_str()), (Some(1), Some("drop")));
    assert_eq!(ntp["names"], serde_json::json!([]), "no answer named it");
    let plug = json(get(&server, &format!("/api/v1/devices/{PLUG}/destinations"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(plug[0]["names"], serde_json::json!([]), "the camera's answer names nothing for the plug: {plug}");
    let one = get(&server, &format!("/api/v1/devices/{CAMERA}/destinations?limit=1"), Some(VIEWER_TOKEN)).await;
    assert_eq!(json(one).await.as_array().unwrap().len(), 1);

    let shown = json(get(&server, &format!("/api/v1/devices/{CAMERA}/baseline"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!((shown["state"].as_str(), shown["class"].as_str()), (Some("learning"), Some("camera")), "{shown}");
    assert!(shown["updated_at"].is_string() && shown["profile"]["services"].is_object(), "{shown}");
    assert_eq!(shown["learned"], serde_json::json!([]));
    let none = json(get(&server, &format!("/api/v1/devices/{PLUG}/baseline"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!((none["state"].as_str(), &none["profile"]), (Some("none"), &serde_json::Value::Null), "{none}");

    for page in ["traffic", "destinations", "baseline"] {
        let path = format!("/api/v1/devices/{ABSENT}/{page}");
        assert_eq!(get(&server, &path, Some(VIEWER_TOKEN)).await.status(), StatusCode::NOT_FOUND, "{path}");
        let path = format!("/api/v1/devices/not-a-mac/{page}");
        assert_eq!(get(&server, &path, Some(VIEWER_TOKEN)).await.status(), StatusCode::BAD_REQUEST, "{path}");
        let path = format!("/api/v1/devices/{CAMERA}/{page}");
        assert_eq!(get(&server, &path, None).await.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for query in
        ["since=yesterday", "limit=0", "limit=10081", "until=2020-01-01T00:00:00Z&since=2021-01-01T00:00:00Z", "x=1"]
    {
        let path = format!("/api/v1/devices/{CAMERA}/traffic?{query}");
        assert_eq!(get(&server, &path, Some(VIEWER_TOKEN)).await.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    for query in ["limit=0", "limit=1001", "limit=x"] {
        let path = format!("/api/v1/devices/{CAMERA}/destinations?{query}");
        assert_eq!(get(&server, &path, Some(VIEWER_TOKEN)).await.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    server.stop().await;
}

/// An alert of `detector` on `mac`, `ago_secs` ago.
pub(super) fn alert(mac: &str, detector: &str, severity: Severity, ago_secs: i64) -> GatewayEvent {
    let mac: Mac = mac.parse().unwrap();
    let mut event = GatewayEvent::new(
        severity,
        Some(mac),
        format!("detector:{detector}"),
        EventKind::Alert {
            incident_id: format!("{detector}:{mac}"),
            detector: detector.into(),
            score: 0.9,
            expected: "little".into(),
            observed: "much".into(),
            flows: vec![],
            resolved: false,
        },
    );
    event.time = OffsetDateTime::now_utc() - time::Duration::seconds(ago_secs);
    event
}

/// An operator acknowledges alert `id`.
pub(super) async fn acknowledge(server: &Server, id: i64) {
    let change = client()
        .patch(format!("{}/api/v1/alerts/{id}", server.base))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"state":"acknowledged"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_alert_summary_counts_states_severities_and_buckets() {
    let fixture = Fixture::new();
    let mut store = AlertStore::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    store
        .record(&[
            alert(CAMERA, "scan", Severity::High, 30),
            alert(CAMERA, "volume", Severity::Medium, 4_000),
            alert(PLUG, "scan", Severity::Critical, 90_000),
        ])
        .unwrap();
    let options = Options { alerts: Some(store), ..Options::default() };
    let server = Server::start_with(fixture.directory(), false, options).await;
    let volume = json(get(&server, "/api/v1/alerts?detector=volume", Some(VIEWER_TOKEN)).await).await;
    let id = volume[0]["id"].as_i64().unwrap();
    acknowledge(&server, id).await;

    let summary = json(get(&server, "/api/v1/alerts/summary", Some(VIEWER_TOKEN)).await).await;
    let open = &summary["open_by_severity"];
    assert_eq!(
        (open["critical"].as_u64(), open["high"].as_u64(), open["medium"].as_u64()),
        (Some(1), Some(1), Some(0)),
        "{summary}"
    );
    assert_eq!((open["low"].as_u64(), open["info"].as_u64()), (Some(0), Some(0)));
    let states = &summary["by_state"];
    assert_eq!(
        (states["open"].as_u64(), states["acknowledged"].as_u64(), states["resolved"].as_u64()),
        (Some(2), Some(1), Some(0))
    );
    let buckets = summary["over_time"].as_array().unwrap();
    assert_eq!(buckets.len(), 24, "a day of hours");
    let total = |key: &str| buckets.iter().map(|b| b[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!((total("critical"), total("high"), total("medium")), (0, 1, 1), "the day-old one is out of range");
    assert_eq!(buckets[23]["high"], 1, "the newest bucket holds the scan of 30 s ago: {summary}");

    let since = (OffsetDateTime::now_utc() - time::Duration::hours(30)).format(&Rfc3339).unwrap();
    let path = format!("/api/v1/alerts/summary?since={since}&bucket_secs=21600");
    let wide = json(get(&server, &path, Some(VIEWER_TOKEN)).await).await;
    assert_eq!(wide["over_time"].as_array().unwrap().len(), 6, "30 h and the moments since, in 6 h buckets");
    assert_eq!(wide["over_time"].as_array().unwrap().iter().map(|b| b["critical"].as_u64().unwrap()).sum::<u64>(), 1);

    for query in [
        "bucket_secs=59",
        "bucket_secs=x",
        "since=never",
        "since=2000-01-01T00:00:00Z&bucket_secs=60",
        "since=2999-01-01T00:00:00Z",
        "foo=1",
    ] {
        let path = format!("/api/v1/alerts/summary?{query}");
        assert_eq!(get(&server, &path, Some(VIEWER_TOKEN)).await.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(get(&server, "/api/v1/alerts/summary", None).await.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// A campaign halted in its first stage: the canary device installed, of the stage's devices
/// one failed.
fn halted_campaign(conn: &rusqlite::Connection) -> (String, Vec<Mac>) {
    let canary: Mac = "02:00:00:00:00:01".parse().unwrap();
    let id = CampaignId("c-1".into());
    let mut spec = crate::ota::rollout::tests::spec();
    spec.plan.stages = vec![Stage::Percent(100)];
    spec.plan.windows = vec!["22:00-02:00".parse().unwrap()];
    let state = CampaignState::Halted { group: Some(1), reason: "failure rate 50% (1/2) above 20%".into() };
    conn.execute(
        "INSERT INTO ota_campaigns (id, spec, state, stage_started_at, created_at, updated_at) VALUES (?1, ?2, ?3, 1750000000, 1, 1)",
        rusqlite::params![id.0, serde_json::to_string(&spec).unwrap(), serde_json::to_string(&state).unwrap()],
    )
    .unwrap();
    let stage: Vec<Mac> = (2..4u8).map(|i| Mac([2, 0, 0, 0, 0, i])).collect();
    for (mac, status) in [(canary, "success"), (stage[0], "failure"), (stage[1], "success")] {
        db::upsert_device(conn, mac, "cam", Some("2.0"), status, "").unwrap();
        db::insert_report(conn, mac, Some(&id.0), Some("acme/cam-2.bin"), Some("2.0"), status, "").unwrap();
    }
    (id.0, stage)
}

#[tokio::test]
async fn ota_campaigns_show_stages_progress_and_why_they_halted() {
    let fixture = Fixture::new();
    let path = fixture.dir.0.join("iotgw.db");
    let (id, _) = halted_campaign(&crate::store::open(&path, &[crate::ota::MIGRATIONS]).unwrap());
    let options =
        Options { ota: Some(crate::store::open(&path, &[crate::ota::MIGRATIONS]).unwrap()), ..Options::default() };
    let server = Server::start_with(fixture.directory(), false, options).await;

    let all = json(get(&server, "/api/v1/ota/campaigns", Some(VIEWER_TOKEN)).await).await;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    let one = json(get(&server, &format!("/api/v1/ota/campaigns/{id}"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(one, all[0]);
    assert_eq!((one["state"].as_str(), one["target"].as_str()), (Some("halted"), Some("acme/cam-2.bin")));
    assert_eq!(one["halt_reason"], "failure rate 50% (1/2) above 20%");
    assert_eq!(one["active_stage"], serde_json::Value::Null, "a halted campaign runs no stage");
    assert_eq!(one["windows"], serde_json::json!(["22:00-02:00"]));
    let stages = one["stages"].as_array().unwrap();
    let progress: Vec<_> = stages
        .iter()
        .map(|s| {
            let n = |k: &str| s[k].as_u64().unwrap();
            (s["name"].as_str().unwrap(), n("devices"), n("offered"), n("installed"), n("failed"))
        })
        .collect();
    assert_eq!(progress, [("canary", 1, 1, 1, 0), ("100%", 2, 2, 1, 1)]);

    let unknown = get(&server, "/api/v1/ota/campaigns/no-such", Some(VIEWER_TOKEN)).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(json(unknown).await["error"].as_str().unwrap().contains("no-such"));
    assert_eq!(get(&server, "/api/v1/ota/campaigns", None).await.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn a_rolling_campaign_names_its_active_stage_and_offers_later_stages_nothing() {
    let fixture = Fixture::new();
    let path = fixture.dir.0.join("iotgw.db");
    let conn = crate::store::open(&path, &[crate::ota::MIGRATIONS]).unwrap();
    let (id, _) = halted_campaign(&conn);
    let canary = serde_json::to_string(&CampaignState::Canary).unwrap();
    conn.execute("UPDATE ota_campaigns SET state = ?1", [canary]).unwrap();
    let server =
        Server::start_with(fixture.directory(), false, Options { ota: Some(conn), ..Options::default() }).await;
    let one = json(get(&server, &format!("/api/v1/ota/campaigns/{id}"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!((one["state"].as_str(), one["active_stage"].as_u64()), (Some("canary"), Some(0)), "{one}");
    assert_eq!(one["halt_reason"], serde_json::Value::Null);
    assert_eq!((one["stages"][0]["offered"].as_u64(), one["stages"][1]["offered"].as_u64()), (Some(1), Some(0)));
    server.stop().await;
}
