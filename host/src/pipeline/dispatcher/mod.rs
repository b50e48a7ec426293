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

mod actions;
mod keys;
mod outcomes;
mod reading;

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
        let wakes_per_change = source.as_ref().is_some_and(|s| s.wakes_per_change());
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
                _ = source_ready(source.as_mut()), if !stopping && (wakes_per_change || (!need_fetch && self.in_flight() < self.max_in_flight)) => {
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
