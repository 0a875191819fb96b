//! The console's reads on a large store: DEVICES devices (default 100,000) with addresses,
//! fingerprints, traffic and audit rows, and ALERTS alert records (default 1,000,000, see
//! `alerts.rs`), served by the real API router over HTTP on loopback (`InventoryDirectory::open`
//! and `AlertStore::open`, each on its own connection, as the controller runs them). Each line
//! times one request ROUNDS times (default 200) and prints p50 and p99 in ms:
//!
//! - `first-page`: `GET /api/v1/devices` (100 devices, most recently seen first);
//! - `deep-page`: the page after 50,000 devices, by its cursor (`last_seen` and `vendor` sorts);
//! - `search-*`: `q` as a host-name part, a MAC prefix, an IP prefix matching few devices
//!   (`-host`, `-mac`, `-ip`) and many (`-many`), two characters, and text matching nothing;
//! - `filter-*`: a rare access state, a type sorted by vendor;
//! - `summary`: `GET /api/v1/summary` (three GROUP BYs);
//! - `audit-*`: the newest audit page, a page deep in it, one device's entries;
//! - `alerts-*`: `GET /api/v1/alerts`, 100 records: the first page and the page after half of
//!   the records in each sort, then each filter (state, severity, device, detector, a one-day
//!   window) in the default order, and a filter matching many (open) and one matching few (the
//!   noisiest device) sorted by score;
//! - `browser-*`: each console page (overview, devices, alerts, a device) loaded afresh in
//!   headless Chromium until its data is on screen, by the page's own clock.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo bench -p gateway --bench console [-- DEVICES [ALERTS [ROUNDS]]]`,
//! or `cargo xtask bench console`.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use iotgw::{
    alerts::AlertStore,
    api::{self, ApiState, InventoryDirectory, TokenEntry},
    datapath::MemoryDatapath,
};
use iotgw_test_support::browser::Browser;

mod alerts;

const DEFAULT_DEVICES: usize = 100_000;
const DEFAULT_ALERTS: usize = 1_000_000;
const DEFAULT_ROUNDS: usize = 200;
/// Loads of each console page in the browser.
const BROWSER_ROUNDS: usize = 20;
const TOKEN: &str = "console-bench-token";
/// Milliseconds in the 30 days the devices were first seen over.
const SPAN_MS: i64 = 30 * 24 * 3_600_000;
const NOW_MS: i64 = 1_780_000_000_000;
const VENDORS: [&str; 8] = [
    "Philips Lighting BV",
    "Espressif Inc.",
    "Hangzhou Hikvision Digital Technology Co.,Ltd.",
    "Amazon Technologies Inc.",
    "Sonos, Inc.",
    "Shenzhen Bilian Electronic Co.，Ltd",
    "Google, Inc.",
    "Tuya Smart Inc.",
];
const TYPES: [&str; 6] = ["camera", "smart_plug", "bulb", "speaker", "hub", "thermostat"];
const CLASSES: [&str; 4] = ["camera", "lighting", "media", "hvac"];
const ACCESS: [(&str, usize); 5] =
    [("unknown", 70), ("enrolled", 25), ("quarantined", 3), ("blocked", 1), ("onboarding", 1)];

fn mac(n: usize) -> String {
    // Locally administered (02:...) for one device in ten, as phones with random MACs are.
    let first = if n % 10 == 9 { 0x02 } else { 0x10 + (n % VENDORS.len()) as u8 };
    format!(
        "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (n >> 24) as u8,
        0x42,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8
    )
}

