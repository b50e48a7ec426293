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

mod committer;
mod registry;

use registry::seed_registry;
pub mod dispatcher;
pub mod relay;
mod signals;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use committer::Committer;
pub use signals::{Committed, HandlerStats, Histogram, LATENCY_BUCKETS, Signals, StatsSnapshot};

use crate::backbone::{self, Backbone, Feature, Publisher, Subscription};
use crate::config::{Config, DeadLetterMode, HandlerConfig, PipelineConfig, StartFrom};
use crate::runtime::{self, Handler, LoadedComponent, Runtime};
use crate::store::{self, ManagedBy, Store};

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
    /// The handler is declared in the configuration file, which owns it.
    #[error("handler {0} is declared in the configuration file: change it there")]
    ManagedByConfig(String),
    /// The pipeline is shutting down.
    #[error("the pipeline is shutting down")]
    Stopping,
    /// The backbone failed.
    #[error(transparent)]
    Broker(#[from] backbone::Error),
    /// The configuration asks for something this host cannot do.
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One handler known to a running pipeline.
struct Slot {
    config: HandlerConfig,
    stats: Arc<HandlerStats>,
    /// `None` until a version is active.
    running: Option<Running>,
}

/// A running dispatcher and the handles to steer it.
struct Running {
    version: watch::Sender<Handler>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What starting a dispatcher needs.
struct Parts {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    signals: Signals,
    pipeline: PipelineConfig,
    /// Where events are consumed from and published to.
    backbone: Arc<dyn Backbone>,
    /// `None` once the pipeline is shutting down.
    committer: std::sync::Mutex<Option<Committer>>,
    /// Handlers that run natively instead of their component (benchmarks).
    natives: BTreeMap<String, Arc<dyn runtime::NativeHandler>>,
}

impl Parts {
    /// What `config` subscribes to, as the backbone reads it.
    fn subscription(&self, config: &HandlerConfig) -> Subscription {
        Subscription {
            handler: config.name.clone(),
            topics: config.topics.clone(),
            from_earliest: config.start_from == StartFrom::Earliest,
            read_ahead: self.pipeline.max_in_flight.clamp(1, 4096),
            fetch_batch: self.pipeline.fetch_batch,
        }
    }

    /// `name` bound to `component` under `limits`, or to its native
    /// implementation if it has one.
    fn bind(
        &self,
        name: &str,
        component: Arc<LoadedComponent>,
        limits: runtime::Limits,
    ) -> Handler {
        let handler = self.runtime.handler(name, component, limits);
        match self.natives.get(name) {
            Some(native) => handler.with_native(native.clone()),
            None => handler,
        }
    }
}

/// A running pipeline: the committer, the relay, and one dispatcher per
/// handler with an active version. Handlers can be added, reconfigured,
/// swapped to another version and removed while it runs.
pub struct Pipeline {
    parts: Parts,
    /// Handlers by name: those declared in the configuration file and those
    /// created through the API. Locked only briefly, never across an await.
    slots: std::sync::Mutex<BTreeMap<String, Slot>>,
    /// Names declared in the configuration file: the file owns them.
    declared: HashSet<String>,
    /// Serialises changes (configure, activate, delete), which may wait for
    /// a dispatcher to drain.
    changes: tokio::sync::Mutex<()>,
    /// The signals, for the admin API.
    pub signals: Signals,
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    committer_task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Pipeline {
    /// Registers the configured handlers, loads the active version of every
    /// handler (configured or created through the API), and starts the
    /// dispatchers, the committer and the relay.
    pub async fn start(
        config: &Config,
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        signals: Signals,
    ) -> Result<Self> {
        Self::start_with_natives(config, store, runtime, signals, BTreeMap::new()).await
    }

    /// [`Pipeline::start`], with some handlers running natively in the host
    /// instead of their components (the benchmarks' baseline).
    pub async fn start_with_natives(
        config: &Config,
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        signals: Signals,
        natives: BTreeMap<String, Arc<dyn runtime::NativeHandler>>,
    ) -> Result<Self> {
        let backbone = backbone::open(
            &config.broker,
            store.clone(),
            signals.log.clone(),
            config.pipeline.default_partitions,
        )?;
        for handler in &config.handlers {
            check_support(handler, &*backbone)?;
        }
        let mut topics: Vec<(String, u32)> = config
            .topics
            .iter()
            .map(|t| (t.name.clone(), t.partitions))
            .collect();
        for handler in &config.handlers {
            topics.extend(handler_topics(handler, config));
        }
        backbone.ensure_topics(&dedup(topics)).await?;
        let publisher = backbone.publisher();
        for t in &config.topics {
            store.ensure_topic(&t.name, t.partitions).await?;
        }
        // With the embedded broker the log is in the store: emitted events
        // go there in the commit itself.
        let emit_to_log = publisher
            .is_none()
            .then_some(config.pipeline.default_partitions);
        let (committer, committer_task) = Committer::start(
            store.clone(),
            config.pipeline.max_batch,
            signals.clone(),
            emit_to_log,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let pipeline = Self {
            parts: Parts {
                store: store.clone(),
                runtime,
                signals: signals.clone(),
                pipeline: config.pipeline.clone(),
                backbone,
                committer: std::sync::Mutex::new(Some(committer)),
                natives,
            },
            slots: std::sync::Mutex::new(BTreeMap::new()),
            declared: config.handlers.iter().map(|h| h.name.clone()).collect(),
            changes: tokio::sync::Mutex::new(()),
            signals: signals.clone(),
            shutdown,
            tasks: std::sync::Mutex::new(Vec::new()),
            committer_task: std::sync::Mutex::new(Some(committer_task)),
        };
        for handler in &config.handlers {
            let component = seed_registry(handler, &store, &pipeline.parts.runtime).await?;
            pipeline.install(handler.clone(), component).await?;
        }
        for record in store.handlers().await? {
            if record.managed_by != ManagedBy::Api || pipeline.declared.contains(&record.name) {
                continue;
            }
            let handler: HandlerConfig = match serde_json::from_value(record.config.clone()) {
                Ok(h) => h,
                Err(e) => {
                    // One unreadable record must not keep the others down.
                    tracing::error!(handler = %record.name, "stored configuration is unreadable, not starting it: {e}");
                    continue;
                }
            };
            let component = match record.active_version {
                Some(v) => Some(pipeline.load_version(&record.name, v).await?),
                None => None,
            };
            pipeline.install(handler, component).await?;
        }
        let target = match publisher {
            None => relay::Target::Log {
                default_partitions: config.pipeline.default_partitions,
            },
            Some(publisher) => relay::Target::Broker {
                publisher,
                // This instance, for the relay lease.
                holder: uuid::Uuid::new_v4().to_string(),
            },
        };
        let relay = tokio::spawn(relay::run(
            store.clone(),
            target,
            signals.clone(),
            config.pipeline.relay_batch,
            Duration::from_millis(config.pipeline.poll_interval_ms),
            shutdown_rx,
        ));
        lock(&pipeline.tasks).push(relay);
        // Anything appended before start (or by another process) is picked
        // up by the dispatchers' first read; nudge the relay once too.
        signals.relay.notify_one();
        Ok(pipeline)
    }

    /// Follows the changes other host instances commit to a shared store
    /// (PostgreSQL's notices): outbox rows wake the relay at once, and a
    /// handler's registry change (created, reconfigured, activated,
    /// deleted) is applied here too, without a restart. A no-op on a store
    /// private to this process. Ends with [`Pipeline::shutdown`].
    pub async fn follow_store(self: &Arc<Self>) -> Result<()> {
        let Some(mut notices) = self.parts.store.notices().await? else {
            return Ok(());
        };
        let pipeline = Arc::downgrade(self);
        let mut shutdown = self.shutdown.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let notice = tokio::select! {
                    notice = notices.recv() => notice,
                    _ = shutdown.changed() => None,
                };
                let (Some(notice), Some(pipeline)) = (notice, pipeline.upgrade()) else {
                    return;
                };
                let names = match notice {
                    store::Notice::Outbox => {
                        pipeline.signals.relay.notify_one();
                        continue;
                    }
                    store::Notice::Registry(name) => vec![name],
                    store::Notice::Reconnected => {
                        pipeline.signals.relay.notify_one();
                        pipeline.known_names().await
                    }
                };
                for name in names {
                    if let Err(error) = pipeline.sync(&name).await {
                        tracing::error!(handler = %name, "applying a registry change failed: {error}");
                    }
                }
            }
        });
        lock(&self.tasks).push(task);
        Ok(())
    }

    /// Every handler name this instance or the registry knows.
    async fn known_names(&self) -> Vec<String> {
        let mut names: HashSet<String> = lock(&self.slots).keys().cloned().collect();
        match self.parts.store.handlers().await {
            Ok(records) => names.extend(records.into_iter().map(|r| r.name)),
            Err(error) => tracing::error!("reading the registry failed: {error}"),
        }
        names.into_iter().collect()
    }

    /// Makes `name` run here as the registry says: its configuration (for
    /// handlers managed through the API) and its active version. Changes
    /// made by this instance find nothing to do.
    async fn sync(&self, name: &str) -> Result<()> {
        let record = self.parts.store.handler(name).await?;
        let _change = self.changes.lock().await;
        let Some(record) = record else {
            // Deleted elsewhere: stop it here (a declared handler is the
            // file's and is registered again at the next start).
            if !self.is_declared(name)
                && let Some(running) = self.take_running(name)
            {
                drain(running).await;
            }
            if !self.is_declared(name) && lock(&self.slots).remove(name).is_some() {
                tracing::info!(handler = name, "handler removed by another instance");
            }
            return Ok(());
        };
        let active = record.active_version.and_then(|v| {
            record
                .versions
                .iter()
                .find(|i| i.version == v)
                .map(|i| (v, i.digest.clone()))
        });
        if record.managed_by == ManagedBy::Api && !self.is_declared(name) {
            let config: HandlerConfig = serde_json::from_value(record.config.clone())
                .map_err(|e| store::Error::Corrupt(format!("handler {name} config: {e}")))?;
            let current = lock(&self.slots).get(name).map(|s| s.config.clone());
            if current.as_ref() != Some(&config) {
                let component = match &active {
                    Some((v, _)) => Some(self.load_version(name, *v).await?),
                    None => None,
                };
                if let Some(running) = self.take_running(name) {
                    drain(running).await;
                }
                self.install(config, component).await?;
                tracing::info!(handler = name, "handler configured by another instance");
                return Ok(());
            }
        }
        if let Some((version, digest)) = active
            && lock(&self.slots).contains_key(name)
            && self.active_digest(name).as_deref() != Some(digest.as_str())
        {
            let component = self.load_version(name, version).await?;
            self.swap(name, component).await?;
            tracing::info!(
                handler = name,
                version,
                "version activated by another instance"
            );
        } else if let Some(newest) = record.versions.last()
            && record.active_version != Some(newest.version)
        {
            // Uploaded, not active yet: compile it now (the runtime keeps it
            // by digest), so that its activation here is a swap.
            self.load_version(name, newest.version).await?;
        }
        Ok(())
    }

    /// Adds a slot for `config`, with a running dispatcher if a version is
    /// given. Counters of an earlier slot of the same name carry over.
    async fn install(
        &self,
        config: HandlerConfig,
        component: Option<Arc<LoadedComponent>>,
    ) -> Result<()> {
        let stats = self
            .stats(&config.name)
            .unwrap_or_else(|| Arc::new(HandlerStats::default()));
        let running = match component {
            Some(component) => Some(self.spawn(&config, component, stats.clone()).await?),
            None => None,
        };
        lock(&self.slots).insert(
            config.name.clone(),
            Slot {
                config,
                stats,
                running,
            },
        );
        Ok(())
    }

    /// Starts a dispatcher for `config` running `component`.
    async fn spawn(
        &self,
        config: &HandlerConfig,
        component: Arc<LoadedComponent>,
        stats: Arc<HandlerStats>,
    ) -> Result<Running> {
        let committer = lock(&self.parts.committer).clone().ok_or(Error::Stopping)?;
        tracing::info!(
            handler = %config.name,
            digest = %component.digest(),
            topics = ?config.topics,
            "handler started"
        );
        let bound = self
            .parts
            .bind(&config.name, component, config.limits.clone());
        let (version, version_rx) = watch::channel(bound);
        let (stop, stop_rx) = watch::channel(false);
        let backbone = &self.parts.backbone;
        let source = backbone
            .subscribe(self.parts.subscription(config))
            .await
            .map_err(|e| {
                Error::Unsupported(format!(
                    "handler {}: {} consumer: {e}",
                    config.name,
                    backbone.kind()
                ))
            })?;
        let dispatcher = dispatcher::Dispatcher::new(
            config.clone(),
            version_rx,
            self.parts.store.clone(),
            committer,
            self.parts.signals.clone(),
            stats,
            &self.parts.pipeline,
            source,
            backbone.dead_letter_topic(),
        )
        .await?;
        Ok(Running {
            version,
            stop,
            task: tokio::spawn(dispatcher.run(stop_rx)),
        })
    }

    /// The producer of the external broker (Kafka), if events go there
    /// instead of the embedded log.
    pub fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        self.parts.backbone.publisher()
    }

    /// The counters of `handler`, if it is known here.
    pub fn stats(&self, handler: &str) -> Option<Arc<HandlerStats>> {
        lock(&self.slots).get(handler).map(|s| s.stats.clone())
    }

    /// The counters of every handler known here, by name.
    pub fn all_stats(&self) -> Vec<(String, Arc<HandlerStats>)> {
        lock(&self.slots)
            .iter()
            .map(|(name, slot)| (name.clone(), slot.stats.clone()))
            .collect()
    }

    /// Whether `handler` has a running dispatcher.
    pub fn is_running(&self, handler: &str) -> bool {
        lock(&self.slots)
            .get(handler)
            .is_some_and(|s| s.running.is_some())
    }

    /// The topics `handler` subscribes to now.
    pub fn topics(&self, handler: &str) -> Option<Vec<String>> {
        lock(&self.slots)
            .get(handler)
            .map(|s| s.config.topics.clone())
    }

    /// Whether the configuration file declares `handler`.
    pub fn is_declared(&self, handler: &str) -> bool {
        self.declared.contains(handler)
    }

    /// Fails unless `handler` can be steered here: known, and if declared
    /// nowhere, registered.
    fn check_known(&self, handler: &str) -> Result<()> {
        if lock(&self.slots).contains_key(handler) {
            Ok(())
        } else {
            Err(Error::UnknownHandler(handler.to_owned()))
        }
    }

    /// Hot swap: from now on, `handler` runs `component`. Invocations that
    /// already started finish on the version that started them; every event
    /// started afterwards runs the new one. No restart, nothing lost. A
    /// handler without a running dispatcher (no version yet) starts.
    async fn swap(&self, handler: &str, component: Arc<LoadedComponent>) -> Result<()> {
        let (config, stats, sender) = {
            let slots = lock(&self.slots);
            let slot = slots
                .get(handler)
                .ok_or_else(|| Error::UnknownHandler(handler.to_owned()))?;
            (
                slot.config.clone(),
                slot.stats.clone(),
                slot.running.as_ref().map(|r| r.version.clone()),
            )
        };
        tracing::info!(handler, digest = %component.digest(), "version activated");
        match sender {
            Some(sender) => {
                let next = self.parts.bind(handler, component, config.limits.clone());
                sender.send_replace(next);
            }
            None => {
                let running = self.spawn(&config, component, stats).await?;
                if let Some(slot) = lock(&self.slots).get_mut(handler) {
                    slot.running = Some(running);
                }
            }
        }
        Ok(())
    }

    /// The digest of the version `handler` runs now.
    pub fn active_digest(&self, handler: &str) -> Option<String> {
        lock(&self.slots).get(handler).and_then(|s| {
            s.running
                .as_ref()
                .map(|r| r.version.borrow().component().digest().to_owned())
        })
    }

    /// Creates or reconfigures a handler managed through the API:
    /// subscriptions, type filter, retry policy, limits, concurrency, DLQ
    /// mode. A running handler drains (running invocations finish and
    /// commit) and restarts with the new configuration on the same version;
    /// nothing is lost or done twice. Handlers declared in the configuration
    /// file are refused.
    pub async fn configure(&self, config: HandlerConfig) -> Result<store::HandlerRecord> {
        let name = config.name.clone();
        if self.is_declared(&name) {
            return Err(Error::ManagedByConfig(name));
        }
        check_support(&config, &*self.parts.backbone)?;
        let partitions = self.parts.pipeline.default_partitions;
        let topics = config
            .topics
            .iter()
            .map(|t| (t.clone(), partitions))
            .collect();
        self.parts.backbone.ensure_topics(&dedup(topics)).await?;
        let _change = self.changes.lock().await;
        let value = serde_json::to_value(&config)
            .map_err(|e| store::Error::Corrupt(format!("handler {name} config: {e}")))?;
        let record = self
            .parts
            .store
            .put_handler(&name, &value, ManagedBy::Api)
            .await?;
        // Pin `latest` now: the subscription starts when it is made, even
        // if its first version comes later.
        self.parts
            .backbone
            .prepare(&self.parts.subscription(&config))
            .await?;
        let previous = self.take_running(&name);
        let component = match previous {
            Some(running) => {
                let component = running.version.borrow().component().clone();
                drain(running).await;
                Some(component)
            }
            // A handler known only to the registry (removed from the
            // configuration file, now managed here) runs its active version.
            None => match record.active_version {
                Some(v) if !lock(&self.slots).contains_key(&name) => {
                    Some(self.load_version(&name, v).await?)
                }
                _ => None,
            },
        };
        self.install(config, component).await?;
        tracing::info!(handler = %name, "handler configured");
        Ok(record)
    }

    /// Stops `handler` (running invocations finish and commit) and removes
    /// it with its versions; with `purge`, also its positions, processed
    /// records, state and DLQ entries (see [`store::Registry::delete_handler`]).
    pub async fn remove(&self, handler: &str, purge: bool) -> Result<()> {
        if self.is_declared(handler) {
            return Err(Error::ManagedByConfig(handler.to_owned()));
        }
        let _change = self.changes.lock().await;
        if let Some(running) = self.take_running(handler) {
            drain(running).await;
        }
        lock(&self.slots).remove(handler);
        if !self.parts.store.delete_handler(handler, purge).await? {
            return Err(Error::UnknownHandler(handler.to_owned()));
        }
        tracing::info!(handler, purge, "handler removed");
        Ok(())
    }

    fn take_running(&self, handler: &str) -> Option<Running> {
        lock(&self.slots)
            .get_mut(handler)
            .and_then(|s| s.running.take())
    }

    /// Stops reading, lets running invocations finish and commit, then
    /// stops. Events waiting for a retry are left to the next start.
    pub async fn shutdown(&self) {
        let _change = self.changes.lock().await;
        let _ = self.shutdown.send(true);
        let running: Vec<Running> = lock(&self.slots)
            .values_mut()
            .filter_map(|s| s.running.take())
            .collect();
        for r in &running {
            let _ = r.stop.send(true);
        }
        for r in running {
            let _ = r.task.await;
        }
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
        // Dropping the last sender ends the committer after its queue drains.
        lock(&self.parts.committer).take();
        let committer_task = lock(&self.committer_task).take();
        if let Some(task) = committer_task {
            let _ = task.await;
        }
    }
}

