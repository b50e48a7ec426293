//! Durable state of the pipeline behind one trait: the embedded event log,
//! consumer positions, idempotency records, per-key state, the outbox and
//! the dead-letter queue.
//!
//! The central operation is [`Store::commit`]: the outcomes of many events,
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
mod shared;
pub mod sqlite;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::runtime::StateMap;

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

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position in the whole log; increases in commit order.
    pub seq: i64,
    /// Partition within the topic (from the key).
    pub partition: u32,
    /// Offset within the partition.
    pub offset: i64,
    /// When it was appended, ms since the epoch.
    pub appended_at: i64,
    /// The event (its `topic` is the topic it is in).
    pub event: Event,
}

/// Where an appended event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Event id.
    pub id: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: i64,
    /// Log sequence number.
    pub seq: i64,
}

/// A topic of the embedded log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Number of events.
    pub events: i64,
    /// Highest sequence number, 0 when empty.
    pub last_seq: i64,
}

/// One failed attempt at handling an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Outcome kind: `retryable`, `fatal`, `trap`, `timeout` or `limit`.
    pub outcome: String,
    /// The error message.
    pub error: String,
    /// Version (component digest) that ran.
    pub version: String,
    /// When, ms since the epoch.
    pub at: i64,
}

/// One uploaded version of a handler's component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Version number, from 1 per handler.
    pub version: i64,
    /// Hex SHA-256 of the component bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Upload time, ms since the epoch.
    pub uploaded_at: i64,
}

/// A registered handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerRecord {
    /// Name.
    pub name: String,
    /// Its configuration (subscriptions, retry policy, limits, DLQ mode), as
    /// the admin API accepted it.
    pub config: serde_json::Value,
    /// The version new events run on, if any was activated.
    pub active_version: Option<i64>,
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
    /// Who owns the configuration.
    pub managed_by: ManagedBy,
}

/// Who owns a handler's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManagedBy {
    /// Declared in `sluice.toml`: the file wins at every start, and the API
    /// does not change or delete it.
    Config,
    /// Created through the admin API; runs at start-up from the registry.
    Api,
}

impl ManagedBy {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ManagedBy::Config => "config",
            ManagedBy::Api => "api",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "config" => Ok(ManagedBy::Config),
            "api" => Ok(ManagedBy::Api),
            other => Err(Error::Corrupt(format!("unknown handler owner {other:?}"))),
        }
    }
}

/// A handler's final outcome for an event, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessedRecord {
    /// Handler.
    pub handler: String,
    /// `ok` or `dead-lettered`.
    pub outcome: String,
    /// Version (component digest) that ran last.
    pub version: String,
    /// Attempts it took.
    pub attempts: u32,
    /// When, ms since the epoch.
    pub processed_at: i64,
}

/// A successfully handled event and its effects.
#[derive(Debug, Clone)]
pub struct Processed {
    /// Handler name.
    pub handler: String,
    /// Version (component digest) that ran.
    pub version: String,
    /// Topic the event came from.
    pub topic: String,
    /// Its log sequence number.
    pub seq: i64,
    /// Its id.
    pub event_id: String,
    /// Number of attempts it took.
    pub attempts: u32,
    /// The event's key, the scope of `state_changes`.
    pub key: Option<String>,
    /// State writes; `None` deletes.
    pub state_changes: BTreeMap<String, Option<Vec<u8>>>,
    /// Events for the outbox.
    pub emitted: Vec<Event>,
}

/// An event that goes to the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Handler name.
    pub handler: String,
    /// Version (component digest) of the last attempt.
    pub version: String,
    /// The full event with its log position.
    pub record: LogRecord,
    /// Every attempt, the last one included.
    pub attempts: Vec<AttemptRecord>,
    /// Park the event's key until the entry is redriven or discarded.
    pub park: bool,
    /// Also produce the entry to this topic, through the outbox (the
    /// Kafka dead-letter topic): see [`dead_letter_event`].
    pub publish_to: Option<String>,
}

