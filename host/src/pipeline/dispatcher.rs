//! One handler's dispatcher: a single task that owns all of the handler's
//! bookkeeping, so no locks are needed.
//!
//! * **Reading.** Each subscribed topic is read from the handler's own
//!   position (fan-out: every handler sees every event). Events the type
//!   filter rejects, and duplicates (an id already processed, or already in
//!   flight), are skipped and counted.
//! * **Ordering.** Events of one key run one at a time, in log order, each
//!   against the state the previous one left: the next starts once the
//!   previous outcome is on its way to the store, and runs again should
//!   that outcome not apply. Different keys, and keyless events, run
//!   in parallel up to the handler's `concurrency`, each invocation on its
//!   own task so that several cores are used.
//! * **Failures.** Retryable outcomes (retryable errors, traps, timeouts)
//!   are retried with exponential backoff and jitter, blocking only their
//!   key; every failed attempt is recorded. Fatal outcomes, limits and the
//!   last attempt go to the DLQ, after which the key goes on, or is parked
//!   (its later events held back in order) until an operator redrives or
//!   discards the entry.
//! * **Commits.** Outcomes go to the [`Committer`] in batches; one commit is
//!   in flight per handler, and what completes meanwhile forms the next
//!   batch. The handler's position on a topic advances to just before the
//!   oldest event that is not committed yet, in the same transaction.
//! * **Streams.** The backbone's [`Source`] is the one read path: it
//!   assigns streams (a whole topic, or a partition that host instances
//!   share), each of which gets a cursor started from the position the
//!   store holds, then delivers their records. Outcomes of a partition carry
//!   its claim's epoch, so those of a partition another instance claimed
//!   since are fenced at commit. A revoked stream's queued work is
//!   abandoned to its new owner. Positions go to the store with the
//!   outcomes, then to the source (`Source::committed`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Committer, HandlerStats, Signals};
use crate::backbone::{Assignment, Input, Source, StreamId};
use crate::config::{DeadLetterMode, HandlerConfig, PipelineConfig};
use crate::runtime::{Handler, Invocation, Outcome, StateMap};
use crate::store::{
    self, AttemptRecord, Batch, CommitReport, DeadLetter, DlqAction, LogRecord, ParkedEvent,
    Processed, Store, now_ms,
};

/// Where an item came from, which decides its bookkeeping.
#[derive(Debug, Clone)]
enum Origin {
    /// Read from topic number `.0` of the subscription: it holds back the
    /// handler's position until it is done.
    Log(usize),
    /// Run outside the log order (a redrive, or a parked event released
    /// from its key). `finish` carries the rows to clean up once the last
    /// item of the action is done.
    Action { finish: Option<Finish> },
}

#[derive(Debug, Clone)]
struct Finish {
    action_id: i64,
    unpark: Option<String>,
}

#[derive(Debug)]
struct Item {
    record: LogRecord,
    attempt: u32,
    failures: Vec<AttemptRecord>,
    origin: Origin,
    /// Run on this version instead of the active one (a redrive on a
    /// chosen version).
    pinned: Option<Handler>,
    /// Ran against state that an outcome still committing wrote (see
    /// [`Dispatcher::release_committing`]).
    speculative: bool,
    /// The key's generation when it started: a change means the state it
    /// ran against was wrong, and it runs again.
    generation: u64,
}

impl Item {
    /// A new item, not yet run.
    fn new(record: LogRecord, attempt: u32, failures: Vec<AttemptRecord>, origin: Origin) -> Self {
        Self {
            record,
            attempt,
            failures,
            origin,
            pinned: None,
            speculative: false,
            generation: 0,
        }
    }

    /// A copy to run again should its speculative outcome not hold.
    fn copy(&self) -> Self {
        Self {
            record: self.record.clone(),
            attempt: self.attempt,
            failures: self.failures.clone(),
            origin: self.origin.clone(),
            pinned: self.pinned.clone(),
            speculative: false,
            generation: self.generation,
        }
    }
}

/// What to do once the batch an item is in has committed.
#[derive(Debug)]
struct Done {
    /// The key's state after this event, for the state cache.
    state_after: Option<StateMap>,
    origin: Origin,
    seq: i64,
    event_id: Option<String>,
    key: Option<String>,
    kind: DoneKind,
    /// The key was released when the batch was sent (see
    /// [`Dispatcher::release_committing`]).
    released: bool,
    /// The item, when its outcome was speculative: it runs again should
    /// the outcome it built on not commit.
    rerun: Option<Item>,
}

#[derive(Debug, PartialEq, Eq)]
enum DoneKind {
    Processed,
    DeadLettered {
        park: bool,
    },
    /// Skipped or parked: only the position moves.
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Committing,
}

struct TopicCursor {
    name: String,
    /// The partition this cursor reads, for a stream that host instances
    /// share under claims; `None` for a whole topic (see [`StreamId`]).
    partition: Option<i32>,
    /// Highest sequence number read.
    fetched: i64,
    /// Position last committed.
    committed: i64,
    /// Events read and not yet committed.
    inflight: BTreeMap<i64, Phase>,
    /// A stream given up (a rebalance): its running events still commit
    /// their outcomes, but its position belongs to the new owner.
    retired: bool,
    /// The epoch of the partition's claim: outcomes commit only while no
    /// other consumer claimed it since.
    epoch: i64,
}

/// `fetched` of a cursor whose start its first record tells.
const UNSTARTED: i64 = i64::MIN;

/// An invocation's result, the state it ran against and the version (the
/// component digest) that ran it.
type Ran = (Item, Result<(Invocation, StateMap, Arc<str>), store::Error>);
type Running = FuturesUnordered<tokio::task::JoinHandle<Ran>>;

