//! The fleet API's lists keep to their indexes as the store grows: a real PostgreSQL seeded by
//! SQL with 50,000 devices over 500 gateways at 50 sites (and as many alerts and events), and
//! for each filter the exact statement the API runs (`DeviceFilter::query`, ...) prepared and
//! run under `EXPLAIN (ANALYZE, FORMAT JSON)`, with the plan PostgreSQL would keep for it
//! (generic) and the one it makes for the values (custom). A plan that scans a whole table, or
//! reads far more rows than the page it returns (walks the newest rows filtering them, or
//! probes a trigram index for a join), fails: at a million devices those took 0.1-2 s
//! (bench/fleet/RESULTS.md).
use iotgw::{
    alerts::State,
    device::Access,
    hub::{
        self,
        api::{alerts::AlertFilter, devices::DeviceFilter, events::EventFilter},
    },
};
use iotgw_test_support::services::Postgres;
use serde_json::Value;
use sqlx::{Execute as _, Postgres as Pg, QueryBuilder, postgres::PgArguments};

const DEVICES: u32 = 50_000;
const PAGE: usize = 100;
/// Rows a page's plan may read (index entries and table rows, each probe counted): a good plan
/// reads a few per row of the page; a walk filtering the newest rows for one site in fifty
/// reads thousands, and a whole table 50,000.
const MOST_ROWS_READ: f64 = 1_500.0;
/// The tables a plan must not scan whole.
const LARGE: [&str; 4] = ["fleet_devices", "gateway_devices", "alerts", "events"];

/// The bench's seed (`bench/fleet/api.rs`), smaller: device n at gateway n % 500, ten gateways
/// a site, with a record of a gateway's size (~600 bytes: the table's size decides between
/// reading it whole and its indexes); alert and event n about device n.
const SEED: &str = r#"
CREATE TEMP TABLE seed AS
SELECT n, '02:00:' || substr(h, 1, 2) || ':' || substr(h, 3, 2) || ':' || substr(h, 5, 2) || ':' || substr(h, 7, 2) AS mac,
       'site-' || lpad(((n % 500) / 10)::text, 4, '0') AS site, 'gw-' || lpad((n % 500)::text, 5, '0') AS gateway,
       (ARRAY['cam', 'plug', 'lamp', 'sensor'])[n % 4 + 1] || '-' || n AS hostname,
       (ARRAY['Espressif Inc.', 'Philips Lighting BV', 'Hangzhou Hikvision', 'Tuya Smart Inc.'])[n % 4 + 1] AS vendor,
       (ARRAY['ip-camera', 'smart-plug', 'bulb', 'sensor'])[n % 4 + 1] AS device_type,
       CASE WHEN n % 500 = 7 THEN 'hub' ELSE (ARRAY['camera', 'plug', 'light', 'sensor'])[n % 4 + 1] END AS generic_type,
       CASE WHEN n % 50 = 0 THEN 'quarantined' ELSE 'enrolled' END AS access,
       now() - make_interval(secs => (n::bigint * 7919) % 2592000) AS t
FROM generate_series(0, $devices - 1) n, lpad(to_hex(n), 8, '0') h;
INSERT INTO gateway_devices (site, gateway, mac, changed_ms, last_seen, access, device_type, vendor, hostname,
                             type_vendor, generic_type, record)
SELECT site, gateway, mac, 0, t, access, device_type, vendor, hostname, vendor, generic_type,
       '{"locally_administered": true, "type_confidence": 0.9, "lifecycle": "enrolled", "class": "sensor",
         "firmware_version": "1.0.0", "cert_subject": "CN=dev-0-0", "device_id": null, "ips": ["10.0.0.2"],
         "flows_total": 0, "traffic": {"tx_bytes": 1000, "tx_packets": 10, "rx_bytes": 2000, "rx_packets": 12},
         "first_seen": "2026-12-01T00:00:00Z", "last_seen": "2026-12-01T00:00:00Z"}'::jsonb
       || jsonb_build_object('mac', mac, 'hostname', hostname, 'vendor', vendor, 'device_type', device_type, 'access', access)