/// The event a dead-letter entry is produced as: the failed event's
/// attributes, data and key, a new id (`dlq-{handler}-{entry id}`, since the
/// same event can fail again after a redrive), and extension attributes
/// (`ce_*` headers on Kafka) saying what failed: `dlqid`, `dlqhandler`,
/// `dlqversion`, `dlqeventid`, `dlqtopic`, `dlqattempts` and `dlqerror`
/// (the last attempt's outcome and message).
pub fn dead_letter_event(d: &DeadLetter, dlq_id: i64, topic: &str) -> Event {
    let mut event = d.record.event.clone();
    let error = shared::dead_letter_error(d);
    for (name, value) in [
        ("dlqid", dlq_id.to_string()),
        ("dlqhandler", d.handler.clone()),
        ("dlqversion", d.version.clone()),
        ("dlqeventid", event.id.clone()),
        ("dlqtopic", event.topic.clone()),
        ("dlqattempts", d.attempts.len().to_string()),
        ("dlqerror", error),
    ] {
        event.headers.insert(name.to_owned(), value);
    }
    event.id = format!("dlq-{}-{dlq_id}", d.handler);
    event.topic = topic.to_owned();
    event
}

/// An event held back because its key is parked.
#[derive(Debug, Clone)]
pub struct ParkedEvent {
    /// Handler name.
    pub handler: String,
    /// The parked key.
    pub key: String,
    /// The event's topic.
    pub topic: String,
    /// The event's log sequence number.
    pub seq: i64,
}

/// A group of outcomes that commit together.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Events handled successfully.
    pub processed: Vec<Processed>,
    /// Failed attempts that will be retried, as (handler, event id, attempt).
    pub failures: Vec<(String, String, AttemptRecord)>,
    /// Events that go to the dead-letter queue.
    pub dead_letters: Vec<DeadLetter>,
    /// Events held back behind a parked key.
    pub parked: Vec<ParkedEvent>,
    /// DLQ actions carried out by this batch (their rows are deleted).
    pub actions_done: Vec<i64>,
    /// Keys released by this batch, as (handler, key): their parking and
    /// held-back event rows are deleted.
    pub unparked: Vec<(String, String)>,
    /// New consumer positions, as (handler, topic, position).
    pub positions: Vec<(String, String, i64)>,
    /// New positions on an external broker's partitions, as (handler,
    /// topic, partition, offset done).
    pub broker_positions: Vec<(String, String, i32, i64)>,
    /// The claims this batch's Kafka outcomes and positions were read
    /// under: those of a partition claimed again since are not applied.
    pub claims: Vec<Claim>,
    /// Where emitted events go. `Some(partitions)`: straight into the log
    /// of this store, in the commit's transaction (the embedded broker,
    /// whose log is in the same database: an outbox row and a relay would
    /// only copy them there later); a topic created on the way gets
    /// `partitions`. `None`: into the outbox, for the relay to publish to
    /// an external broker.
    pub emit_to_log: Option<u32>,
}

/// A partition claim (see [`Store::claim_partitions`]) and the events of
/// a batch read under it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// Handler.
    pub handler: String,
    /// Topic of the external broker.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The epoch the claim got.
    pub epoch: i64,
    /// Ids of the batch's processed and dead-lettered events from it.
    pub event_ids: Vec<String>,
}

impl Batch {
    /// Does the batch write nothing?
    pub fn is_empty(&self) -> bool {
        self.processed.is_empty()
            && self.failures.is_empty()
            && self.dead_letters.is_empty()
            && self.parked.is_empty()
            && self.actions_done.is_empty()
            && self.unparked.is_empty()
            && self.positions.is_empty()
            && self.broker_positions.is_empty()
            && self.claims.is_empty()
    }
}

