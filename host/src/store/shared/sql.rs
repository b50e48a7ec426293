//! Statements written once for both dialects, and the little a backend
//! provides to run them ([`Conn`]).
//!
//! A statement is written with SQLite's `?` placeholders; [`sql!`] also
//! numbers them (`$1`, `$2`, ...) for PostgreSQL, at compile time, so that
//! each dialect gets a `&'static str` (sqlx caches its prepared statements
//! by text) and nothing is rewritten at run time.

use std::future::Future;

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

use super::rows::StoreRow;
use crate::store::Result;

/// One statement in both dialects' texts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sql {
    sqlite: &'static str,
    postgres: &'static str,
}

impl Sql {
    /// The statement with the texts of each dialect; see [`sql!`].
    pub(crate) const fn new(sqlite: &'static str, postgres: &'static str) -> Self {
        Self { sqlite, postgres }
    }

    /// SQLite's text (`?` placeholders).
    pub(crate) fn sqlite(self) -> &'static str {
        self.sqlite
    }

    /// PostgreSQL's text (`$n` placeholders).
    pub(crate) fn postgres(self) -> &'static str {
        self.postgres
    }
}

/// A [`Sql`] from a text with `?` placeholders (a literal, or `concat!` of
/// literals). After `; postgres:` comes a tail only PostgreSQL's text gets
/// (`FOR UPDATE`, where SQLite's writer already holds the whole database;
/// `COLLATE "C"`, SQLite's default collation being bytewise already).
macro_rules! sql {
    ($text:expr) => {
        $crate::store::shared::sql::sql!($text; postgres: "")
    };
    ($text:expr; postgres: $tail:expr) => {{
        const PARTS: &[&str] = &[$text, $tail];
        const LEN: usize = $crate::store::shared::sql::numbered_len(PARTS);
        const BYTES: [u8; LEN] = $crate::store::shared::sql::numbered::<LEN>(PARTS);
        const POSTGRES: &str = match ::std::str::from_utf8(&BYTES) {
            Ok(text) => text,
            Err(_) => panic!("a statement's PostgreSQL text is not UTF-8"),
        };
        $crate::store::shared::sql::Sql::new($text, POSTGRES)
    }};
}
pub(crate) use sql;

/// The columns of a log record, in the order of the `events` table, as a
/// literal (for `concat!` in [`sql!`]).
macro_rules! event_columns {
    () => {
        "seq, topic, partition, \"offset\", id, source, type, time, content_type, data_schema, data, headers, key, appended_at"
    };
}
pub(crate) use event_columns;

/// The number of decimal digits of `n`.
const fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The length of `parts`, joined, once each `?` outside quotes is `$n`.
pub(crate) const fn numbered_len(parts: &[&str]) -> usize {
    let (mut len, mut n, mut quoted) = (0, 0, false);
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p].as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\'' {
                quoted = !quoted;
            }
            if bytes[i] == b'?' && !quoted {
                n += 1;
                len += 1 + digits(n);
            } else {
                len += 1;
            }
            i += 1;
        }
        p += 1;
    }
    len
}

/// `parts`, joined, with each `?` outside quotes numbered `$1`, `$2`...;
/// `LEN` is [`numbered_len`] of them.
pub(crate) const fn numbered<const LEN: usize>(parts: &[&str]) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    let (mut at, mut n, mut quoted) = (0, 0, false);
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p].as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\'' {
                quoted = !quoted;
            }
            if bytes[i] == b'?' && !quoted {
                n += 1;
                out[at] = b'$';
                at += 1;
                let width = digits(n);
                let mut rest = n;
                let mut d = width;
                while d > 0 {
                    out[at + d - 1] = b'0' + (rest % 10) as u8;
                    rest /= 10;
                    d -= 1;
                }
                at += width;
            } else {
                out[at] = bytes[i];
                at += 1;
            }
            i += 1;
        }
        p += 1;
    }
    out
}

