//! The console's reads of the inventory: devices filtered, searched and sorted, the audit log
//! filtered, both a page at a time, and device counts for the overview. Reads the
//! `inventory_*` tables over any connection (as `query` does); writes nothing.
//!
//! Pages are keyset pages: each query asks for rows after the previous page's last sort key
//! and MAC (or audit time and id), through the indexes of schema version 3, so a page costs
//! the same at the start and at the 1,000th page, and a device inserted between two pages
//! neither shifts the rest nor repeats. The cursor handed to clients is that key, encoded
//! (`DeviceCursor`, `AuditCursor`): opaque to them, checked when it comes back.
//!
//! A device search reads its matches on three indexes: MACs by prefix (the primary key),
//! addresses by prefix (`inventory_addresses_by_ip`) and host names by part (the trigram index
//! of version 4). When few can match it sorts them; when many can, it walks the sort order as
//! an unsearched list does and checks each device, and many matches fill a page soon. Either
//! way a search costs about the same whether it matches 3 devices or 30,000.
use std::collections::HashMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rusqlite::{Connection, OptionalExtension as _, ToSql, types::Value};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use time::OffsetDateTime;

use super::{
    AuditEntry, DeviceRecord, InventoryError,
    query::{DEVICE_SELECT, audit_row, device_row, finish_audit, finish_device},
};
use crate::device::{Access, Mac};

/// Rows a page holds unless the caller says.
pub const DEFAULT_PAGE: usize = 100;
/// Most rows one page may hold.
pub const MAX_PAGE: usize = 1_000;
/// Longest filter or search text accepted (longer cannot match a stored value usefully).
pub const MAX_FILTER_TEXT: usize = 256;

/// How devices are ordered: time keys newest first, text keys A to Z; equal keys by MAC (in
/// the same direction, so one row-value comparison continues the order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSort {
    #[default]
    LastSeen,
    FirstSeen,
    Mac,
    /// Devices without a vendor first.
    Vendor,
    /// Devices without a type guess first.
    Type,
}

impl DeviceSort {
    pub const ALL: [DeviceSort; 5] =
        [DeviceSort::LastSeen, DeviceSort::FirstSeen, DeviceSort::Mac, DeviceSort::Vendor, DeviceSort::Type];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceSort::LastSeen => "last_seen",
            DeviceSort::FirstSeen => "first_seen",
            DeviceSort::Mac => "mac",
            DeviceSort::Vendor => "vendor",
            DeviceSort::Type => "type",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sort| sort.as_str() == text)
    }

    /// The indexed expression the order and the cursor compare (`schema`, version 3).
    fn key(self) -> &'static str {
        match self {
            DeviceSort::LastSeen => "d.last_seen",
            DeviceSort::FirstSeen => "d.first_seen",
            DeviceSort::Mac => "d.mac",
            DeviceSort::Vendor => "IFNULL(d.vendor, '')",
            DeviceSort::Type => "IFNULL(d.device_type, '')",
        }
    }

    fn descending(self) -> bool {
        matches!(self, DeviceSort::LastSeen | DeviceSort::FirstSeen)
    }

    /// The ORDER BY terms: the key, then the MAC (unless the key is the MAC).
    fn order_by(self) -> String {
        let direction = if self.descending() { "DESC" } else { "ASC" };
        match self {
            DeviceSort::Mac => format!("d.mac {direction}"),
            _ => format!("{} {direction}, d.mac {direction}", self.key()),
        }
    }

    /// The condition of rows after a cursor, with `?` for its key and its MAC (the MAC only,
    /// when that is the key).
    fn after(self) -> String {
        let comparison = if self.descending() { "<" } else { ">" };
        match self {
            DeviceSort::Mac => format!("d.mac {comparison} ?"),
            _ => format!("({}, d.mac) {comparison} (?, ?)", self.key()),
        }
    }
}

