//! Kafka through rdkafka: an idempotent producer that publishes events in
//! order and returns once the broker has acknowledged them all
//! ([`KafkaPublisher`]), and a consumer-group member per handler whose
//! partitions start where the store says and never skip a record
//! ([`Subscription`]), its partitions claimed in the store so that
//! outcomes of a partition another instance took over are fenced.
//!
//! Everything but [`config`] needs the `kafka` cargo feature (librdkafka).

pub mod config;

#[cfg(feature = "kafka")]
mod claims;
#[cfg(feature = "kafka")]
mod consumer;
#[cfg(feature = "kafka")]
mod producer;
#[cfg(feature = "kafka")]
mod source;
#[cfg(feature = "kafka")]
mod watchdog;

pub use config::KafkaConfig;

#[cfg(feature = "kafka")]
pub use {
    claims::{ClaimStore, Claims},
    consumer::{Assigned, Input, Subscription, TopicPartition, record_of},
    producer::{KafkaPublisher, ensure_topics},
    source::Kafka,
};

/// Errors of the Kafka backbone.
#[cfg(feature = "kafka")]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kafka client failed (configuration, connection, delivery).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A delivery was cancelled before the broker answered (the producer
    /// is shutting down).
    #[error("kafka: delivery of event {0} was cancelled")]
    Cancelled(String),
    /// The thread that polls a consumer could not be started.
    #[error("cannot start the kafka consumer thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Result of this module.
#[cfg(feature = "kafka")]
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(feature = "kafka")]
impl From<Error> for super::Error {
    fn from(error: Error) -> Self {
        Self::Backbone(Box::new(error))
    }
}

/// The client configuration shared by producers and consumers: bootstrap
/// servers, then the operator's extra properties.
#[cfg(feature = "kafka")]
pub fn client_config(config: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    for (name, value) in &config.properties {
        c.set(name, value);
    }
    c
}
