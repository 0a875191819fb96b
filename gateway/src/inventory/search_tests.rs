//! The console's queries over a store filled row by row, so every key is known: filters,
//! search, sort orders, keyset pages (also while devices arrive), the audit log and the counts,
//! and that each query's plan is an index walk rather than a sort of the whole table.
//! (Over 600 lines: one fixture store serves every case; split by subject if it grows more.)
use std::collections::HashSet;

use rusqlite::params;

use super::*;
use crate::inventory::MIGRATIONS;

/// A device row as the fixtures write it.
struct Row {
    mac: &'static str,
    first_seen: i64,
    last_seen: i64,
    vendor: Option<&'static str>,
    hostname: Option<&'static str>,
    device_type: Option<&'static str>,
    access: &'static str,
    class: Option<&'static str>,
    ip: &'static str,
}

const ROWS: [Row; 6] = [
    Row {
        mac: "00:17:88:00:00:01",
        first_seen: 100,
        last_seen: 900,
        vendor: Some("Philips Lighting BV"),
        hostname: Some("Hue-Bridge"),
        device_type: Some("hub"),
        access: "enrolled",
        class: Some("lighting"),
        ip: "192.168.1.10",
    },
    Row {
        mac: "00:17:88:00:00:02",
        first_seen: 200,
        last_seen: 800,
        vendor: Some("Philips Lighting BV"),
        hostname: Some("hue-lamp"),
        device_type: Some("bulb"),
        access: "enrolled",
        class: Some("lighting"),
        ip: "192.168.1.11",
    },
    Row {
        mac: "98:90:96:9a:86:df",
        first_seen: 300,
        last_seen: 700,
        vendor: Some("Dell Inc."),
        hostname: Some("cam-lobby"),
        device_type: Some("camera"),
        access: "quarantined",
        class: Some("camera"),
        ip: "192.168.1.20",
    },
    Row {
        mac: "50:02:91:00:00:01",
        first_seen: 400,
        last_seen: 700,
        vendor: Some("Espressif Inc."),
        hostname: None,
        device_type: Some("smart_plug"),
        access: "unknown",
        class: None,
        ip: "10.0.0.5",
    },
    Row {
        mac: "02:00:00:00:00:07",
        first_seen: 500,
        last_seen: 600,
        vendor: None,
        hostname: Some("laptop"),
        device_type: None,
        access: "blocked",
        class: None,
        ip: "10.0.0.6",
    },
    Row {
        mac: "02:00:00:00:00:08",
        first_seen: 600,
        last_seen: 600,
        vendor: None,
        hostname: None,
        device_type: None,
        access: "onboarding",
        class: None,
        ip: "fd00::8",
    },
];

fn insert(conn: &Connection, row: &Row) {
    conn.execute(
        "INSERT INTO inventory_devices (mac, first_seen, last_seen, vendor, locally_administered, hostname,
         device_type, access, class) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8)",
        params![
            row.mac,
            row.first_seen,
            row.last_seen,
            row.vendor,
            row.hostname,
            row.device_type,
            row.access,
            row.class
        ],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO inventory_addresses (mac, ip, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
        params![row.mac, row.ip, row.first_seen],
    )
    .unwrap();
}

fn store() -> Connection {
    let conn = crate::store::open_in_memory(&[MIGRATIONS]).unwrap();
    for row in &ROWS {
        insert(&conn, row);
    }
    conn
}

fn macs(conn: &Connection, filter: DeviceFilter, sort: DeviceSort) -> Vec<String> {
    let page = devices(conn, &DeviceQuery { filter, sort, limit: MAX_PAGE, after: None }).unwrap();
    assert_eq!(page.next, None, "everything fits one page");
    page.items.iter().map(|d| d.mac.to_string()).collect()
}

fn matching(filter: DeviceFilter) -> Vec<String> {
    let mut found = macs(&store(), filter, DeviceSort::Mac);
    found.sort();
    found
}

fn search(text: &str) -> Vec<String> {
    matching(DeviceFilter { search: Some(text.into()), ..DeviceFilter::default() })
}