/// Which devices to list; `None` matches all. Text matches are exact, but `search`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceFilter {
    pub access: Option<Access>,
    pub device_type: Option<String>,
    pub vendor: Option<String>,
    pub class: Option<String>,
    /// A MAC prefix (`-` or `:` separated, any case), an IP address prefix, or part of the
    /// host name (`MIN_NAME_PART` characters or more; ASCII letters in any case): a device
    /// matching any of them. The text is matched as written, never read as a pattern.
    pub search: Option<String>,
}

/// One page of devices: `filter`, in `sort` order, after `after`, at most `limit`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceQuery {
    pub filter: DeviceFilter,
    pub sort: DeviceSort,
    pub limit: usize,
    pub after: Option<DeviceCursor>,
}

/// Which audit entries to list; `None` matches all. `since` is inclusive, `until` exclusive.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditFilter {
    pub mac: Option<Mac>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

/// One page of the audit log, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditQuery {
    pub filter: AuditFilter,
    pub limit: usize,
    pub after: Option<AuditCursor>,
}

/// Rows of one page and where the next one starts (`None` on the last page).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

/// A device sort key: times in Unix milliseconds, text as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum SortKey {
    Time(i64),
    Text(String),
}

/// Where a page of devices continues: the last device's sort key and MAC, under that sort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCursor {
    sort: DeviceSort,
    key: SortKey,
    mac: String,
}

/// Where a page of the audit log continues: the last entry's time and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCursor {
    time: i64,
    id: i64,
}

/// A cursor that is not one this inventory handed out (or one of another sort).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("cursor {0:?} is not one a previous page returned")]
pub struct InvalidCursor(pub String);

/// The cursor as clients carry it: URL-safe base64 of its JSON.
pub(crate) fn encode(cursor: &impl Serialize) -> String {
    // Serializing these plain structs cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

pub(crate) fn decode<T: DeserializeOwned>(text: &str) -> Result<T, InvalidCursor> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| InvalidCursor(text.chars().take(64).collect()))
}

impl DeviceCursor {
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// Reads a cursor back; it must come from a page in `sort` order.
    pub fn decode(text: &str, sort: DeviceSort) -> Result<Self, InvalidCursor> {
        let cursor: Self = decode(text)?;
        let key_matches =
            matches!((&cursor.key, sort.descending()), (SortKey::Time(_), true) | (SortKey::Text(_), false));
        if cursor.sort != sort || !key_matches {
            return Err(InvalidCursor(text.chars().take(64).collect()));
        }
        Ok(cursor)
    }
}

impl AuditCursor {
    pub fn encode(&self) -> String {
        encode(self)
    }

    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        decode(text)
    }
}

/// A WHERE clause under construction, with its positional parameters.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Conditions {
    /// `sql` with its `?`s numbered after the parameters so far, which `params` then extend.
    fn numbered(&mut self, sql: &str, params: impl IntoIterator<Item = Value>) -> String {
        let mut numbered = String::new();
        for (i, piece) in sql.split('?').enumerate() {
            if i > 0 {
                numbered.push_str(&format!("?{}", self.params.len() + i));
            }
            numbered.push_str(piece);
        }
        self.params.extend(params);
        numbered
    }

    /// Adds `clause`, whose `?`s take `params` in order.
    fn push(&mut self, clause: &str, params: impl IntoIterator<Item = Value>) {
        let clause = self.numbered(clause, params);
        self.clauses.push(clause);
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!(" WHERE {}", self.clauses.join(" AND ")) }
    }

    fn params(&self) -> Vec<&dyn ToSql> {
        self.params.iter().map(|value| value as &dyn ToSql).collect()
    }
}

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

/// `[prefix, prefix + U+10FFFF)`: every stored text starting with `prefix` (binary order).
fn prefix_range(prefix: &str) -> [Value; 2] {
    [text(prefix), Value::Text(format!("{prefix}\u{10FFFF}"))]
}

