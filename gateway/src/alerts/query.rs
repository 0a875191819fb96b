//! Which alerts a list shows, in which order, and where the next page starts: filters, a sort
//! key, and an opaque cursor holding the last row's (sort key, id). Pages are keyset-paginated
//! on that pair, never by OFFSET, so a page costs the same at the millionth record; an insert
//! while paging never shows a record twice nor skips one. A record updated while paging (a
//! repeat moves its `last_seen`) is shown where it now sorts.
//!
//! Each filter has an index in the default order (`schema`). In another order, a filter's
//! matches are sorted when few (at most `MAX_SORTED`, counted on the filter's index first) and
//! otherwise found by walking that order's index: either way a page costs about the same.
//!
//! Reads and writes nothing: it builds the SQL `AlertStore::list` runs.
use base64::Engine as _;
use rusqlite::types::Value;
use time::OffsetDateTime;

use super::{AlertsError, DEFAULT_PAGE, MAX_PAGE, State};
use crate::{device::Mac, event::Severity};

/// What a list is ordered by; ties go to the higher id (the newer record) first when
/// descending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    LastSeen,
    FirstSeen,
    Score,
    Severity,
}

impl SortKey {
    pub const ALL: [SortKey; 4] = [SortKey::LastSeen, SortKey::FirstSeen, SortKey::Score, SortKey::Severity];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::LastSeen => "last_seen",
            SortKey::FirstSeen => "first_seen",
            SortKey::Score => "score",
            SortKey::Severity => "severity",
        }
    }

    /// The column (each has an index on (column, id)).
    fn column(self) -> &'static str {
        self.as_str()
    }
}

impl std::str::FromStr for SortKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| format!("sort {text:?} is not one of last_seen, first_seen, score, severity"))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

impl std::str::FromStr for Order {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "desc" => Ok(Order::Desc),
            "asc" => Ok(Order::Asc),
            _ => Err(format!("order {text:?} is not one of desc, asc")),
        }
    }
}

impl Order {
    fn as_str(self) -> &'static str {
        match self {
            Order::Desc => "desc",
            Order::Asc => "asc",
        }
    }
}

/// Which records: every field set must match. `since` and `until` bound `last_seen`
/// (`since` ≤ last seen < `until`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub state: Option<State>,
    pub severity: Option<Severity>,
    pub device: Option<Mac>,
    pub detector: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

/// Where a page starts: after the row with this sort key value and id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cursor {
    sort: SortKey,
    order: Order,
    key: KeyValue,
    id: i64,
}

/// A sort key's value: times and severity ranks are integers, the score a real.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KeyValue {
    Integer(i64),
    Real(f64),
}

impl Cursor {
    /// The opaque text a client hands back (`next_cursor`).
    pub fn encode(&self) -> String {
        let key = match self.key {
            KeyValue::Integer(value) => format!("i{value}"),
            KeyValue::Real(value) => format!("r{value}"),
        };
        let text = format!("1:{}:{}:{key}:{}", self.sort.as_str(), self.order.as_str(), self.id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(text: &str) -> Result<Self, AlertsError> {
        let invalid = || AlertsError::Invalid("cursor is not one this API returned".into());
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let parts: Vec<&str> = text.split(':').collect();
        let [version, sort, order, key, id] = parts.as_slice() else { return Err(invalid()) };
        if *version != "1" {
            return Err(invalid());
        }
        let key = match key.split_at_checked(1) {
            Some(("i", value)) => KeyValue::Integer(value.parse().map_err(|_| invalid())?),
            Some(("r", value)) => KeyValue::Real(value.parse().map_err(|_| invalid())?),
            _ => return Err(invalid()),
        };
        Ok(Self {
            sort: sort.parse().map_err(|_| invalid())?,
            order: order.parse().map_err(|_| invalid())?,
            key,
            id: id.parse().map_err(|_| invalid())?,
        })
    }
}

/// One list request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    pub filter: Filter,
    pub sort: SortKey,
    pub order: Order,
    /// Records per page: `DEFAULT_PAGE` when `None`, at most `MAX_PAGE`.
    pub limit: Option<usize>,
    pub cursor: Option<Cursor>,
}

/// One page of records, and where the next starts (`None` on the last page).
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub alerts: Vec<super::Alert>,
    pub next_cursor: Option<Cursor>,
}

/// Most records a list in another order than `last_seen` sorts itself under a filter. Sorting
/// costs about one row read per match; a walk of the order's index reads about
/// `limit × records / matches` rows for a page. They meet near √(limit × records): 10,000 for
/// pages of 100 among 1,000,000 records, where either takes about 10 ms
/// (`bench/console/RESULTS.md`).
pub(super) const MAX_SORTED: usize = 10_000;