#[test]
fn each_filter_keeps_only_its_devices() {
    let all = matching(DeviceFilter::default());
    assert_eq!(all.len(), ROWS.len());
    assert_eq!(
        matching(DeviceFilter { access: Some(Access::Enrolled), ..DeviceFilter::default() }),
        ["00:17:88:00:00:01", "00:17:88:00:00:02"]
    );
    assert_eq!(
        matching(DeviceFilter { access: Some(Access::Blocked), ..DeviceFilter::default() }),
        ["02:00:00:00:00:07"]
    );
    assert_eq!(
        matching(DeviceFilter { device_type: Some("camera".into()), ..DeviceFilter::default() }),
        ["98:90:96:9a:86:df"]
    );
    assert_eq!(
        matching(DeviceFilter { vendor: Some("Philips Lighting BV".into()), ..DeviceFilter::default() }).len(),
        2
    );
    assert_eq!(matching(DeviceFilter { vendor: Some("Philips".into()), ..DeviceFilter::default() }).len(), 0);
    assert_eq!(matching(DeviceFilter { class: Some("lighting".into()), ..DeviceFilter::default() }).len(), 2);
    // Filters combine.
    assert_eq!(
        matching(DeviceFilter {
            class: Some("lighting".into()),
            device_type: Some("bulb".into()),
            ..DeviceFilter::default()
        }),
        ["00:17:88:00:00:02"]
    );
}

#[test]
fn the_type_filter_matches_product_vendor_or_generic_type() {
    let conn = store();
    conn.execute(
        "UPDATE inventory_devices SET type_vendor = 'Axis', generic_type = 'ip-camera' WHERE mac = '98:90:96:9a:86:df'",
        [],
    )
    .unwrap();
    let typed = |name: &str| {
        macs(&conn, DeviceFilter { device_type: Some(name.into()), ..DeviceFilter::default() }, DeviceSort::Mac)
    };
    for level in ["camera", "Axis", "ip-camera"] {
        assert_eq!(typed(level), ["98:90:96:9a:86:df"], "{level}");
    }
    assert!(typed("ip").is_empty(), "exact, not a prefix");
    assert_eq!(typed("").len(), 2, "untyped devices");
}

#[test]
fn search_finds_mac_prefixes_ip_prefixes_and_host_names_in_any_case() {
    assert_eq!(search("00:17:88"), ["00:17:88:00:00:01", "00:17:88:00:00:02"]);
    assert_eq!(search("98-90-96-9A"), ["98:90:96:9a:86:df"], "dashes and capitals");
    assert_eq!(search("192.168.1.2"), ["98:90:96:9a:86:df"]);
    assert_eq!(search("10.0.0."), ["02:00:00:00:00:07", "50:02:91:00:00:01"]);
    assert_eq!(search("FD00::"), ["02:00:00:00:00:08"], "IPv6 in capitals");
    assert_eq!(search("HUE"), ["00:17:88:00:00:01", "00:17:88:00:00:02"]);
    assert_eq!(search("lobby"), ["98:90:96:9a:86:df"], "part of a host name");
    assert_eq!(search("88:00"), Vec::<String>::new(), "a MAC matches by prefix only");
    assert_eq!(search("%"), Vec::<String>::new(), "no wildcards");
    assert_eq!(search("  ").len(), ROWS.len(), "blank searches nothing");
}

#[test]
fn sorts_put_newest_first_and_text_in_order_with_missing_values_first() {
    let conn = store();
    let all = DeviceFilter::default;
    assert_eq!(
        macs(&conn, all(), DeviceSort::LastSeen),
        [
            "00:17:88:00:00:01",
            "00:17:88:00:00:02",
            "98:90:96:9a:86:df",
            "50:02:91:00:00:01",
            "02:00:00:00:00:08",
            "02:00:00:00:00:07"
        ],
        "equal times by MAC, in the same direction"
    );
    assert_eq!(macs(&conn, all(), DeviceSort::FirstSeen)[0], "02:00:00:00:00:08");
    let mut by_mac = macs(&conn, all(), DeviceSort::Mac);
    assert!(by_mac.is_sorted(), "{by_mac:?}");
    by_mac.dedup();
    assert_eq!(by_mac.len(), ROWS.len());
    assert_eq!(
        macs(&conn, all(), DeviceSort::Vendor),
        [
            "02:00:00:00:00:07",
            "02:00:00:00:00:08",
            "98:90:96:9a:86:df",
            "50:02:91:00:00:01",
            "00:17:88:00:00:01",
            "00:17:88:00:00:02"
        ]
    );
    assert_eq!(
        macs(&conn, all(), DeviceSort::Type)[2..],
        ["00:17:88:00:00:02", "98:90:96:9a:86:df", "00:17:88:00:00:01", "50:02:91:00:00:01"]
    );
}

