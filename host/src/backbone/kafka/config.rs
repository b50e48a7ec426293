//! `[broker]` with `kind = "kafka"`: where the cluster is and how Sluice
//! uses it. Free of rdkafka types, so that a build without the `kafka`
//! feature still reads (and refuses with a clear error) such a file.

use serde::{Deserialize, Serialize};

/// The Kafka backbone's configuration (the `[broker]` table besides its
/// `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers of the Kafka cluster, `host:port[,host:port]`.
    pub brokers: String,
    /// Prefix of consumer group names: a handler consumes in the group
    /// `{group_prefix}.{handler}`, shared by every host instance.
    pub group_prefix: String,
    /// Topic that dead-letter entries are also produced to, through the
    /// outbox, with what failed in `ce_dlq*` headers (see
    /// [`crate::store::dead_letter_event`]); empty: not produced.
    pub dead_letter_topic: String,
    /// Create missing topics: those handlers subscribe to, at start, and
    /// those events are published to, on first use (with
    /// `pipeline.default_partitions`, or the partitions of `[[topics]]`).
    /// Turn off where topics are managed elsewhere.
    pub create_topics: bool,
    /// Replication factor of the topics created.
    pub replication_factor: i32,
    /// Extra librdkafka properties for producers and consumers
    /// (`security.protocol`, `sasl.*`, ...). They override Sluice's tuning
    /// defaults (`linger.ms` 5 and `message.timeout.ms` 30000 for
    /// producers, `fetch.wait.max.ms` 50 for consumers), not the delivery
    /// guarantees (`acks=all`, idempotence, the murmur2 partitioner, manual
    /// offset commits, the group id). A consumer's `client.id` is
    /// `{client.id}-{handler}-{random}` (`sluice` when unset): unique, as
    /// it names the owner of the partitions the consumer claims.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_prefix: "sluice".into(),
            dead_letter_topic: "sluice.dlq".into(),
            create_topics: true,
            replication_factor: 1,
            properties: Default::default(),
        }
    }
}