/// The columns every list and lookup reads, in `store::read_alert`'s order.
pub(super) const COLUMNS: &str = "id, incident_id, detector, actor, severity, score, expected, observed, device, \
     device_ip, first_seen, last_seen, count, calm_since, state, resolution, assignee";

impl Query {
    pub fn page_size(&self) -> Result<usize, AlertsError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
            Some(_) => Err(AlertsError::Invalid(format!("limit must be between 1 and {MAX_PAGE}"))),
        }
    }

    /// The filter as conditions with their values (anonymous `?` parameters, in order).
    /// `walk`: each column written `+column`, which no index serves, so the planner walks the
    /// sort order's index and skips what does not match instead of sorting what does.
    fn filter_conditions(&self, walk: bool) -> (Vec<String>, Vec<Value>) {
        let plus = if walk { "+" } else { "" };
        let mut conditions: Vec<String> = Vec::new();
        let mut values = Vec::new();
        let filter = &self.filter;
        if let Some(state) = filter.state {
            conditions.push(format!("{plus}state = ?"));
            values.push(Value::Text(state.as_str().to_owned()));
        }
        if let Some(severity) = filter.severity {
            conditions.push(format!("{plus}severity = ?"));
            values.push(Value::Integer(severity.rank()));
        }
        if let Some(device) = filter.device {
            conditions.push(format!("{plus}device = ?"));
            values.push(Value::Text(device.to_string()));
        }
        if let Some(detector) = &filter.detector {
            conditions.push(format!("{plus}detector = ?"));
            values.push(Value::Text(detector.clone()));
        }
        if let Some(since) = filter.since {
            conditions.push(format!("{plus}last_seen >= ?"));
            values.push(Value::Integer(millis(since)));
        }
        if let Some(until) = filter.until {
            conditions.push(format!("{plus}last_seen < ?"));
            values.push(Value::Integer(millis(until)));
        }
        (conditions, values)
    }

    /// Counts the records the filter matches, up to `MAX_SORTED + 1`, on the filter's index:
    /// `None` when the list walks no index of its own (no filter, or the `last_seen` order,
    /// where each filter has an index in that order).
    pub(super) fn count_sql(&self) -> Option<(String, Vec<Value>)> {
        if self.sort == SortKey::LastSeen || self.filter == Filter::default() {
            return None;
        }
        let (conditions, values) = self.filter_conditions(false);
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM alerts WHERE {} LIMIT {})",
            conditions.join(" AND "),
            MAX_SORTED + 1
        );
        Some((sql, values))
    }

    /// The statement and its parameters: `page_size + 1` rows, so the store knows whether a
    /// next page exists. `walk` (see `filter_conditions`) when the filter matches more than
    /// `MAX_SORTED` records.
    pub(super) fn sql(&self, walk: bool) -> Result<(String, Vec<Value>), AlertsError> {
        // Anonymous `?` parameters: SQLite numbers them in order, as `values` holds them.
        let (mut conditions, mut values) = self.filter_conditions(walk);
        let column = self.sort.column();
        let (compare, direction) = match self.order {
            Order::Desc => ("<", "DESC"),
            Order::Asc => (">", "ASC"),
        };
        if let Some(cursor) = self.cursor {
            if (cursor.sort, cursor.order) != (self.sort, self.order) {
                return Err(AlertsError::Invalid(format!(
                    "the cursor belongs to a list sorted by {} {}, not {} {}",
                    cursor.sort.as_str(),
                    cursor.order.as_str(),
                    self.sort.as_str(),
                    self.order.as_str()
                )));
            }
            conditions.push(format!("({column}, id) {compare} (?, ?)"));
            values.push(match cursor.key {
                KeyValue::Integer(value) => Value::Integer(value),
                KeyValue::Real(value) => Value::Real(value),
            });
            values.push(Value::Integer(cursor.id));
        }
        let limit = self.page_size()? + 1;
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let sql = format!(
            "SELECT {COLUMNS} FROM alerts {filter} ORDER BY {column} {direction}, id {direction} LIMIT {limit}"
        );
        Ok((sql, values))
    }

    /// The cursor after `alert`, the last row of a page.
    pub(super) fn cursor_after(&self, alert: &super::Alert) -> Cursor {
        let key = match self.sort {
            SortKey::LastSeen => KeyValue::Integer(millis(alert.last_seen)),
            SortKey::FirstSeen => KeyValue::Integer(millis(alert.first_seen)),
            SortKey::Score => KeyValue::Real(alert.score),
            SortKey::Severity => KeyValue::Integer(alert.severity.rank()),
        };
        Cursor { sort: self.sort, order: self.order, key, id: alert.id }
    }
}

/// Unix milliseconds, as the tables store times.
pub(super) fn millis(time: OffsetDateTime) -> i64 {
    (time.unix_timestamp_nanos() / 1_000_000) as i64
}
