//! A hub API over a real PostgreSQL (and the real nats-server its `Hub` holds a JetStream
//! context of), called in process through the router, with a fleet seeded by SQL as the
//! ingest writes it: two sites, three gateways, devices seen at one or two of them, events and
//! alerts.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use iotgw::{
    device::Access,
    fleet::connect::{self, Endpoint},
    hub::{self, Hub},
    inventory::{DeviceRecord, TrafficTotals},
};
use iotgw_test_support::services::{NatsServer, Postgres, scratch};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};
use tower::ServiceExt as _;

pub const VIEWER: &str = "viewer-secret";
pub const OPERATOR: &str = "operator-secret";
pub const ADMIN: &str = "admin-secret";

/// The seeded fleet's clock: every seeded time is this minus some minutes.
pub fn base_time() -> OffsetDateTime {
    // Whole seconds, as the timestamps the assertions compare are written.
    OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap()
}

pub struct Fleet {
    pub pool: sqlx::PgPool,
    pub app: Router,
    pub now: OffsetDateTime,
    _postgres: Postgres,
    _nats: NatsServer,
}

/// An answer: status, headers and the JSON body (`Null` when empty).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn next_cursor(&self) -> Option<String> {
        self.headers.get("next-cursor").map(|value| value.to_str().unwrap().to_owned())
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Fleet {
    /// PostgreSQL migrated, nats-server running, the hub's router over both; nothing seeded.
    pub async fn start() -> Fleet {
        let postgres = Postgres::start();
        let nats = NatsServer::start();
        let dir = scratch("hub-api");
        let path = dir.join("hub.toml");
        std::fs::write(
            &path,
            format!(
                "nats_url = \"{}\"\ndatabase_url = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
                 tokens = [\n  {{ name = \"vera\", role = \"viewer\", token_sha256 = \"{}\" }},\n  \
                 {{ name = \"otto\", role = \"operator\", token_sha256 = \"{}\" }},\n  \
                 {{ name = \"root\", role = \"admin\", token_sha256 = \"{}\" }},\n]\n",
                nats.url(),
                postgres.url(),
                hash(VIEWER),
                hash(OPERATOR),
                hash(ADMIN)
            ),
        )
        .unwrap();
        let config = hub::Config::load(&path).expect("hub config");
        let pool = hub::store::open(&config.database_url).await.expect("migrate");
        let url = nats.url();
        let client = connect::connect(&Endpoint {
            url: &url,
            name: "hub-api-test",
            credentials: None,
            tls_ca: None,
            inbox_prefix: None,
        })
        .await
        .expect("connect");
        let hub = Hub { config: Arc::new(config), pool: pool.clone(), jetstream: async_nats::jetstream::new(client) };
        let app = hub::api::router(hub::api::HubApi::new(hub, Arc::default()).expect("credentials"));
        Fleet { pool, app, now: base_time(), _postgres: postgres, _nats: nats }
    }

    /// `start` with `seed` applied.
    pub async fn seeded() -> Fleet {
        let fleet = Fleet::start().await;
        fleet.seed().await;
        fleet
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Answer { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(VIEWER), None).await
    }

    /// Every item of a list, following `Next-Cursor` with pages of `limit`; also the pages
    /// (at most `MAX_PAGES`).
    pub async fn all_pages(&self, path: &str, limit: usize) -> (Vec<Value>, usize) {
        let separator = if path.contains('?') { '&' } else { '?' };
        let (mut items, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let mut url = format!("{path}{separator}limit={limit}");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let answer = self.get(&url).await;
            assert_eq!(answer.status, StatusCode::OK, "{url}: {}", answer.body);
            pages += 1;
            items.extend(answer.body.as_array().unwrap().iter().cloned());
            // Bounded: a cursor that led back to a page already read would loop forever.
            assert!(pages <= MAX_PAGES, "{path}: still paging after {pages} pages ({} items)", items.len());
            cursor = answer.next_cursor();
            if cursor.is_none() {
                return (items, pages);
            }
        }
    }

    pub fn minutes_ago(&self, minutes: i64) -> OffsetDateTime {
        self.now - Duration::minutes(minutes)
    }

    /// A gateway that last reported `minutes` ago, enforcing policy bundle `policy`.
    pub async fn gateway(&self, site: &str, gateway: &str, minutes: i64, policy: Option<u64>) {
        let health = json!({
            "version": "0.1.0", "policy_version": policy, "policy_refused": null, "xdp_mode": "native",
            "map_fill": [], "outbox_backlog": 0, "devices": 3, "uptime_secs": 60,
        });
        sqlx::query(
            "INSERT INTO gateways (site, gateway, first_seen, last_seen, health_ms, health) \
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(site)
        .bind(gateway)
        .bind(self.minutes_ago(600))
        .bind(self.minutes_ago(minutes))
        .bind(health)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// `mac` as `gateway` of `site` saw it `minutes` ago; the fleet row and location follow
    /// when it is the latest sighting.
    pub async fn device(&self, site: &str, gateway: &str, mac: &str, minutes: i64, how: Seen<'_>) {
        let seen = self.minutes_ago(minutes);
        let record = DeviceRecord {
            mac: mac.parse().unwrap(),
            first_seen: self.minutes_ago(500),
            last_seen: seen,
            vendor: how.vendor.map(str::to_owned),
            locally_administered: false,
            hostname: how.hostname.map(str::to_owned),
            device_type: how.device_type.map(str::to_owned),
            type_confidence: how.device_type.map(|_| 0.9),
            type_vendor: how.type_vendor.map(str::to_owned),
            type_vendor_confidence: how.type_vendor.map(|_| 0.8),
            generic_type: how.generic_type.map(str::to_owned),
            generic_confidence: how.generic_type.map(|_| 0.95),
            access: how.access,
            lifecycle: None,
            class: None,
            firmware_version: None,
            cert_subject: None,
            device_id: None,
            ips: vec!["192.168.1.20".parse().unwrap()],
            flows_total: 3,
            traffic: TrafficTotals { tx_bytes: 100, tx_packets: 1, rx_bytes: 200, rx_packets: 2 },
        };
        sqlx::query(
            "INSERT INTO gateway_devices (site, gateway, mac, changed_ms, last_seen, access, device_type, vendor, \
             hostname, record, type_vendor, generic_type) VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(site)
        .bind(gateway)
        .bind(mac)
        .bind(seen)
        .bind(how.access.as_str())
        .bind(how.device_type)
        .bind(how.vendor)
        .bind(how.hostname)
        .bind(serde_json::to_value(&record).unwrap())
        .bind(how.type_vendor)
        .bind(how.generic_type)
        .execute(&self.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO fleet_devices (mac, first_seen, last_seen, site, gateway, access) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (mac) DO UPDATE SET last_seen = excluded.last_seen, site = excluded.site, \
             gateway = excluded.gateway, access = excluded.access WHERE excluded.last_seen > fleet_devices.last_seen",
        )
        .bind(mac)
        .bind(self.minutes_ago(500))
        .bind(seen)
        .bind(site)
        .bind(gateway)
        .bind(how.access.as_str())
        .execute(&self.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO device_locations (mac, site, gateway, first_seen, last_seen) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(mac)
        .bind(site)
        .bind(gateway)
        .bind(seen)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// An alert of `detector` on `mac` at `gateway`, last seen `minutes` ago; its id.
    pub async fn alert(&self, site: &str, gateway: &str, mac: &str, severity: i16, minutes: i64) -> i64 {
        let latest = json!({
            "id": format!("ev-{site}-{gateway}-{minutes}"), "time": self.minutes_ago(minutes).unix_timestamp(),
            "severity": "high", "device": mac, "device_ip": "192.168.1.20", "actor": "detector:scan",
            "kind": "alert", "incident_id": format!("inc-{minutes}"), "detector": "scan", "score": 0.8,
            "expected": "at most 10 hosts", "observed": "40 hosts", "flows": ["tcp 192.168.1.20:1 -> 10.0.0.1:22"],
            "resolved": false,
        });
        sqlx::query_scalar(
            "INSERT INTO alerts (site, gateway, incident_id, mac, detector, severity, first_seen, last_seen, latest) \
             VALUES ($1, $2, $3, $4, 'scan', $5, $6, $6, $7) RETURNING id",
        )
        .bind(site)
        .bind(gateway)
        .bind(format!("inc-{minutes}"))
        .bind(mac)
        .bind(severity)
        .bind(self.minutes_ago(minutes))
        .bind(latest)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Event `seq` of `gateway` about `mac`, `minutes` ago.
    pub async fn event(&self, site: &str, gateway: &str, seq: i64, mac: &str, kind: &str, minutes: i64) {
        sqlx::query(
            "INSERT INTO events (site, gateway, seq, event_id, kind, severity, time, mac, actor, body) \
             VALUES ($1, $2, $3, $4, $5, 2, $6, $7, 'detector:scan', $8)",
        )
        .bind(site)
        .bind(gateway)
        .bind(seq)
        .bind(format!("{site}.{gateway}.{seq}"))
        .bind(kind)
        .bind(self.minutes_ago(minutes))
        .bind(mac)
        .bind(json!({ "kind": kind, "seq": seq }))
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Site `a`: gateways `gw-1` (live, policy 7) and `gw-2` (silent for an hour); site `b`:
    /// `gw-3` (live, no bundle). Devices `CAMERA_A` (at gw-1, then gw-3: a location history),
    /// `PLUG_A` (gw-1) and, at gw-2, `DEVICES_AT_GW2` more; one alert per gateway; events.
    pub async fn seed(&self) {
        self.gateway("a", "gw-1", 1, Some(7)).await;
        self.gateway("a", "gw-2", 60, Some(6)).await;
        self.gateway("b", "gw-3", 2, None).await;
        let camera = Seen {
            hostname: Some("lobby-cam"),
            vendor: Some("Axis"),
            device_type: Some("camera"),
            type_vendor: Some("Axis"),
            generic_type: Some("ip-camera"),
            ..Seen::default()
        };
        self.device("a", "gw-1", CAMERA, 30, camera).await;
        self.device("b", "gw-3", CAMERA, 5, Seen { access: Access::Quarantined, ..camera }).await;
        let plug = Seen {
            hostname: Some("plug-1"),
            vendor: Some("TP-Link"),
            device_type: Some("smart_plug"),
            type_vendor: Some("Kasa"),
            generic_type: Some("smart-plug"),
            ..Seen::default()
        };
        self.device("a", "gw-1", PLUG, 10, plug).await;
        for n in 0..DEVICES_AT_GW2 {
            let mac = format!("02:00:00:00:01:{n:02x}");
            // Two devices share each minute, so the cursor must break ties by MAC.
            self.device("a", "gw-2", &mac, 100 + n / 2, Seen::default()).await;
        }
        self.alert("a", "gw-1", PLUG, 3, 8).await;
        self.alert("a", "gw-2", "02:00:00:00:01:00", 2, 70).await;
        self.alert("b", "gw-3", CAMERA, 4, 4).await;
        for seq in 1..=5 {
            self.event("a", "gw-1", seq, PLUG, "alert", 20 - seq).await;
            self.event("b", "gw-3", seq, CAMERA, "action", 20 - seq).await;
        }
    }
}

/// More pages than any fixture here fills (at one item a page).
const MAX_PAGES: usize = 1_000;
pub const CAMERA: &str = "98:90:96:9a:86:df";
pub const PLUG: &str = "50:02:91:00:00:01";
pub const DEVICES_AT_GW2: i64 = 7;

/// How a gateway saw a device.
#[derive(Clone, Copy)]
pub struct Seen<'a> {
    pub hostname: Option<&'a str>,
    pub vendor: Option<&'a str>,
    pub device_type: Option<&'a str>,
    /// The guess's vendor and generic type.
    pub type_vendor: Option<&'a str>,
    pub generic_type: Option<&'a str>,
    pub access: Access,
}

impl Default for Seen<'_> {
    fn default() -> Self {
        Self {
            hostname: None,
            vendor: None,
            device_type: None,
            type_vendor: None,
            generic_type: None,
            access: Access::Enrolled,
        }
    }
}