/// What a commit did beyond the obvious.
#[derive(Debug, Clone, Default)]
pub struct CommitReport {
    /// (handler, event id) of processed events that already had a processed
    /// record: their effects were not applied again.
    pub duplicates: HashSet<(String, String)>,
    /// Outbox rows written.
    pub outbox_rows: u64,
    /// The highest log sequence number the commit appended (emitted
    /// events, with [`Batch::emit_to_log`]).
    pub appended_seq: Option<i64>,
    /// Ids of the DLQ entries created, in the order of `dead_letters`
    /// (0 for one not created).
    pub dlq_ids: Vec<i64>,
    /// (handler, event id) of outcomes not applied because their partition
    /// was claimed by another consumer since they were read.
    pub fenced: HashSet<(String, String)>,
    /// (handler, topic, partition) whose positions were not written for
    /// the same reason: their offsets must not be committed to Kafka.
    pub fenced_partitions: HashSet<(String, String, i32)>,
}

/// Status of a DLQ entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DlqStatus {
    /// Waiting for an operator.
    Pending,
    /// Sent back to its handler.
    Redriven,
    /// Dropped by an operator.
    Discarded,
}

impl DlqStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DlqStatus::Pending => "pending",
            DlqStatus::Redriven => "redriven",
            DlqStatus::Discarded => "discarded",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(DlqStatus::Pending),
            "redriven" => Ok(DlqStatus::Redriven),
            "discarded" => Ok(DlqStatus::Discarded),
            other => Err(Error::Corrupt(format!("unknown DLQ status {other:?}"))),
        }
    }
}

/// A dead-letter queue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqEntry {
    /// Entry id.
    pub id: i64,
    /// Handler that failed.
    pub handler: String,
    /// Version (component digest) of the last attempt.
    pub version: String,
    /// The full event with its log position.
    pub record: LogRecord,
    /// Every attempt with its error and time.
    pub attempts: Vec<AttemptRecord>,
    /// The last error.
    pub error: String,
    /// Status.
    pub status: DlqStatus,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Last status change, ms since the epoch.
    pub updated_at: i64,
}

/// Filter of [`Store::dlq_list`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DlqFilter {
    /// Only this handler.
    pub handler: Option<String>,
    /// Only this topic.
    pub topic: Option<String>,
    /// Only this status (default: all).
    pub status: Option<DlqStatus>,
    /// Entries with an id greater than this (paging cursor).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// What an operator asked for a DLQ entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DlqAction {
    /// Run the event again.
    Redrive,
    /// Drop it.
    Discard,
}

/// An operator action waiting for the handler's dispatcher.
#[derive(Debug, Clone)]
pub struct PendingAction {
    /// Action id.
    pub id: i64,
    /// What to do.
    pub action: DlqAction,
    /// For a redrive: the handler version to run it on (`None`: the active one).
    pub version: Option<i64>,
    /// The entry.
    pub entry: DlqEntry,
}

/// A change another process (or this one) committed to a shared store,
/// told as it commits: see [`Store::notices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Outbox rows were inserted: a relay has work.
    Outbox,
    /// The registry row of this handler changed (created, reconfigured,
    /// activated or deleted).
    Registry(String),
    /// The connection that listens was lost and is back: notices may have
    /// been missed, so everything must be looked at again.
    Reconnected,
}

