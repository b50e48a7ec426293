//! Kafka through rdkafka: an idempotent producer that publishes events in
//! order and returns once the broker has acknowledged them all.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::cloudevents;
use super::{Error, Publisher, Result};
use crate::config::BrokerConfig;
use crate::event::Event;

/// The client configuration shared by producers and consumers: bootstrap
/// servers, then the operator's extra properties.
pub fn client_config(config: &BrokerConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    for (name, value) in &config.properties {
        c.set(name, value);
    }
    c
}

/// Publishes events to Kafka: `acks=all` and idempotence, so a retried send
/// is neither duplicated nor reordered within a partition, and the Java
/// client's partitioner (murmur2 of the key), so that a key lands where
/// other Kafka clients put it.
pub struct KafkaPublisher {
    producer: FutureProducer,
    config: BrokerConfig,
    /// Partitions of topics created on first use.
    partitions: i32,
    /// Topics known to exist (created or checked by this producer).
    known_topics: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Creates those of `topics` that do not exist (`partitions` each, or the
/// count given per topic).
pub async fn ensure_topics(config: &BrokerConfig, topics: &[(String, i32)]) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<_> = client_config(config).create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(
                name,
                (*partitions).max(1),
                TopicReplication::Fixed(config.replication_factor.max(1)),
            )
        })
        .collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await? {
        match result {
            Ok(topic) => tracing::info!(%topic, "kafka topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Kafka(rdkafka::error::KafkaError::AdminOp(code)))
                    .inspect_err(|_| tracing::error!(%topic, "cannot create kafka topic: {code}"));
            }
        }
    }
    Ok(())
}

impl KafkaPublisher {
    /// Creates the producer (it connects lazily); topics created on first
    /// use get `partitions` partitions.
    pub fn new(config: &BrokerConfig, partitions: u32) -> Result<Self> {
        let producer = client_config(config)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self {
            producer,
            config: config.clone(),
            partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
            known_topics: Default::default(),
        })
    }

    /// Sends `events` and waits for every acknowledgement.
    async fn send_all(&self, events: &[Event]) -> Result<()> {
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            let record = cloudevents::encode(event);
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (name, value) in &record.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
            let mut to = FutureRecord::to(&record.topic)
                .payload(&record.value)
                .headers(headers);
            if let Some(key) = &record.key {
                to = to.key(key);
            }
            // Enqueue without waiting for the broker, so a batch costs one
            // round trip; wait only while the local queue is full.
            let mut to = Some(to);
            loop {
                let Some(next) = to.take() else { break };
                match self.producer.send_result(next) {
                    Ok(delivery) => deliveries.push((event.id.clone(), delivery)),
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        self.producer.poll(Duration::from_millis(10));
                        to = Some(back);
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for (id, delivery) in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(Error::Cancelled(id)),
            }
        }
        Ok(())
    }

    /// Waits (bounded) until queued records are delivered.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        Ok(self.producer.flush(timeout)?)
    }
}

/// A consumed message in neutral form, and where it was.
pub fn record_of<M: rdkafka::Message>(m: &M) -> (cloudevents::Record, cloudevents::Position) {
    use rdkafka::message::Headers;
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    (
        cloudevents::Record {
            topic: m.topic().to_owned(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        },
        cloudevents::Position {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
        },
    )
}

/// A partition of a topic.
pub type TopicPartition = (String, i32);

/// A change of the partitions this consumer owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalanced {
    /// These partitions are now ours.
    Assigned(Vec<TopicPartition>),
    /// These partitions are no longer ours.
    Revoked(Vec<TopicPartition>),
}

/// Forwards rebalances to the dispatcher, which owns the positions.
pub struct RebalanceContext {
    events: tokio::sync::mpsc::UnboundedSender<Rebalanced>,
}

fn partitions(list: &rdkafka::TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl rdkafka::client::ClientContext for RebalanceContext {}

impl rdkafka::consumer::ConsumerContext for RebalanceContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let event = match rebalance {
            Rebalance::Assign(list) => Rebalanced::Assigned(partitions(list)),
            Rebalance::Revoke(list) => Rebalanced::Revoked(partitions(list)),
            Rebalance::Error(e) => {
                tracing::error!("kafka rebalance failed: {e}");
                return;
            }
        };
        tracing::info!(?event, "kafka partitions rebalanced");
        // The receiver is gone only while the dispatcher stops.
        let _ = self.events.send(event);
    }
}

/// A handler's consumer: one member of the group `{group_prefix}.{handler}`,
/// which every host instance joins, so the partitions are shared among
/// them. Offsets are not auto-committed: the store holds the positions
/// (written with the outcomes), and they are also committed to Kafka after
/// each outcome commit, so that standard lag tooling works.
pub struct Subscription {
    consumer: rdkafka::consumer::StreamConsumer<RebalanceContext>,
}

impl Subscription {
    /// Joins the group and subscribes to `topics`. `from_earliest` decides
    /// where a partition without a committed offset starts. Returns the
    /// subscription and its stream of rebalances.
    pub fn new(
        config: &BrokerConfig,
        handler: &str,
        topics: &[String],
        from_earliest: bool,
    ) -> Result<(Self, tokio::sync::mpsc::UnboundedReceiver<Rebalanced>)> {
        use rdkafka::consumer::Consumer;
        let (events, rebalances) = tokio::sync::mpsc::unbounded_channel();
        let consumer: rdkafka::consumer::StreamConsumer<RebalanceContext> = client_config(config)
            .set("group.id", format!("{}.{handler}", config.group_prefix))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                if from_earliest { "earliest" } else { "latest" },
            )
            .create_with_context(RebalanceContext { events })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok((Self { consumer }, rebalances))
    }

    /// The next record and where it was.
    pub async fn recv(&self) -> Result<(cloudevents::Record, cloudevents::Position)> {
        Ok(record_of(&self.consumer.recv().await?))
    }

    /// Continues `partition` of `topic` at `offset` (asynchronously:
    /// records already fetched may still arrive, and the caller skips
    /// them).
    pub fn seek(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        use rdkafka::consumer::Consumer;
        self.consumer.seek(
            topic,
            partition,
            rdkafka::Offset::Offset(offset),
            Duration::ZERO,
        )?;
        Ok(())
    }

    /// Commits, asynchronously, the next offset to read of each partition,
    /// after the positions were committed to the store.
    pub fn commit(&self, next: &[(String, i32, i64)]) -> Result<()> {
        use rdkafka::consumer::{CommitMode, Consumer};
        if next.is_empty() {
            return Ok(());
        }
        let mut list = rdkafka::TopicPartitionList::new();
        for (topic, partition, offset) in next {
            list.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))?;
        }
        self.consumer.commit(&list, CommitMode::Async)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Publisher for KafkaPublisher {
    /// Every event is acknowledged by all in-sync replicas before this
    /// returns. Topics not seen before are created first if allowed
    /// (a producer would otherwise wait for them until its timeout).
    async fn publish(&self, events: &[Event]) -> Result<()> {
        if self.config.create_topics {
            let new: Vec<(String, i32)> = {
                let known = self.known_topics.lock().unwrap_or_else(|e| e.into_inner());
                let mut new: Vec<(String, i32)> = events
                    .iter()
                    .filter(|e| !known.contains(&e.topic))
                    .map(|e| (e.topic.clone(), self.partitions))
                    .collect();
                new.sort();
                new.dedup();
                new
            };
            if !new.is_empty() {
                ensure_topics(&self.config, &new).await?;
                self.known_topics
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(new.into_iter().map(|(name, _)| name));
            }
        }
        self.send_all(events).await
    }
}
