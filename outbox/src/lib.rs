//! The transactional outbox of Sluice for services that are not WASM
//! handlers.
//!
//! A service cannot write its database and publish to a broker atomically:
//! whichever comes second can fail after the first succeeded (the
//! dual-write problem). With this crate the service inserts the event into
//! Sluice's `outbox` table **in the same PostgreSQL transaction as its
//! business write**; Sluice's outbox relay publishes the row to the event
//! log after the commit. If the transaction rolls back, the event was never
//! there; if it commits, the event will be published.
//!
//! ```no_run
//! use sluice_outbox::{Outbox, OutboxEvent};
//!
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! // Once, at start-up: rows get `handler = 'app:orders'` and, unless an
//! // event says otherwise, `source = "sluice://app/orders"`.
//! let outbox = Outbox::new("orders")?;
//!
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE orders SET status = 'paid' WHERE id = $1")
//!     .bind(42_i64)
//!     .execute(&mut *tx)
//!     .await?;
//! let event = OutboxEvent::new("orders", "order.paid")
//!     .with_key("order-42")
//!     .with_header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .with_json(&serde_json::json!({ "order": 42, "amount_cents": 1999 }))?;
//! let id = outbox.enqueue(&mut *tx, &event).await?; // the same transaction
//! tx.commit().await?;
//! println!("event {id} will be published to topic orders");
//! # Ok(())
//! # }
//! ```
//!
//! # Requirements
//!
//! Sluice runs on the PostgreSQL store (`store.url = "postgres://…"`), and
//! the service's business tables are in that same database: one transaction
//! cannot span two databases. The `outbox` table is created by Sluice's
//! migrations (when the host opens the store); this crate never creates or
//! alters tables. This crate does not depend on the host (no wasmtime).
//!
//! # The table contract
//!
//! One row of `outbox` per event:
//!
//! | column         | type           | written by                                   | read by |
//! |----------------|----------------|----------------------------------------------|---------|
//! | `seq`          | BIGINT identity| PostgreSQL, at `INSERT`                      | the relay: publication order |
//! | `event_id`     | TEXT           | [`Outbox::enqueue`]: the event's `id`        | operators and tools |
//! | `topic`        | TEXT           | `enqueue`: the event's topic                 | operators and tools |
//! | `key`          | TEXT, nullable | `enqueue`: the event's ordering key          | operators and tools |
//! | `event`        | TEXT (JSON)    | `enqueue`: the whole event, see below        | the relay: what it publishes |
//! | `handler`      | TEXT           | `enqueue`: `app:<service>` ([`Outbox::handler`]) | operators: who produced the row |
//! | `created_at`   | BIGINT         | `enqueue`: ms since the epoch (service clock)| operators: relay lag |
//! | `delivered_at` | BIGINT, nullable | NULL at `INSERT`; the relay sets it (ms since the epoch) when it publishes | the relay (NULL = pending), the backlog metric |
//!
//! The relay publishes what the `event` column says; `event_id`, `topic`
//! and `key` repeat the event's own fields for queries. Rows written by WASM
//! handlers carry the handler's name in `handler` (lowercase letters,
//! digits, `-` and `_`, never a `:`), so `app:` rows can be told apart and
//! never collide with a handler.
//!
//! The `event` column is the JSON of `sluice::event::Event`, every field
//! present (absent optional values are `null`):
//!
//! ```json
//! {
//!   "id": "01973b4e-9c1a-7d2e-8f00-1b2c3d4e5f60",
//!   "source": "sluice://app/orders",
//!   "type": "order.paid",
//!   "time": "2025-06-01T12:00:00.123456Z",
//!   "content_type": "application/json",
//!   "data_schema": null,
//!   "data": "eyJvcmRlciI6NDJ9",
//!   "headers": { "traceparent": "00-4bf9…-01" },
//!   "key": "order-42",
//!   "topic": "orders"
//! }
//! ```
//!
//! `data` is the payload's bytes in standard base64 (with padding), whatever
//! the content type; `headers` maps lowercase names to string values (the
//! CloudEvents extension attributes and transport headers).
//!
//! # Ordering
//!
//! The relay takes committed, undelivered rows in `seq` order and appends
//! them to the log; all events of one key land in one partition, so
//! consumers see them in outbox order per key. Within one transaction the
//! rows are in enqueue order ([`Outbox::enqueue_all`]: slice order).
//!
//! `seq` is drawn at `INSERT`, not at commit: two transactions running at
//! the same time can commit in the opposite order of their `seq`s. Events of
//! one key keep the order of the business changes when the transactions for
//! that key are serialized and enqueue *after* the write that serializes
//! them: update (or `SELECT … FOR UPDATE`) the business row first, then
//! enqueue. The second transaction then waits for the first to commit before
//! it draws its `seq`.
//!
//! # Delivery: at least once, with a stable id
//!
//! A row is published only if its transaction commits. The relay appends a
//! batch to the log and marks it delivered in one transaction, but the
//! event can still reach a consumer more than once: a service that retries a
//! transaction whose `COMMIT` outcome it did not learn enqueues a second
//! row, and consumers (handlers, bridges to brokers) redeliver after
//! crashes. Consumers deduplicate by event `id`, which is fixed when the
//! [`OutboxEvent`] is built (a UUIDv7 unless set with
//! [`OutboxEvent::with_id`]): retry with the same value, or derive the id
//! from business data, so that copies carry the same id.
//!
//! Relays wake when a transaction that inserted outbox rows commits (a
//! trigger sends `NOTIFY sluice_outbox`), so a service's rows go out at
//! once; the relay's poll (`pipeline.poll_interval_ms`) is the fallback. A
//! topic that does not exist yet is created at the
//! first publication with `pipeline.default_partitions` partitions, unless
//! `[[topics]]` configures it.
//!
//! # Validation
//!
//! A row that the relay cannot publish would stop it for every producer (it
//! retries the same batch), so [`Outbox::enqueue`] checks every event before
//! writing anything and fails with [`Error::InvalidEvent`]:
//!
//! - `id`, `type` and `source` are not empty (`type` not only whitespace);
//! - the topic has 1 to 200 letters, digits, `.`, `_` or `-` (as Kafka);
//! - no string (id, topic, type, key, source, time, content type, data
//!   schema, header names and values) contains a NUL character, which
//!   PostgreSQL text and brokers refuse;
//! - header names have 1 to 64 lowercase letters, digits, `.`, `_` or `-`;
//! - `time`, when set, is an RFC 3339 timestamp.
//!
//! Write rows only through this crate (or [`Outbox::row`], for another
//! database library), never by hand.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use sqlx::PgExecutor;

