//! Brokers: where events are consumed from and published to, behind one
//! seam. The embedded log lives in the store ([`crate::store`]); Kafka (or
//! a Kafka-compatible broker such as Redpanda) is reached through rdkafka
//! ([`kafka`]), with events in the CloudEvents Kafka binding
//! ([`cloudevents`]). `[broker] kind` in the configuration chooses.

pub mod cloudevents;
pub mod kafka;

/// Errors of a broker.
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
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Publishes events to an external broker: the outbox relay's way out.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes `events` in order and returns once the broker has
    /// acknowledged every one. On an error some may have been written; the
    /// caller publishes them again (same ids), which consumers deduplicate.
    async fn publish(&self, events: &[crate::event::Event]) -> Result<()>;
}