/// Follows the cursors from the first page to the last, calling `between` after each page.
fn every_page(
    conn: &Connection,
    sort: DeviceSort,
    limit: usize,
    mut between: impl FnMut(&Connection, usize),
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = None;
    for page_number in 0.. {
        assert!(page_number < 1_000, "paging never stops");
        let query = DeviceQuery { filter: DeviceFilter::default(), sort, limit, after };
        let page = devices(conn, &query).unwrap();
        assert!(page.items.len() <= limit);
        seen.extend(page.items.iter().map(|d| d.mac.to_string()));
        let Some(next) = page.next else { break };
        assert_eq!(page.items.len(), limit, "only the last page is short");
        // Round-trip through the text clients carry.
        after = Some(DeviceCursor::decode(&next.encode(), sort).unwrap());
        between(conn, page_number);
    }
    seen
}

fn generated(n: usize, seconds: i64) -> Vec<(String, i64)> {
    (0..n).map(|i| (format!("02:00:00:01:{:02x}:{:02x}", i / 256, i % 256), seconds + (i % 7) as i64)).collect()
}

fn insert_generated(conn: &Connection, devices: &[(String, i64)], vendor: &str) {
    for (mac, seconds) in devices {
        conn.execute(
            "INSERT INTO inventory_devices (mac, first_seen, last_seen, vendor, locally_administered, device_type)
             VALUES (?1, ?2, ?2, ?3, 1, 'sensor')",
            params![mac, seconds, vendor],
        )
        .unwrap();
    }
}

#[test]
fn pages_return_every_device_exactly_once_in_every_sort_and_then_stop() {
    let conn = store();
    // Many equal keys, so pages must break ties by MAC.
    insert_generated(&conn, &generated(250, 1_000), "Acme");
    for sort in DeviceSort::ALL {
        for limit in [1, 7, 100, MAX_PAGE] {
            let seen = every_page(&conn, sort, limit, |_, _| {});
            let whole = macs(&conn, DeviceFilter::default(), sort);
            assert_eq!(seen, whole, "{sort:?} in pages of {limit}: same devices, same order");
            assert_eq!(seen.iter().collect::<HashSet<_>>().len(), ROWS.len() + 250);
        }
    }
}

#[test]
fn devices_arriving_between_pages_neither_repeat_nor_hide_the_others() {
    for sort in DeviceSort::ALL {
        let conn = store();
        let before = generated(300, 1_000);
        insert_generated(&conn, &before, "Acme");
        let mut arrived = Vec::new();
        // After each page, devices that sort before, among and after those already shown.
        let seen = every_page(&conn, sort, 25, |conn, page| {
            let batch: Vec<(String, i64)> =
                (0..3).map(|k| (format!("02:00:00:02:{page:02x}:{k:02x}"), [0, 1_003, 5_000][k])).collect();
            let vendor = ["", "Acme", "Zeta"][page % 3];
            insert_generated(conn, &batch, vendor);
            arrived.extend(batch.into_iter().map(|(mac, _)| mac));
        });
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{sort:?}: a device shown twice");
        for row in &ROWS {
            assert!(unique.contains(&row.mac.to_owned()), "{sort:?}: {} never shown", row.mac);
        }
        for (mac, _) in &before {
            assert!(unique.contains(mac), "{sort:?}: {mac} never shown");
        }
        assert!(seen.iter().all(|mac| ROWS.iter().any(|r| r.mac == mac)
            || before.iter().any(|(m, _)| m == mac)
            || arrived.contains(mac)));
    }
}

#[test]
fn a_cursor_is_refused_when_forged_or_from_another_sort() {
    let conn = store();
    let page = devices(&conn, &DeviceQuery { limit: 2, ..DeviceQuery::default() }).unwrap();
    let token = page.next.expect("more than two devices").encode();
    assert!(DeviceCursor::decode(&token, DeviceSort::LastSeen).is_ok());
    assert!(DeviceCursor::decode(&token, DeviceSort::FirstSeen).is_err(), "another sort");
    assert!(DeviceCursor::decode("not-a-cursor", DeviceSort::LastSeen).is_err());
    assert!(
        DeviceCursor::decode(&URL_SAFE_NO_PAD.encode(b"{\"sort\":\"mac\",\"key\":5,\"mac\":\"x\"}"), DeviceSort::Mac)
            .is_err()
    );
    assert!(AuditCursor::decode(&token).is_err(), "a device cursor is no audit cursor");
}

