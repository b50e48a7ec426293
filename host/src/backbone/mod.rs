//! Backbones: where events are consumed from and published to, behind one
//! seam. The embedded log lives in the store ([`embedded`]); Kafka (or a
//! Kafka-compatible broker such as Redpanda) is reached through rdkafka
//! ([`kafka`]), with events in the CloudEvents Kafka binding
//! ([`cloudevents`]). `[broker] kind` in the configuration chooses, and
//! [`open`] is the only place besides the configuration that knows the
//! kinds.
//!
//! A [`Backbone`] hands each handler a [`Source`]: the handler's records,
//! in order per stream, and the changes of the streams it owns. A stream is
//! a topic, or a partition of one where the backbone shares partitions
//! among host instances; positions rise within a stream (log sequence
//! numbers, offsets, or positions a backbone makes up and maps back to its
//! own delivery tags). The dispatcher reads through `Source::next` alone
//! and acknowledges through `Source::committed`.

pub mod cloudevents;
pub mod embedded;
pub mod kafka;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::event::Event;
use crate::store::{self, LogRecord, Store};

/// Errors of a backbone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backbone's own client failed (configuration, connection,
    /// delivery); the message names the backbone.
    #[error(transparent)]
    Backbone(Box<dyn std::error::Error + Send + Sync>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// This build or this backbone cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `[broker]`: which backbone carries the events, and its own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackboneConfig {
    /// The log inside the store: nothing else to run.
    Embedded(embedded::EmbeddedConfig),
    /// Apache Kafka, or a Kafka-compatible broker such as Redpanda.
    Kafka(kafka::KafkaConfig),
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self::Embedded(Default::default())
    }
}

impl BackboneConfig {
    /// The kind's name, as `kind` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Kafka(_) => "kafka",
        }
    }
}

/// Opens the backbone `config` names. `appended` announces the highest
/// sequence number of the store's log (the embedded backbone waits on it);
/// topics created on first use get `default_partitions`.
pub fn open(
    config: &BackboneConfig,
    store: Arc<dyn Store>,
    appended: watch::Sender<i64>,
    default_partitions: u32,
) -> Result<Arc<dyn Backbone>> {
    match config {
        BackboneConfig::Embedded(_) => Ok(Arc::new(embedded::Embedded::new(store, appended))),
        #[cfg(feature = "kafka")]
        BackboneConfig::Kafka(config) => Ok(Arc::new(kafka::Kafka::new(
            config,
            store,
            default_partitions,
        )?)),
        #[cfg(not(feature = "kafka"))]
        BackboneConfig::Kafka(_) => {
            let _ = default_partitions;
            Err(Error::Unsupported(
                "this build of sluice has no Kafka support (cargo feature `kafka`)".into(),
            ))
        }
    }
}

/// Something a backbone may or may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Parking a key after a dead letter: its later events are held back
    /// as references into the log, so they must stay readable there.
    ParkKeys,
}

/// A stream of records: a topic, or one partition of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    /// The topic.
    pub topic: String,
    /// The partition, where the backbone deals partitions out among host
    /// instances (each then owned by one at a time, under a claim); `None`
    /// for a whole topic read by every instance from its stored position.
    pub partition: Option<i32>,
}

/// A stream now owned by this handler here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The stream.
    pub stream: StreamId,
    /// The last position done, as the store holds it; `None`: nothing done
    /// yet, the stream starts at its first record.
    pub position: Option<i64>,
    /// The epoch of the claim it is owned under (0 without claims):
    /// outcomes commit only while no other instance claimed it since.
    pub epoch: i64,
}

/// What a source delivers, in the order it happened. Records of a stream
/// always follow the assignment that gave the stream to this handler.
#[derive(Debug)]
pub enum Input {
    /// Records of one stream, in order, each with whether the handler
    /// already processed it (`None`: not known; the dispatcher looks the
    /// ids up, all of a read at once).
    Records {
        /// Their stream.
        stream: StreamId,
        /// The records; a record's `seq` is its position in the stream.
        records: Vec<(LogRecord, Option<bool>)>,
    },
    /// These streams are now owned here.
    Assigned(Vec<Assignment>),
    /// These streams are no longer owned here.
    Revoked(Vec<StreamId>),
}

/// What [`Source::next`] took.
#[derive(Debug, Default)]
pub struct Next {
    /// The inputs, in order.
    pub inputs: Vec<Input>,
    /// There is likely more right now: read again without waiting.
    pub more: bool,
}

/// One handler's subscription, as the dispatcher reads it.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// Waits until [`Source::next`] may have something new. Cancel-safe:
    /// the dispatcher waits on it among other things.
    async fn ready(&mut self);

    /// Takes up to about `max` records (and the changes between them)
    /// without waiting for new ones.
    async fn next(&mut self, max: usize) -> Next;

    /// These positions (the last one done of each stream) are durable in
    /// the store; the backbone may acknowledge up to them.
    fn committed(&mut self, done: &[(StreamId, i64)]) -> Result<()>;
}

/// What a handler subscribes to.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The handler's name.
    pub handler: String,
    /// Its topics.
    pub topics: Vec<String>,
    /// Where a stream without a stored position starts: its first record
    /// (`true`) or the moment the subscription is made.
    pub from_earliest: bool,
    /// Most records read ahead of the dispatcher.
    pub read_ahead: usize,
    /// Most records read from a stream at a time.
    pub fetch_batch: u32,
}

/// A backbone: consumption, publishing and topics.
#[async_trait::async_trait]
pub trait Backbone: Send + Sync {
    /// The kind's name (`embedded`, `kafka`).
    fn kind(&self) -> &'static str;

    /// Whether this backbone does `feature`.
    fn supports(&self, feature: Feature) -> bool;

    /// Creates those of `topics` (name, partitions) that are missing, where
    /// the backbone creates topics.
    async fn ensure_topics(&self, topics: &[(String, u32)]) -> Result<()>;

    /// Readies a subscription that may start later (pins where `latest`
    /// starts, so that it means the moment it was made).
    async fn prepare(&self, subscription: &Subscription) -> Result<()>;

    /// Starts reading for a handler.
    async fn subscribe(&self, subscription: Subscription) -> Result<Box<dyn Source>>;

    /// Where the outbox relay publishes, when events leave the store (an
    /// external broker); `None`: the relay appends them to the store's log.
    fn publisher(&self) -> Option<Arc<dyn Publisher>>;

    /// The topic dead letters are also produced to, if any.
    fn dead_letter_topic(&self) -> Option<String>;
}

/// Publishes events to an external broker: the outbox relay's way out.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes `events` in order and returns once the broker has
    /// acknowledged every one. On an error some may have been written; the
    /// caller publishes them again (same ids), which consumers deduplicate.
    async fn publish(&self, events: &[Event]) -> Result<()>;
}