fn ip(n: usize) -> String {
    format!("10.{}.{}.{}", (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

fn access(n: usize) -> &'static str {
    let mut bucket = (n * 7_919) % 100;
    for (access, share) in ACCESS {
        if bucket < share {
            return access;
        }
        bucket -= share;
    }
    "unknown"
}

/// Writes `devices` devices with their rows, in transactions of 5,000 devices.
fn fill(conn: &rusqlite::Connection, devices: usize) -> anyhow::Result<()> {
    conn.execute_batch("BEGIN")?;
    for n in 0..devices {
        let first_seen = NOW_MS - SPAN_MS + (n as i64 * 7_877) % SPAN_MS;
        let last_seen = first_seen + (n as i64 * 104_729) % (NOW_MS - first_seen + 1);
        let local = n % 10 == 9;
        let vendor = (!local).then(|| VENDORS[n % VENDORS.len()]);
        let hostname = (n % 5 < 3).then(|| format!("{}-{n:06}", ["cam", "plug", "lamp", "echo", "hub"][n % 5]));
        let device_type = (n % 5 != 4).then(|| TYPES[n % TYPES.len()]);
        let class = (n % 2 == 0).then(|| CLASSES[n % CLASSES.len()]);
        let mac = mac(n);
        conn.execute(
            "INSERT INTO inventory_devices (mac, first_seen, last_seen, vendor, locally_administered, hostname,
             device_type, type_confidence, access, class, flows_total) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0.9, ?8, ?9, 40)",
            (&mac, first_seen, last_seen, vendor, local, &hostname, device_type, access(n), class),
        )?;
        conn.execute(
            "INSERT INTO inventory_addresses (mac, ip, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4)",
            (&mac, ip(n), first_seen, last_seen),
        )?;
        for (kind, value) in [
            ("dhcp_parameter_list", "1,3,6,15,28,42"),
            ("tcp_syn", "4:64+0:0:1460:mss,nop,ws:df:0"),
            ("dns_name", "time.example.com"),
        ] {
            conn.execute(
                "INSERT INTO inventory_fingerprints (mac, kind, value, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5)",
                (&mac, kind, value, first_seen, last_seen),
            )?;
        }
        for bucket in 0..3i64 {
            conn.execute(
                "INSERT INTO inventory_traffic (mac, start, seconds, tx_bytes, tx_packets, rx_bytes, rx_packets)
                 VALUES (?1, ?2, 60, 12000, 40, 48000, 60)",
                (&mac, last_seen - bucket * 60_000),
            )?;
        }
        let audit = "INSERT INTO inventory_audit (time, actor, mac, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)";
        conn.execute(audit, (first_seen, "inventory", &mac, "device_added", "vendor unknown"))?;
        conn.execute(audit, (first_seen, "inventory", &mac, "address_added", ip(n)))?;
        if access(n) != "unknown" {
            conn.execute(
                audit,
                (last_seen, "enrollment", &mac, "access_changed", format!("unknown -> {}", access(n))),
            )?;
        }
        if n % 5_000 == 4_999 {
            conn.execute_batch("COMMIT; BEGIN")?;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// Times `rounds` GETs of `path`: p50 and p99.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    rounds: usize,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let mut times = Vec::with_capacity(rounds);
    let mut rows = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let response = client.get(format!("{base}{path}")).bearer_auth(TOKEN).send().await?;
        anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
        let body: serde_json::Value = response.json().await?;
        times.push(start.elapsed());
        rows = body.as_array().map_or(1, Vec::len);
    }
    times.sort();
    Ok((times[rounds / 2], times[(rounds * 99 / 100).min(rounds - 1)], rows))
}

/// The cursor after `pages` pages of `path` (which has a query), followed from the start.
async fn cursor_after(client: &reqwest::Client, base: &str, path: &str, pages: usize) -> anyhow::Result<String> {
    let mut cursor = String::new();
    for _ in 0..pages {
        let url = if cursor.is_empty() { format!("{base}{path}") } else { format!("{base}{path}&cursor={cursor}") };
        let response = client.get(url).bearer_auth(TOKEN).send().await?;
        cursor =
            response.headers().get("next-cursor").and_then(|v| v.to_str().ok()).map(str::to_owned).unwrap_or_default();
        anyhow::ensure!(!cursor.is_empty(), "{path}: fewer pages than {pages}");
    }
    Ok(cursor)
}

fn temp_store() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iotgw-console-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn store_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// Each console page loaded afresh in headless Chromium (signed in with the bench's token),
/// from navigation start to its data on screen: `browser-*` lines, p50 and slowest in ms.
async fn first_pages(base: &str) {
    let shots = std::env::temp_dir().join(format!("iotgw-console-bench-{}", std::process::id()));
    let browser = Browser::start(&shots).await;
    browser.goto(&format!("{base}/#/login")).await;
    browser.fill("[data-testid=login-token]", TOKEN).await;
    browser.click("[data-testid=login-submit]").await;
    browser.element("[data-testid=whoami]").await;
    let device = mac(1);
    let pages = [
        ("browser-overview", "#/overview".to_owned(), "[data-testid=alerts-over-time]"),
        ("browser-devices", "#/devices".to_owned(), "[data-testid=device-row]"),
        ("browser-alerts", "#/alerts".to_owned(), "[data-testid=alert-row]"),
        ("browser-device", format!("#/devices/{device}"), "[data-testid=device-audit] tbody tr"),
    ];
    for (name, route, ready) in pages {
        let mut times: Vec<Duration> = Vec::with_capacity(BROWSER_ROUNDS);
        for _ in 0..BROWSER_ROUNDS {
            times.push(browser.load_time(&format!("{base}/{route}"), ready).await);
        }
        times.sort();
        println!(
            "{name:<20} p50 {:>8.2} ms  max {:>8.2} ms  ({BROWSER_ROUNDS} loads until {ready})",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
    browser.close().await;
    let _ = std::fs::remove_dir_all(&shots);
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let devices: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(DEFAULT_DEVICES);
    let alert_count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(DEFAULT_ALERTS);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(DEFAULT_ROUNDS);
    let dir = temp_store();
    let path = dir.join("iotgw.db");

    let mut conn = iotgw::store::open(&path, iotgw::alerts::SCHEMA)?;
    let start = Instant::now();
    fill(&conn, devices)?;
    println!(
        "fill                 {devices} devices in {:.1} s, store {} MB",
        start.elapsed().as_secs_f64(),
        store_bytes(&dir) >> 20
    );
    let start = Instant::now();
    alerts::fill(&mut conn, alert_count, devices)?;
    println!(
        "fill                 {alert_count} alerts in {:.1} s, store {} MB",
        start.elapsed().as_secs_f64(),
        store_bytes(&dir) >> 20
    );
    drop(conn);

    let config = api::Config {
        listen: "127.0.0.1:0".parse()?,
        tokens: vec![TokenEntry {
            name: "bench".into(),
            role: api::Role::Viewer,
            token_sha256: api::auth::TokenHash::of(TOKEN),
        }],
        ..api::Config::default()
    };
    let directory = Arc::new(InventoryDirectory::open(&path)?);
    let state =
        ApiState::new(&config, directory, Arc::new(MemoryDatapath::default()))?.with_alerts(AlertStore::open(&path)?);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let listener = api::bind(&config).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (trigger, shutdown) = iotgw::shutdown::channel();
        let app = api::router(state).merge(iotgw::console::router());
        let server = tokio::spawn(api::serve_on(listener, app, None, shutdown));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;

        let deep = devices / 2 / 100;
        let deep_last_seen = cursor_after(&client, &base, "/api/v1/devices?limit=100", deep).await?;
        let deep_vendor = cursor_after(&client, &base, "/api/v1/devices?sort=vendor&limit=100", deep).await?;
        let deep_audit = cursor_after(&client, &base, "/api/v1/audit?limit=100", deep).await?;
        let some_device = mac(devices / 3);
        let mut lines = vec![
            ("first-page", "/api/v1/devices".to_owned()),
            ("deep-page", format!("/api/v1/devices?limit=100&cursor={deep_last_seen}")),
            ("deep-vendor", format!("/api/v1/devices?sort=vendor&limit=100&cursor={deep_vendor}")),
            ("search-host", format!("/api/v1/devices?q=CAM-{:05}", devices / 7 / 10)),
            ("search-mac", format!("/api/v1/devices?q={}", &some_device[..14])),
            ("search-ip", format!("/api/v1/devices?q={}", &ip(devices / 3)[..8])),
            ("search-host-many", "/api/v1/devices?q=lamp".to_owned()),
            ("search-ip-many", "/api/v1/devices?q=10.1.".to_owned()),
            ("search-short", "/api/v1/devices?q=02".to_owned()),
            ("search-none", "/api/v1/devices?q=no-such-host".to_owned()),
            ("filter-state", "/api/v1/devices?state=blocked".to_owned()),
            ("filter-type", "/api/v1/devices?type=camera&sort=vendor".to_owned()),
            ("summary", "/api/v1/summary".to_owned()),
            ("audit-first", "/api/v1/audit".to_owned()),
            ("audit-deep", format!("/api/v1/audit?limit=100&cursor={deep_audit}")),
            ("audit-device", format!("/api/v1/audit?device={some_device}")),
        ];
        lines.extend(alerts::requests(&client, &base, alert_count, devices).await?);
        for (name, path) in lines {
            let (p50, p99, rows) = measure(&client, &base, &path, rounds).await?;
            println!(
                "{name:<20} p50 {:>8.2} ms  p99 {:>8.2} ms  ({rows} rows, {rounds} requests)",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
        first_pages(&base).await;
        trigger.trigger();
        server.await??;
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