fn audit_row(conn: &Connection, time: i64, actor: &str, mac: Option<&str>, action: &str) {
    conn.execute(
        "INSERT INTO inventory_audit (time, actor, mac, action, detail) VALUES (?1, ?2, ?3, ?4, 'd')",
        params![time, actor, mac, action],
    )
    .unwrap();
}

fn audit_ids(conn: &Connection, filter: AuditFilter, limit: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        // Bounded: a cursor that led back to a page already read would otherwise loop forever.
        assert!(ids.len() <= MAX_WALKED, "still paging after {} entries: {ids:?}", ids.len());
        let page = audit(conn, &AuditQuery { filter: filter.clone(), limit, after }).unwrap();
        ids.extend(page.items.iter().map(|e| e.id));
        let Some(next) = page.next else { break };
        after = Some(AuditCursor::decode(&next.encode()).unwrap());
    }
    ids
}

#[test]
fn the_audit_log_pages_newest_first_under_each_filter() {
    let conn = store();
    let camera = "98:90:96:9a:86:df";
    // Ten entries a second apart, the 4th written late with an earlier time (a clock step).
    for i in 0..10i64 {
        let time = if i == 3 { 500 } else { 10_000 + i * 1_000 };
        let (actor, action) = if i % 2 == 0 { ("api:otto", "access_changed") } else { ("inventory", "device_added") };
        audit_row(&conn, time, actor, (i < 6).then_some(camera), action);
    }
    let all = audit_ids(&conn, AuditFilter::default(), 3);
    assert_eq!(all, [10, 9, 8, 7, 6, 5, 3, 2, 1, 4], "by time, newest first");
    assert_eq!(audit_ids(&conn, AuditFilter::default(), MAX_PAGE), all);
    let mac = Some(camera.parse().unwrap());
    assert_eq!(audit_ids(&conn, AuditFilter { mac, ..AuditFilter::default() }, 2), [6, 5, 3, 2, 1, 4]);
    assert_eq!(
        audit_ids(&conn, AuditFilter { actor: Some("api:otto".into()), ..AuditFilter::default() }, 2),
        [9, 7, 5, 3, 1]
    );
    assert_eq!(
        audit_ids(&conn, AuditFilter { action: Some("device_added".into()), ..AuditFilter::default() }, 2),
        [10, 8, 6, 2, 4]
    );
    let at = |millis: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap();
    let window = AuditFilter { since: Some(at(12_000)), until: Some(at(15_000)), ..AuditFilter::default() };
    assert_eq!(audit_ids(&conn, window, 1), [5, 3], "since inclusive, until exclusive");
}

#[test]
fn counts_group_devices_by_access_type_and_class() {
    let counts = counts(&store()).unwrap();
    assert_eq!(counts.total, ROWS.len() as u64);
    assert_eq!(counts.by_access[&Access::Enrolled], 2);
    assert_eq!(counts.by_access.get(&Access::Unknown), Some(&1));
    assert_eq!(counts.by_type["camera"], 1);
    assert_eq!(counts.untyped, 2);
    assert_eq!(counts.by_class["lighting"], 2);
    assert_eq!(counts.unclassified, 3);
    assert!(!counts.by_type.contains_key("") && !counts.by_class.contains_key(""));
}

