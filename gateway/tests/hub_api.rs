//! The hub's fleet API reading a real PostgreSQL: status, gateways, devices (search, filters,
//! cursors across pages, one device's views and locations), events and the console it serves.
//! Bad filters and cursors are 400s with the gateway API's error body.
#[path = "hub_api/support.rs"]
mod support;

use axum::http::{Method, StatusCode};
use support::{CAMERA, DEVICES_AT_GW2, Fleet, PLUG, VIEWER};

/// The values of `field` in `items`, as text.
fn column(items: &[serde_json::Value], field: &str) -> Vec<String> {
    items.iter().map(|item| item[field].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn status_gateways_and_devices_show_the_whole_fleet() {
    let fleet = Fleet::seeded().await;

    let status = fleet.get("/api/v1/status").await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["scope"], "fleet");
    assert_eq!(status.body["gateways"], 3);
    assert_eq!(status.body["stale_gateways"], 1, "gw-2 has been silent for an hour");
    assert_eq!(status.body["devices"]["enrolled"], 1 + DEVICES_AT_GW2);
    assert_eq!(status.body["devices"]["quarantined"], 1, "the camera as gw-3, which saw it last, has it");
    assert_eq!(status.body["devices"]["blocked"], 0);
    assert_eq!(status.body["open_alerts"], 3);

    let gateways = fleet.get("/api/v1/gateways").await;
    assert_eq!(gateways.status, StatusCode::OK);
    let list = gateways.body.as_array().unwrap();
    assert_eq!(column(list, "gateway"), ["gw-1", "gw-2", "gw-3"]);
    assert_eq!(column(list, "site"), ["a", "a", "b"]);
    assert_eq!(list.iter().map(|g| g["stale"].as_bool().unwrap()).collect::<Vec<_>>(), [false, true, false]);
    assert_eq!(list[0]["policy_version"], 7);
    assert!(list[2]["policy_version"].is_null());
    assert_eq!(list[0]["health"]["xdp_mode"], "native");
    let stale = fleet.get("/api/v1/gateways?stale=true").await;
    assert_eq!(column(stale.body.as_array().unwrap(), "gateway"), ["gw-2"]);
    let (paged, pages) = fleet.all_pages("/api/v1/gateways?site=a", 1).await;
    assert_eq!((column(&paged, "gateway"), pages), (vec!["gw-1".to_owned(), "gw-2".to_owned()], 2));

    // Newest first: the camera (5 min, gw-3), the plug (10 min), then gw-2's devices.
    let devices = fleet.get("/api/v1/devices").await;
    let list = devices.body.as_array().unwrap();
    assert_eq!(list.len() as i64, 2 + DEVICES_AT_GW2);
    assert_eq!(column(&list[..2], "mac"), [CAMERA, PLUG]);
    assert_eq!((list[0]["site"].as_str(), list[0]["gateway"].as_str()), (Some("b"), Some("gw-3")));
    assert_eq!(list[0]["state"], "quarantined");
    assert_eq!(list[0]["hostname"], "lobby-cam");
    assert_eq!(list[0]["vendor"], "Axis");
    assert_eq!(list[0]["bytes"], 300);
    assert_eq!(
        (list[0]["generic_type"].as_str(), list[0]["generic_confidence"].as_f64()),
        (Some("ip-camera"), Some(0.95))
    );
    assert!(devices.next_cursor().is_none());
}

#[tokio::test]
async fn device_cursors_walk_every_device_once_under_each_filter() {
    let fleet = Fleet::seeded().await;
    let (everything, pages) = fleet.all_pages("/api/v1/devices", 2).await;
    let macs = column(&everything, "mac");
    assert_eq!(pages, (2 + DEVICES_AT_GW2 as usize).div_ceil(2));
    let mut unique = macs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), macs.len(), "no device twice across pages: {macs:?}");
    let (whole, _) = fleet.all_pages("/api/v1/devices", 1000).await;
    assert_eq!(column(&whole, "mac"), macs, "the same order whatever the page size");

    for (query, expected) in [
        ("site=b", vec![CAMERA.to_owned()]),
        ("gateway=gw-1", vec![PLUG.to_owned()]),
        ("state=quarantined", vec![CAMERA.to_owned()]),
        ("type=smart_plug", vec![PLUG.to_owned()]),
        // The type filter matches any level of the guess: product, its vendor, its generic type.
        ("type=Kasa", vec![PLUG.to_owned()]),
        ("type=ip-camera", vec![CAMERA.to_owned()]),
        ("type=smart-plug&site=a", vec![PLUG.to_owned()]),
        ("type=sensor", vec![]),
        ("vendor=Axis", vec![CAMERA.to_owned()]),
        ("q=lobby", vec![CAMERA.to_owned()]),
        ("q=TP-LINK", vec![PLUG.to_owned()]),
        ("q=50-02-91", vec![PLUG.to_owned()]),
        ("q=camera", vec![CAMERA.to_owned()]),
        ("q=100%25", vec![]),
    ] {
        let (found, _) = fleet.all_pages(&format!("/api/v1/devices?{query}"), 1).await;
        assert_eq!(column(&found, "mac"), expected, "{query}");
    }
    let (at_gw2, pages) = fleet.all_pages("/api/v1/devices?site=a&gateway=gw-2", 3).await;
    assert_eq!((at_gw2.len() as i64, pages), (DEVICES_AT_GW2, 3));
}

