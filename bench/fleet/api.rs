//! The fleet API at fleet scale: PostgreSQL seeded by SQL (`generate_series`) to DEVICES fleet
//! devices over 1,000 gateways at 100 sites (each with its gateway's record and location), as
//! many alerts and as many events, then the hub's router served over HTTP on loopback and each
//! read timed ROUNDS times (p50, p99).
use std::time::{Duration, Instant};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use iotgw::hub::{self, Hub};

const GATEWAYS: usize = 1_000;
const GATEWAYS_PER_SITE: usize = 10;
/// A line stops early once it has taken this long (and done at least MIN_ROUNDS requests).
const LINE_BUDGET: Duration = Duration::from_secs(20);
const MIN_ROUNDS: usize = 5;
/// The MAC, site and gateway of seeded device `n` (as the seeding SQL spells them).
fn mac(n: usize) -> String {
    let b = (n as u32).to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn site(gateway: usize) -> String {
    format!("site-{:04}", gateway / GATEWAYS_PER_SITE)
}

fn gateway(gateway: usize) -> String {
    format!("gw-{gateway:05}")
}

/// The seeded devices' columns, `mac(n)`, `site` and `gateway` as SQL spells them, for
/// `format!` with `devices`.
fn seed_devices(devices: usize) -> String {
    format!(
        "CREATE UNLOGGED TABLE bench_seed AS
SELECT n, '02:00:' || substr(h, 1, 2) || ':' || substr(h, 3, 2) || ':' || substr(h, 5, 2) || ':' || substr(h, 7, 2) AS mac,
       'site-' || lpad(((n % {GATEWAYS}) / {GATEWAYS_PER_SITE})::text, 4, '0') AS site,
       'gw-' || lpad((n % {GATEWAYS})::text, 5, '0') AS gateway,
       (ARRAY['cam', 'plug', 'lamp', 'sensor'])[n % 4 + 1] || '-' || n AS hostname,
       (ARRAY['Espressif Inc.', 'Philips Lighting BV', 'Hangzhou Hikvision', 'Tuya Smart Inc.'])[n % 4 + 1] AS vendor,
       (ARRAY['ip-camera', 'smart-plug', 'bulb', 'sensor'])[n % 4 + 1] AS device_type,
       CASE WHEN n % 50 = 0 THEN 'quarantined' ELSE 'enrolled' END AS access,
       now() - make_interval(secs => (n::bigint * 7919) % 2592000) AS last_seen
FROM generate_series(0, {last}) n, lpad(to_hex(n), 8, '0') h",
        last = devices - 1
    )
}

/// RFC 3339 in UTC, as the records' times are serialized.
const RFC3339: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

async fn exec(pool: &sqlx::PgPool, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Seeds `devices` fleet devices (with `gateway_devices` and `device_locations` rows), `devices`
/// alerts and `devices` events over 1,000 gateways; replaces what ingest stored.
async fn seed(pool: &sqlx::PgPool, devices: usize) {
    exec(
        pool,
        "TRUNCATE gateways, gateway_devices, fleet_devices, device_locations, events, alert_notes, alerts".into(),
    )
    .await;
    let started = Instant::now();
    exec(pool, seed_devices(devices)).await;
    // The record as a gateway sends it: a simulated one with the seeded columns put in.
    let template = serde_json::to_value(crate::sim::device_record(0, 0)).expect("record JSON");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO gateway_devices (site, gateway, mac, changed_ms, last_seen, access, device_type, vendor, \
         hostname, record) \
         SELECT site, gateway, mac, 0, last_seen, access, device_type, vendor, hostname, $1::jsonb || jsonb_build_object(\
           'mac', mac, 'hostname', hostname, 'vendor', vendor, 'device_type', device_type, 'access', access, \
           'first_seen', to_char((last_seen - interval '1 day') AT TIME ZONE 'UTC', {RFC3339}), \
           'last_seen', to_char(last_seen AT TIME ZONE 'UTC', {RFC3339})) FROM bench_seed"
    )))
    .bind(template)
    .execute(pool)
    .await
    .expect("seed gateway_devices");
    exec(
        pool,
        "INSERT INTO fleet_devices (mac, first_seen, last_seen, site, gateway, access) \
         SELECT mac, last_seen - interval '1 day', last_seen, site, gateway, access FROM bench_seed; \
         INSERT INTO device_locations (mac, site, gateway, first_seen, last_seen) \
         SELECT mac, site, gateway, last_seen - interval '1 day', last_seen FROM bench_seed"
            .into(),
    )
    .await;
    exec(
        pool,
        format!(
            "INSERT INTO gateways (site, gateway, first_seen, last_seen, health_ms, health) \
             SELECT 'site-' || lpad((g / {GATEWAYS_PER_SITE})::text, 4, '0'), 'gw-' || lpad(g::text, 5, '0'), \
                    now() - interval '30 days', now() - make_interval(mins => g % 120), 0, \
                    jsonb_build_object('version', 'bench', 'policy_version', g % 7, 'xdp_mode', 'driver', \
                      'map_fill', '[]'::jsonb, 'outbox_backlog', 0, 'devices', {per}, 'uptime_secs', 60) \
             FROM generate_series(0, {last}) g",
            per = devices / GATEWAYS,
            last = GATEWAYS - 1
        ),
    )
    .await;
    println!("api-seed: {devices} fleet devices (3 rows each) in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    // Alert n and event n are about device n; one in ten alerts is open, one in ten acknowledged.
    exec(
        pool,
        format!(
            "INSERT INTO alerts (site, gateway, incident_id, mac, detector, severity, state, first_seen, last_seen, \
             latest) \
             SELECT site, gateway, 'inc-' || n, mac, detector, 1 + n % 4, \
                    CASE n % 10 WHEN 0 THEN 'open' WHEN 1 THEN 'acknowledged' ELSE 'resolved' END, t, t, \
                    jsonb_build_object('id', 'ev-' || n, 'time', extract(epoch FROM t)::bigint, 'severity', 'high', \
                      'device', mac, 'actor', 'detector:' || detector, 'kind', 'alert', 'incident_id', 'inc-' || n, \
                      'detector', detector, 'score', 0.8, 'expected', 'known destinations', \
                      'observed', '203.0.113.7:443', 'flows', '[]'::jsonb, 'resolved', false) \
             FROM (SELECT n, mac, site, gateway, (ARRAY['scan', 'new_destination', 'dns_tunnel', 'beacon'])[n % 4 + 1] \
                   AS detector, now() - make_interval(secs => (n::bigint * 104729) % 2592000) AS t FROM bench_seed) a; \
             INSERT INTO events (site, gateway, seq, event_id, kind, severity, time, mac, actor, body) \
             SELECT site, gateway, n / {GATEWAYS} + 1, site || '.' || gateway || '.' || (n / {GATEWAYS} + 1), kind, \
                    n % 5, t, mac, 'bench', jsonb_build_object('kind', kind, 'seq', n / {GATEWAYS} + 1) \
             FROM (SELECT n, mac, site, gateway, (ARRAY['alert', 'action', 'audit', 'lifecycle'])[n % 4 + 1] AS kind, \
                   now() - make_interval(secs => (n::bigint * 15485863) % 2592000) AS t FROM bench_seed) e; \
             DROP TABLE bench_seed; ANALYZE"
        ),
    )
    .await;
    println!("api-seed: {devices} alerts and {devices} events in {:.1} s", started.elapsed().as_secs_f64());
    let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(pool).await.unwrap();
    println!("api-seed: database {} MiB", bytes >> 20);
}

