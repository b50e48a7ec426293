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
}

impl KafkaPublisher {
    /// Creates the producer (it connects lazily).
    pub fn new(config: &BrokerConfig) -> Result<Self> {
        let producer = client_config(config)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self { producer })
    }

    /// Waits (bounded) until queued records are delivered.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        Ok(self.producer.flush(timeout)?)
    }
}

#[async_trait::async_trait]
impl Publisher for KafkaPublisher {
    /// Every event is acknowledged by all in-sync replicas before this
    /// returns.
    async fn publish(&self, events: &[Event]) -> Result<()> {
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
}