#[tokio::test]
async fn one_device_shows_every_gateways_view_and_where_it_has_been() {
    let fleet = Fleet::seeded().await;
    let device = fleet.get(&format!("/api/v1/devices/{CAMERA}")).await;
    assert_eq!(device.status, StatusCode::OK, "{}", device.body);
    let body = &device.body;
    assert_eq!(
        (body["mac"].as_str(), body["site"].as_str(), body["gateway"].as_str()),
        (Some(CAMERA), Some("b"), Some("gw-3"))
    );
    assert_eq!(body["state"], "quarantined");
    assert_eq!(body["hostname"], "lobby-cam");
    let views = body["views"].as_array().unwrap();
    assert_eq!(column(views, "gateway"), ["gw-3", "gw-1"]);
    assert_eq!(column(views, "state"), ["quarantined", "enrolled"]);
    let locations = body["locations"].as_array().unwrap();
    assert_eq!(column(locations, "site"), ["b", "a"], "most recent first");
    assert_eq!(body["events"].as_array().unwrap().len(), 5);

    let missing = fleet.get("/api/v1/devices/02:00:00:00:00:99").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = fleet.get("/api/v1/devices/not-a-mac").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn events_are_filtered_and_paged_newest_first() {
    let fleet = Fleet::seeded().await;
    let (all, pages) = fleet.all_pages("/api/v1/events", 3).await;
    assert_eq!((all.len(), pages), (10, 4));
    let seqs: Vec<(String, i64)> =
        all.iter().map(|e| (e["gateway"].as_str().unwrap().to_owned(), e["seq"].as_i64().unwrap())).collect();
    assert_eq!(&seqs[..2], [("gw-3".to_owned(), 5), ("gw-1".to_owned(), 5)], "ties in time: by site, gateway desc");
    let (at_b, _) = fleet.all_pages("/api/v1/events?site=b&kind=action", 2).await;
    assert_eq!(at_b.len(), 5);
    let (of_plug, _) = fleet.all_pages(&format!("/api/v1/events?device={PLUG}&severity=medium"), 2).await;
    assert_eq!(of_plug.len(), 5);
    let (none, _) = fleet.all_pages("/api/v1/events?severity=high", 2).await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn bad_filters_and_cursors_are_refused_with_the_api_error_body() {
    let fleet = Fleet::seeded().await;
    for path in [
        "/api/v1/devices?cursor=garbage",
        "/api/v1/devices?cursor=WzEsMl0",
        "/api/v1/devices?state=asleep",
        "/api/v1/devices?site=a.b",
        "/api/v1/devices?sort=vendor",
        "/api/v1/devices?limit=0",
        "/api/v1/devices?limit=1001",
        "/api/v1/devices?colour=red",
        "/api/v1/gateways?stale=perhaps",
        "/api/v1/gateways?cursor=abc",
        "/api/v1/alerts?severity=dire",
        "/api/v1/alerts?state=closed",
        "/api/v1/alerts?limit=501",
        "/api/v1/alerts?device=nope",
        "/api/v1/events?since=yesterday",
        "/api/v1/events?gateway=gw%0A1",
        "/api/v1/audit?cursor=%22x%22",
    ] {
        let answer = fleet.get(path).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {}", answer.body);
        assert!(!answer.error().is_empty(), "{path}: {}", answer.body);
    }
    let unknown = fleet.get("/api/v1/nothing").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.error().contains("no such endpoint"), "{}", unknown.body);
}

#[tokio::test]
async fn every_endpoint_needs_a_caller_and_the_console_is_served() {
    let fleet = Fleet::start().await;
    let paths =
        ["/api/v1/status", "/api/v1/gateways", "/api/v1/devices", "/api/v1/alerts", "/api/v1/events", "/api/v1/audit"];
    for path in paths {
        let answer = fleet.call(Method::GET, path, Some(VIEWER), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: an empty fleet is no error");
    }
    // Refusals last: the throttle counts them (and would refuse even a good token soon).
    for path in paths {
        let answer = fleet.call(Method::GET, path, None, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let answer = fleet.call(Method::GET, "/api/v1/devices", Some("wrong"), None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let page = fleet.send(axum::http::Request::get("/").body(axum::body::Body::empty()).unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
}