/// Records taken from the source and not accepted yet.
#[derive(Default)]
struct Taken {
    /// Cursor, record and processed mark, in order.
    records: Vec<(usize, LogRecord, Option<bool>)>,
    /// The highest position taken so far, per cursor.
    last: HashMap<usize, i64>,
}

/// Upper bound of the state cache, in bytes of names and values.
const STATE_CACHE_BYTES: u64 = 64 << 20;

/// A handler's dispatcher; see the module docs.
pub struct Dispatcher {
    cfg: HandlerConfig,
    /// The active version. Swapped by activation: invocations started
    /// before keep the version they started with.
    handler: watch::Receiver<Handler>,
    store: Arc<dyn Store>,
    committer: Committer,
    signals: Signals,
    stats: Arc<HandlerStats>,
    max_in_flight: usize,
    poll: Duration,

    topics: Vec<TopicCursor>,
    /// Keys with an item running, committing or waiting for a retry; the
    /// queue holds their later items, in order.
    keys: HashMap<String, VecDeque<Item>>,
    ready: VecDeque<Item>,
    inflight_ids: HashSet<String>,
    /// Failed attempts of events that were being retried at start-up.
    restored: HashMap<String, Vec<AttemptRecord>>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_items: HashMap<u64, Item>,
    timer_seq: u64,
    /// Parked keys and the DLQ entry that parked each.
    parked: HashMap<String, i64>,
    taken_actions: HashSet<i64>,
    batch: Batch,
    batch_done: Vec<Done>,
    /// The latest state of recently used keys: committed, or written by an
    /// outcome that is committing (see [`Dispatcher::release_committing`]).
    /// This dispatcher is the only writer of its handler's state, so the
    /// cache saves a database read per event.
    state_cache: HashMap<String, StateMap>,
    state_cache_bytes: u64,
    /// Keys released while their outcome commits, and how many of their
    /// outcomes are committing.
    committing_keys: HashMap<String, u32>,
    /// How often each key's speculative work was undone.
    generations: HashMap<String, u64>,
    /// Items that may run only once their key's commits are done: failed
    /// speculative attempts (they run again on committed state) and
    /// actions.
    waiting: HashMap<String, Item>,
    /// The backbone's records and stream changes; taken by [`Dispatcher::run`].
    source: Option<Box<dyn Source>>,
    /// The cursor of each stream owned now.
    streams: HashMap<StreamId, usize>,
    /// Where dead letters are also produced (the backbone's dead-letter
    /// topic).
    dead_letter_topic: Option<String>,
}