/// The topics a configured handler subscribes to, with the partitions to
/// create them with.
fn handler_topics(handler: &HandlerConfig, config: &Config) -> Vec<(String, u32)> {
    handler
        .topics
        .iter()
        .map(|name| {
            let partitions = config
                .topics
                .iter()
                .find(|t| &t.name == name)
                .map_or(config.pipeline.default_partitions, |t| t.partitions);
            (name.clone(), partitions)
        })
        .collect()
}

/// One entry per topic name (the first wins).
fn dedup(mut topics: Vec<(String, u32)>) -> Vec<(String, u32)> {
    let mut seen = HashSet::new();
    topics.retain(|(name, _)| seen.insert(name.clone()));
    topics
}

/// Refuses what the backbone cannot do: parking keys keeps held-back
/// events as references into the log.
fn check_support(handler: &HandlerConfig, backbone: &dyn Backbone) -> Result<()> {
    if handler.on_dead_letter == DeadLetterMode::Park && !backbone.supports(Feature::ParkKeys) {
        return Err(Error::Unsupported(format!(
            "handler {}: on_dead_letter = \"park\" needs the embedded broker for now; use \"continue\" with {}",
            handler.name,
            backbone.kind()
        )));
    }
    Ok(())
}

/// Stops a dispatcher and waits until its running invocations finished and
/// their outcomes committed.
async fn drain(running: Running) {
    let _ = running.stop.send(true);
    let _ = running.task.await;
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
