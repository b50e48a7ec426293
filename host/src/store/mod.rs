//! Durable state of the pipeline behind one trait, [`Store`], the sum of
//! its roles: the embedded event log ([`Log`]), consumer positions,
//! idempotency records and per-key state ([`Outcomes`]), the outbox
//! ([`Outbox`]), partition claims on external brokers ([`Claims`]), the
//! handler registry ([`Registry`]), the dead-letter queue ([`Dlq`]) and
//! the changes others commit ([`Notices`]).
//!
//! The central operation is [`Outcomes::commit`]: the outcomes of many events,
//! for many handlers, commit in one transaction (group commit). For each
//! processed event that transaction holds its processed record, its state
//! writes, its emitted events (outbox rows) and the handler's new position,
//! so an event's effects exist exactly once or not at all.
//!
//! Two implementations, with the same semantics: [`sqlite::SqliteStore`],
//! embedded (one file, one host), and [`postgres::PostgresStore`], a shared
//! database (several hosts on one log). [`open`] chooses by the URL scheme.
//! The unit tests in `conformance` run against both.

#[cfg(test)]
mod conformance;
pub mod postgres;
mod roles;
mod shared;
pub mod sqlite;
mod types;

use std::sync::Arc;

use serde::Serialize;

pub use roles::{Claims, Dlq, Log, Notices, Outbox, Outcomes, Registry, Store};
pub use shared::dead_letter_event;
pub use types::*;

/// The role traits of [`Store`], whose methods callers need in scope.
pub mod prelude {
    pub use super::{Claims, Dlq, Log, Notices, Outbox, Outcomes, Registry, Store};
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Schema migration failed at start-up.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store URL is not usable.
    #[error("invalid store URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A row could not be decoded.
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch, the store's clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// JSON text of `value`, as both backends store it.
fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Parses stored JSON text; `what` names it in the error.
fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// The store behind `url`: `sqlite://PATH` (created if missing) or
/// `postgres://USER@HOST/DB` (`postgresql://` too; the database must exist).
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::open(url, options).await?))
    } else {
        Err(Error::Url {
            url: url.to_owned(),
            reason: "unsupported scheme; use sqlite://PATH or postgres://USER@HOST/DATABASE".into(),
        })
    }
}

/// Server of [`postgres_test_database`] unless `SLUICE_TEST_POSTGRES_URL` names one.
const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Test databases older than this are dropped by [`postgres_test_database`].
const TEST_DATABASE_TTL_MS: i64 = 3_600_000;

/// For tests: the URL of a new, empty PostgreSQL database, or `None` when
/// no server is reachable (the test should then return early).
///
/// The server is `SLUICE_TEST_POSTGRES_URL` (default
/// `postgres://postgres@127.0.0.1:5432/test`). Each call creates its own
/// database, `sluice_test_<hex>`, so tests do not see each other's data;
/// they are left behind, and the first call in a process drops those older
/// than an hour (best effort). An unreachable server is a skip, printed to
/// stderr, unless `SLUICE_REQUIRE_SERVERS=1` (as in CI): then it panics, so
/// that a missing server fails the run instead of skipping it.
pub async fn postgres_test_database() -> Option<String> {
    use sqlx::Connection as _;

    let url = std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_owned());
    let unavailable = |error: String| crate::test_servers::unavailable("PostgreSQL", &url, &error);
    let mut conn = match sqlx::PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => {
            unavailable(e.to_string());
            return None;
        }
    };
    // The name starts with the creation time (ms, 12 hex digits), so that
    // stale databases are recognised without server-side bookkeeping. Each
    // drop forces a checkpoint (seconds), so only the first call in a
    // process cleans up.
    static CLEANED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let now = now_ms();
    let stale: Vec<String> = if CLEANED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        Vec::new()
    } else {
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sluice\\_test\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default()
    };
    for name in stale {
        let created = name
            .get("sluice_test_".len().."sluice_test_".len() + 12)
            .and_then(|hex| i64::from_str_radix(hex, 16).ok());
        if created.is_some_and(|created| now - created > TEST_DATABASE_TTL_MS) {
            // Fails harmlessly while someone is still connected to it.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\""
            )))
            .execute(&mut conn)
            .await;
        }
    }
    let name = format!("sluice_test_{now:012x}{:016x}", rand::random::<u64>());
    let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    if let Err(e) = created {
        unavailable(format!("cannot create database {name}: {e}"));
        return None;
    }
    let mut db_url = match reqwest::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            unavailable(format!("invalid URL: {e}"));
            return None;
        }
    };
    db_url.set_path(&format!("/{name}"));
    Some(db_url.into())
}
