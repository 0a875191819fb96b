//! The alert store the console bench reads: ALERTS records (default 1,000,000) over the bench's
//! devices, written in one transaction, and the alert-list requests it times.
//!
//! The mix is what a gateway accumulates over 90 days: records in arrival order (ids grow with
//! `first_seen`), most resolved by now, few critical, detectors from the common
//! `new_destination` to the rare `est_flood`, and a few noisy devices raising a large share
//! (device `n` is drawn with a quadratic skew towards low `n`). Each record has one evidence
//! flow, one in twenty a response.
use rusqlite::Connection;

use super::{NOW_MS, mac};

/// Milliseconds in the 90 days the alerts span.
pub const SPAN_MS: i64 = 90 * 24 * 3_600_000;
/// (detector, share in 1,000).
const DETECTORS: [(&str, u64); 9] = [
    ("new_destination", 350),
    ("volume", 200),
    ("scan", 150),
    ("flood", 100),
    ("lateral_movement", 80),
    ("arp_spoof", 70),
    ("identity_clone", 30),
    ("event_flood", 10),
    ("est_flood", 10),
];
/// (severity rank, share in 1,000): info, low, medium, high, critical.
const SEVERITIES: [(i64, u64); 5] = [(0, 100), (1, 250), (2, 350), (3, 220), (4, 80)];
/// (state, share in 1,000).
const STATES: [(&str, u64); 3] = [("resolved", 850), ("acknowledged", 50), ("open", 100)];
const RESOLUTIONS: [&str; 3] = ["true_positive", "false_positive", "benign"];

/// A well-mixed 64-bit number for record `n` and purpose `salt` (splitmix64).
fn mix(n: u64, salt: u64) -> u64 {
    let mut z = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The entry of `table` that `n` falls on, shares summing to 1,000.
fn pick<T: Copy>(table: &[(T, u64)], n: u64, salt: u64) -> T {
    let mut bucket = mix(n, salt) % 1_000;
    for &(value, share) in table {
        if bucket < share {
            return value;
        }
        bucket -= share;
    }
    table[0].0
}

/// The device alert `n` is about: a quadratic skew, so device 0 raises the most.
pub fn device_of(n: u64, devices: usize) -> usize {
    let uniform = (mix(n, 1) % 1_000_000) as f64 / 1_000_000.0;
    ((uniform * uniform) * devices as f64) as usize
}

/// Writes `alerts` records about `devices` devices, in one transaction.
pub fn fill(conn: &mut Connection, alerts: usize, devices: usize) -> anyhow::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut alert = tx.prepare(
            "INSERT INTO alerts (id, incident_id, detector, actor, severity, score, expected, observed, device,
             device_ip, first_seen, last_seen, count, calm_since, state, resolution, assignee, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        let mut flow = tx.prepare("INSERT INTO alert_flows (alert_id, flow) VALUES (?1, ?2)")?;
        let mut response = tx.prepare(
            "INSERT INTO alert_responses (alert_id, event_id, time, actor, action, reason)
             VALUES (?1, ?2, ?3, 'respond', 'quarantine', 'rule quarantine-scanners')",
        )?;
        for n in 0..alerts as u64 {
            let id = n as i64 + 1;
            let first_seen = NOW_MS - SPAN_MS + (n as i64 * SPAN_MS) / alerts as i64;
            let last_seen = (first_seen + (mix(n, 2) % 7_200_000) as i64).min(NOW_MS);
            let detector = pick(&DETECTORS, n, 3);
            let state = pick(&STATES, n, 4);
            let device = device_of(n, devices);
            let ip = super::ip(device);
            let resolution = (state == "resolved").then(|| RESOLUTIONS[(mix(n, 5) % 3) as usize]);
            let assignee = (state != "open").then(|| ["ana", "ben", "chloe"][(mix(n, 6) % 3) as usize]);
            alert.execute(rusqlite::params![
                id,
                format!("{detector}:{}:{}", mac(device), n / 7),
                detector,
                format!("detector:{detector}"),
                pick(&SEVERITIES, n, 7),
                (mix(n, 8) % 10_000) as f64 / 10_000.0,
                "at most 12 new destinations per hour (baseline of 14 days)",
                format!("{} new destinations in the last hour, the first {ip} -> 203.0.113.{}:443", n % 97, n % 250),
                mac(device),
                &ip,
                first_seen,
                last_seen,
                1 + (mix(n, 9) % 40) as i64,
                (state == "resolved").then_some(last_seen + 600_000),
                state,
                resolution,
                assignee,
                last_seen,
            ])?;
            flow.execute((id, format!("tcp {ip}:{} -> 203.0.113.{}:443", 40_000 + n % 20_000, n % 250)))?;
            if n % 20 == 0 {
                response.execute((id, format!("event-{n}"), last_seen))?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// RFC 3339 text of `ms` Unix milliseconds.
fn rfc3339(ms: i64) -> anyhow::Result<String> {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)?;
    Ok(time.format(&time::format_description::well_known::Rfc3339)?)
}

/// The alert-list requests to time, named; deep pages start after half of the records.
pub async fn requests(
    client: &reqwest::Client,
    base: &str,
    alerts: usize,
    devices: usize,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut lines = Vec::new();
    let half = alerts / 2 / 500;
    for (sort, first, deep) in [
        ("last_seen", "alerts-first", "alerts-deep"),
        ("first_seen", "alerts-first-first", "alerts-deep-first"),
        ("score", "alerts-first-score", "alerts-deep-score"),
        ("severity", "alerts-first-severity", "alerts-deep-severity"),
    ] {
        let cursor = super::cursor_after(client, base, &format!("/api/v1/alerts?sort={sort}&limit=500"), half).await?;
        lines.push((first, format!("/api/v1/alerts?sort={sort}&limit=100")));
        lines.push((deep, format!("/api/v1/alerts?sort={sort}&limit=100&cursor={cursor}")));
    }
    let day = 24 * 3_600_000;
    let (since, until) = (rfc3339(NOW_MS - SPAN_MS / 2)?, rfc3339(NOW_MS - SPAN_MS / 2 + day)?);
    lines.extend([
        ("alerts-open", "/api/v1/alerts?state=open&limit=100".to_owned()),
        ("alerts-acknowledged", "/api/v1/alerts?state=acknowledged&limit=100".to_owned()),
        ("alerts-critical", "/api/v1/alerts?severity=critical&limit=100".to_owned()),
        ("alerts-device", format!("/api/v1/alerts?device={}&limit=100", mac(devices / 3))),
        ("alerts-device-noisy", format!("/api/v1/alerts?device={}&limit=100", mac(0))),
        ("alerts-detector", "/api/v1/alerts?detector=scan&limit=100".to_owned()),
        ("alerts-detector-rare", "/api/v1/alerts?detector=est_flood&limit=100".to_owned()),
        ("alerts-day", format!("/api/v1/alerts?since={since}&until={until}&limit=100")),
        ("alerts-open-score", "/api/v1/alerts?state=open&sort=score&limit=100".to_owned()),
        ("alerts-noisy-score", format!("/api/v1/alerts?device={}&sort=score&limit=100", mac(0))),
    ]);
    Ok(lines)
}
