//! The embedded pipeline: per-handler dispatchers over the embedded log, one
//! group committer, and the outbox relay.
//!
//! ```text
//!  append (API) ──► log ──► dispatcher(handler) ──► runtime (WASM)
//!                    ▲            │ outcomes
//!                    │            ▼
//!                  relay ◄── committer: ONE transaction per group of
//!                  (outbox      outcomes: processed records, state,
//!                   → log)      outbox rows, positions, DLQ entries
//! ```
//!
//! * [`dispatcher`]: reads a handler's topics from its own position, skips
//!   duplicates, keeps per-key order while running different keys in
//!   parallel, retries with backoff and dead-letters.
//! * [`Committer`]: gathers the outcomes of all handlers that arrive while a
//!   transaction is in progress into the next one (group commit). Nothing is
//!   done before its transaction commits.
//! * [`relay`]: publishes committed outbox rows to the log, in order.

pub mod dispatcher;
pub mod relay;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, HandlerConfig};
use crate::runtime::{self, Handler, LoadedComponent, Runtime};
use crate::store::{self, Batch, CommitReport, Store};

/// Errors of starting the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A handler's component could not be loaded.
    #[error("handler {handler}: {source}")]
    Component {
        /// The handler.
        handler: String,
        /// Why.
        source: runtime::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// No handler of that name runs here.
    #[error("no handler named {0}")]
    UnknownHandler(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram of durations, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS`]
    /// (not cumulative; the exposition sums them).
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// All observations.
    pub count: AtomicU64,
    /// Sum of all observations, in microseconds.
    pub sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Counters of one handler, readable while it runs.
#[derive(Debug, Default)]
pub struct HandlerStats {
    /// Failed attempts (retried or dead-lettered).
    pub failed: AtomicU64,
    /// Time of each invocation (instantiation plus `handle`).
    pub latency: Histogram,
    /// Events processed successfully.
    pub processed: AtomicU64,
    /// Events skipped as duplicates of processed ones.
    pub duplicates: AtomicU64,
    /// Events skipped by the type filter.
    pub filtered: AtomicU64,
    /// Failed attempts that were retried.
    pub retries: AtomicU64,
    /// Events sent to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Events held back behind a parked key.
    pub parked: AtomicU64,
    /// Events read but not yet committed.
    pub in_flight: AtomicU64,
    /// Highest log sequence number read.
    pub read_seq: AtomicI64,
}

/// A snapshot of [`HandlerStats`].
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Events processed successfully.
    pub processed: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Events skipped as duplicates.
    pub duplicates: u64,
    /// Events skipped by the type filter.
    pub filtered: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Events held back behind parked keys.
    pub parked: u64,
    /// Events in flight.
    pub in_flight: u64,
}

impl HandlerStats {
    /// Current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            processed: self.processed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

struct CommitRequest {
    batch: Batch,
    done: oneshot::Sender<CommitReport>,
}

/// Group commit: one task owns all writes of outcomes; requests that arrive
/// while a transaction runs are merged into the next one, so N handlers and
/// M events cost one fsync instead of N×M.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<CommitRequest>,
}

impl Committer {
    /// Starts the committer task. `relay` is woken after commits that wrote
    /// outbox rows. Failed transactions are retried (with backoff) until
    /// they commit: the pipeline stalls while the database is unreachable
    /// but loses nothing.
    pub fn start(
        store: Arc<dyn Store>,
        max_batch: usize,
        relay: Arc<Notify>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<CommitRequest>(1024);
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut requests = vec![first];
                let mut size = size_of(&requests[0].batch);
                while size < max_batch {
                    match rx.try_recv() {
                        Ok(r) => {
                            size += size_of(&r.batch);
                            requests.push(r);
                        }
                        Err(_) => break,
                    }
                }
                let mut merged = Batch::default();
                let mut dlq_counts = Vec::with_capacity(requests.len());
                for r in &requests {
                    dlq_counts.push(r.batch.dead_letters.len());
                    merge(&mut merged, &r.batch);
                }
                let report = commit_until_done(&*store, &merged).await;
                if report.outbox_rows > 0 {
                    relay.notify_one();
                }
                let mut dlq_ids = report.dlq_ids.into_iter();
                for (r, n) in requests.into_iter().zip(dlq_counts) {
                    let part = CommitReport {
                        duplicates: report.duplicates.clone(),
                        outbox_rows: report.outbox_rows,
                        dlq_ids: dlq_ids.by_ref().take(n).collect(),
                    };
                    let _ = r.done.send(part);
                }
            }
        });
        (Self { tx }, task)
    }

    /// Commits `batch` (with whatever else is pending) and returns when it
    /// is durable. `None` when the committer has stopped.
    pub async fn commit(&self, batch: Batch) -> Option<CommitReport> {
        let (done, wait) = oneshot::channel();
        self.tx.send(CommitRequest { batch, done }).await.ok()?;
        wait.await.ok()
    }
}

fn size_of(b: &Batch) -> usize {
    b.processed.len() + b.dead_letters.len() + b.failures.len() + b.parked.len() + 1
}

fn merge(into: &mut Batch, from: &Batch) {
    into.processed.extend(from.processed.iter().cloned());
    into.failures.extend(from.failures.iter().cloned());
    into.dead_letters.extend(from.dead_letters.iter().cloned());
    into.parked.extend(from.parked.iter().cloned());
    into.actions_done.extend(from.actions_done.iter().copied());
    into.unparked.extend(from.unparked.iter().cloned());
    into.positions.extend(from.positions.iter().cloned());
}

async fn commit_until_done(store: &dyn Store, batch: &Batch) -> CommitReport {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.commit(batch).await {
            Ok(report) => return report,
            Err(error) => {
                tracing::error!(
                    "group commit failed, retrying in {delay:?} (nothing is lost): {error}"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Signals shared by the parts of a running pipeline.
#[derive(Clone)]
pub struct Signals {
    /// The highest log sequence number appended; dispatchers wait on it.
    pub log: watch::Sender<i64>,
    /// Wakes the relay.
    pub relay: Arc<Notify>,
    /// Wakes dispatchers to look for DLQ actions (redrive, discard).
    pub actions: Arc<Notify>,
}

impl Signals {
    /// New signals.
    pub fn new() -> Self {
        Self {
            log: watch::Sender::new(0),
            relay: Arc::new(Notify::new()),
            actions: Arc::new(Notify::new()),
        }
    }

    /// Announces that the log grew up to `seq`.
    pub fn appended(&self, seq: i64) {
        self.log.send_if_modified(|current| {
            if seq > *current {
                *current = seq;
                true
            } else {
                false
            }
        });
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

/// A running pipeline.
pub struct Pipeline {
    /// Stats per handler.
    pub stats: HashMap<String, Arc<HandlerStats>>,
    /// The active version of each handler.
    versions: HashMap<String, watch::Sender<Handler>>,
    runtime: Arc<Runtime>,
    /// The signals, for the admin API.
    pub signals: Signals,
    store: Arc<dyn Store>,
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    committer_task: std::sync::Mutex<Option<JoinHandle<()>>>,
    committer: std::sync::Mutex<Option<Committer>>,
}

impl Pipeline {
    /// Loads every handler's component and starts the dispatchers, the
    /// committer and the relay.
    pub async fn start(
        config: &Config,
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        signals: Signals,
    ) -> Result<Self> {
        for t in &config.topics {
            store.ensure_topic(&t.name, t.partitions).await?;
        }
        let (committer, committer_task) = Committer::start(
            store.clone(),
            config.pipeline.max_batch,
            signals.relay.clone(),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let runtime = runtime.clone();
        let mut tasks = Vec::new();
        let mut stats = HashMap::new();
        let mut versions = HashMap::new();
        for handler in &config.handlers {
            let spawned = spawn_handler(
                handler,
                config,
                &store,
                &runtime,
                &committer,
                &signals,
                shutdown_rx.clone(),
            )
            .await?;
            stats.insert(handler.name.clone(), spawned.0);
            versions.insert(handler.name.clone(), spawned.1);
            tasks.push(spawned.2);
        }
        tasks.push(tokio::spawn(relay::run(
            store.clone(),
            signals.clone(),
            config.pipeline.relay_batch,
            config.pipeline.default_partitions,
            Duration::from_millis(config.pipeline.poll_interval_ms),
            shutdown_rx,
        )));
        // Anything appended before start (or by another process) is picked
        // up by the dispatchers' first read; nudge the relay once too.
        signals.relay.notify_one();
        Ok(Self {
            stats,
            versions,
            runtime,
            signals,
            store,
            shutdown,
            tasks: std::sync::Mutex::new(tasks),
            committer_task: std::sync::Mutex::new(Some(committer_task)),
            committer: std::sync::Mutex::new(Some(committer)),
        })
    }

    /// Hot swap: from now on, `handler` runs `component`. Invocations that
    /// already started finish on the version that started them; every event
    /// started afterwards runs the new one. No restart, nothing lost.
    pub fn activate(&self, handler: &str, component: Arc<LoadedComponent>) -> Result<()> {
        let sender = self
            .versions
            .get(handler)
            .ok_or_else(|| Error::UnknownHandler(handler.to_owned()))?;
        let limits = sender.borrow().limits().clone();
        let next = self.runtime.handler(handler, component, limits);
        tracing::info!(handler, digest = %next.component().digest(), "version activated");
        sender.send_replace(next);
        Ok(())
    }

    /// The digest of the version `handler` runs now.
    pub fn active_digest(&self, handler: &str) -> Option<String> {
        self.versions
            .get(handler)
            .map(|s| s.borrow().component().digest().to_owned())
    }

    /// Stops reading, lets running invocations finish and commit, then
    /// stops. Events waiting for a retry are left to the next start.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
        // Dropping the last sender ends the committer after its queue drains.
        lock(&self.committer).take();
        let committer_task = lock(&self.committer_task).take();
        if let Some(task) = committer_task {
            let _ = task.await;
        }
    }

    /// Validates and compiles `bytes` and stores them as the next version of
    /// `handler` (or finds the identical version already stored); with
    /// `activate`, hot-swaps to it.
    pub async fn upload(
        &self,
        handler: &str,
        bytes: Vec<u8>,
        activate: bool,
    ) -> Result<(store::VersionInfo, bool)> {
        if !self.versions.contains_key(handler) {
            return Err(Error::UnknownHandler(handler.to_owned()));
        }
        let (component, bytes) = compile(&self.runtime, handler, bytes).await?;
        let (info, created) = self
            .store
            .add_version(handler, component.digest(), &bytes)
            .await?;
        if activate {
            self.activate(handler, component)?;
            self.store.activate(handler, info.version).await?;
        }
        Ok((info, created))
    }

    /// Hot-swaps `handler` to its stored version `version` (rollback is
    /// activating an older one).
    pub async fn activate_version(
        &self,
        handler: &str,
        version: i64,
    ) -> Result<store::HandlerRecord> {
        if !self.versions.contains_key(handler) {
            return Err(Error::UnknownHandler(handler.to_owned()));
        }
        let bytes = self
            .store
            .component(handler, version)
            .await?
            .ok_or_else(|| {
                store::Error::NotFound(format!("version {version} of handler {handler}"))
            })?;
        let (component, _) = compile(&self.runtime, handler, bytes).await?;
        self.activate(handler, component)?;
        Ok(self.store.activate(handler, version).await?)
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles (or finds in the cache) a component off the async threads.
async fn compile(
    runtime: &Arc<Runtime>,
    handler: &str,
    bytes: Vec<u8>,
) -> Result<(Arc<LoadedComponent>, Vec<u8>)> {
    let rt = runtime.clone();
    tokio::task::spawn_blocking(move || rt.load(&bytes).map(|c| (c, bytes)))
        .await
        .map_err(|e| Error::Component {
            handler: handler.to_owned(),
            source: runtime::Error::Engine(format!("compile task failed: {e}")),
        })?
        .map_err(|source| Error::Component {
            handler: handler.to_owned(),
            source,
        })
}

/// Registers a configured handler and its component in the registry, and
/// decides which version runs: a component file new to the registry is
/// activated (the operator changed the file); otherwise the registry's
/// active version runs, so activations made through the API survive a
/// restart.
async fn seed_registry(
    handler: &HandlerConfig,
    store: &Arc<dyn Store>,
    runtime: &Arc<Runtime>,
) -> Result<Arc<LoadedComponent>> {
    let bytes = std::fs::read(&handler.component).map_err(|source| Error::Component {
        handler: handler.name.clone(),
        source: runtime::Error::Read {
            path: handler.component.clone(),
            source,
        },
    })?;
    let (from_file, bytes) = compile(runtime, &handler.name, bytes).await?;
    let config = serde_json::to_value(handler)
        .map_err(|e| store::Error::Corrupt(format!("handler {} config: {e}", handler.name)))?;
    let record = store.put_handler(&handler.name, &config).await?;
    let (info, created) = store
        .add_version(&handler.name, from_file.digest(), &bytes)
        .await?;
    match record.active_version {
        Some(active) if !created && active != info.version => {
            let stored = store
                .component(&handler.name, active)
                .await?
                .ok_or_else(|| {
                    store::Error::NotFound(format!("version {active} of handler {}", handler.name))
                })?;
            Ok(compile(runtime, &handler.name, stored).await?.0)
        }
        Some(active) if active == info.version => Ok(from_file),
        _ => {
            store.activate(&handler.name, info.version).await?;
            Ok(from_file)
        }
    }
}

async fn spawn_handler(
    handler: &HandlerConfig,
    config: &Config,
    store: &Arc<dyn Store>,
    runtime: &Arc<Runtime>,
    committer: &Committer,
    signals: &Signals,
    shutdown: watch::Receiver<bool>,
) -> Result<(Arc<HandlerStats>, watch::Sender<Handler>, JoinHandle<()>)> {
    let component = seed_registry(handler, store, runtime).await?;
    tracing::info!(
        handler = %handler.name,
        digest = %component.digest(),
        topics = ?handler.topics,
        "handler loaded"
    );
    let bound = runtime.handler(&handler.name, component, handler.limits.clone());
    let (version_tx, version_rx) = watch::channel(bound);
    let stats = Arc::new(HandlerStats::default());
    let dispatcher = dispatcher::Dispatcher::new(
        handler.clone(),
        version_rx,
        store.clone(),
        committer.clone(),
        signals.clone(),
        stats.clone(),
        &config.pipeline,
    )
    .await?;
    Ok((stats, version_tx, tokio::spawn(dispatcher.run(shutdown))))
}
