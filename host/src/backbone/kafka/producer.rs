//! The producer: publishes events in order and returns once the broker
//! acknowledged them all; and topic creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{Error, KafkaConfig, Result, client_config};
use crate::backbone::{Publisher, cloudevents};
use crate::event::Event;

/// Publishes events to Kafka: `acks=all` and idempotence, so a retried send
/// is neither duplicated nor reordered within a partition, and the Java
/// client's partitioner (murmur2 of the key), so that a key lands where
/// other Kafka clients put it.
pub struct KafkaPublisher {
    producer: FutureProducer,
    config: KafkaConfig,
    /// Partitions of topics created on first use.
    partitions: i32,
    /// Topics known to exist (created or checked by this producer).
    known_topics: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Creates those of `topics` that do not exist (`partitions` each, or the
/// count given per topic).
pub async fn ensure_topics(config: &KafkaConfig, topics: &[(String, i32)]) -> Result<()> {
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

/// The producer's configuration: tuning defaults that `[broker.properties]`
/// may override (the fixed values used to win over the operator's), then
/// the guarantees of [`KafkaPublisher`], which no property may weaken.
fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = client_config(config);
    for (name, value) in [("linger.ms", "5"), ("message.timeout.ms", "30000")] {
        if !config.properties.contains_key(name) {
            client.set(name, value);
        }
    }
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random");
    client
}

impl KafkaPublisher {
    /// Creates the producer (it connects lazily); topics created on first
    /// use get `partitions` partitions.
    pub fn new(config: &KafkaConfig, partitions: u32) -> Result<Self> {
        let producer = producer_config(config).create()?;
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

#[async_trait::async_trait]
impl Publisher for KafkaPublisher {
    /// Every event is acknowledged by all in-sync replicas before this
    /// returns. Topics not seen before are created first if allowed
    /// (a producer would otherwise wait for them until its timeout).
    async fn publish(&self, events: &[Event]) -> crate::backbone::Result<()> {
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
        Ok(self.send_all(events).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_override_the_producer_tuning_but_not_its_guarantees() {
        let mut config = KafkaConfig::default();
        let defaults = producer_config(&config);
        assert_eq!(defaults.get("linger.ms"), Some("5"));
        assert_eq!(defaults.get("acks"), Some("all"));
        for (name, value) in [
            ("linger.ms", "0"),
            ("acks", "1"),
            ("enable.idempotence", "false"),
        ] {
            config.properties.insert(name.into(), value.into());
        }
        let set = producer_config(&config);
        assert_eq!(set.get("linger.ms"), Some("0"));
        assert_eq!(set.get("acks"), Some("all"));
        assert_eq!(set.get("enable.idempotence"), Some("true"));
    }
}