/// Prefix of the `handler` column of rows written by services.
pub const HANDLER_PREFIX: &str = "app:";

/// Prefix of the default `source` of a service's events.
pub const SOURCE_PREFIX: &str = "sluice://app/";

/// Most characters in a topic name.
pub const MAX_TOPIC_LEN: usize = 200;

/// Most characters in a header name.
pub const MAX_HEADER_NAME_LEN: usize = 64;

/// Most characters in a service name.
pub const MAX_SERVICE_LEN: usize = 64;

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service name given to [`Outbox::new`] is not usable.
    #[error(
        "invalid service name {0:?}: use 1 to 64 lowercase letters, digits, '-' or '_', starting with a letter"
    )]
    InvalidService(String),
    /// An event breaks a rule of the table contract; nothing was written.
    #[error("invalid outbox event {id:?}: {problem}")]
    InvalidEvent {
        /// The event's id.
        id: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// The payload given to [`OutboxEvent::with_json`] cannot be encoded.
    #[error("event data cannot be encoded as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The `INSERT` failed (the caller's transaction is then aborted).
    #[error("outbox insert failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with an invalid event ([`Error::InvalidEvent`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The id is empty.
    #[error("id is empty")]
    EmptyId,
    /// The type is empty or only whitespace.
    #[error("type is empty")]
    EmptyType,
    /// The source is set but empty.
    #[error("source is empty")]
    EmptySource,
    /// The topic name is not valid.
    #[error("topic {0:?} is not valid: use 1 to 200 letters, digits, '.', '_' or '-'")]
    InvalidTopic(String),
    /// A header name is not valid.
    #[error(
        "header name {0:?} is not valid: use 1 to 64 lowercase letters, digits, '.', '_' or '-'"
    )]
    InvalidHeaderName(String),
    /// The time is not an RFC 3339 timestamp.
    #[error("time {0:?} is not an RFC 3339 timestamp")]
    InvalidTime(String),
    /// A string contains a NUL character; names the field.
    #[error("{0} contains a NUL character, which PostgreSQL text and brokers refuse")]
    Nul(String),
}