impl Dispatcher {
    /// Prepares a dispatcher that reads `source`: reads its parked keys
    /// and the attempts of events that were being retried. Dead letters are
    /// also produced to `dead_letter_topic`.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        cfg: HandlerConfig,
        handler: watch::Receiver<Handler>,
        store: Arc<dyn Store>,
        committer: Committer,
        signals: Signals,
        stats: Arc<HandlerStats>,
        pipeline: &PipelineConfig,
        source: Box<dyn Source>,
        dead_letter_topic: Option<String>,
    ) -> store::Result<Self> {
        let restored = store.pending_attempts(&cfg.name).await?;
        let parked = store.parked_keys(&cfg.name).await?;
        Ok(Self {
            handler,
            store,
            committer,
            signals,
            stats,
            max_in_flight: pipeline.max_in_flight.max(1),
            poll: Duration::from_millis(pipeline.poll_interval_ms.max(10)),
            topics: Vec::new(),
            keys: HashMap::new(),
            ready: VecDeque::new(),
            inflight_ids: HashSet::new(),
            restored,
            timers: BinaryHeap::new(),
            timer_items: HashMap::new(),
            timer_seq: 0,
            parked,
            taken_actions: HashSet::new(),
            batch: Batch::default(),
            batch_done: Vec::new(),
            state_cache: HashMap::new(),
            state_cache_bytes: 0,
            committing_keys: HashMap::new(),
            generations: HashMap::new(),
            waiting: HashMap::new(),
            source: Some(source),
            streams: HashMap::new(),
            dead_letter_topic,
            cfg,
        })
    }

    fn in_flight(&self) -> usize {
        self.topics.iter().map(|t| t.inflight.len()).sum()
    }

    /// Runs until `shutdown` turns true, then lets running invocations
    /// finish and commit.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let actions = self.signals.actions.clone();
        let mut running: Running = FuturesUnordered::new();
        let mut commit: Option<tokio::task::JoinHandle<Option<CommitReport>>> = None;
        let mut committing: Vec<Done> = Vec::new();
        // Whether the commit in flight writes parked rows.
        let mut commit_parks = false;
        let mut need_fetch = true;
        let mut need_actions = true;
        let mut stopping = false;
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut source = self.source.take();
        // Positions to acknowledge to the source once the store commit in
        // flight is done.
        let mut committing_positions: Vec<(StreamId, i64)> = Vec::new();

        loop {
            if !stopping {
                // Actions read parked rows: take them only when every row
                // parked so far is committed.
                let parking = commit_parks || !self.batch.parked.is_empty();
                if need_actions && !parking {
                    need_actions = false;
                    self.take_actions().await;
                }
                while need_fetch && self.in_flight() < self.max_in_flight {
                    let Some(source) = source.as_mut() else {
                        need_fetch = false;
                        break;
                    };
                    let next = source.next(self.max_in_flight - self.in_flight()).await;
                    need_fetch = next.more;
                    self.take_inputs(next.inputs).await;
                }
                self.start_due_retries();
                while running.len() < self.cfg.concurrency {
                    let Some(item) = self.ready.pop_front() else {
                        break;
                    };
                    if let Some(item) = self.gate(item) {
                        running.push(self.invoke(item));
                    }
                }
            }
            // Skipped events only move the position, but they must commit
            // too, or a stream of them would fill the in-flight window.
            if commit.is_none() && (!self.batch.is_empty() || !self.batch_done.is_empty()) {
                committing = std::mem::take(&mut self.batch_done);
                let batch = self.take_batch(&committing);
                self.release_committing(&mut committing);
                commit_parks = !batch.parked.is_empty();
                committing_positions = positions_of(&batch);
                let committer = self.committer.clone();
                commit = Some(tokio::spawn(async move { committer.commit(batch).await }));
            }
            self.stats
                .in_flight
                .store(self.in_flight() as u64, Ordering::Relaxed);
            if stopping
                && running.is_empty()
                && commit.is_none()
                && self.batch.is_empty()
                && self.batch_done.is_empty()
            {
                return;
            }
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                Some(joined) = running.next(), if !running.is_empty() => match joined {
                    Ok((item, result)) => self.complete(item, result, stopping),
                    Err(error) => tracing::error!(handler = %self.cfg.name, "invocation task failed: {error}"),
                },
                joined = join_commit(&mut commit), if commit.is_some() => {
                    commit = None;
                    commit_parks = false;
                    match joined {
                        Ok(Some(mut report)) => {
                            let fenced_partitions = std::mem::take(&mut report.fenced_partitions);
                            self.committed(std::mem::take(&mut committing), report);
                            // After the store: what the backbone is told never
                            // runs ahead of the positions the store holds.
                            let mut done = std::mem::take(&mut committing_positions);
                            done.retain(|(stream, _)| {
                                !stream.partition.is_some_and(|partition| {
                                    fenced_partitions.contains(&(self.cfg.name.clone(), stream.topic.clone(), partition))
                                })
                            });
                            if let Some(source) = source.as_mut()
                                && let Err(error) = source.committed(&done)
                            {
                                tracing::warn!(handler = %self.cfg.name, "acknowledging positions to the backbone failed (the store has them): {error}");
                            }
                        }
                        // The committer is gone: the host is stopping.
                        Ok(None) | Err(_) => return,
                    }
                }
                _ = source_ready(source.as_mut()), if !need_fetch && !stopping && self.in_flight() < self.max_in_flight => {
                    need_fetch = true;
                }
                _ = sleep_until(next_timer), if next_timer.is_some() && !stopping => {}
                _ = poll.tick(), if !stopping => {
                    need_fetch = true;
                    need_actions = true;
                }
                _ = actions.notified(), if !stopping => need_actions = true,
                _ = shutdown.changed(), if !stopping => stopping = true,
            }
        }
    }

    /// Loads into the state cache, in one query, the state of every key of
    /// `records` that will run and that nothing here holds: no item of the
    /// key is queued, running or committing, so what the store has is its
    /// latest state. Saves a query per event for keys not seen lately.
    async fn prefetch_states<'r>(
        &mut self,
        records: impl Iterator<Item = &'r LogRecord>,
        processed: &HashSet<String>,
    ) {
        let mut keys: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for record in records {
            let event = &record.event;
            let Some(key) = event.key.as_deref() else {
                continue;
            };
            if self.cfg.accepts(&event.ty)
                && !processed.contains(&event.id)
                && !self.keys.contains_key(key)
                && !self.committing_keys.contains_key(key)
                && !self.parked.contains_key(key)
                && !self.state_cache.contains_key(key)
                && seen.insert(key)
            {
                keys.push(key.to_owned());
            }
        }
        if keys.len() < 2 {
            // One key: the invocation's own read costs the same.
            return;
        }
        match self.store.load_states(&self.cfg.name, &keys).await {
            Ok(states) => {
                for (key, state) in states {
                    self.cache_state(key, state);
                }
            }
            // The invocations read their state themselves.
            Err(error) => {
                tracing::warn!(handler = %self.cfg.name, "reading states ahead failed: {error}")
            }
        }
    }

    /// Takes one record read from cursor `t`: skips it (filtered, a
    /// duplicate), holds it back (parked key) or queues it behind its key.
    fn accept(&mut self, t: usize, record: LogRecord, processed: bool) {
        let seq = record.seq;
        let cursor = &mut self.topics[t];
        cursor.fetched = seq;
        cursor.inflight.insert(seq, Phase::Running);
        if cursor.partition.is_none() {
            self.stats.read_seq.fetch_max(seq, Ordering::Relaxed);
        }
        let event = &record.event;
        if !self.cfg.accepts(&event.ty) {
            self.stats.filtered.fetch_add(1, Ordering::Relaxed);
            self.skip(Origin::Log(t), seq);
            return;
        }
        // A copy of an event in flight here is skipped on a whole topic,
        // where the original's cursor holds the position back. A partition
        // read again after a rebalance has a new cursor that knows nothing
        // of the original: the copy queues behind it (same key) and commits
        // as a duplicate, so the position cannot pass an event whose
        // outcome is not durable yet.
        let whole_topic = self.topics[t].partition.is_none();
        if processed || (whole_topic && self.inflight_ids.contains(&event.id)) {
            tracing::debug!(handler = %self.cfg.name, event = %event.id, "duplicate skipped");
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            self.skip(Origin::Log(t), seq);
            return;
        }
        if let Some(key) = &event.key
            && self.parked.contains_key(key)
        {
            self.park(Origin::Log(t), &record);
            return;
        }
        self.inflight_ids.insert(event.id.clone());
        let failures = self.restored.remove(&event.id).unwrap_or_default();
        let attempt = failures.len() as u32 + 1;
        self.submit(Item::new(record, attempt, failures, Origin::Log(t)));
    }

    /// Takes what the source delivered, in order: the records of runs of
    /// [`Input::Records`] together (one look-up of the processed ids that
    /// the source did not tell), then each change of the streams owned.
    async fn take_inputs(&mut self, inputs: Vec<Input>) {
        let mut taken = Taken::default();
        for input in inputs {
            match input {
                Input::Records { stream, records } => self.collect(&mut taken, &stream, records),
                Input::Assigned(list) => {
                    self.accept_records(std::mem::take(&mut taken)).await;
                    self.assigned(list);
                }
                Input::Revoked(list) => {
                    self.accept_records(std::mem::take(&mut taken)).await;
                    self.revoked(&list);
                }
            }
        }
        self.accept_records(taken).await;
    }

    /// Adds the records of `stream` to `taken`: those of a stream owned
    /// here, past the cursor's position. A stream assigned without a
    /// position starts at its first record.
    fn collect(
        &mut self,
        taken: &mut Taken,
        stream: &StreamId,
        records: Vec<(LogRecord, Option<bool>)>,
    ) {
        let Some(&t) = self.streams.get(stream) else {
            tracing::debug!(handler = %self.cfg.name, topic = %stream.topic, partition = ?stream.partition, "records of a stream not owned here dropped");
            return;
        };
        let cursor = &mut self.topics[t];
        for (record, processed) in records {
            if cursor.fetched == UNSTARTED {
                // Nothing done on this stream yet: it starts here.
                cursor.fetched = record.seq - 1;
                cursor.committed = record.seq - 1;
            }
            let last = taken.last.entry(t).or_insert(cursor.fetched);
            if record.seq <= *last {
                continue;
            }
            // A partition's positions are offsets, one after the other.
            if cursor.partition.is_some() && record.seq > *last + 1 {
                tracing::warn!(handler = %self.cfg.name, topic = %stream.topic, partition = ?stream.partition, offset = record.seq, after = *last, epoch = cursor.epoch, "gap in offsets");
            }
            *last = record.seq;
            taken.records.push((t, record, processed));
        }
    }

    /// Accepts records collected by [`Dispatcher::collect`], with one
    /// look-up of the processed ids the source did not know and one read
    /// ahead of their keys' states.
    async fn accept_records(&mut self, taken: Taken) {
        if taken.records.is_empty() {
            return;
        }
        let ids: Vec<String> = taken
            .records
            .iter()
            .filter(|(_, r, processed)| processed.is_none() && self.cfg.accepts(&r.event.ty))
            .map(|(_, r, _)| r.event.id.clone())
            .collect();
        let mut processed = if ids.is_empty() {
            HashSet::new()
        } else {
            match self.store.processed_ids(&self.cfg.name, &ids).await {
                Ok(p) => p,
                Err(error) => {
                    // Run them: the commit finds duplicates by their ids anyway.
                    tracing::warn!(handler = %self.cfg.name, "reading processed ids failed: {error}");
                    HashSet::new()
                }
            }
        };
        processed.extend(
            taken
                .records
                .iter()
                .filter(|(_, _, p)| *p == Some(true))
                .map(|(_, r, _)| r.event.id.clone()),
        );
        self.prefetch_states(taken.records.iter().map(|(_, r, _)| r), &processed)
            .await;
        for (t, record, _) in taken.records {
            let duplicate = processed.contains(&record.event.id);
            self.accept(t, record, duplicate);
        }
    }

    /// Streams are now ours: a cursor each, starting after the position
    /// the store held (the source starts there too). A retired cursor with
    /// nothing in flight is reused.
    fn assigned(&mut self, list: Vec<Assignment>) {
        self.forget_states();
        for Assignment {
            stream,
            position,
            epoch,
        } in list
        {
            let position = position.unwrap_or(UNSTARTED);
            let cursor = TopicCursor {
                name: stream.topic.clone(),
                partition: stream.partition,
                fetched: position,
                committed: position,
                inflight: BTreeMap::new(),
                retired: false,
                epoch,
            };
            let reuse = self
                .topics
                .iter()
                .position(|c| c.retired && c.inflight.is_empty());
            let t = match reuse {
                Some(t) => {
                    self.topics[t] = cursor;
                    t
                }
                None => {
                    self.topics.push(cursor);
                    self.topics.len() - 1
                }
            };
            if let Some(old) = self.streams.insert(stream, t) {
                self.topics[old].retired = true;
            }
        }
        self.count_partitions();
    }

    /// Streams are no longer ours: their cursors retire, and their queued
    /// work is abandoned to the new owner. Running invocations finish and
    /// commit; one the new owner runs too commits once (the processed
    /// record decides).
    fn revoked(&mut self, list: &[StreamId]) {
        self.forget_states();
        let retired: HashSet<usize> = list
            .iter()
            .filter_map(|stream| self.streams.remove(stream))
            .collect();
        for t in &retired {
            self.topics[*t].retired = true;
        }
        self.count_partitions();
        self.abandon(&retired);
    }

    /// Publishes how many partitions (shared streams) this instance owns.
    fn count_partitions(&self) {
        let owned = self
            .streams
            .keys()
            .filter(|s| s.partition.is_some())
            .count();
        self.stats.partitions.store(owned as u64, Ordering::Relaxed);
    }

    /// Drops the items of cursors `retired` (partitions given up) that have
    /// not started: the partition's new owner runs them, in order, after
    /// what is running here now (at most one per key, which commits once
    /// whoever finishes first).
    fn abandon(&mut self, retired: &HashSet<usize>) {
        if retired.is_empty() {
            return;
        }
        let dropped = |item: &Item| matches!(item.origin, Origin::Log(t) if retired.contains(&t));
        let mut released = Vec::new();
        for queue in self.keys.values_mut() {
            queue.retain(|item| {
                let keep = !dropped(item);
                if !keep {
                    self.inflight_ids.remove(&item.record.event.id);
                    if let Origin::Log(t) = item.origin {
                        self.topics[t].inflight.remove(&item.record.seq);
                    }
                }
                keep
            });
        }
        let mut ready = VecDeque::with_capacity(self.ready.len());
        for item in std::mem::take(&mut self.ready) {
            if dropped(&item) {
                released.push(item);
            } else {
                ready.push_back(item);
            }
        }
        self.ready = ready;
        let waiting: Vec<u64> = self
            .timer_items
            .iter()
            .filter(|(_, item)| dropped(item))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if let Some(item) = self.timer_items.remove(&id) {
                released.push(item);
            }
        }
        // Each of these held its key: pass the key on.
        for item in released {
            self.inflight_ids.remove(&item.record.event.id);
            if let Origin::Log(t) = item.origin {
                self.topics[t].inflight.remove(&item.record.seq);
            }
            if let Some(key) = &item.record.event.key {
                self.release(key);
            }
        }
        tracing::info!(handler = %self.cfg.name, "work of revoked partitions abandoned to their new owner");
    }

    fn skip(&mut self, origin: Origin, seq: i64) {
        self.mark_committing(&origin, seq);
        self.batch_done.push(Done {
            state_after: None,
            origin,
            seq,
            event_id: None,
            key: None,
            kind: DoneKind::Skipped,
            released: false,
            rerun: None,
        });
    }

    fn park(&mut self, origin: Origin, record: &LogRecord) {
        let Some(key) = &record.event.key else {
            return;
        };
        tracing::info!(handler = %self.cfg.name, event = %record.event.id, %key, "event held back: its key is parked");
        self.stats.parked.fetch_add(1, Ordering::Relaxed);
        self.batch.parked.push(ParkedEvent {
            handler: self.cfg.name.clone(),
            key: key.clone(),
            topic: record.event.topic.clone(),
            seq: record.seq,
        });
        self.skip(origin, record.seq);
    }

    fn mark_committing(&mut self, origin: &Origin, seq: i64) {
        if let Origin::Log(t) = origin
            && let Some(phase) = self.topics[*t].inflight.get_mut(&seq)
        {
            *phase = Phase::Committing;
        }
    }

    /// Queues an item behind its key, or makes it ready.
    fn submit(&mut self, item: Item) {
        match item.record.event.key.clone() {
            None => self.ready.push_back(item),
            Some(key) => match self.keys.get_mut(&key) {
                Some(queue) => queue.push_back(item),
                None => {
                    self.keys.insert(key, VecDeque::new());
                    self.ready.push_back(item);
                }
            },
        }
    }

    /// The key's current item is done: start its next one.
    fn release(&mut self, key: &str) {
        if let Some(queue) = self.keys.get_mut(key) {
            match queue.pop_front() {
                Some(next) => self.ready.push_back(next),
                None => {
                    self.keys.remove(key);
                }
            }
        }
    }

    fn generation(&self, key: &str) -> u64 {
        self.generations.get(key).copied().unwrap_or(0)
    }

    /// Whether `item` may run now; it runs speculatively when its key has
    /// an outcome committing. Actions wait for those commits instead (their
    /// clean-up rows are not undone).
    fn gate(&mut self, mut item: Item) -> Option<Item> {
        let Some(key) = &item.record.event.key else {
            return Some(item);
        };
        if !self.committing_keys.contains_key(key) {
            item.speculative = false;
            return Some(item);
        }
        // Actions' clean-up rows are not undone. And speculation needs the
        // state the committing outcome wrote: once the cache lost it
        // (emptied on a rebalance, or full), the store's copy is
        // older, so the item waits for the commit instead.
        if matches!(item.origin, Origin::Action { .. }) || !self.state_cache.contains_key(key) {
            self.waiting.insert(key.clone(), item);
            return None;
        }
        item.speculative = true;
        item.generation = self.generation(key);
        Some(item)
    }

    /// Pipelines keys across commits: once the batch holding a key's
    /// outcome is on its way to the store, the key's next event runs
    /// against the state that outcome wrote, so that invocations overlap
    /// the commit instead of waiting for it. A key has at most one outcome
    /// per batch. Commits are sequential, so a crash loses the later
    /// outcomes with the earlier; should an outcome not apply (a duplicate
    /// by now), the work built on it is undone and runs again
    /// ([`Dispatcher::undo_speculation`]). On a shared partition an outcome may also be
    /// fenced (its partition claimed by another instance since): the
    /// key's later outcomes share its partition and claim, so they are
    /// fenced too, and undone the same way.
    fn release_committing(&mut self, committing: &mut [Done]) {
        for d in committing.iter_mut() {
            if d.kind != DoneKind::Processed || !matches!(d.origin, Origin::Log(_)) {
                continue;
            }
            let Some(key) = d.key.clone() else { continue };
            *self.committing_keys.entry(key.clone()).or_default() += 1;
            if let Some(state) = d.state_after.take() {
                self.cache_state(key.clone(), state);
            }
            d.released = true;
            self.release(&key);
        }
    }

    /// A released outcome of `key` did not apply: the state the key's
    /// later work ran against is wrong. Running items of the key find out
    /// by the generation; an outcome not yet sent runs again now.
    fn undo_speculation(&mut self, key: &str) {
        tracing::info!(handler = %self.cfg.name, %key, "an outcome did not apply; the key's later events run again");
        *self.generations.entry(key.to_owned()).or_default() += 1;
        drop(self.take_cached_state(key));
        let (again, kept): (Vec<Done>, Vec<Done>) = std::mem::take(&mut self.batch_done)
            .into_iter()
            .partition(|d| d.key.as_deref() == Some(key) && d.rerun.is_some());
        self.batch_done = kept;
        for d in again {
            let Some(item) = d.rerun else { continue };
            let name = &self.cfg.name;
            self.batch
                .processed
                .retain(|p| !(&p.handler == name && p.event_id == item.record.event.id));
            if let Origin::Log(t) = item.origin
                && let Some(phase) = self.topics[t].inflight.get_mut(&item.record.seq)
            {
                *phase = Phase::Running;
            }
            self.ready.push_front(item);
        }
    }

    /// One of `key`'s released outcomes committed (or did not apply).
    fn key_committed(&mut self, key: &str) {
        let Some(n) = self.committing_keys.get_mut(key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.committing_keys.remove(key);
            if let Some(item) = self.waiting.remove(key) {
                self.ready.push_front(item);
            }
        }
    }

    fn invoke(&mut self, item: Item) -> tokio::task::JoinHandle<Ran> {
        let store = self.store.clone();
        let handler = match &item.pinned {
            Some(pinned) => pinned.clone(),
            None => self.handler.borrow().clone(),
        };
        let version: Arc<str> = Arc::from(handler.component().digest());
        let cached = item
            .record
            .event
            .key
            .as_ref()
            .and_then(|k| self.take_cached_state(k));
        tokio::spawn(async move {
            let state = match (&item.record.event.key, cached) {
                (None, _) => StateMap::new(),
                (Some(_), Some(state)) => state,
                (Some(key), None) => match store.load_state(handler.name(), key).await {
                    Ok(state) => state,
                    Err(error) => return (item, Err(error)),
                },
            };
            let invocation = handler
                .invoke(&item.record.event, item.attempt, state.clone())
                .await;
            (item, Ok((invocation, state, version)))
        })
    }

    /// On shared partitions, another instance may have owned a key's partition and
    /// written its state: the cache holds only what was written while this
    /// instance owned the partitions it has now, so any change of them
    /// empties it. (Outcomes of an instance that has not yet learned it
    /// lost a partition are fenced at commit.)
    fn forget_states(&mut self) {
        self.state_cache.clear();
        self.state_cache_bytes = 0;
    }

    fn take_cached_state(&mut self, key: &str) -> Option<StateMap> {
        let state = self.state_cache.remove(key)?;
        self.state_cache_bytes = self
            .state_cache_bytes
            .saturating_sub(state_bytes(key, &state));
        Some(state)
    }

    fn cache_state(&mut self, key: String, state: StateMap) {
        let bytes = state_bytes(&key, &state);
        if self.state_cache_bytes + bytes > STATE_CACHE_BYTES {
            // Crude but bounded: start over rather than track recency.
            self.state_cache.clear();
            self.state_cache_bytes = 0;
        }
        self.state_cache_bytes += bytes;
        if let Some(old) = self.state_cache.insert(key.clone(), state) {
            self.state_cache_bytes = self
                .state_cache_bytes
                .saturating_sub(state_bytes(&key, &old));
        }
    }

    fn complete(
        &mut self,
        mut item: Item,
        result: Result<(Invocation, StateMap, Arc<str>), store::Error>,
        stopping: bool,
    ) {
        let key_generation = item
            .record
            .event
            .key
            .as_ref()
            .map_or(0, |k| self.generation(k));
        if item.speculative && item.generation != key_generation {
            // The outcome it built on did not commit: run it again (its
            // key is still held by it).
            item.speculative = false;
            self.ready.push_front(item);
            return;
        }
        let (invocation, state_before, version) = match result {
            Ok(ran) => ran,
            Err(error) => {
                // Not the handler's fault: try again without counting it.
                tracing::error!(handler = %self.cfg.name, event = %item.record.event.id, "loading state failed: {error}");
                if !stopping {
                    self.schedule(item, Duration::from_secs(1));
                }
                return;
            }
        };
        if invocation.outcome != Outcome::Ok
            && item.speculative
            && let Some(key) = &item.record.event.key
            && self.committing_keys.contains_key(key)
        {
            // It may have failed for the state it was given: it runs again,
            // without counting this attempt, on committed state.
            self.waiting.insert(key.clone(), item);
            return;
        }
        let event = &item.record.event;
        let key = event.key.clone();
        self.stats.latency.observe(invocation.elapsed);
        if invocation.outcome != Outcome::Ok {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        match &invocation.outcome {
            Outcome::Ok => {
                tracing::debug!(
                    handler = %self.cfg.name,
                    event = %event.id,
                    key = key.as_deref().unwrap_or("-"),
                    attempt = item.attempt,
                    emitted = invocation.emitted.len(),
                    elapsed_us = invocation.elapsed.as_micros() as u64,
                    "processed"
                );
                let state_after = key.as_ref().map(|_| {
                    let mut state = state_before;
                    for (name, value) in &invocation.state_changes {
                        match value {
                            Some(v) => state.insert(name.clone(), v.clone()),
                            None => state.remove(name),
                        };
                    }
                    state
                });
                self.batch.processed.push(Processed {
                    handler: self.cfg.name.clone(),
                    version: version.to_string(),
                    topic: event.topic.clone(),
                    seq: item.record.seq,
                    event_id: event.id.clone(),
                    attempts: item.attempt,
                    key: key.clone(),
                    state_changes: invocation.state_changes,
                    emitted: invocation.emitted,
                });
                self.finish(item, DoneKind::Processed, state_after);
            }
            failed => {
                // The state did not change: keep it for the next attempt.
                if let Some(k) = &key {
                    self.cache_state(k.clone(), state_before);
                }
                let message = match failed {
                    Outcome::Retryable { message }
                    | Outcome::Fatal { message }
                    | Outcome::Trap { message }
                    | Outcome::Timeout { message }
                    | Outcome::Limit { message, .. } => message.clone(),
                    Outcome::Ok => String::new(),
                };
                let record = AttemptRecord {
                    attempt: item.attempt,
                    outcome: failed.kind().to_owned(),
                    error: message,
                    version: version.to_string(),
                    at: now_ms(),
                };
                let retry = failed.is_retryable() && item.attempt < self.cfg.retry.max_attempts;
                if retry && !stopping {
                    let delay = self.cfg.retry.backoff(item.attempt + 1);
                    tracing::warn!(
                        handler = %self.cfg.name,
                        event = %event.id,
                        attempt = item.attempt,
                        outcome = failed.kind(),
                        retry_in_ms = delay.as_millis() as u64,
                        "attempt failed: {}",
                        record.error
                    );
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.batch.failures.push((
                        self.cfg.name.clone(),
                        event.id.clone(),
                        record.clone(),
                    ));
                    item.failures.push(record);
                    item.attempt += 1;
                    self.schedule(item, delay);
                } else if retry {
                    // Stopping: record the attempt; the next start retries.
                    self.batch
                        .failures
                        .push((self.cfg.name.clone(), event.id.clone(), record));
                } else {
                    let park = self.cfg.on_dead_letter == DeadLetterMode::Park && key.is_some();
                    tracing::warn!(
                        handler = %self.cfg.name,
                        event = %event.id,
                        attempt = item.attempt,
                        outcome = failed.kind(),
                        park,
                        "dead-lettered: {}",
                        record.error
                    );
                    item.failures.push(record);
                    self.batch.dead_letters.push(DeadLetter {
                        handler: self.cfg.name.clone(),
                        version: version.to_string(),
                        record: item.record.clone(),
                        attempts: std::mem::take(&mut item.failures),
                        park,
                        publish_to: self.dead_letter_topic.clone(),
                    });
                    self.finish(item, DoneKind::DeadLettered { park }, None);
                }
            }
        }
    }

    /// The item has a final outcome in the current batch.
    fn finish(&mut self, item: Item, kind: DoneKind, state_after: Option<StateMap>) {
        self.mark_committing(&item.origin, item.record.seq);
        if let Origin::Action {
            finish: Some(finish),
        } = &item.origin
        {
            self.add_finish(finish.clone());
        }
        let rerun = (item.speculative && kind == DoneKind::Processed).then(|| item.copy());
        self.batch_done.push(Done {
            state_after,
            seq: item.record.seq,
            event_id: Some(item.record.event.id),
            key: item.record.event.key,
            origin: item.origin,
            kind,
            released: false,
            rerun,
        });
    }

    fn add_finish(&mut self, finish: Finish) {
        self.batch.actions_done.push(finish.action_id);
        if let Some(key) = finish.unpark {
            self.batch.unparked.push((self.cfg.name.clone(), key));
        }
    }

    fn schedule(&mut self, item: Item, delay: Duration) {
        self.timer_seq += 1;
        self.timers
            .push(Reverse((Instant::now() + delay, self.timer_seq)));
        self.timer_items.insert(self.timer_seq, item);
    }

    fn start_due_retries(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(item) = self.timer_items.remove(&id) {
                // The key is still held by this item: run it directly.
                self.ready.push_back(item);
            }
        }
    }

    /// Moves the batch out, with the positions it makes durable and the
    /// claims its partitions' outcomes (`done`) and positions were read under.
    fn take_batch(&mut self, done: &[Done]) -> Batch {
        let mut batch = std::mem::take(&mut self.batch);
        let mut claims: BTreeMap<usize, store::Claim> = BTreeMap::new();
        let name = &self.cfg.name;
        let mut claim_of = |t: usize, cursor: &TopicCursor| -> Option<usize> {
            let partition = cursor.partition?;
            claims.entry(t).or_insert_with(|| store::Claim {
                handler: name.clone(),
                topic: cursor.name.clone(),
                partition,
                epoch: cursor.epoch,
                event_ids: Vec::new(),
            });
            Some(t)
        };
        let mut ids: Vec<(usize, String)> = Vec::new();
        for d in done {
            if let (Origin::Log(t), Some(id)) = (&d.origin, &d.event_id)
                && claim_of(*t, &self.topics[*t]).is_some()
            {
                ids.push((*t, id.clone()));
            }
        }
        for (t, cursor) in self.topics.iter().enumerate() {
            if !cursor.retired && cursor.fetched != UNSTARTED {
                claim_of(t, cursor);
            }
        }
        for (t, id) in ids {
            if let Some(claim) = claims.get_mut(&t) {
                claim.event_ids.push(id);
            }
        }
        batch.claims = claims.into_values().collect();
        for t in &mut self.topics {
            if t.retired || t.fetched == UNSTARTED {
                continue;
            }
            let position = t
                .inflight
                .iter()
                .find(|(_, phase)| **phase == Phase::Running)
                .map(|(seq, _)| seq - 1)
                .unwrap_or(t.fetched);
            if position > t.committed {
                match t.partition {
                    None => batch
                        .positions
                        .push((self.cfg.name.clone(), t.name.clone(), position)),
                    Some(partition) => batch.broker_positions.push((
                        self.cfg.name.clone(),
                        t.name.clone(),
                        partition,
                        position,
                    )),
                }
                t.committed = position;
            }
        }
        batch
    }

    /// A batch is durable: account for it and release its keys.
    fn committed(&mut self, done: Vec<Done>, report: CommitReport) {
        // Dead letters were added to the batch in the order of their `Done`s.
        let mut dlq_ids = report.dlq_ids.iter().copied();
        for d in done {
            if let Origin::Log(t) = d.origin {
                self.topics[t].inflight.remove(&d.seq);
            }
            if let Some(id) = &d.event_id {
                self.inflight_ids.remove(id);
            }
            let fenced = d
                .event_id
                .as_ref()
                .is_some_and(|id| report.fenced.contains(&(self.cfg.name.clone(), id.clone())));
            if d.released
                && let Some(key) = &d.key
            {
                let duplicate = d.event_id.as_ref().is_some_and(|id| {
                    report
                        .duplicates
                        .contains(&(self.cfg.name.clone(), id.clone()))
                });
                if fenced || duplicate {
                    self.undo_speculation(key);
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.processed.fetch_add(1, Ordering::Relaxed);
                }
                self.key_committed(key);
                continue;
            }
            if fenced {
                // The partition's new owner runs it.
                self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                if let DoneKind::DeadLettered { .. } = d.kind {
                    dlq_ids.next();
                }
                if let Some(key) = &d.key {
                    self.release(key);
                }
                continue;
            }
            match d.kind {
                DoneKind::Processed => {
                    let duplicate = d.event_id.as_ref().is_some_and(|id| {
                        report
                            .duplicates
                            .contains(&(self.cfg.name.clone(), id.clone()))
                    });
                    if duplicate {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.stats.processed.fetch_add(1, Ordering::Relaxed);
                        if let (Some(key), Some(state)) = (&d.key, d.state_after) {
                            self.cache_state(key.clone(), state);
                        }
                    }
                }
                DoneKind::DeadLettered { park } => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    let dlq_id = dlq_ids.next().unwrap_or(0);
                    if park
                        && dlq_id > 0
                        && let Some(key) = &d.key
                    {
                        self.park_key(key, dlq_id);
                        continue;
                    }
                }
                DoneKind::Skipped => {}
            }
            if let Some(key) = &d.key {
                self.release(key);
            }
        }
    }

    /// After a dead letter in park mode: hold back the key's queued events.
    fn park_key(&mut self, key: &str, dlq_id: i64) {
        self.parked.insert(key.to_owned(), dlq_id);
        if let Some(queue) = self.keys.remove(key) {
            for item in queue {
                self.inflight_ids.remove(&item.record.event.id);
                self.park(item.origin, &item.record);
            }
        }
    }

    /// Carries out operator actions on this handler's DLQ entries.
    async fn take_actions(&mut self) {
        let actions = match self.store.pending_actions(&self.cfg.name).await {
            Ok(actions) => actions,
            Err(error) => {
                tracing::error!(handler = %self.cfg.name, "reading DLQ actions failed: {error}");
                return;
            }
        };
        for action in actions {
            if !self.taken_actions.insert(action.id) {
                continue;
            }
            let entry = action.entry;
            let unpark = entry
                .record
                .event
                .key
                .clone()
                .filter(|k| self.parked.get(k) == Some(&entry.id));
            let pinned = match action.version {
                None => None,
                Some(version) => match self.load_version(version).await {
                    Ok(handler) => Some(handler),
                    Err(error) => {
                        tracing::error!(handler = %self.cfg.name, version, "cannot load the version to redrive on: {error}");
                        self.taken_actions.remove(&action.id);
                        return;
                    }
                },
            };
            let mut records = Vec::new();
            if action.action == DlqAction::Redrive {
                tracing::info!(handler = %self.cfg.name, dlq = entry.id, event = %entry.record.event.id, "redriving");
                records.push(entry.record.clone());
            }
            if let Some(key) = &unpark {
                match self.store.parked_events(&self.cfg.name, key).await {
                    Ok(held) => records.extend(held),
                    Err(error) => {
                        tracing::error!(handler = %self.cfg.name, "reading parked events failed: {error}");
                        self.taken_actions.remove(&action.id);
                        return;
                    }
                }
                self.parked.remove(key);
                tracing::info!(handler = %self.cfg.name, %key, held = records.len(), "key released");
            }
            // Skip what was already processed (a restart in the middle).
            let ids: Vec<String> = records.iter().map(|r| r.event.id.clone()).collect();
            let processed = match self.store.processed_ids(&self.cfg.name, &ids).await {
                Ok(p) => p,
                Err(error) => {
                    tracing::error!(handler = %self.cfg.name, "reading processed ids failed: {error}");
                    self.taken_actions.remove(&action.id);
                    return;
                }
            };
            records.retain(|r| !processed.contains(&r.event.id));
            let finish = Finish {
                action_id: action.id,
                unpark,
            };
            let count = records.len();
            if count == 0 {
                self.add_finish(finish);
                continue;
            }
            let redriven_id = entry.record.event.id.clone();
            for (i, record) in records.into_iter().enumerate() {
                // Only the redriven event runs on the chosen version; the
                // events held behind its key run on the active one.
                let pinned = (record.event.id == redriven_id)
                    .then(|| pinned.clone())
                    .flatten();
                let origin = Origin::Action {
                    finish: (i + 1 == count).then(|| finish.clone()),
                };
                self.submit(Item {
                    pinned,
                    ..Item::new(record, 1, Vec::new(), origin)
                });
            }
        }
    }
}

