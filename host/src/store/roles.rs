//! The roles of the store, one trait each, and [`Store`], their sum: what
//! a Sluice host keeps durably. Callers hold an `Arc<dyn Store>` and bring
//! the roles they call into scope with `use crate::store::prelude::*`.

use std::collections::{HashMap, HashSet};

use super::{
    Appended, AttemptRecord, Batch, CommitReport, DlqAction, DlqEntry, DlqFilter, HandlerRecord,
    LogRecord, ManagedBy, Notice, PendingAction, ProcessedRecord, Result, TopicInfo, VersionInfo,
};
use crate::event::Event;
use crate::event::StateMap;

/// The durable state of a Sluice host: every role. Implemented for any
/// type that has them all.
pub trait Store: Log + Outcomes + Outbox + Claims + Registry + Dlq + Notices {}

impl<T: Log + Outcomes + Outbox + Claims + Registry + Dlq + Notices> Store for T {}

/// The embedded event log: its topics, appends and reads.
#[async_trait::async_trait]
pub trait Log: Send + Sync + 'static {
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

    /// Reads log records by sequence number (any topic), in order.
    async fn read_seqs(&self, seqs: &[i64]) -> Result<Vec<LogRecord>>;

    /// Every log record with event id `id` (an id can be republished),
    /// oldest first.
    async fn events_by_id(&self, id: &str) -> Result<Vec<LogRecord>>;

    /// Log records whose `causationid` is `id`: what was emitted because of
    /// that event.
    async fn events_caused_by(&self, id: &str) -> Result<Vec<LogRecord>>;
}

/// What handlers did with events: positions, processed records, per-key state, failed attempts, and the group commit that records them.
#[async_trait::async_trait]
pub trait Outcomes: Log {
    /// [`Log::read_log`], each record paired with whether `handler` has
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

    /// Processed records of event `id`, for every handler.
    async fn processed_records(&self, id: &str) -> Result<Vec<ProcessedRecord>>;

    /// For each topic `handler` has a position on: the number of events
    /// after that position (the handler's lag).
    async fn lag(&self, handler: &str) -> Result<Vec<(String, i64)>>;
}

/// Events emitted for an external broker, and the lease that lets one relay publish them.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Publishes up to `limit` outbox rows to the embedded log, in outbox
    /// order, and marks them delivered, in one transaction.
    async fn relay_outbox(&self, limit: u32, default_partitions: u32) -> Result<Vec<Appended>>;

    /// Number of outbox rows not yet delivered.
    async fn outbox_backlog(&self) -> Result<i64>;

    /// Up to `limit` undelivered outbox rows, oldest first, with their
    /// outbox sequence numbers: what a relay to an external broker
    /// publishes (it marks them with [`Outbox::outbox_delivered`] once the
    /// broker acknowledged them).
    async fn outbox_pending(&self, limit: u32) -> Result<Vec<(i64, Event)>>;

    /// Marks outbox rows delivered.
    async fn outbox_delivered(&self, seqs: &[i64]) -> Result<()>;

    /// Takes or renews the lease `name` for `holder` for `ttl_ms` from now;
    /// `true` when `holder` holds it. Another holder gets it only once it
    /// expired, so at most one instance does the leased work at a time
    /// (short of clock skew beyond the ttl).
    async fn lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool>;
}

/// Consumers' claims on the partitions of a partitioned external broker, and the positions recorded on those partitions.
#[async_trait::async_trait]
pub trait Claims: Send + Sync + 'static {
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
}

/// The handler registry: configurations and uploaded component versions.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + 'static {
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
}

/// The dead-letter queue, the keys it parks, and operators' actions on it.
#[async_trait::async_trait]
pub trait Dlq: Send + Sync + 'static {
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

    /// [`Dlq::dlq_act`], for a redrive on a chosen handler version.
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

/// Changes committed to a shared store, told as they commit.
#[async_trait::async_trait]
pub trait Notices: Send + Sync + 'static {
    /// Starts listening for the changes others commit, for as long as the
    /// receiver lives; `None` where the backend is private to one process
    /// (SQLite), which learns of its own changes directly.
    async fn notices(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Notice>>> {
        Ok(None)
    }
}
