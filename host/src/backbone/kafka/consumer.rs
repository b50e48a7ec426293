//! The consumer: one group member per handler, polled on a thread of its
//! own, whose partitions start where the store says and never skip a
//! record.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::consumer::BaseConsumer;
use tokio::sync::mpsc;

use super::watchdog::{WATCH_EVERY, Watchdog};
use super::{Claims, KafkaConfig, Result, client_config};
use crate::backbone::cloudevents;

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

/// What a subscription delivers, in the order it happened: records, and
/// the changes of the partitions this member owns between them. A record
/// always follows the `Assigned` that gave its partition to this member.
#[derive(Debug)]
pub enum Input {
    /// A consumed record and where it was.
    Record(cloudevents::Record, cloudevents::Position),
    /// These partitions are now ours, each with its claim (see
    /// [`Claims`]): the position the store held when it was claimed (the
    /// last offset done; the consumer starts right after it) and the
    /// claim's epoch. Position `None`: nothing done yet, the consumer
    /// starts at the group's committed offset or, without one, where
    /// `auto.offset.reset` says.
    Assigned(Vec<Assigned>),
    /// These partitions are no longer ours.
    Revoked(Vec<TopicPartition>),
}

/// An assigned partition, its stored position and its claim's epoch.
pub type Assigned = (TopicPartition, Option<i64>, i64);

/// Gives each assigned partition its start offset from the store, inside
/// the rebalance itself: the consumer never starts anywhere else, whatever
/// offsets other members committed to Kafka, and no seek races the fetch.
struct GroupContext {
    inputs: mpsc::Sender<Input>,
    claims: Claims,
    stop: Arc<AtomicBool>,
    handler: String,
    /// This consumer's `client.id`, which names it in its claims and
    /// prefixes its group member id.
    owner: String,
    /// The next offset each owned partition must deliver (see
    /// [`Contiguity`]); touched by the polling thread only.
    next: std::sync::Mutex<HashMap<TopicPartition, Contiguity>>,
}

/// What the polling thread knows of where a partition stands. A fetch
/// from an offset inside a record batch must return that batch (the client
/// skips its earlier records); measured with tansu 0.6.0, it returns the
/// next batch instead, so a consumer assigned at offset N may first see
/// N + k. Taking that record would skip the ones in between, so a
/// partition must go on exactly where it stands: a gap makes the thread
/// seek back [`REWIND`] records (synchronously, not below the log start)
/// and drop what comes before the expected offset; only a gap still there
/// after that seek is real (a compacted or transactional topic).
#[derive(Debug, Clone, Copy)]
struct Contiguity {
    /// The offset expected next.
    next: i64,
    /// A seek to `next` was done for the current gap.
    sought: bool,
}

/// How far before the expected offset a seek after a gap goes: more than
/// a record batch holds in practice.
const REWIND: i64 = 10_000;

/// What to do with a polled record.
enum Verdict {
    Deliver,
    Drop,
    /// Seek to this offset, and drop the record.
    SeekTo(i64),
}