/// The durable state of a Sluice host.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Starts listening for the changes others commit, for as long as the
    /// receiver lives; `None` where the backend is private to one process
    /// (SQLite), which learns of its own changes directly.
    async fn notices(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Notice>>> {
        Ok(None)
    }

    /// Creates `topic` with `partitions` partitions unless it exists;
    /// returns its partition count.
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<u32>;

    /// Lists the topics of the embedded log.
    async fn topics(&self) -> Result<Vec<TopicInfo>>;

    /// Appends events (each to its `topic`, created with
    /// `default_partitions` if new) in one transaction.
    async fn append(&self, events: &[Event], default_partitions: u32) -> Result<Vec<Appended>>;

    /// Reads up to `limit` events of `topic` with `seq > after`, in order.
    async fn read_log(&self, topic: &str, after: i64, limit: u32) -> Result<Vec<LogRecord>>;

    /// [`Store::read_log`], each record paired with whether `handler` has
    /// a processed record of its event id. The dispatcher reads this way,
    /// so a backend may answer both in one query.
    async fn read_log_for(
        &self,
        handler: &str,
        topic: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(LogRecord, bool)>> {
        let records = self.read_log(topic, after, limit).await?;
        let ids: Vec<String> = records.iter().map(|r| r.event.id.clone()).collect();
        let processed = self.processed_ids(handler, &ids).await?;
        Ok(records
            .into_iter()
            .map(|r| {
                let done = processed.contains(&r.event.id);
                (r, done)
            })
            .collect())
    }

    /// Reads log records by sequence number (any topic), in order.
    async fn read_seqs(&self, seqs: &[i64]) -> Result<Vec<LogRecord>>;

    /// The committed position of `handler` on `topic`.
    async fn position(&self, handler: &str, topic: &str) -> Result<Option<i64>>;

    /// Which of `ids` have a processed record for `handler`.
    async fn processed_ids(&self, handler: &str, ids: &[String]) -> Result<HashSet<String>>;

    /// The state of `key` for `handler`.
    async fn load_state(&self, handler: &str, key: &str) -> Result<StateMap>;

    /// The states of several keys of `handler` at once: an entry for every
    /// key asked for, empty for a key without state.
    async fn load_states(
        &self,
        handler: &str,
        keys: &[String],
    ) -> Result<HashMap<String, StateMap>>;

    /// The failed attempts recorded for an event that is being retried.
    async fn attempts(&self, handler: &str, event_id: &str) -> Result<Vec<AttemptRecord>>;

    /// Every event of `handler` with recorded failed attempts (events being
    /// retried when the host stopped), by event id.
    async fn pending_attempts(&self, handler: &str) -> Result<HashMap<String, Vec<AttemptRecord>>>;

    /// Commits a batch of outcomes in one transaction.
    async fn commit(&self, batch: &Batch) -> Result<CommitReport>;

    /// Publishes up to `limit` outbox rows to the embedded log, in outbox
    /// order, and marks them delivered, in one transaction.
    async fn relay_outbox(&self, limit: u32, default_partitions: u32) -> Result<Vec<Appended>>;

    /// Every log record with event id `id` (an id can be republished),
    /// oldest first.
    async fn events_by_id(&self, id: &str) -> Result<Vec<LogRecord>>;

    /// Log records whose `causationid` is `id`: what was emitted because of
    /// that event.
    async fn events_caused_by(&self, id: &str) -> Result<Vec<LogRecord>>;

    /// Processed records of event `id`, for every handler.
    async fn processed_records(&self, id: &str) -> Result<Vec<ProcessedRecord>>;

    /// Number of outbox rows not yet delivered.
    async fn outbox_backlog(&self) -> Result<i64>;

    /// `handler`'s positions on the partitions of an external broker's
    /// `topic`: the last offset done of each.
    async fn broker_positions(&self, handler: &str, topic: &str) -> Result<HashMap<i32, i64>>;

    /// Claims `partitions` of `topic` for `handler` (a consumer was just
    /// assigned them) and reads their positions, in one transaction: each
    /// claim's epoch goes up, so outcomes read under an earlier claim no
    /// longer commit. `owner` names the claimant (a consumer's client id).
    /// Returns partition → (position, epoch).
    async fn claim_partitions(
        &self,
        handler: &str,
        topic: &str,
        partitions: &[i32],
        owner: &str,
    ) -> Result<HashMap<i32, (Option<i64>, i64)>>;

    /// `handler`'s latest claims: (topic, partition, owner) each.
    async fn partition_owners(&self, handler: &str) -> Result<Vec<(String, i32, String)>>;

    /// Up to `limit` undelivered outbox rows, oldest first, with their
    /// outbox sequence numbers: what a relay to an external broker
    /// publishes (it marks them with [`Store::outbox_delivered`] once the
    /// broker acknowledged them).
    async fn outbox_pending(&self, limit: u32) -> Result<Vec<(i64, Event)>>;

    /// Marks outbox rows delivered.
    async fn outbox_delivered(&self, seqs: &[i64]) -> Result<()>;

    /// Takes or renews the lease `name` for `holder` for `ttl_ms` from now;
    /// `true` when `holder` holds it. Another holder gets it only once it
    /// expired, so at most one instance does the leased work at a time
    /// (short of clock skew beyond the ttl).
    async fn lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool>;

    /// Creates or updates a handler's configuration; versions are kept.
    async fn put_handler(
        &self,
        name: &str,
        config: &serde_json::Value,
        managed_by: ManagedBy,
    ) -> Result<HandlerRecord>;

    /// One registered handler with its versions.
    async fn handler(&self, name: &str) -> Result<Option<HandlerRecord>>;

    /// Every registered handler, by name.
    async fn handlers(&self) -> Result<Vec<HandlerRecord>>;

    /// Removes a handler and its versions; `false` if there was none. With
    /// `purge`, also everything it recorded while consuming: positions,
    /// processed records, state, attempts, parked keys and DLQ entries, so
    /// that a handler created again under the name starts afresh. Without,
    /// those stay and a re-created handler resumes where this one stopped.
    /// Events it emitted are never removed.
    async fn delete_handler(&self, name: &str, purge: bool) -> Result<bool>;

    /// Stores a component as the handler's next version, or returns the
    /// existing version with the same digest (`false`: nothing new).
    async fn add_version(
        &self,
        name: &str,
        digest: &str,
        component: &[u8],
    ) -> Result<(VersionInfo, bool)>;

    /// The bytes of one version.
    async fn component(&self, name: &str, version: i64) -> Result<Option<Vec<u8>>>;

    /// Makes `version` the active one.
    async fn activate(&self, name: &str, version: i64) -> Result<HandlerRecord>;

    /// For each topic `handler` has a position on: the number of events
    /// after that position (the handler's lag).
    async fn lag(&self, handler: &str) -> Result<Vec<(String, i64)>>;

    /// Keys of `handler` that are parked, with the DLQ entry that parked each.
    async fn parked_keys(&self, handler: &str) -> Result<HashMap<String, i64>>;

    /// Lists DLQ entries, oldest first.
    async fn dlq_list(&self, filter: &DlqFilter) -> Result<Vec<DlqEntry>>;

    /// One DLQ entry.
    async fn dlq_get(&self, id: i64) -> Result<Option<DlqEntry>>;

    /// Marks a pending entry redriven or discarded and queues the action for
    /// its handler's dispatcher. A redrive removes the event's processed
    /// record, so that it can be processed again.
    async fn dlq_act(&self, id: i64, action: DlqAction) -> Result<DlqEntry> {
        self.dlq_act_on(id, action, None).await
    }

    /// [`Store::dlq_act`], for a redrive on a chosen handler version.
    async fn dlq_act_on(
        &self,
        id: i64,
        action: DlqAction,
        version: Option<i64>,
    ) -> Result<DlqEntry>;

    /// Actions waiting for `handler`, oldest first.
    async fn pending_actions(&self, handler: &str) -> Result<Vec<PendingAction>>;

    /// Events of `key` held back for `handler`, in log order.
    async fn parked_events(&self, handler: &str, key: &str) -> Result<Vec<LogRecord>>;
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

/// Durability setting of SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync at every commit: a committed event survives a power loss.
    #[default]
    Full,
    /// fsync at WAL checkpoints only: faster; a power loss (not a process
    /// crash) can lose the last commits.
    Normal,
}

/// Options of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreOptions {
    /// SQLite durability (`full` or `normal`).
    pub synchronous: Synchronous,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            max_connections: 4,
        }
    }
}