/// Times up to `rounds` GETs of `path` (LINE_BUDGET at most): p50, p99, the rows of the last
/// answer and the requests made.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    rounds: usize,
) -> (Duration, Duration, usize, usize) {
    let mut times = Vec::with_capacity(rounds);
    let mut rows = 0;
    let started = Instant::now();
    while times.len() < rounds && (times.len() < MIN_ROUNDS || started.elapsed() < LINE_BUDGET) {
        let start = Instant::now();
        let response = client.get(format!("{base}{path}")).bearer_auth(crate::TOKEN).send().await.expect("GET");
        assert!(response.status().is_success(), "{path}: {}", response.status());
        let body: serde_json::Value = response.json().await.expect("JSON");
        times.push(start.elapsed());
        rows = body.as_array().map_or(1, Vec::len);
    }
    times.sort();
    let n = times.len();
    (times[n / 2], times[(n * 99 / 100).min(n - 1)], rows, n)
}

/// The cursor of the device list after its first `offset` devices (the last one's sort key,
/// as the API encodes it).
async fn device_cursor(pool: &sqlx::PgPool, offset: usize) -> String {
    let (micros, mac): (i64, String) = sqlx::query_as(
        "SELECT (extract(epoch FROM last_seen) * 1000000)::bigint, mac FROM fleet_devices \
         ORDER BY last_seen DESC, mac OFFSET $1 LIMIT 1",
    )
    .bind(offset as i64 - 1)
    .fetch_one(pool)
    .await
    .expect("device at offset");
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(micros, mac)).expect("cursor JSON"))
}