/// One event to publish: the CloudEvents attributes, the topic and the
/// ordering key.
///
/// Build it with [`OutboxEvent::new`] and the `with_*` methods, or set the
/// public fields; it is checked when enqueued ([`OutboxEvent::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// CloudEvents `id`; consumers deduplicate by it. A new UUIDv7 by default.
    pub id: String,
    /// Topic to publish to.
    pub topic: String,
    /// CloudEvents `type`, e.g. `order.paid`.
    pub ty: String,
    /// Ordering (partition) key: events of one key keep their order.
    pub key: Option<String>,
    /// CloudEvents `source`; `None` means the outbox's default,
    /// `sluice://app/<service>` ([`Outbox::source`]).
    pub source: Option<String>,
    /// CloudEvents `time`, RFC 3339; the time of [`OutboxEvent::new`] by default.
    pub time: Option<String>,
    /// CloudEvents `datacontenttype`.
    pub content_type: Option<String>,
    /// CloudEvents `dataschema`: the payload's schema or version.
    pub data_schema: Option<String>,
    /// The payload.
    pub data: Vec<u8>,
    /// Extension attributes and headers, by lowercase name (`traceparent`,
    /// `correlationid`, …).
    pub headers: BTreeMap<String, String>,
}

impl OutboxEvent {
    /// A new event of type `ty` for `topic`, with a new UUIDv7 id, the
    /// current time and an empty payload.
    pub fn new(topic: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            topic: topic.into(),
            ty: ty.into(),
            key: None,
            source: None,
            time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            content_type: None,
            data_schema: None,
            data: Vec::new(),
            headers: BTreeMap::new(),
        }
    }

    /// Sets the id, e.g. one derived from business data so that a retried
    /// operation produces the same id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the ordering key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the source (instead of `sluice://app/<service>`).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Sets the time (RFC 3339).
    #[must_use]
    pub fn with_time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }

    /// Sets the payload bytes and their content type.
    #[must_use]
    pub fn with_data(mut self, data: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Self {
        self.data = data.into();
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the payload to the JSON of `value`, content type `application/json`.
    pub fn with_json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self> {
        self.data = serde_json::to_vec(value)?;
        self.content_type = Some("application/json".to_owned());
        Ok(self)
    }

    /// Sets the data schema.
    #[must_use]
    pub fn with_data_schema(mut self, data_schema: impl Into<String>) -> Self {
        self.data_schema = Some(data_schema.into());
        self
    }

    /// Sets a header (lowercase name), replacing one of the same name.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Checks the rules of the table contract (see the crate documentation).
    pub fn validate(&self) -> Result<()> {
        self.problem().map_or(Ok(()), |problem| {
            Err(Error::InvalidEvent {
                id: self.id.clone(),
                problem,
            })
        })
    }

    /// The first broken rule, if any.
    fn problem(&self) -> Option<Problem> {
        if self.id.is_empty() {
            return Some(Problem::EmptyId);
        }
        if !valid_topic_name(&self.topic) {
            return Some(Problem::InvalidTopic(self.topic.clone()));
        }
        if self.ty.trim().is_empty() {
            return Some(Problem::EmptyType);
        }
        if self.source.as_deref() == Some("") {
            return Some(Problem::EmptySource);
        }
        let fields = [
            ("id", Some(&self.id)),
            ("type", Some(&self.ty)),
            ("key", self.key.as_ref()),
            ("source", self.source.as_ref()),
            ("time", self.time.as_ref()),
            ("content type", self.content_type.as_ref()),
            ("data schema", self.data_schema.as_ref()),
        ];
        for (field, text) in fields {
            if text.is_some_and(|t| t.contains('\0')) {
                return Some(Problem::Nul(field.to_owned()));
            }
        }
        for (name, value) in &self.headers {
            if !valid_header_name(name) {
                return Some(Problem::InvalidHeaderName(name.clone()));
            }
            if value.contains('\0') {
                return Some(Problem::Nul(format!("header {name:?}")));
            }
        }
        if let Some(time) = &self.time
            && chrono::DateTime::parse_from_rfc3339(time).is_err()
        {
            return Some(Problem::InvalidTime(time.clone()));
        }
        None
    }
}

/// Is `name` usable as a topic name? 1 to 200 letters, digits, `.`, `_` or
/// `-` (the host's rule, as Kafka's).
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Is `name` usable as a header name? 1 to 64 lowercase letters, digits,
/// `.`, `_` or `-` (the host's rule).
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HEADER_NAME_LEN
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Is `name` usable as a service name? 1 to 64 lowercase letters, digits,
/// `-` or `_`, starting with a letter (the rule of handler names).
pub fn valid_service_name(name: &str) -> bool {
    name.len() <= MAX_SERVICE_LEN
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// One `outbox` row, as [`Outbox::enqueue`] inserts it; for services that
/// write it with another database library (`seq` and `delivered_at` are
/// left to their defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// `event_id`.
    pub event_id: String,
    /// `topic`.
    pub topic: String,
    /// `key`.
    pub key: Option<String>,
    /// `event`: the JSON of the event.
    pub event: String,
    /// `handler`: `app:<service>`.
    pub handler: String,
    /// `created_at`: ms since the epoch.
    pub created_at: i64,
}

/// The JSON of the `event` column: the fields of `sluice::event::Event`,
/// in its order.
#[derive(Serialize)]
struct WireEvent<'a> {
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    time: Option<&'a str>,
    content_type: Option<&'a str>,
    data_schema: Option<&'a str>,
    data: String,
    headers: &'a BTreeMap<String, String>,
    key: Option<&'a str>,
    topic: &'a str,
}