/// A value bound to a placeholder: the column types both backends share.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    /// `INTEGER` / `BIGINT`.
    Int(i64),
    /// A nullable integer.
    OptInt(Option<i64>),
    /// Text.
    Text(&'a str),
    /// Nullable text.
    OptText(Option<&'a str>),
    /// `BLOB` / `BYTEA`.
    Bytes(&'a [u8]),
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(value: Option<i64>) -> Self {
        Arg::OptInt(value)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(value: &'a String) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(value: &'a Option<String>) -> Self {
        Arg::OptText(value.as_deref())
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(value: &'a [u8]) -> Self {
        Arg::Bytes(value)
    }
}

/// The arguments of a statement, each converted to an [`Arg`].
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$($crate::store::shared::sql::Arg::from($value)),*]
    };
}
pub(crate) use args;

/// Binds `args` to `query`, in order.
pub(crate) fn bind<'q, DB: Database>(
    mut query: Query<'q, DB, DB::Arguments>,
    args: &[Arg<'_>],
) -> Query<'q, DB, DB::Arguments>
where
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> &'t [u8]: Encode<'t, DB> + Type<DB>,
{
    for arg in args {
        query = match *arg {
            Arg::Int(v) => query.bind(v),
            Arg::OptInt(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
            Arg::OptText(v) => query.bind(v),
            Arg::Bytes(v) => query.bind(v),
        };
    }
    query
}

/// A connection (or a transaction's) that runs [`Sql`] in its dialect.
pub(crate) trait Conn: Send {
    /// A row of a result.
    type Row: StoreRow + Send + Sync;

    /// Runs `sql`; the number of rows it changed.
    fn execute(&mut self, sql: Sql, args: &[Arg<'_>]) -> impl Future<Output = Result<u64>> + Send;

    /// Every row `sql` returns.
    fn fetch_all(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send;

    /// The first row `sql` returns, if any.
    fn fetch_optional(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<Self::Row>>> + Send;

    /// The one row `sql` returns.
    fn fetch_one(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Self::Row>> + Send;
}

/// Implements [`Conn`] for the connection type `$conn` of database `$db`,
/// running each statement's `$dialect` text.
macro_rules! impl_conn {
    ($conn:ty, $db:ty, $dialect:ident) => {
        impl $crate::store::shared::sql::Conn for $conn {
            type Row = <$db as ::sqlx::Database>::Row;

            async fn execute(
                &mut self,
                sql: $crate::store::shared::sql::Sql,
                args: &[$crate::store::shared::sql::Arg<'_>],
            ) -> $crate::store::Result<u64> {
                let query = ::sqlx::query::<$db>(sql.$dialect());
                let done = $crate::store::shared::sql::bind(query, args)
                    .execute(&mut *self)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn fetch_all(
                &mut self,
                sql: $crate::store::shared::sql::Sql,
                args: &[$crate::store::shared::sql::Arg<'_>],
            ) -> $crate::store::Result<Vec<Self::Row>> {
                let query = ::sqlx::query::<$db>(sql.$dialect());
                Ok($crate::store::shared::sql::bind(query, args)
                    .fetch_all(&mut *self)
                    .await?)
            }

            async fn fetch_optional(
                &mut self,
                sql: $crate::store::shared::sql::Sql,
                args: &[$crate::store::shared::sql::Arg<'_>],
            ) -> $crate::store::Result<Option<Self::Row>> {
                let query = ::sqlx::query::<$db>(sql.$dialect());
                Ok($crate::store::shared::sql::bind(query, args)
                    .fetch_optional(&mut *self)
                    .await?)
            }

            async fn fetch_one(
                &mut self,
                sql: $crate::store::shared::sql::Sql,
                args: &[$crate::store::shared::sql::Arg<'_>],
            ) -> $crate::store::Result<Self::Row> {
                let query = ::sqlx::query::<$db>(sql.$dialect());
                Ok($crate::store::shared::sql::bind(query, args)
                    .fetch_one(&mut *self)
                    .await?)
            }
        }
    };
}
pub(crate) use impl_conn;

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_placeholders_outside_quotes() {
        let q = sql!("SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; postgres: " FOR UPDATE");
        assert_eq!(
            q.sqlite(),
            "SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        assert_eq!(
            q.postgres(),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11) FOR UPDATE"
        );
    }
}
