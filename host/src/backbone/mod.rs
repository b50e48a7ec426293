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

/// `[broker]`: which backbone carries the events (`kind`, `embedded` when
/// left out), and that backbone's own settings beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

impl<'de> Deserialize<'de> for BackboneConfig {
    /// `kind` chooses the variant, and the rest of the table must be that
    /// backbone's settings (unknown fields are errors). Written by hand
    /// because serde's tagged enums have no default tag.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(deserializer)?;
        let kind = match table.remove("kind") {
            None => "embedded".to_owned(),
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "kind: expected a string, found {}",
                    other.type_str()
                )));
            }
        };
        let rest = toml::Value::Table(table);
        match kind.as_str() {
            "embedded" => embedded::EmbeddedConfig::deserialize(rest).map(Self::Embedded),
            "kafka" => kafka::KafkaConfig::deserialize(rest).map(Self::Kafka),
            other => {
                return Err(D::Error::unknown_variant(other, &["embedded", "kafka"]));
            }
        }
        .map_err(|e| D::Error::custom(format!("[broker] kind = \"{kind}\": {}", e.message())))
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

    /// How [`Source::ready`] may be waited on. `false` (the default):
    /// it resolves as long as something is waiting to be taken, so the
    /// dispatcher waits on it only when it would take it (nothing else to
    /// read, room in its window). `true`: it resolves once per change
    /// announced, whether or not [`Source::next`] read it since, so the
    /// dispatcher waits on it all the time; each wake-up (the embedded
    /// log's grows with every commit) is a pass of its loop that takes up
    /// what completed. Waiting on the embedded log's signal only when the
    /// window had room cost 40% more, smaller group commits and most of
    /// the per-key pipelining across commits (BENCHMARKS.md, session 26).
    fn wakes_per_change(&self) -> bool {
        false
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BackboneConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn the_kind_chooses_the_backbone_and_defaults_to_embedded() {
        assert_eq!(parse("").unwrap(), BackboneConfig::default());
        assert_eq!(parse("kind = \"embedded\"").unwrap().kind(), "embedded");
        let BackboneConfig::Kafka(kafka) =
            parse("kind = \"kafka\"\nbrokers = \"b:1\"\ncreate_topics = false").unwrap()
        else {
            panic!("not kafka");
        };
        assert_eq!(kafka.brokers, "b:1");
        assert!(!kafka.create_topics);
        assert_eq!(
            kafka.group_prefix,
            kafka::KafkaConfig::default().group_prefix
        );
    }

    #[test]
    fn unknown_kinds_and_fields_are_errors_naming_them() {
        let e = parse("kind = \"carrier-pigeon\"").unwrap_err().to_string();
        assert!(e.contains("carrier-pigeon") && e.contains("kafka"), "{e}");
        let e = parse("kind = \"kafka\"\nbrokerz = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("brokerz"), "{e}");
        let e = parse("brokers = \"x\"").unwrap_err().to_string();
        assert!(e.contains("brokers") && e.contains("embedded"), "{e}");
        let e = parse("kind = 3").unwrap_err().to_string();
        assert!(e.contains("kind"), "{e}");
    }

    #[test]
    fn the_config_round_trips_through_its_serialized_form() {
        let config = parse("kind = \"kafka\"\nbrokers = \"b:1\"").unwrap();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(parse(&text).unwrap(), config);
    }
}

#[cfg(all(test, not(feature = "kafka")))]
mod without_kafka {
    use super::*;

    #[tokio::test]
    async fn a_build_without_kafka_refuses_it_with_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = crate::store::open(&url, &Default::default()).await?;
        let config: BackboneConfig = toml::from_str("kind = \"kafka\"")?;
        let Err(error) = open(&config, store, watch::Sender::new(0), 1) else {
            anyhow::bail!("a Kafka backbone opened without the kafka feature");
        };
        assert!(error.to_string().contains("feature `kafka`"), "{error}");
        Ok(())
    }
}
