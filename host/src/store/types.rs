//! The store's records: what the roles of [`super::Store`] take and give.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::event::Event;

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
    /// Kafka dead-letter topic): see [`super::dead_letter_event`].
    pub publish_to: Option<String>,
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

/// A partition claim (see [`super::Claims::claim_partitions`]) and the events of
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

    pub(crate) fn parse(s: &str) -> Result<Self> {
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

/// Filter of [`super::Dlq::dlq_list`].
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
/// told as it commits: see [`super::Notices::notices`].
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