/// SQLite's plan for `sql` with `params`, one line per step.
fn plan(conn: &Connection, sql: &str) -> String {
    let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let steps = statement.query_map([], |row| row.get::<_, String>(3)).unwrap();
    steps.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

#[test]
fn pages_and_counts_walk_indexes_instead_of_sorting_the_table() {
    let conn = store();
    for sort in DeviceSort::ALL {
        let after = sort.after().replace('?', "'x'");
        let sql = format!("SELECT d.mac FROM inventory_devices d WHERE {after} ORDER BY {} LIMIT 101", sort.order_by());
        let plan = plan(&conn, &sql);
        assert!(!plan.contains("TEMP B-TREE"), "{sort:?} sorts instead of walking an index:\n{plan}");
        assert!(plan.contains("INDEX"), "{sort:?}:\n{plan}");
    }
    for column in ["access", "IFNULL(device_type, '')", "IFNULL(class, '')"] {
        let plan = plan(&conn, &format!("SELECT {column}, COUNT(*) FROM inventory_devices GROUP BY 1"));
        assert!(plan.contains("USING") && plan.contains("INDEX") && !plan.contains("TEMP B-TREE"), "{column}:\n{plan}");
    }
    for filter in ["", "WHERE mac = 'x' AND", "WHERE actor = 'x' AND", "WHERE action = 'x' AND"] {
        let filter = if filter.is_empty() { "WHERE".to_owned() } else { filter.to_owned() };
        let sql =
            format!("SELECT id FROM inventory_audit {filter} (time, id) < (1, 2) ORDER BY time DESC, id DESC LIMIT 10");
        let plan = plan(&conn, &sql);
        assert!(plan.contains("INDEX") && !plan.contains("TEMP B-TREE"), "{filter}:\n{plan}");
    }
    let plan = plan(&conn, "SELECT mac FROM inventory_addresses WHERE ip >= '10.' AND ip < '10/'");
    assert!(plan.contains("inventory_addresses_by_ip"), "{plan}");
}

/// Host names a search must match as plain text: quotes, FTS5 operators and column filters,
/// SQL wildcards, characters beyond ASCII.
const AWKWARD_NAMES: [&str; 10] = [
    "say \"hi\" cam",
    "lamp AND plug",
    "NEAR(tv radio)",
    "name:value",
    "star* light",
    "^caret-hub",
    "-minus (paren",
    "o'brien's tv",
    "100% _under_",
    "Wohnzimmer-LÄMPE",
];

/// The fixtures, the awkward names and 300 numbered ones, each device with one address.
fn search_store() -> Connection {
    let conn = store();
    let named = AWKWARD_NAMES.iter().map(|name| (*name).to_owned());
    let numbered = (0..300).map(|i| format!("{}-{i:03}", ["cam", "Plug", "LAMP"][i % 3]));
    for (i, name) in named.chain(numbered).enumerate() {
        let mac = format!("02:00:00:03:{:02x}:{:02x}", i / 256, i % 256);
        conn.execute(
            "INSERT INTO inventory_devices (mac, first_seen, last_seen, vendor, locally_administered, hostname)
             VALUES (?1, ?2, ?2, 'Acme', 1, ?3)",
            params![mac, (i % 11) as i64, name],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO inventory_addresses (mac, ip, first_seen, last_seen) VALUES (?1, ?2, 0, 0)",
            params![mac, format!("172.16.{}.{}", i / 100, i % 100)],
        )
        .unwrap();
    }
    conn
}

/// What a search for `text` must find, worked out in Rust over every device: MAC and IP by
/// prefix, the host name by part (ASCII letters in any case) from `MIN_NAME_PART` characters.
fn expected(conn: &Connection, text: &str) -> Vec<String> {
    let lower = text.trim().to_ascii_lowercase();
    let mut statement = conn
        .prepare("SELECT d.mac, d.hostname, a.ip FROM inventory_devices d JOIN inventory_addresses a USING (mac)")
        .unwrap();
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?, row.get::<_, String>(2)?))
    });
    let mut found: Vec<String> = rows
        .unwrap()
        .map(Result::unwrap)
        .filter(|(mac, hostname, ip)| {
            mac.starts_with(&lower.replace('-', ":"))
                || ip.starts_with(&lower)
                || (lower.chars().count() >= MIN_NAME_PART
                    && hostname.as_ref().is_some_and(|name| name.to_ascii_lowercase().contains(&lower)))
        })
        .map(|(mac, _, _)| mac)
        .collect();
    found.sort();
    found
}

/// More rows than any fixture here holds: a walk of the pages past it is going round in circles.
const MAX_WALKED: usize = 10_000;

/// A `max_sorted` above every fixture's matches: the search always sorts them itself.
const SORT_ALL: usize = 100_000;