async fn measure_all(client: &reqwest::Client, base: &str, lines: &[(&str, String)], rounds: usize) {
    for (name, path) in lines {
        let (p50, p99, rows, n) = measure(client, base, path, rounds).await;
        let line = format!("api-{name}");
        println!(
            "{line:<30} p50 {:>9.2} ms  p99 {:>9.2} ms  ({rows} rows, {n} requests)",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}

/// Seeds, serves the hub's router on loopback, times each read.
pub async fn run(hub: Hub, devices: usize, rounds: usize) {
    let pool = hub.pool.clone();
    seed(&pool, devices).await;
    let listener = iotgw::api::bind(&hub.config.api).await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (trigger, shutdown) = iotgw::shutdown::channel();
    // The API reads no ingest here: its counters stay at zero.
    let app = hub::api::router(hub::api::HubApi::new(hub.clone(), Default::default()).expect("credentials"));
    let server = tokio::spawn(iotgw::api::serve_on(listener, app, None, shutdown));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");

    let some = devices / 3;
    let (some_gateway, some_mac) = (some % GATEWAYS, mac(some));
    let lines = [
        ("devices-first", "/api/v1/devices?limit=100".to_owned()),
        ("devices-deep", format!("/api/v1/devices?limit=100&cursor={}", device_cursor(&pool, devices / 2).await)),
        ("device-detail", format!("/api/v1/devices/{some_mac}")),
        ("devices-site", format!("/api/v1/devices?limit=100&site={}", site(some_gateway))),
        ("devices-gateway", format!("/api/v1/devices?limit=100&gateway={}", gateway(some_gateway))),
        (
            "devices-site-gw",
            format!("/api/v1/devices?limit=100&site={}&gateway={}", site(some_gateway), gateway(some_gateway)),
        ),
        ("devices-quarantined", "/api/v1/devices?limit=100&state=quarantined".to_owned()),
        ("devices-blocked", "/api/v1/devices?limit=100&state=blocked".to_owned()),
        ("search-mac", format!("/api/v1/devices?limit=100&q={}", &some_mac[..14])),
        ("search-mac-full", format!("/api/v1/devices?limit=100&q={some_mac}")),
        ("search-host", format!("/api/v1/devices?limit=100&q=cam-{}", some / 40 * 4)),
        ("search-host-many", "/api/v1/devices?limit=100&q=lamp".to_owned()),
        ("search-none", "/api/v1/devices?limit=100&q=no-such-host".to_owned()),
        ("alerts-first", "/api/v1/alerts?limit=100".to_owned()),
        ("alerts-open", "/api/v1/alerts?limit=100&state=open".to_owned()),
        ("alerts-site", format!("/api/v1/alerts?limit=100&site={}", site(some_gateway))),
        ("alerts-gateway", format!("/api/v1/alerts?limit=100&gateway={}", gateway(some_gateway))),
        ("alerts-open-site", format!("/api/v1/alerts?limit=100&state=open&site={}", site(some_gateway))),
        ("events-first", "/api/v1/events?limit=100".to_owned()),
        ("events-site", format!("/api/v1/events?limit=100&site={}", site(some_gateway))),
        ("gateways", "/api/v1/gateways?limit=100".to_owned()),
        ("status", "/api/v1/status".to_owned()),
    ];
    println!("api: {devices} fleet devices, {rounds} requests per line (at most {LINE_BUDGET:?} each)");
    measure_all(&client, &base, &lines, rounds).await;
    println!("api: bench process RSS {} MiB", crate::rss_kib() >> 10);

    trigger.trigger();
    server.await.expect("server task").expect("server");
}
