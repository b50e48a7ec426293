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
