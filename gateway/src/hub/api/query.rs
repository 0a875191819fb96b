//! What every fleet list shares: query values checked the gateway API's way (`api::search`),
//! site and gateway names checked as the subjects they come from, keyset cursors that are the
//! last row's sort key (URL-safe base64 of its JSON, like the inventory's), and times as the
//! microseconds PostgreSQL keeps; and `Select`, the SQL of a list built for the filters given.
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{Postgres, QueryBuilder};
use time::OffsetDateTime;

use crate::{
    api::{ApiError, search::cursor_error},
    inventory::search,
};

/// A site or gateway filter: a subject token (`fleet::subjects::check_token`), else 400.
pub fn name(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    value
        .map(|text| {
            crate::fleet::subjects::check_token(&text)
                .map(|()| text)
                .map_err(|why| ApiError::BadRequest(format!("{field}: {}", crate::untrusted::escape(&why))))
        })
        .transpose()
}

/// The key a page continues after, from the `cursor` a previous page returned.
pub fn after<T: DeserializeOwned>(cursor: Option<String>) -> Result<Option<T>, ApiError> {
    cursor.map(|text| search::decode(&text)).transpose().map_err(cursor_error)
}

/// The page of `rows` (fetched with `limit + 1`, so one more tells another page follows) and
/// the cursor of the next page: the sort key of the page's last row.
pub fn page<T, K: Serialize>(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> K) -> (Vec<T>, Option<String>) {
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(|last| search::encode(&key(last)));
    (rows, next)
}

/// The row count to fetch for a page of `limit`.
pub fn fetch(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)
}

/// Microseconds since the epoch: the precision of `timestamptz`, exact in a cursor.
pub fn micros(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// A time back from a cursor's microseconds.
pub fn from_micros(micros: i64) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|_| ApiError::BadRequest("cursor: time out of range: start again without one".into()))
}

/// A list's SQL, written for the filters a request gives: each adds its condition with its
/// value bound; an absent one adds nothing. One statement for every combination, each filter
/// written `($n IS NULL OR column = $n)`, has a generic plan that cannot use the index of the
/// filter given: PostgreSQL settles on it after five runs and, at a million devices, reads
/// whole tables (bench/fleet/RESULTS.md). The page size is a number in the text, so that a
/// generic plan is costed for the page it fetches rather than a tenth of the table.
pub struct Select {
    sql: QueryBuilder<Postgres>,
    conditions: usize,
}

impl Select {
    /// `select`: the statement up to its `WHERE`.
    pub fn new(select: &'static str) -> Self {
        Self { sql: QueryBuilder::new(select), conditions: 0 }
    }

    /// Starts another condition (` WHERE `, then ` AND `): the caller pushes it.
    pub fn and(&mut self) -> &mut QueryBuilder<Postgres> {
        self.sql.push(if self.conditions == 0 { " WHERE " } else { " AND " });
        self.conditions += 1;
        &mut self.sql
    }

    /// `column` (then `operator` and the value) when `value` is given.
    pub fn compare<T>(&mut self, column: &'static str, operator: &'static str, value: Option<T>) -> &mut Self
    where
        T: sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres>,
    {
        if let Some(value) = value {
            self.and().push(column).push(operator).push_bind(value);
        }
        self
    }

    /// `column = value` when `value` is given.
    pub fn equal<T>(&mut self, column: &'static str, value: Option<T>) -> &mut Self
    where
        T: sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres>,
    {
        self.compare(column, " = ", value)
    }

    /// The statement, ending `ORDER BY order LIMIT` a page of `limit` and one more.
    pub fn page(mut self, order: &'static str, limit: usize) -> QueryBuilder<Postgres> {
        self.sql.push(" ORDER BY ").push(order).push(" LIMIT ").push(fetch(limit));
        self.sql
    }
}

/// `text` for a `LIKE` pattern: its wildcards taken literally (the default escape is `\`).
pub fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_end_with_the_last_rows_key_only_when_more_follow() {
        let (rows, next) = page(vec![1, 2, 3], 3, |n| *n);
        assert_eq!((rows, next), (vec![1, 2, 3], None));
        let (rows, next) = page(vec![1, 2, 3, 4], 3, |n| *n);
        assert_eq!(rows, [1, 2, 3]);
        assert_eq!(after::<i32>(next).unwrap(), Some(3));
        assert!(after::<(i64, String)>(Some("not a cursor".into())).is_err());
    }

    #[test]
    fn names_are_subject_tokens_and_likes_are_literal() {
        assert_eq!(name("site", Some("site-b".into())).unwrap().as_deref(), Some("site-b"));
        for bad in ["", "a.b", "a*", "x\ny"] {
            assert!(name("site", Some(bad.into())).is_err(), "{bad:?}");
        }
        assert_eq!(like_literal(r"50%_a\b"), r"50\%\_a\\b");
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(from_micros(micros(now)).unwrap(), now);
    }
}