FROM seed;
INSERT INTO fleet_devices (mac, first_seen, last_seen, site, gateway, access) SELECT mac, t, t, site, gateway, access FROM seed;
INSERT INTO alerts (site, gateway, incident_id, mac, detector, severity, state, first_seen, last_seen, latest)
SELECT site, gateway, 'inc-' || n, mac, 'scan', 1 + n % 4,
       CASE n % 10 WHEN 0 THEN 'open' WHEN 1 THEN 'acknowledged' ELSE 'resolved' END,
       now() - make_interval(secs => (n::bigint * 104729) % 2592000), now() - make_interval(secs => (n::bigint * 104729) % 2592000),
       '{}'::jsonb FROM seed;
INSERT INTO events (site, gateway, seq, event_id, kind, severity, time, mac, actor, body)
SELECT site, gateway, n / 500 + 1, 'ev-' || n, (ARRAY['alert', 'action', 'audit', 'lifecycle'])[n % 4 + 1], n % 5,
       now() - make_interval(secs => (n::bigint * 15485863) % 2592000), mac, 'test', '{}'::jsonb FROM seed;
ANALYZE;
"#;

/// A statement as the API builds it: its text and its values.
struct Statement {
    name: &'static str,
    sql: String,
    values: PgArguments,
    /// Whether the API lets PostgreSQL keep a generic plan of it.
    kept: bool,
}

fn statement(name: &'static str, mut builder: QueryBuilder<Pg>, kept: bool) -> Statement {
    let sql = builder.sql().as_str().to_owned();
    let values = builder.build().take_arguments().expect("values").unwrap_or_default();
    Statement { name, sql, values, kept }
}

fn devices(filter: DeviceFilter) -> DeviceFilter {
    DeviceFilter { limit: PAGE, ..filter }
}

fn alerts(filter: AlertFilter) -> AlertFilter {
    AlertFilter { limit: PAGE, ..filter }
}

/// Every filter a console's page uses on the large tables, as the API writes it.
fn statements() -> Vec<Statement> {
    let site = || Some("site-0033".to_owned());
    let gateway = || Some("gw-00333".to_owned());
    let device = |filter: DeviceFilter| {
        let filter = devices(filter);
        (filter.query(), filter.plan_may_be_kept())
    };
    let mut all = Vec::new();
    for (name, filter) in [
        ("devices", DeviceFilter::default()),
        ("devices by site", DeviceFilter { site: site(), ..Default::default() }),
        ("devices by gateway", DeviceFilter { gateway: gateway(), ..Default::default() }),
        ("devices by site and gateway", DeviceFilter { site: site(), gateway: gateway(), ..Default::default() }),
        // 16 MACs: a prefix matching hundreds of 50,000 is rightly joined by reading
        // fleet_devices whole (cheaper at this size, not at a million).
        ("devices by MAC prefix", DeviceFilter { search: Some("02:00:00:00:a3:2".into()), ..Default::default() }),
        (
            "devices by MAC prefix, dashes",
            DeviceFilter { search: Some("02-00-00-00-A3-1".into()), ..Default::default() },
        ),
        ("devices by host name", DeviceFilter { search: Some("cam-1234".into()), ..Default::default() }),
        // The type filter matches the product, its vendor or its generic type.
        ("devices by type (a quarter)", DeviceFilter { device_type: Some("bulb".into()), ..Default::default() }),
        ("devices by generic type (100)", DeviceFilter { device_type: Some("hub".into()), ..Default::default() }),
        ("blocked devices (none)", DeviceFilter { access: Some(Access::Blocked), ..Default::default() }),
        ("quarantined devices (2 %)", DeviceFilter { access: Some(Access::Quarantined), ..Default::default() }),
    ] {
        let (query, kept) = device(filter);
        all.push(statement(name, query, kept));
    }
    for (name, filter) in [
        ("alerts", AlertFilter::default()),
        ("alerts by site", AlertFilter { site: site(), ..Default::default() }),
        ("alerts by gateway", AlertFilter { gateway: gateway(), ..Default::default() }),
        ("open alerts", AlertFilter { state: Some(State::Open), ..Default::default() }),
        // A device's page lists its alerts.
        (
            "alerts of a device",
            AlertFilter { device: Some("02:00:00:00:a3:21".parse().expect("MAC")), ..Default::default() },
        ),
    ] {
        all.push(statement(name, alerts(filter).query(), true));
    }
    all.push(statement("events", EventFilter { limit: PAGE, ..Default::default() }.query(), true));
    all
}