/// Every page of a search for `text` in `sort` order, sorting its matches itself when at
/// most `max_sorted` can match.
fn search_pages(conn: &Connection, text: &str, sort: DeviceSort, max_sorted: usize, limit: usize) -> Vec<String> {
    let filter = DeviceFilter { search: Some(text.into()), ..DeviceFilter::default() };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        // Bounded: a cursor that led back to a page already read would otherwise loop forever.
        assert!(seen.len() <= MAX_WALKED, "still paging after {} devices: {seen:?}", seen.len());
        let query = DeviceQuery { filter: filter.clone(), sort, limit, after };
        let page = devices_sorting_at_most(conn, &query, max_sorted).unwrap();
        seen.extend(page.items.iter().map(|d| d.mac.to_string()));
        let Some(next) = page.next else { break };
        after = Some(next);
    }
    seen
}

#[test]
fn a_search_finds_the_same_devices_in_the_same_order_sorting_its_matches_or_walking_the_order() {
    let conn = search_store();
    let texts = [
        "cam",
        "CAM-01",
        "plug-2",
        "lamp-29",
        "amp",
        "-00",
        "02:00:00:03:00",
        "02-00-00-03-01-0",
        "172.16.1.",
        "172.16.",
        "172",
        "10.0.0.",
        "\"hi\"",
        "say \"",
        "\"",
        "\"\"\"",
        "AND",
        "lamp and",
        "near(",
        "NEAR(tv",
        "name:v",
        "e:value",
        "star*",
        "*",
        "r* l",
        "^ca",
        "^",
        "(paren",
        "-minus",
        "o'brien",
        "'s t",
        "100%",
        "% _",
        "_under_",
        "LÄMPE",
        "lämpe",
        "cam\0",
        "\0amp",
        "zimmer-l",
        "no such name",
        "hu",
        "hue",
        "02",
        "17",
        "  lamp-1  ",
    ];
    for text in texts {
        let expected = expected(&conn, text);
        for sort in DeviceSort::ALL {
            let sorted = search_pages(&conn, text, sort, SORT_ALL, 7);
            let walked = search_pages(&conn, text, sort, 0, 7);
            assert_eq!(sorted, walked, "{text:?} in {sort:?}: the two ways disagree");
            let whole = search_pages(&conn, text, sort, MAX_SORTED_MATCHES, MAX_PAGE);
            assert_eq!(sorted, whole, "{text:?} in {sort:?}: pages of 7 and one page disagree");
            let mut found = sorted.clone();
            found.sort();
            assert_eq!(found, expected, "{text:?} in {sort:?}");
        }
    }
    assert_eq!(expected(&conn, "lamp").len(), 102, "the fixtures match what the test believes");
    assert_eq!(search_pages(&conn, "\"hi\"", DeviceSort::Mac, SORT_ALL, 7), ["02:00:00:03:00:00"]);
    assert_eq!(search_pages(&conn, "NEAR(tv", DeviceSort::Mac, SORT_ALL, 7), ["02:00:00:03:00:02"]);
    assert_eq!(search_pages(&conn, "LÄMPE", DeviceSort::Mac, 0, 7), ["02:00:00:03:00:09"]);
    assert!(search_pages(&conn, "lÄmpe", DeviceSort::Mac, SORT_ALL, 7).len() == 1, "ASCII letters in any case");
    assert!(search_pages(&conn, "LäMPE", DeviceSort::Mac, SORT_ALL, 7).is_empty(), "other letters as written");
}

#[test]
fn text_shorter_than_a_name_part_matches_mac_and_ip_prefixes_only() {
    let conn = search_store();
    assert_eq!(search_pages(&conn, "hu", DeviceSort::Mac, SORT_ALL, MAX_PAGE), Vec::<String>::new());
    assert_eq!(search_pages(&conn, "ca", DeviceSort::Mac, 0, MAX_PAGE), Vec::<String>::new());
    assert_eq!(search_pages(&conn, "fd", DeviceSort::Mac, SORT_ALL, MAX_PAGE), ["02:00:00:00:00:08"], "an IPv6 prefix");
    assert_eq!(search_pages(&conn, "98", DeviceSort::Mac, 0, MAX_PAGE), ["98:90:96:9a:86:df"], "a MAC prefix");
    assert_eq!(search_pages(&conn, "hue", DeviceSort::Mac, SORT_ALL, MAX_PAGE).len(), 2);
}

