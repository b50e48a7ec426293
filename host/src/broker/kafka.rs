//! Kafka through rdkafka: an idempotent producer that publishes events in
//! order and returns once the broker has acknowledged them all
//! ([`KafkaPublisher`]), and a consumer-group member per handler whose
//! partitions start where the store says and never skip a record
//! ([`Subscription`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message as _};
use tokio::sync::mpsc;

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

/// The producer's configuration: tuning defaults that `[broker.properties]`
/// may override (the fixed values used to win over the operator's), then
/// the guarantees of [`KafkaPublisher`], which no property may weaken.
fn producer_config(config: &BrokerConfig) -> ClientConfig {
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
    pub fn new(config: &BrokerConfig, partitions: u32) -> Result<Self> {
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

/// The store's side of a subscription: its partition claims (see
/// [`crate::store::Store::claim_partitions`]). Called on the
/// subscription's thread, during rebalances too, so it may block.
pub trait ClaimStore: Send + Sync {
    /// Claims `partitions` of `topic` for the consumer `owner` and reads
    /// their positions: partition → (last offset done, epoch).
    fn claim(
        &self,
        topic: &str,
        partitions: &[i32],
        owner: &str,
    ) -> std::result::Result<HashMap<i32, (Option<i64>, i64)>, String>;

    /// The latest claim of each partition: (topic, partition, owner).
    fn owners(&self) -> std::result::Result<Vec<(String, i32, String)>, String>;
}

/// A shared [`ClaimStore`].
pub type Claims = Arc<dyn ClaimStore>;

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

/// How often the [`Watchdog`] looks at the group.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// How long partitions stay orphaned, with the group stable, before the
/// [`Watchdog`] acts: longer than a rebalance takes to write its claims.
const ORPHAN_GRACE: Duration = Duration::from_secs(6);

/// How long a member that left to rejoin waits before subscribing again:
/// the leave (after the revocation) must reach the coordinator first.
const REJOIN_AFTER: Duration = Duration::from_secs(1);

/// Deals orphaned partitions again. A partition is orphaned when its
/// latest claim belongs to a consumer that is no longer a member of the
/// group while the group is stable. The coordinator should have rebalanced
/// when that member left or its session expired; measured with tansu
/// 0.6.0, it drops the member but gives every survivor its old
/// assignment back, so the partitions stay unconsumed until another member
/// joins. The lowest live member then leaves and rejoins as a new member,
/// which makes any coordinator deal all partitions again. On a coordinator
/// that rebalances, the new owners' claims end the orphaning within
/// [`ORPHAN_GRACE`], and the watchdog does nothing.
struct Watchdog {
    group: String,
    owner: String,
    handler: String,
    topics: Vec<String>,
    claims: Claims,
    next_check: Instant,
    orphaned_since: Option<Instant>,
    /// Left the group to rejoin at this instant.
    rejoin_at: Option<Instant>,
}

/// Whether group member `member` is the consumer `owner` (member ids are
/// `{client.id}-{uuid}`).
fn is_member(member: &str, owner: &str) -> bool {
    member
        .strip_prefix(owner)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

impl Watchdog {
    fn tick(&mut self, consumer: &BaseConsumer<GroupContext>) {
        use rdkafka::consumer::Consumer;
        let now = Instant::now();
        if let Some(at) = self.rejoin_at {
            if now >= at {
                self.rejoin_at = None;
                let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
                if let Err(error) = consumer.subscribe(&names) {
                    tracing::error!(handler = %self.handler, "kafka: subscribing again failed: {error}");
                    self.rejoin_at = Some(now + REJOIN_AFTER);
                }
            }
            return;
        }
        if now < self.next_check {
            return;
        }
        self.next_check = now + WATCH_EVERY;
        match self.orphaned(consumer) {
            Ok(orphaned) if orphaned.is_empty() => self.orphaned_since = None,
            Ok(orphaned) => {
                let since = *self.orphaned_since.get_or_insert(now);
                if now.duration_since(since) >= ORPHAN_GRACE {
                    tracing::warn!(handler = %self.handler, ?orphaned, "kafka partitions owned by no group member; rejoining the group so that they are dealt again");
                    self.orphaned_since = None;
                    consumer.unsubscribe();
                    self.rejoin_at = Some(now + REJOIN_AFTER);
                }
            }
            Err(error) => {
                self.orphaned_since = None;
                tracing::debug!(handler = %self.handler, "kafka group check: {error}");
            }
        }
    }

    /// The orphaned partitions of the subscribed topics (see [`Watchdog`]),
    /// if this consumer is the one to act on them: the live member whose
    /// id sorts first.
    fn orphaned(
        &self,
        consumer: &BaseConsumer<GroupContext>,
    ) -> std::result::Result<Vec<(String, i32, String)>, String> {
        use rdkafka::consumer::Consumer;
        let list = consumer
            .fetch_group_list(Some(&self.group), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let Some(group) = list.groups().iter().find(|g| g.name() == self.group) else {
            return Ok(Vec::new());
        };
        if group.state() != "Stable" {
            return Ok(Vec::new());
        }
        let members: Vec<&str> = group.members().iter().map(|m| m.id()).collect();
        let first = members.iter().min();
        if !first.is_some_and(|id| is_member(id, &self.owner)) {
            return Ok(Vec::new());
        }
        let owners = self.claims.owners()?;
        Ok(owners
            .into_iter()
            .filter(|(topic, _, owner)| {
                !owner.is_empty()
                    && self.topics.contains(topic)
                    && !members.iter().any(|id| is_member(id, owner))
            })
            .collect())
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
        config: &BrokerConfig,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_override_the_producer_tuning_but_not_its_guarantees() {
        let mut config = BrokerConfig::default();
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
