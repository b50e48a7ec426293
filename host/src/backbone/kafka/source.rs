//! The Kafka backbone behind the seam: the producer for the relay, a group
//! member per handler as its [`Source`], topics created where allowed.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::claims::StoreClaims;
use super::consumer::{Input as Polled, Subscription as Member};
use super::{KafkaConfig, KafkaPublisher, ensure_topics};
use crate::backbone::{
    self, Assignment, Backbone, Feature, Input, Next, Publisher, Source, StreamId, Subscription,
    cloudevents,
};
use crate::store::{LogRecord, Store, now_ms};

/// Most inputs taken from the consumer at once (one processed-ids look-up
/// for them).
const TAKE: usize = 512;

/// Kafka as the backbone.
pub struct Kafka {
    config: KafkaConfig,
    store: Arc<dyn Store>,
    publisher: Arc<KafkaPublisher>,
}

impl Kafka {
    /// The backbone on the cluster `config` names (clients connect lazily);
    /// topics created on first publish get `default_partitions`.
    pub fn new(
        config: &KafkaConfig,
        store: Arc<dyn Store>,
        default_partitions: u32,
    ) -> super::Result<Self> {
        Ok(Self {
            config: config.clone(),
            store,
            publisher: Arc::new(KafkaPublisher::new(config, default_partitions)?),
        })
    }
}

#[async_trait::async_trait]
impl Backbone for Kafka {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn supports(&self, feature: Feature) -> bool {
        match feature {
            // Held-back events are references into the embedded log.
            Feature::ParkKeys => false,
        }
    }

    async fn ensure_topics(&self, topics: &[(String, u32)]) -> backbone::Result<()> {
        if !self.config.create_topics {
            return Ok(());
        }
        let topics: Vec<(String, i32)> = topics
            .iter()
            .map(|(name, partitions)| {
                (name.clone(), i32::try_from(*partitions).unwrap_or(i32::MAX))
            })
            .collect();
        Ok(ensure_topics(&self.config, &topics).await?)
    }

    /// Positions come from the partitions' claims as they are assigned.
    async fn prepare(&self, _subscription: &Subscription) -> backbone::Result<()> {
        Ok(())
    }

    /// Joins the group `{group_prefix}.{handler}`. Needs to run inside a
    /// tokio runtime, which the consumer's thread reads the store with.
    async fn subscribe(&self, subscription: Subscription) -> backbone::Result<Box<dyn Source>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| backbone::Error::Unsupported(e.to_string()))?;
        let claims = Arc::new(StoreClaims {
            runtime,
            store: self.store.clone(),
            handler: subscription.handler.clone(),
        });
        let (member, polled) = Member::start(
            &self.config,
            &subscription.handler,
            &subscription.topics,
            subscription.from_earliest,
            claims,
            subscription.read_ahead,
        )?;
        Ok(Box::new(GroupSource {
            member,
            polled,
            peeked: None,
            closed: false,
        }))
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        Some(self.publisher.clone())
    }

    fn dead_letter_topic(&self) -> Option<String> {
        Some(self.config.dead_letter_topic.clone()).filter(|topic| !topic.is_empty())
    }
}

/// A handler's group member, as a [`Source`].
struct GroupSource {
    member: Member,
    polled: mpsc::Receiver<Polled>,
    /// Received by [`Source::ready`], not taken yet.
    peeked: Option<Polled>,
    /// The consumer's thread has ended.
    closed: bool,
}

#[async_trait::async_trait]
impl Source for GroupSource {
    async fn ready(&mut self) {
        if self.peeked.is_some() {
            return;
        }
        if self.closed {
            std::future::pending::<()>().await;
        }
        match self.polled.recv().await {
            Some(input) => self.peeked = Some(input),
            None => self.closed = true,
        }
    }

    async fn next(&mut self, max: usize) -> Next {
        let want = max.clamp(1, TAKE);
        let mut taken = 0;
        let mut next = Next::default();
        while taken < want {
            let polled = match self.peeked.take() {
                Some(input) => input,
                None => match self.polled.try_recv() {
                    Ok(input) => input,
                    Err(_) => break,
                },
            };
            taken += 1;
            push(&mut next.inputs, polled);
        }
        next.more = taken >= want;
        next
    }

    /// Commits, asynchronously, the next offset of each partition to Kafka,
    /// so that standard lag tooling works; the store holds the positions.
    fn committed(&mut self, done: &[(StreamId, i64)]) -> backbone::Result<()> {
        let next: Vec<(String, i32, i64)> = done
            .iter()
            .filter_map(|(stream, done)| Some((stream.topic.clone(), stream.partition?, done + 1)))
            .collect();
        Ok(self.member.commit(&next)?)
    }
}

/// Appends what the consumer polled to `inputs`: a record joins the run of
/// its partition's records before it, if that is the last input.
fn push(inputs: &mut Vec<Input>, polled: Polled) {
    match polled {
        Polled::Record(record, at) => {
            let topic = record.topic.clone();
            let log = LogRecord {
                seq: at.offset,
                partition: u32::try_from(at.partition).unwrap_or_default(),
                offset: at.offset,
                appended_at: at.timestamp_ms.unwrap_or_else(now_ms),
                event: cloudevents::decode(record, at),
            };
            if let Some(Input::Records { stream, records }) = inputs.last_mut()
                && stream.partition == Some(at.partition)
                && stream.topic == topic
            {
                records.push((log, None));
                return;
            }
            let stream = StreamId {
                topic,
                partition: Some(at.partition),
            };
            inputs.push(Input::Records {
                stream,
                records: vec![(log, None)],
            });
        }
        Polled::Assigned(list) => inputs.push(Input::Assigned(
            list.into_iter()
                .map(|((topic, partition), position, epoch)| Assignment {
                    stream: StreamId {
                        topic,
                        partition: Some(partition),
                    },
                    position,
                    epoch,
                })
                .collect(),
        )),
        Polled::Revoked(list) => inputs.push(Input::Revoked(
            list.into_iter()
                .map(|(topic, partition)| StreamId {
                    topic,
                    partition: Some(partition),
                })
                .collect(),
        )),
    }
}