/// Rows the plan read: each scan's rows, those its filter or recheck removed, times its loops.
fn rows_read(plan: &Value) -> f64 {
    let number = |field: &str| plan[field].as_f64().unwrap_or(0.0);
    let own = if plan["Node Type"].as_str().is_some_and(|node| node.contains("Scan")) {
        (number("Actual Rows") + number("Rows Removed by Filter") + number("Rows Removed by Index Recheck"))
            * number("Actual Loops").max(1.0)
    } else {
        0.0
    };
    own + plan["Plans"].as_array().into_iter().flatten().map(rows_read).sum::<f64>()
}

/// The tables the plan scans whole.
fn scanned_whole(plan: &Value, found: &mut Vec<String>) {
    if plan["Node Type"].as_str().is_some_and(|node| node.ends_with("Seq Scan")) {
        found.push(plan["Relation Name"].as_str().unwrap_or_default().to_owned());
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        scanned_whole(child, found);
    }
}

/// The plan PostgreSQL runs `statement` with, prepared, under `mode` (`plan_cache_mode`).
async fn plan(conn: &mut sqlx::PgConnection, statement: &Statement, mode: &str) -> Value {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}; PREPARE listed AS {}", statement.sql)))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", statement.name, statement.sql));
    // EXECUTE takes its values as SQL, not as bound parameters: PostgreSQL writes them.
    let quoted: Vec<String> =
        (1..=sqlx::Arguments::len(&statement.values)).map(|n| format!("quote_literal(${n})")).collect();
    let literals: Vec<String> = if quoted.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar_with(
            sqlx::AssertSqlSafe(format!("SELECT ARRAY[{}]::text[]", quoted.join(", "))),
            statement.values.clone(),
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", statement.name))
    };
    let execute = if literals.is_empty() {
        "EXECUTE listed".to_owned()
    } else {
        format!("EXECUTE listed({})", literals.join(", "))
    };
    let (plan,): (sqlx::types::Json<Value>,) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN (ANALYZE, FORMAT JSON) {execute}")))
            .fetch_one(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", statement.name));
    sqlx::raw_sql("DEALLOCATE listed").execute(&mut *conn).await.expect("deallocate");
    plan.0[0]["Plan"].clone()
}

#[tokio::test]
async fn every_list_filter_reads_its_index_not_the_table() {
    let postgres = Postgres::start();
    let pool = hub::store::open(&postgres.url()).await.expect("migrated store");
    sqlx::raw_sql(sqlx::AssertSqlSafe(SEED.replace("$devices", &DEVICES.to_string())))
        .execute(&pool)
        .await
        .expect("seed");
    let mut conn = pool.acquire().await.expect("connection");
    let mut failures = Vec::new();
    for statement in statements() {
        // A search is planned for each request (an unnamed statement): only its custom plan runs.
        let modes: &[&str] =
            if statement.kept { &["force_generic_plan", "force_custom_plan"] } else { &["force_custom_plan"] };
        for mode in modes {
            let plan = plan(&mut conn, &statement, mode).await;
            let mut whole = Vec::new();
            scanned_whole(&plan, &mut whole);
            whole.retain(|table| LARGE.contains(&table.as_str()));
            let read = rows_read(&plan);
            if !whole.is_empty() || read > MOST_ROWS_READ {
                failures.push(format!(
                    "{} ({mode}): scans {whole:?} whole, reads {read} rows\n{}\n{plan:#}",
                    statement.name, statement.sql
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} plans off their index:\n{}", failures.len(), failures.join("\n\n"));
}