/// The outbox of one service: writes its events into Sluice's `outbox`
/// table, in the caller's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox {
    service: String,
    handler: String,
    source: String,
}

impl Outbox {
    /// The outbox of the service `service` (1 to 64 lowercase letters,
    /// digits, `-` or `_`, starting with a letter). Its rows have
    /// `handler = 'app:<service>'` and its events the default source
    /// `sluice://app/<service>`.
    pub fn new(service: &str) -> Result<Self> {
        if !valid_service_name(service) {
            return Err(Error::InvalidService(service.to_owned()));
        }
        Ok(Self {
            service: service.to_owned(),
            handler: format!("{HANDLER_PREFIX}{service}"),
            source: format!("{SOURCE_PREFIX}{service}"),
        })
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The value of the `handler` column: `app:<service>`.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// The default source of events: `sluice://app/<service>`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Validates `event` and encodes it as an `outbox` row.
    pub fn row(&self, event: &OutboxEvent) -> Result<OutboxRow> {
        self.row_at(event, chrono::Utc::now().timestamp_millis())
    }

    fn row_at(&self, event: &OutboxEvent, created_at: i64) -> Result<OutboxRow> {
        event.validate()?;
        let wire = WireEvent {
            id: &event.id,
            source: event.source.as_deref().unwrap_or(&self.source),
            ty: &event.ty,
            time: event.time.as_deref(),
            content_type: event.content_type.as_deref(),
            data_schema: event.data_schema.as_deref(),
            data: BASE64.encode(&event.data),
            headers: &event.headers,
            key: event.key.as_deref(),
            topic: &event.topic,
        };
        Ok(OutboxRow {
            event_id: event.id.clone(),
            topic: event.topic.clone(),
            key: event.key.clone(),
            event: serde_json::to_string(&wire)?,
            handler: self.handler.clone(),
            created_at,
        })
    }

    /// Inserts `event` into the outbox and returns its id.
    ///
    /// Pass the transaction of the business write (`&mut *tx`): the event is
    /// published if and only if that transaction commits. (A pool or a
    /// connection outside a transaction also works, but then the insert
    /// commits on its own, which is what the outbox exists to avoid.)
    /// Nothing is written when the event is invalid.
    pub async fn enqueue<'c, E: PgExecutor<'c>>(
        &self,
        executor: E,
        event: &OutboxEvent,
    ) -> Result<String> {
        let mut ids = self
            .enqueue_all(executor, std::slice::from_ref(event))
            .await?;
        Ok(ids.pop().unwrap_or_default())
    }

    /// Inserts `events` into the outbox, in this order, with one statement,
    /// and returns their ids. Every event is checked first: if one is
    /// invalid, nothing is written.
    pub async fn enqueue_all<'c, E: PgExecutor<'c>>(
        &self,
        executor: E,
        events: &[OutboxEvent],
    ) -> Result<Vec<String>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let rows = events
            .iter()
            .map(|e| self.row_at(e, now))
            .collect::<Result<Vec<_>>>()?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut topics = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        let mut jsons = Vec::with_capacity(rows.len());
        for row in rows {
            ids.push(row.event_id);
            topics.push(row.topic);
            keys.push(row.key);
            jsons.push(row.event);
        }
        // Identity values are drawn as rows are inserted; ORDER BY makes
        // that the slice order, so `seq` follows it.
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, key, event, handler, created_at) \
             SELECT u.event_id, u.topic, u.key, u.event, $5, $6 \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
                  WITH ORDINALITY AS u(event_id, topic, key, event, n) \
             ORDER BY u.n",
        )
        .bind(&ids)
        .bind(topics)
        .bind(keys)
        .bind(jsons)
        .bind(&self.handler)
        .bind(now)
        .execute(executor)
        .await?;
        Ok(ids)
    }
}