/// Shortest host-name part a search looks for: the length of the name index's tokens
/// (trigrams, `schema` version 4). Shorter text matches MAC and IP prefixes only.
pub const MIN_NAME_PART: usize = 3;

/// Most devices a search sorts itself (an upper bound: its MAC, IP and name matches counted
/// apart). A search matching more walks the sort order instead, checking each device, and
/// finds a page within about `limit × devices / matches` devices (5,000 at 100,000 devices).
const MAX_SORTED_MATCHES: usize = 2_000;

/// What `q` looks for: devices whose MAC starts with it, with an address starting with it, or
/// whose host name contains it. ASCII letters match in any case, other characters as written
/// (as SQLite's `lower` folds them).
struct Search {
    /// Range of `inventory_devices.mac` (the primary key), `-` read as `:`.
    mac: [Value; 2],
    /// Range of `inventory_addresses.ip` (`inventory_addresses_by_ip`).
    ip: [Value; 2],
    /// The lower-case part of the host name, when long enough for the name index.
    name: Option<String>,
}

impl Search {
    /// `None` for blank text, which searches nothing.
    fn new(text: &str) -> Option<Self> {
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return None;
        }
        Some(Search {
            mac: prefix_range(&lower.replace('-', ":")),
            ip: prefix_range(&lower),
            // A NUL would end the FTS5 query early; no stored name holds one (control
            // characters are stored escaped, `untrusted`).
            name: (lower.chars().count() >= MIN_NAME_PART && !lower.contains('\0')).then_some(lower),
        })
    }

    /// One query per index, each selecting the MACs of the devices it matches.
    fn branches(&self) -> Vec<(&'static str, Vec<Value>)> {
        let mut branches = vec![
            ("SELECT mac FROM inventory_devices WHERE mac >= ? AND mac < ?", self.mac.to_vec()),
            ("SELECT mac FROM inventory_addresses WHERE ip >= ? AND ip < ?", self.ip.to_vec()),
        ];
        if let Some(name) = &self.name {
            // One FTS5 string: inside double quotes every character is text to match (a quote
            // is doubled), never query syntax.
            let phrase = format!("\"{}\"", name.replace('"', "\"\""));
            branches.push((
                "SELECT h.mac FROM inventory_hostnames_fts JOIN inventory_hostnames h
                 ON h.id = inventory_hostnames_fts.rowid WHERE inventory_hostnames_fts MATCH ?",
                vec![Value::Text(phrase)],
            ));
        }
        branches
    }

    /// Whether at most `max` devices can match: each index read stops after `max + 1` rows.
    fn matches_at_most(&self, conn: &Connection, max: usize) -> Result<bool, InventoryError> {
        let mut bound = 0;
        for (sql, params) in self.branches() {
            let sql = format!("SELECT COUNT(*) FROM ({sql} LIMIT {})", max + 1);
            let params: Vec<&dyn ToSql> = params.iter().map(|value| value as &dyn ToSql).collect();
            let count: i64 = conn.prepare_cached(&sql)?.query_row(params.as_slice(), |row| row.get(0))?;
            bound += usize::try_from(count).unwrap_or(0);
            if bound > max {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The matching MACs, each once: the indexes' matches together.
    fn hits(&self, conditions: &mut Conditions) -> String {
        let branches: Vec<String> =
            self.branches().into_iter().map(|(sql, params)| conditions.numbered(sql, params)).collect();
        branches.join(" UNION ")
    }

    /// The same matches as a condition on one device `d`, for a walk in sort order: its MAC,
    /// its host name in the row, one probe of its addresses (their primary key).
    fn condition(&self, conditions: &mut Conditions) {
        let [mac_low, mac_high] = self.mac.clone();
        let [ip_low, ip_high] = self.ip.clone();
        let name = self.name.as_deref().map_or("", |_| " OR instr(lower(d.hostname), ?) > 0");
        conditions.push(
            &format!(
                "((d.mac >= ? AND d.mac < ?){name}
                  OR EXISTS (SELECT 1 FROM inventory_addresses a WHERE a.mac = d.mac AND a.ip >= ? AND a.ip < ?))"
            ),
            [mac_low, mac_high].into_iter().chain(self.name.as_deref().map(text)).chain([ip_low, ip_high]),
        );
    }
}

/// One page of devices (see `DeviceQuery`).
pub fn devices(conn: &Connection, query: &DeviceQuery) -> Result<Page<DeviceRecord, DeviceCursor>, InventoryError> {
    devices_sorting_at_most(conn, query, MAX_SORTED_MATCHES)
}

/// `devices`, a search sorting its matches itself when at most `max_sorted` can match.
///
/// The page is found first (MACs and sort keys only), then its devices are read by MAC: a
/// search that sorts its matches reads whole records for the page's devices only.
fn devices_sorting_at_most(
    conn: &Connection,
    query: &DeviceQuery,
    max_sorted: usize,
) -> Result<Page<DeviceRecord, DeviceCursor>, InventoryError> {
    let DeviceFilter { access, device_type, vendor, class, search } = &query.filter;
    let search = search.as_deref().and_then(Search::new);
    let mut conditions = Conditions::default();
    let mut from = "inventory_devices d".to_owned();
    match &search {
        // Few matches: read them on the indexes, then sort them (a CROSS JOIN keeps them the
        // outer loop).
        Some(search) if search.matches_at_most(conn, max_sorted)? => {
            from =
                format!("({}) hits CROSS JOIN inventory_devices d ON d.mac = hits.mac", search.hits(&mut conditions));
        }
        Some(search) => search.condition(&mut conditions),
        None => {}
    }
    if let Some(access) = access {
        conditions.push("d.access = ?", [text(access.as_str())]);
    }
    match device_type.as_deref() {
        // Untyped devices.
        Some("") => conditions.push("IFNULL(d.device_type, '') = ''", []),
        // Any level of the classifier's answer: product, vendor or generic type, as policy
        // classes match (and the hub's filter).
        Some(name) => conditions.push(
            "(d.device_type = ? OR d.type_vendor = ? OR d.generic_type = ?)",
            [text(name), text(name), text(name)],
        ),
        None => {}
    }
    if let Some(vendor) = vendor {
        conditions.push("IFNULL(d.vendor, '') = ?", [text(vendor)]);
    }
    if let Some(class) = class {
        conditions.push("IFNULL(d.class, '') = ?", [text(class)]);
    }
    let sort = query.sort;
    if let Some(cursor) = &query.after {
        let key = match &cursor.key {
            SortKey::Time(millis) => Value::Integer(*millis),
            SortKey::Text(key) => text(key),
        };
        let params = if sort == DeviceSort::Mac { vec![text(&cursor.mac)] } else { vec![key, text(&cursor.mac)] };
        conditions.push(&sort.after(), params);
    }
    let limit = query.limit.clamp(1, MAX_PAGE);
    // One row more than the page tells whether another page follows.
    let sql = format!(
        "SELECT d.mac, {} FROM {from}{} ORDER BY {} LIMIT {}",
        sort.key(),
        conditions.sql(),
        sort.order_by(),
        limit + 1
    );
    let mut statement = conn.prepare(&sql)?;
    let mut keys = statement
        .query_map(conditions.params().as_slice(), |row| {
            let key = if sort.descending() { SortKey::Time(row.get(1)?) } else { SortKey::Text(row.get(1)?) };
            Ok((row.get::<_, String>(0)?, key))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let next = (keys.len() > limit).then(|| {
        keys.truncate(limit);
        let (mac, key) = keys[limit - 1].clone();
        DeviceCursor { sort, key, mac }
    });
    let mut read = conn.prepare_cached(&format!("{DEVICE_SELECT} WHERE d.mac = ?1"))?;
    let mut items = Vec::with_capacity(keys.len());
    for (mac, _) in &keys {
        // Devices are never deleted; one gone since would simply be left out.
        if let Some(row) = read.query_row([mac], device_row).optional()? {
            items.push(finish_device(conn, row)?);
        }
    }
    Ok(Page { items, next })
}

/// One page of the audit log, newest first (by time, then by id).
pub fn audit(conn: &Connection, query: &AuditQuery) -> Result<Page<AuditEntry, AuditCursor>, InventoryError> {
    let AuditFilter { mac, actor, action, since, until } = &query.filter;
    let millis = |time: &OffsetDateTime| {
        Value::Integer(i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
    };
    let mut conditions = Conditions::default();
    if let Some(mac) = mac {
        conditions.push("mac = ?", [text(&mac.to_string())]);
    }
    if let Some(actor) = actor {
        conditions.push("actor = ?", [text(actor)]);
    }
    if let Some(action) = action {
        conditions.push("action = ?", [text(action)]);
    }
    if let Some(since) = since {
        conditions.push("time >= ?", [millis(since)]);
    }
    if let Some(until) = until {
        conditions.push("time < ?", [millis(until)]);
    }
    if let Some(cursor) = &query.after {
        conditions.push("(time, id) < (?, ?)", [Value::Integer(cursor.time), Value::Integer(cursor.id)]);
    }
    let limit = query.limit.clamp(1, MAX_PAGE);
    let sql = format!(
        "SELECT id, time, actor, mac, action, detail FROM inventory_audit{} ORDER BY time DESC, id DESC LIMIT {}",
        conditions.sql(),
        limit + 1
    );
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(conditions.params().as_slice(), audit_row)?.collect::<Result<Vec<_>, _>>()?;
    let mut items = rows.into_iter().map(finish_audit).collect::<Result<Vec<_>, _>>()?;
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        let last = &items[limit - 1];
        AuditCursor { time: i64::try_from(last.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0), id: last.id }
    });
    Ok(Page { items, next })
}

/// Device counts for the console's overview. Devices without a type or class are counted in
/// `untyped` and `unclassified`, not under a name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    pub total: u64,
    pub by_access: HashMap<Access, u64>,
    pub by_type: HashMap<String, u64>,
    pub untyped: u64,
    pub by_class: HashMap<String, u64>,
    pub unclassified: u64,
}

/// Devices by access state: one GROUP BY on the access index.
pub fn counts_by_access(conn: &Connection) -> Result<HashMap<Access, u64>, InventoryError> {
    group_counts(conn, "access")?
        .into_iter()
        .map(|(access, count)| {
            let access = access.parse().map_err(|reason| InventoryError::Corrupt { mac: "-".into(), reason })?;
            Ok((access, count))
        })
        .collect()
}

/// Every count of `DeviceCounts`: one GROUP BY per column, each on its index.
pub fn counts(conn: &Connection) -> Result<DeviceCounts, InventoryError> {
    let by_access = counts_by_access(conn)?;
    let mut by_type = group_counts(conn, "IFNULL(device_type, '')")?;
    let mut by_class = group_counts(conn, "IFNULL(class, '')")?;
    Ok(DeviceCounts {
        total: by_access.values().sum(),
        by_access,
        untyped: by_type.remove("").unwrap_or(0),
        by_type,
        unclassified: by_class.remove("").unwrap_or(0),
        by_class,
    })
}

/// `SELECT column, COUNT(*) ... GROUP BY column`; `column` is one of this module's constants.
fn group_counts(conn: &Connection, column: &str) -> Result<HashMap<String, u64>, InventoryError> {
    let mut statement = conn.prepare(&format!("SELECT {column}, COUNT(*) FROM inventory_devices GROUP BY 1"))?;
    let rows = statement
        .query_map([], |row| Ok((row.get::<_, String>(0)?, u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0))))?
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
#[path = "search_tests.rs"]
mod tests;