impl GroupContext {
    fn lock_next(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, Contiguity>> {
        self.next.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A seek failed: the next gap seeks again.
    fn unseek(&self, topic: &str, partition: i32) {
        if let Some(c) = self.lock_next().get_mut(&(topic.to_owned(), partition)) {
            c.sought = false;
        }
    }

    /// Checks a polled record against where its partition stands.
    fn verdict(&self, topic: &str, partition: i32, offset: i64) -> Verdict {
        let mut next = self.lock_next();
        let tp = (topic.to_owned(), partition);
        let Some(c) = next.get_mut(&tp) else {
            // Start unknown (nothing stored): the first record sets it.
            next.insert(
                tp,
                Contiguity {
                    next: offset + 1,
                    sought: false,
                },
            );
            return Verdict::Deliver;
        };
        if offset < c.next {
            return Verdict::Drop;
        }
        if offset > c.next && !c.sought {
            c.sought = true;
            tracing::warn!(handler = %self.handler, topic, partition, offset, expected = c.next, "record beyond the expected offset; seeking back");
            return Verdict::SeekTo(c.next - REWIND);
        }
        c.next = offset + 1;
        c.sought = false;
        Verdict::Deliver
    }
}

fn partitions(list: &rdkafka::TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl GroupContext {
    /// Claims the partitions in `list`; retried while the store is
    /// unreachable (nothing can be consumed without a claim). `None` when
    /// the subscription stops meanwhile.
    fn claim(&self, list: &[TopicPartition]) -> Option<Vec<Assigned>> {
        let mut by_topic: HashMap<&str, Vec<i32>> = HashMap::new();
        for (topic, partition) in list {
            by_topic.entry(topic).or_default().push(*partition);
        }
        let mut assigned = Vec::with_capacity(list.len());
        for (topic, partitions) in by_topic {
            let claimed = loop {
                match self.claims.claim(topic, &partitions, &self.owner) {
                    Ok(claimed) => break claimed,
                    Err(error) => {
                        if self.stop.load(Ordering::Relaxed) {
                            return None;
                        }
                        tracing::error!(handler = %self.handler, %topic, "claiming assigned partitions failed, retrying: {error}");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            };
            for partition in partitions {
                let (position, epoch) = claimed.get(&partition).copied().unwrap_or((None, 0));
                assigned.push(((topic.to_owned(), partition), position, epoch));
            }
        }
        Some(assigned)
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut rdkafka::TopicPartitionList,
        cooperative: bool,
    ) -> rdkafka::error::KafkaResult<()> {
        use rdkafka::consumer::Consumer;
        let Some(assigned) = self.claim(&partitions(tpl)) else {
            return Ok(());
        };
        for ((topic, partition), stored, _) in &assigned {
            if let Some(done) = stored {
                tpl.set_partition_offset(topic, *partition, rdkafka::Offset::Offset(done + 1))?;
            }
        }
        tracing::info!(handler = %self.handler, ?assigned, "kafka partitions assigned");
        {
            let mut next = self.lock_next();
            for (tp, stored, _) in &assigned {
                match stored {
                    Some(done) => next.insert(
                        tp.clone(),
                        Contiguity {
                            next: done + 1,
                            sought: false,
                        },
                    ),
                    None => next.remove(tp),
                };
            }
        }
        // Before the records: they come from later polls of this thread.
        let _ = self.inputs.blocking_send(Input::Assigned(assigned));
        if cooperative {
            consumer.incremental_assign(tpl)
        } else {
            consumer.assign(tpl)
        }
    }
}

impl rdkafka::client::ClientContext for GroupContext {}

impl rdkafka::consumer::ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut rdkafka::TopicPartitionList,
    ) {
        use rdkafka::consumer::{Consumer, RebalanceProtocol};
        use rdkafka::types::RDKafkaRespErr;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, tpl, cooperative)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = partitions(tpl);
                tracing::info!(handler = %self.handler, ?revoked, "kafka partitions revoked");
                {
                    let mut next = self.lock_next();
                    for tp in &revoked {
                        next.remove(tp);
                    }
                }
                let _ = self.inputs.blocking_send(Input::Revoked(revoked));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                let code: rdkafka::types::RDKafkaErrorCode = other.into();
                tracing::error!(handler = %self.handler, "kafka rebalance failed: {code}");
                let _ = self.inputs.blocking_send(Input::Revoked(partitions(tpl)));
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::error!(handler = %self.handler, "kafka (un)assignment failed: {error}");
        }
    }
}

/// A handler's consumer: one member of the group `{group_prefix}.{handler}`,
/// which every host instance joins, so the partitions are shared among
/// them. A thread of its own polls it and sends [`Input`]s in order. Offsets
/// are not auto-committed: the store holds the positions (written with the
/// outcomes); they are also committed to Kafka after each outcome commit,
/// so that standard lag tooling works.
pub struct Subscription {
    consumer: Arc<BaseConsumer<GroupContext>>,
    stop: Arc<AtomicBool>,
}

impl Subscription {
    /// Joins the group and subscribes to `topics`; `claims` claims the
    /// partitions in the store on each assignment. `from_earliest` decides where
    /// a partition without any position starts. `capacity` bounds the
    /// records read ahead.
    pub fn start(
        config: &KafkaConfig,
        handler: &str,
        topics: &[String],
        from_earliest: bool,
        claims: Claims,
        capacity: usize,
    ) -> Result<(Self, mpsc::Receiver<Input>)> {
        use rdkafka::consumer::Consumer;
        let (inputs, receiver) = mpsc::channel(capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let group = format!("{}.{handler}", config.group_prefix);
        // Unique per consumer: it names the owner of each claim, and group
        // member ids start with it (`{client.id}-{uuid}`), which is how the
        // watchdog tells whether a claim's owner is still in the group.
        let owner = format!(
            "{}-{handler}-{}",
            config
                .properties
                .get("client.id")
                .map_or("sluice", String::as_str),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut client = client_config(config);
        if !config.properties.contains_key("fetch.wait.max.ms") {
            // How long a fetch may wait for records. librdkafka's 500 ms
            // default was the p50 latency of `sluice bench --setup kafka-wasm
            // --rate 1000` on tansu (445 ms; 99 ms with 50). tansu 0.6.0
            // always waits out the full time, records or not, so on tansu
            // set 5 (README); Kafka and Redpanda answer once records are
            // there, and a short wait would only poll an idle topic faster.
            client.set("fetch.wait.max.ms", "50");
        }
        let consumer: BaseConsumer<GroupContext> = client
            .set("group.id", &group)
            .set("client.id", &owner)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                if from_earliest { "earliest" } else { "latest" },
            )
            .create_with_context(GroupContext {
                inputs: inputs.clone(),
                claims: claims.clone(),
                stop: stop.clone(),
                handler: handler.to_owned(),
                owner: owner.clone(),
                next: Default::default(),
            })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let consumer = Arc::new(consumer);
        let polled = consumer.clone();
        let stopped = stop.clone();
        let name = handler.to_owned();
        let mut watchdog = Watchdog {
            group,
            owner,
            handler: handler.to_owned(),
            topics: topics.to_vec(),
            claims,
            next_check: Instant::now() + WATCH_EVERY,
            orphaned_since: None,
            rejoin_at: None,
        };
        std::thread::Builder::new()
            .name(format!("kafka-{handler}"))
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    watchdog.tick(&polled);
                    match polled.poll(Duration::from_millis(100)) {
                        None => {}
                        // Between leaving and rejoining nothing is ours.
                        Some(Ok(_)) if watchdog.rejoin_at.is_some() => {}
                        Some(Ok(m)) => {
                            let verdict =
                                polled
                                    .context()
                                    .verdict(m.topic(), m.partition(), m.offset());
                            match verdict {
                                Verdict::Deliver => {}
                                Verdict::Drop => continue,
                                Verdict::SeekTo(offset) => {
                                    let (topic, partition) = (m.topic().to_owned(), m.partition());
                                    drop(m);
                                    // Not below the log start: the reset
                                    // policy would move it elsewhere.
                                    let low = polled
                                        .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                                        .map(|(low, _)| low)
                                        .unwrap_or(0);
                                    let offset = offset.max(low).max(0);
                                    if let Err(error) = polled.seek(
                                        &topic,
                                        partition,
                                        rdkafka::Offset::Offset(offset),
                                        Duration::from_secs(10),
                                    ) {
                                        // Try again on the next record.
                                        tracing::warn!(handler = %name, %topic, partition, "seek failed: {error}");
                                        polled.context().unseek(&topic, partition);
                                    }
                                    continue;
                                }
                            }
                            let (record, at) = record_of(&m);
                            drop(m);
                            if inputs.blocking_send(Input::Record(record, at)).is_err() {
                                break;
                            }
                        }
                        Some(Err(error)) => {
                            tracing::warn!(handler = %name, "kafka: {error}");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
                // Leave the group now, so the partitions move at once.
                polled.unsubscribe();
                let _ = polled.poll(Duration::from_millis(100));
            })?;
        Ok((Self { consumer, stop }, receiver))
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

impl Drop for Subscription {
    /// The polling thread leaves the group and ends.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