#[test]
fn the_name_index_follows_every_change_of_a_host_name() {
    let conn = store();
    let found = |text: &str| search_pages(&conn, text, DeviceSort::Mac, SORT_ALL, MAX_PAGE);
    assert_eq!(found("bridge"), ["00:17:88:00:00:01"]);
    conn.execute("UPDATE inventory_devices SET hostname = 'Garage-Door' WHERE mac = '00:17:88:00:00:01'", []).unwrap();
    assert!(found("bridge").is_empty(), "the old name is gone");
    assert_eq!(found("garage"), ["00:17:88:00:00:01"]);
    conn.execute("UPDATE inventory_devices SET hostname = NULL WHERE mac = '00:17:88:00:00:01'", []).unwrap();
    assert!(found("garage").is_empty());
    conn.execute("UPDATE inventory_devices SET hostname = 'ZIGBEE' WHERE mac = '02:00:00:00:00:08'", []).unwrap();
    assert_eq!(found("zigb"), ["02:00:00:00:00:08"], "a first name");
    conn.execute("UPDATE inventory_devices SET last_seen = 5 WHERE mac = '02:00:00:00:00:08'", []).unwrap();
    assert_eq!(found("zigb"), ["02:00:00:00:00:08"], "other changes leave it");
    conn.execute("DELETE FROM inventory_addresses WHERE mac = '02:00:00:00:00:08'", []).unwrap();
    conn.execute("DELETE FROM inventory_devices WHERE mac = '02:00:00:00:00:08'", []).unwrap();
    assert!(found("zigb").is_empty(), "a removed device");
    let names: i64 = conn.query_row("SELECT COUNT(*) FROM inventory_hostnames", [], |row| row.get(0)).unwrap();
    assert_eq!(names, 3, "one row per device with a host name");
    conn.execute("INSERT INTO inventory_hostnames_fts (inventory_hostnames_fts) VALUES ('integrity-check')", [])
        .unwrap();
}

#[test]
fn the_name_index_takes_in_the_names_of_devices_stored_before_it() {
    let scratch = iotgw_test_support::services::scratch("search");
    let path = scratch.join("search.db");
    {
        let conn = crate::store::open(&path, &[&MIGRATIONS[..3]]).unwrap();
        for row in &ROWS {
            insert(&conn, row);
        }
    }
    let conn = crate::store::open(&path, &[MIGRATIONS]).unwrap();
    assert_eq!(search_pages(&conn, "lobby", DeviceSort::Mac, SORT_ALL, MAX_PAGE), ["98:90:96:9a:86:df"]);
    assert_eq!(search_pages(&conn, "HUE", DeviceSort::Mac, SORT_ALL, MAX_PAGE).len(), 2);
    drop(conn);
}

#[test]
fn a_search_reads_its_matches_on_indexes_or_walks_the_sort_order_without_sorting() {
    let conn = search_store();
    let search = Search::new("lamp-1").unwrap();
    let mut conditions = Conditions::default();
    let hits = search.hits(&mut conditions);
    let hits = hits.replacen("?1", "'lamp-1'", 1).replacen("?2", "'lamp-2'", 1).replacen("?3", "'lamp-1'", 1);
    let hits = hits.replacen("?4", "'lamp-2'", 1).replacen("?5", "'\"lamp-1\"'", 1);
    let hits_plan =
        plan(&conn, &format!("SELECT d.mac FROM ({hits}) hits CROSS JOIN inventory_devices d ON d.mac = hits.mac"));
    assert!(hits_plan.contains("VIRTUAL TABLE INDEX"), "the name index:\n{hits_plan}");
    assert!(
        hits_plan.contains("inventory_addresses_by_ip") && hits_plan.contains("sqlite_autoindex_inventory_devices_1"),
        "{hits_plan}"
    );
    assert!(!hits_plan.contains("SCAN d") && !hits_plan.contains("SCAN inventory_devices"), "{hits_plan}");
    for sort in DeviceSort::ALL {
        let mut conditions = Conditions::default();
        search.condition(&mut conditions);
        let condition = conditions.sql().replace("?1", "'a'").replace("?2", "'b'").replace("?3", "'c'");
        let condition = condition.replace("?4", "'d'").replace("?5", "'e'");
        let sql = format!("SELECT d.mac FROM inventory_devices d{condition} ORDER BY {} LIMIT 101", sort.order_by());
        let plan = plan(&conn, &sql);
        assert!(!plan.contains("TEMP B-TREE") && plan.contains("INDEX"), "{sort:?}:\n{plan}");
    }
}