impl Dispatcher {
    /// A handler running stored version `version` of this handler.
    async fn load_version(&self, version: i64) -> Result<Handler, String> {
        let bytes = self
            .store
            .component(&self.cfg.name, version)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("version {version} is not stored"))?;
        let current = self.handler.borrow().clone();
        let runtime = current.runtime().clone();
        let component = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(current.with_component(component))
    }
}

/// Waits until `source` may have something, or never without one.
async fn source_ready(source: Option<&mut Box<dyn Source>>) {
    match source {
        Some(source) => source.ready().await,
        None => std::future::pending().await,
    }
}

/// The positions `batch` makes durable, by stream.
fn positions_of(batch: &Batch) -> Vec<(StreamId, i64)> {
    let whole = batch.positions.iter().map(|(_, topic, position)| {
        let stream = StreamId {
            topic: topic.clone(),
            partition: None,
        };
        (stream, *position)
    });
    let partitions = batch
        .broker_positions
        .iter()
        .map(|(_, topic, partition, position)| {
            let stream = StreamId {
                topic: topic.clone(),
                partition: Some(*partition),
            };
            (stream, *position)
        });
    whole.chain(partitions).collect()
}

async fn join_commit(
    commit: &mut Option<tokio::task::JoinHandle<Option<CommitReport>>>,
) -> Result<Option<CommitReport>, tokio::task::JoinError> {
    match commit {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn state_bytes(key: &str, state: &StateMap) -> u64 {
    key.len() as u64
        + state
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>()
}
