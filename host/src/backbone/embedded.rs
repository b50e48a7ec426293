//! The embedded backbone: the log inside the store. Every host instance
//! reads a handler's topics whole, each from the handler's stored position
//! (log sequence numbers), woken when the log grows; emitted events are
//! appended in the commit itself or by the relay.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    Assignment, Backbone, Feature, Input, Next, Publisher, Result, Source, StreamId, Subscription,
};
use crate::store::{self, Batch, Store};

/// `[broker]` with `kind = "embedded"`: nothing to set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {}

/// The log in the store.
pub struct Embedded {
    store: Arc<dyn Store>,
    appended: watch::Sender<i64>,
}

impl Embedded {
    /// The backbone over `store`'s log; `appended` announces its growth.
    pub fn new(store: Arc<dyn Store>, appended: watch::Sender<i64>) -> Self {
        Self { store, appended }
    }
}

#[async_trait::async_trait]
impl Backbone for Embedded {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn supports(&self, feature: Feature) -> bool {
        match feature {
            Feature::ParkKeys => true,
        }
    }

    /// The store creates the log's topics (`[[topics]]` at start, others on
    /// first append).
    async fn ensure_topics(&self, _topics: &[(String, u32)]) -> Result<()> {
        Ok(())
    }

    async fn prepare(&self, subscription: &Subscription) -> Result<()> {
        pin_positions(&self.store, subscription).await?;
        Ok(())
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<Box<dyn Source>> {
        let positions = pin_positions(&self.store, &subscription).await?;
        let assigned = positions
            .iter()
            .map(|(topic, position)| Assignment {
                stream: StreamId {
                    topic: topic.clone(),
                    partition: None,
                },
                position: Some(*position),
                epoch: 0,
            })
            .collect();
        Ok(Box::new(LogSource {
            store: self.store.clone(),
            handler: subscription.handler,
            fetch_batch: subscription.fetch_batch.max(1),
            topics: positions,
            assigned: Some(assigned),
            log: self.appended.subscribe(),
        }))
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        None
    }

    fn dead_letter_topic(&self) -> Option<String> {
        None
    }
}

/// A handler's reading of the log: each topic from where it read last.
struct LogSource {
    store: Arc<dyn Store>,
    handler: String,
    fetch_batch: u32,
    /// Each topic and the highest sequence number read.
    topics: Vec<(String, i64)>,
    /// The topics with their stored positions, until delivered.
    assigned: Option<Vec<Assignment>>,
    log: watch::Receiver<i64>,
}

#[async_trait::async_trait]
impl Source for LogSource {
    async fn ready(&mut self) {
        if self.assigned.is_some() {
            return;
        }
        if self.log.changed().await.is_err() {
            // No one appends any more; the dispatcher's poll still reads.
            std::future::pending::<()>().await;
        }
    }

    /// The log's signal: each append is announced once.
    fn wakes_per_change(&self) -> bool {
        true
    }

    /// Reads the next events of every topic, each record with its processed
    /// mark (one statement per topic). Positions move only once every read
    /// is done, so a dropped call loses nothing.
    async fn next(&mut self, max: usize) -> Next {
        if let Some(assigned) = self.assigned.take() {
            return Next {
                inputs: vec![Input::Assigned(assigned)],
                more: true,
            };
        }
        let mut next = Next::default();
        let mut room = max;
        let mut read = Vec::with_capacity(self.topics.len());
        for (topic, after) in &self.topics {
            if room == 0 {
                break;
            }
            let limit = self
                .fetch_batch
                .min(u32::try_from(room).unwrap_or(u32::MAX));
            let records = match self
                .store
                .read_log_for(&self.handler, topic, *after, limit)
                .await
            {
                Ok(records) => records,
                Err(error) => {
                    tracing::error!(handler = %self.handler, %topic, "reading the log failed: {error}");
                    break;
                }
            };
            if records.len() as u32 >= limit {
                next.more = true;
            }
            room = room.saturating_sub(records.len());
            read.push(records);
        }
        for ((topic, after), records) in self.topics.iter_mut().zip(read) {
            let Some(last) = records.last() else {
                continue;
            };
            *after = last.0.seq;
            next.inputs.push(Input::Records {
                stream: StreamId {
                    topic: topic.clone(),
                    partition: None,
                },
                records: records
                    .into_iter()
                    .map(|(r, done)| (r, Some(done)))
                    .collect(),
            });
        }
        next
    }

    /// The positions are in the store already, written with the outcomes.
    fn committed(&mut self, _done: &[(StreamId, i64)]) -> Result<()> {
        Ok(())
    }
}

/// The position of the subscription on each of its topics, in order. A
/// topic without a stored position gets one now, from `from_earliest`, so
/// that `latest` means the moment the subscription was made, not every
/// restart.
pub async fn pin_positions(
    store: &Arc<dyn Store>,
    subscription: &Subscription,
) -> store::Result<Vec<(String, i64)>> {
    let handler = &subscription.handler;
    let mut positions = Vec::new();
    let mut pinned = Vec::new();
    let mut last_seqs: Option<HashMap<String, i64>> = None;
    for name in &subscription.topics {
        let position = match store.position(handler, name).await? {
            Some(p) => p,
            None => {
                let p = if subscription.from_earliest {
                    0
                } else {
                    if last_seqs.is_none() {
                        last_seqs = Some(
                            store
                                .topics()
                                .await?
                                .into_iter()
                                .map(|t| (t.name, t.last_seq))
                                .collect(),
                        );
                    }
                    last_seqs
                        .as_ref()
                        .and_then(|l| l.get(name).copied())
                        .unwrap_or(0)
                };
                pinned.push((handler.clone(), name.clone(), p));
                p
            }
        };
        positions.push((name.clone(), position));
    }
    if !pinned.is_empty() {
        store
            .commit(&Batch {
                positions: pinned,
                ..Default::default()
            })
            .await?;
    }
    Ok(positions)
}
