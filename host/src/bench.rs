//! `sluice bench`: one workload through several consumers side by side, on
//! the embedded store (SQLite), each measured in a process of its own (so
//! that CPU time and peak RSS are its own):
//!
//! * `raw`: the ceiling, reading the log with nothing else;
//! * `native`: the same pipeline with the same handler compiled into the
//!   host ([`BenchStep`]), no WASM;
//! * `wasm`: the pipeline with the `bench-guest` component (one state read
//!   and write, one emit per event);
//! * `naive`: a hand-written idempotent consumer doing the same work with
//!   one transaction per event.
//!
//! The same four run on Kafka and PostgreSQL (`kafka-raw`, `kafka-native`,
//! `kafka-wasm`, `kafka-naive`) when a broker is given: the raw ceiling is
//! an rdkafka consumer reading the records, the pipelines include the
//! outbox relay publishing every emitted event back to Kafka, and each
//! setup gets a fresh database and fresh topics.
//!
//! Each reports events per second, CPU-seconds per million events (of this
//! process: the broker's and the database's are not counted), peak RSS, and
//! (for consumers that commit effects) p50/p99 latency from append (or
//! publish) to effect committed: for the pipelines, to the end of the group
//! commit that held the outcome ([`crate::pipeline::Signals::commits`]); for
//! the naive consumers, which commit each event alone, to `processed_at`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Config, HandlerConfig, TopicConfig};
use crate::event::Event;
use crate::pipeline::{Pipeline, Signals};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::store::{self, Batch, Processed, Store, StoreOptions};

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The pipeline failed to start.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::Error),
    /// The runtime failed to start.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The setups, in the order the table shows them.
pub const SETUPS: &[&str] = &["raw", "native", "wasm", "naive", "swap"];

/// The Kafka + PostgreSQL setups, run when a broker is given.
pub const KAFKA_SETUPS: &[&str] = &["kafka-raw", "kafka-native", "kafka-wasm", "kafka-naive"];

/// Where the Kafka + PostgreSQL setups run.
#[derive(Debug, Clone)]
pub struct Servers {
    /// Kafka bootstrap servers; `None`: the Kafka setups cannot run.
    pub brokers: Option<String>,
    /// A PostgreSQL database to create the benchmark's databases from.
    pub postgres: String,
    /// Extra librdkafka properties of every Kafka client.
    pub kafka_properties: std::collections::BTreeMap<String, String>,
}

/// Partitions of the Kafka topics.
const KAFKA_PARTITIONS: i32 = 8;

/// Events run through a Kafka pipeline before it is measured.
const WARM_UP: u64 = 500;

/// What one setup measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// The setup.
    pub setup: String,
    /// Events consumed.
    pub events: u64,
    /// Wall-clock seconds from the first event to the last effect.
    pub seconds: f64,
    /// CPU-seconds (user + system) of the measured phase.
    pub cpu_seconds: f64,
    /// CPU-seconds of the whole machine in the measured phase: every
    /// process, so the broker's and the database's too.
    #[serde(default)]
    pub machine_cpu_seconds: f64,
    /// The machine's cores (`/proc/stat`).
    #[serde(default)]
    pub cores: u32,
    /// Peak resident set size of the process, in MiB.
    pub peak_rss_mib: f64,
    /// Latency from append to effect committed, in ms: p50 and p99.
    pub latency_ms: Option<(f64, f64)>,
    /// Hot swaps (the `swap` setup): ms from the activation call to the
    /// first event committed by the new version, one per swap.
    #[serde(default)]
    pub swaps_ms: Vec<f64>,
}

impl Measurement {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    /// CPU-seconds per million events.
    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds * 1e6 / (self.events.max(1) as f64)
    }

    /// The machine's CPU-seconds per million events.
    pub fn machine_cpu_per_million(&self) -> f64 {
        self.machine_cpu_seconds * 1e6 / (self.events.max(1) as f64)
    }

    /// How busy the machine's cores were in the measured phase, 0 to 1: at
    /// 1 the run was bound by CPU, below it by waits (a serial stage, I/O).
    pub fn machine_busy(&self) -> f64 {
        self.machine_cpu_seconds / (self.seconds.max(1e-9) * f64::from(self.cores.max(1)))
    }
}

/// The workload: `events` events over `keys` keys.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Number of events.
    pub events: u64,
    /// Number of distinct keys.
    pub keys: u64,
    /// Events appended per second; 0: as fast as possible (a burst, so the
    /// latencies are mostly queueing).
    pub rate: f64,
}

impl Workload {
    /// How many events to append at a time.
    fn step(&self) -> u64 {
        if self.rate > 0.0 {
            ((self.rate / 100.0) as u64).clamp(1, 1000)
        } else {
            1000
        }
    }

    /// Waits until events `from..` are due (at `rate`, from `started`).
    async fn pace(&self, started: Instant, from: u64) {
        if self.rate > 0.0 {
            let due = started + Duration::from_secs_f64(from as f64 / self.rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

const TOPIC: &str = "bench-in";
const HANDLER: &str = "bench";

/// Runs `setup` in this process, in a fresh store under `dir`.
pub async fn run_setup(
    setup: &str,
    workload: Workload,
    component: &Path,
    dir: &Path,
    servers: &Servers,
) -> Result<Measurement> {
    if let Some(kind) = setup.strip_prefix("kafka-") {
        return kafka::run(kind, setup, workload, component, servers).await;
    }
    let url = format!("sqlite://{}", dir.join(format!("{setup}.db")).display());
    let store = store::open(&url, &StoreOptions::default()).await?;
    store.ensure_topic(TOPIC, 4).await?;
    match setup {
        "raw" => raw(&store, workload, setup).await,
        "wasm" => pipeline(store, &url, workload, component, setup, false).await,
        "native" => pipeline(store, &url, workload, component, setup, true).await,
        "naive" => naive(&store, &url, workload, setup).await,
        "swap" => swap(store, &url, workload, component, setup).await,
        other => Err(Error::Other(format!("unknown setup {other}"))),
    }
}

fn events(workload: Workload, from: u64, to: u64) -> Vec<Event> {
    (from..to)
        .map(|i| Event {
            id: format!("b{i}"),
            source: "/bench".into(),
            ty: "step".into(),
            time: None,
            content_type: Some("application/json".into()),
            data_schema: None,
            data: format!(r#"{{"n":{i}}}"#).into_bytes(),
            headers: BTreeMap::new(),
            key: Some(format!("k{}", i % workload.keys.max(1))),
            topic: TOPIC.into(),
        })
        .collect()
}

async fn append_all(store: &Arc<dyn Store>, workload: Workload) -> Result<()> {
    let mut from = 0;
    while from < workload.events {
        let to = (from + 1000).min(workload.events);
        store.append(&events(workload, from, to), 4).await?;
        from = to;
    }
    Ok(())
}

/// The ceiling: the log read from start to end, nothing else.
async fn raw(store: &Arc<dyn Store>, workload: Workload, setup: &str) -> Result<Measurement> {
    append_all(store, workload).await?;
    let (started, cpu) = (Instant::now(), Cpu::now());
    let (mut after, mut read) = (0, 0u64);
    loop {
        let batch = store.read_log(TOPIC, after, 1000).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        read += batch.len() as u64;
    }
    finish(setup, read, started, cpu)
}

/// `bench-guest`'s `step` compiled into the host: reads the key's `seen`
/// counter (JSON), writes it plus one, and emits one event with the old
/// value, keyed like its cause.
#[derive(Debug)]
pub struct BenchStep;

impl crate::runtime::NativeHandler for BenchStep {
    fn handle(
        &self,
        event: &Event,
        state: &crate::runtime::StateMap,
        out: &mut crate::runtime::NativeOutput,
    ) -> std::result::Result<(), String> {
        let seen: u64 = match state.get("seen") {
            Some(v) => serde_json::from_slice(v).map_err(|e| e.to_string())?,
            None => 0,
        };
        let next = serde_json::to_vec(&(seen + 1)).map_err(|e| e.to_string())?;
        out.state_changes.insert("seen".into(), Some(next));
        out.emitted.push((
            "bench-out".into(),
            "bench.stepped".into(),
            seen.to_string().into_bytes(),
            event.key.clone(),
        ));
        Ok(())
    }
}

/// The pipeline running the benchmark handler, as a component or natively
/// (`native`); events are appended while it runs.
async fn pipeline(
    store: Arc<dyn Store>,
    url: &str,
    workload: Workload,
    component: &Path,
    setup: &str,
    native: bool,
) -> Result<Measurement> {
    let config = embedded_config(url, component);
    let signals = Signals::new();
    let commits = CommitTimes::collect(&signals);
    let pipeline = start_pipeline(&config, store.clone(), signals.clone(), native).await?;
    let stats = pipeline
        .stats(HANDLER)
        .ok_or_else(|| Error::Other("the bench handler did not start".into()))?;
    let (started, cpu) = (Instant::now(), Cpu::now());
    let mut from = 0;
    while from < workload.events {
        workload.pace(started, from).await;
        let to = (from + workload.step()).min(workload.events);
        let appended = store.append(&events(workload, from, to), 4).await?;
        if let Some(last) = appended.last() {
            signals.appended(last.seq);
        }
        from = to;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.processed.load(std::sync::atomic::Ordering::Relaxed) < workload.events {
        if Instant::now() > deadline {
            return Err(Error::Other("the pipeline did not finish in 600 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let measured = finish(setup, workload.events, started, cpu);
    pipeline.shutdown().await;
    let mut measured = measured?;
    measured.latency_ms = latencies(url, commits.finish().await?).await?;
    Ok(measured)
}

/// The embedded pipeline's configuration: the store at `url`, the input
/// topic, and the benchmark handler running `component`.
fn embedded_config(url: &str, component: &Path) -> Config {
    let mut config = Config::default();
    config.store.url = url.to_owned();
    config.topics = vec![TopicConfig {
        name: TOPIC.into(),
        partitions: 4,
    }];
    config.handlers = vec![bench_handler(component, TOPIC)];
    config
}

/// The benchmark handler on `topic`.
fn bench_handler(component: &Path, topic: &str) -> HandlerConfig {
    HandlerConfig {
        name: HANDLER.into(),
        component: Some(component.to_owned()),
        topics: vec![topic.into()],
        types: vec!["step".into()],
        retry: Default::default(),
        limits: Default::default(),
        concurrency: 32,
        on_dead_letter: Default::default(),
        start_from: Default::default(),
    }
}

/// Starts the pipeline of `config`, with the benchmark handler compiled
/// into the host when `native`.
async fn start_pipeline(
    config: &Config,
    store: Arc<dyn Store>,
    signals: Signals,
    native: bool,
) -> Result<Pipeline> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let mut natives: BTreeMap<String, Arc<dyn crate::runtime::NativeHandler>> = BTreeMap::new();
    if native {
        natives.insert(HANDLER.into(), Arc::new(BenchStep));
    }
    Ok(Pipeline::start_with_natives(config, store, runtime, signals, natives).await?)
}

/// The state after `event` for the naive consumers: `seen` plus one, and
/// the event it emits.
fn naive_step(event: &Event, state: &crate::runtime::StateMap) -> (u64, Event) {
    let seen: u64 = state
        .get("seen")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    let out = Event {
        id: format!("{}-out", event.id),
        ty: "bench.stepped".into(),
        topic: "bench-out".into(),
        data: seen.to_string().into_bytes(),
        ..event.clone()
    };
    (seen, out)
}

/// One event through a naive consumer: nothing when it was processed
/// already; else its state read, then one transaction with the processed
/// record, the state, the outbox row and `position`'s position.
async fn naive_one(store: &dyn Store, e: &Event, seq: i64, position: Batch) -> Result<()> {
    if !store
        .processed_ids(HANDLER, std::slice::from_ref(&e.id))
        .await?
        .is_empty()
    {
        return Ok(());
    }
    let key = e.key.clone().unwrap_or_default();
    let state = store.load_state(HANDLER, &key).await?;
    let (seen, out) = naive_step(e, &state);
    store
        .commit(&Batch {
            processed: vec![naive_outcome(e, seq, seen, out)],
            ..position
        })
        .await?;
    Ok(())
}

/// One processed outcome of the naive consumers.
fn naive_outcome(event: &Event, seq: i64, seen: u64, out: Event) -> Processed {
    Processed {
        handler: HANDLER.into(),
        version: "native".into(),
        topic: event.topic.clone(),
        seq,
        event_id: event.id.clone(),
        attempts: 1,
        key: event.key.clone(),
        state_changes: BTreeMap::from([(
            "seen".to_string(),
            Some((seen + 1).to_string().into_bytes()),
        )]),
        emitted: vec![out],
    }
}

/// p50 and p99 of `ms`, sorted in place.
fn percentiles(ms: &mut [i64]) -> Option<(f64, f64)> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize] as f64;
    Some((at(0.50), at(0.99)))
}

/// The typical hand-written idempotent consumer: for each event, one
/// transaction that checks it was not processed, reads the key's state,
/// writes the new state, the processed record and the outbox row.
async fn naive(
    store: &Arc<dyn Store>,
    url: &str,
    workload: Workload,
    setup: &str,
) -> Result<Measurement> {
    let (started, cpu) = (Instant::now(), Cpu::now());
    let mut from = 0;
    let mut after = 0;
    while from < workload.events {
        workload.pace(started, from).await;
        let to = (from + workload.step()).min(workload.events);
        store.append(&events(workload, from, to), 4).await?;
        from = to;
        loop {
            let batch = store.read_log(TOPIC, after, 1000).await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for record in batch {
                let position = Batch {
                    positions: vec![(HANDLER.into(), TOPIC.into(), record.seq)],
                    ..Batch::default()
                };
                naive_one(&**store, &record.event, record.seq, position).await?;
            }
        }
    }
    let mut measured = finish(setup, workload.events, started, cpu)?;
    measured.latency_ms = naive_latencies(url).await?;
    Ok(measured)
}

fn finish(setup: &str, events: u64, started: Instant, before: Cpu) -> Result<Measurement> {
    let now = Cpu::now();
    Ok(Measurement {
        setup: setup.to_owned(),
        events,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: now.process - before.process,
        machine_cpu_seconds: now.machine - before.machine,
        cores: now.cores,
        peak_rss_mib: peak_rss_mib(),
        latency_ms: None,
        swaps_ms: Vec::new(),
    })
}

/// How many hot swaps the `swap` setup makes.
const SWAPS: usize = 6;

/// Hot swaps under a steady load (the workload's rate, or 2,000 events/s):
/// the bench component and a copy of it with an extra custom section (so
/// another version, which behaves the same) are activated in turn; each
/// swap is timed from the activation call to the first event committed by
/// the version activated.
async fn swap(
    store: Arc<dyn Store>,
    url: &str,
    workload: Workload,
    component: &Path,
    setup: &str,
) -> Result<Measurement> {
    use sqlx::Connection as _;
    let config = embedded_config(url, component);
    let signals = Signals::new();
    let commits = CommitTimes::collect(&signals);
    let pipeline = start_pipeline(&config, store.clone(), signals.clone(), false).await?;
    let first = pipeline
        .active_digest(HANDLER)
        .ok_or_else(|| Error::Other("the bench handler did not start".into()))?;
    // A custom section (id 0): name `sluice-bench`, payload `v2`.
    let mut bytes = std::fs::read(component)
        .map_err(|e| Error::Other(format!("reading {}: {e}", component.display())))?;
    bytes.extend_from_slice(&[0, 15, 12]);
    bytes.extend_from_slice(b"sluice-bench");
    bytes.extend_from_slice(b"v2");
    let (second, _) = pipeline.upload(HANDLER, bytes, false).await?;
    let versions = [(1, first), (second.version, second.digest.clone())];
    let load = Workload {
        events: u64::MAX,
        rate: if workload.rate > 0.0 {
            workload.rate
        } else {
            2000.0
        },
        ..workload
    };
    let producer = {
        let (store, signals) = (store.clone(), signals.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut from = 0;
            loop {
                load.pace(started, from).await;
                let to = from + load.step();
                if let Ok(appended) = store.append(&events(load, from, to), 4).await
                    && let Some(last) = appended.last()
                {
                    signals.appended(last.seq);
                }
                from = to;
            }
        })
    };
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .map_err(|e| Error::Other(format!("reading processed records: {e}")))?;
    let (started, cpu) = (Instant::now(), Cpu::now());
    let mut swaps_ms = Vec::with_capacity(SWAPS);
    for i in 0..SWAPS {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (version, digest) = &versions[(i + 1) % 2];
        let (since, at) = (crate::store::now_ms(), Instant::now());
        pipeline.activate_version(HANDLER, *version).await?;
        let deadline = at + Duration::from_secs(10);
        loop {
            let seen: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM processed WHERE handler = ? AND version = ? AND processed_at >= ?",
            )
            .bind(HANDLER)
            .bind(digest)
            .bind(since)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| Error::Other(format!("reading processed records: {e}")))?;
            if seen > 0 {
                swaps_ms.push(at.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "version {version} processed nothing in 10 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    producer.abort();
    let processed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM processed WHERE handler = ?")
        .bind(HANDLER)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| Error::Other(format!("reading processed records: {e}")))?;
    let mut measured = finish(setup, processed.max(0) as u64, started, cpu)?;
    pipeline.shutdown().await;
    measured.latency_ms = latencies(url, commits.finish().await?).await?;
    measured.swaps_ms = swaps_ms;
    Ok(measured)
}

/// When each event's outcome had committed, by event id: the pipeline's
/// commit notices ([`Signals::commits`]), gathered while a setup runs.
/// (`processed_at` is written inside the transaction, so it is when the
/// commit began, up to a commit's duration early.)
struct CommitTimes {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<HashMap<String, i64>>>,
}

impl CommitTimes {
    /// Starts listening; call before the pipeline starts.
    fn collect(signals: &Signals) -> Self {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let mut notices = signals.commits.subscribe();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut at = HashMap::new();
            let mut note = |c: &crate::pipeline::Committed| {
                for (handler, id) in &c.events {
                    if handler == HANDLER {
                        // A later commit of the same event is a duplicate.
                        at.entry(id.clone()).or_insert(c.at_ms);
                    }
                }
            };
            let lagged = |n| Error::Other(format!("{n} commit notices were missed"));
            loop {
                tokio::select! {
                    notice = notices.recv() => match notice {
                        Ok(c) => note(&c),
                        Err(RecvError::Lagged(n)) => return Err(lagged(n)),
                        Err(RecvError::Closed) => break,
                    },
                    _ = &mut stopped => {
                        // What was sent before the stop is still queued.
                        loop {
                            match notices.try_recv() {
                                Ok(c) => note(&c),
                                Err(TryRecvError::Lagged(n)) => return Err(lagged(n)),
                                Err(_) => break,
                            }
                        }
                        break;
                    }
                }
            }
            Ok(at)
        });
        Self { stop, task }
    }

    /// The commit times gathered; call once the pipeline has shut down.
    async fn finish(self) -> Result<HashMap<String, i64>> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| Error::Other(format!("gathering commit times: {e}")))?
    }
}

/// p50 and p99 of (commit finished - appended_at), appended_at from the
/// store file.
async fn latencies(url: &str, committed: HashMap<String, i64>) -> Result<Option<(f64, f64)>> {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .map_err(|e| Error::Other(format!("reading latencies: {e}")))?;
    let appended: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, appended_at FROM events WHERE topic = ?")
            .bind(TOPIC)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| Error::Other(format!("reading latencies: {e}")))?;
    let mut ms: Vec<i64> = appended
        .into_iter()
        .filter_map(|(id, at)| Some(committed.get(&id)? - at))
        .collect();
    Ok(percentiles(&mut ms))
}

/// p50 and p99 of (processed_at - appended_at), from the store file: the
/// naive consumer commits each event alone, at once.
async fn naive_latencies(url: &str) -> Result<Option<(f64, f64)>> {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .map_err(|e| Error::Other(format!("reading latencies: {e}")))?;
    let mut ms: Vec<i64> = sqlx::query_scalar(
        "SELECT p.processed_at - e.appended_at FROM processed p JOIN events e ON e.seq = p.seq WHERE p.handler = ?",
    )
    .bind(HANDLER)
    .fetch_all(&mut conn)
    .await
    .map_err(|e| Error::Other(format!("reading latencies: {e}")))?;
    Ok(percentiles(&mut ms))
}

/// User + system CPU time of this process so far, from `/proc/self/stat`.
/// CPU time used so far, in seconds.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    /// By this process.
    process: f64,
    /// By the whole machine (every core's busy time in `/proc/stat`).
    machine: f64,
    /// The machine's cores.
    cores: u32,
}

impl Cpu {
    fn now() -> Self {
        let (machine, cores) = machine_cpu_seconds();
        Self {
            process: cpu_seconds(),
            machine,
            cores,
        }
    }
}

/// Busy seconds of all cores together (user, nice, system, irq, softirq
/// and steal time of `/proc/stat`'s `cpu` line), and the number of cores.
fn machine_cpu_seconds() -> (f64, u32) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0);
    };
    let mut lines = stat.lines();
    let ticks: Vec<f64> = lines
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let cores = lines.filter(|l| l.starts_with("cpu")).count() as u32;
    // user nice system idle iowait irq softirq steal: idle and iowait
    // (indexes 3 and 4) are not busy. Guest time is inside user time.
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    (busy / 100.0, cores)
}

fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from field 3.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 here. The
    // kernel reports them in USER_HZ, 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The results as a table, then the ratios of the WASM pipeline to the
/// other setups' rates.
pub fn table(results: &[Measurement]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:>10} {:>12} {:>14} {:>10} {:>9} {:>9} {:>15} {:>10}",
        "setup",
        "events",
        "events/s",
        "cpu-s/M ev",
        "peak MiB",
        "p50 ms",
        "p99 ms",
        "machine cpu-s/M",
        "cores busy"
    );
    for m in results {
        let (p50, p99) = m
            .latency_ms
            .map_or(("-".to_owned(), "-".to_owned()), |(a, b)| {
                (format!("{a:.0}"), format!("{b:.0}"))
            });
        let _ = writeln!(
            out,
            "{:<13} {:>10} {:>12.0} {:>14.1} {:>10.1} {:>9} {:>9} {:>15.1} {:>9.0}%",
            m.setup,
            m.events,
            m.rate(),
            m.cpu_per_million(),
            m.peak_rss_mib,
            p50,
            p99,
            m.machine_cpu_per_million(),
            m.machine_busy() * 100.0
        );
    }
    for m in results.iter().filter(|m| !m.swaps_ms.is_empty()) {
        let mut ms = m.swaps_ms.clone();
        ms.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "hot swap, activate -> first event committed on the new version: median {:.1} ms, max {:.1} ms ({} swaps)",
            ms[ms.len() / 2],
            ms[ms.len() - 1],
            ms.len()
        );
    }
    let rate = |s: &str| results.iter().find(|m| m.setup == s).map(Measurement::rate);
    for prefix in ["", "kafka-"] {
        let Some(wasm) = rate(&format!("{prefix}wasm")) else {
            continue;
        };
        for (other, label) in [
            ("native", "(c)/(b) wasm/native"),
            ("raw", "(c)/(a) wasm/raw"),
            ("naive", "(c)/(d) wasm/naive"),
        ] {
            if let Some(r) = rate(&format!("{prefix}{other}")) {
                let _ = writeln!(out, "{prefix}{label}: {:.2}", wasm / r);
            }
        }
    }
    out
}

/// Where the benchmark component is: `component`, or built from the
/// workspace's `tests/fixtures/bench-guest` when run from a checkout.
pub fn component(component: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = component {
        return Ok(path);
    }
    let workspace = std::env::current_dir().map_err(|e| Error::Other(e.to_string()))?;
    crate::harness::build_components(
        &workspace,
        &["bench-guest"],
        &workspace.join("target").join("guests"),
    )
    .map_err(|e| {
        Error::Other(format!(
            "building the bench component (run from the repository, or pass --component): {e}"
        ))
    })?
    .pop()
    .ok_or_else(|| Error::Other("no bench component built".into()))
}

/// The Kafka + PostgreSQL setups.
mod kafka {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer, StreamConsumer};

    use super::{
        Error, HANDLER, KAFKA_PARTITIONS, Measurement, Result, Servers, WARM_UP, Workload, finish,
        naive_one, percentiles,
    };
    use crate::backbone::BackboneConfig;
    use crate::backbone::kafka::KafkaConfig;
    use crate::backbone::{Publisher, cloudevents, kafka};
    use crate::config::{Config, TopicConfig};
    use crate::event::Event;
    use crate::pipeline::Signals;
    use crate::store::{self, Batch, Store, StoreOptions, now_ms};

    /// A fresh database and fresh topics for one setup.
    struct Run {
        broker: KafkaConfig,
        topic: String,
        database: String,
        url: String,
        admin: String,
    }

    impl Run {
        async fn new(servers: &Servers, setup: &str) -> Result<Self> {
            use sqlx::Connection as _;
            let brokers = servers
                .brokers
                .clone()
                .ok_or_else(|| Error::Other(format!("{setup} needs a Kafka broker (--brokers)")))?;
            let id = uuid::Uuid::now_v7().simple().to_string();
            let database = format!("sluice_bench_{id}");
            let mut conn = sqlx::PgConnection::connect(&servers.postgres)
                .await
                .map_err(|e| Error::Other(format!("connecting to {}: {e}", servers.postgres)))?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{database}\""
            )))
            .execute(&mut conn)
            .await
            .map_err(|e| Error::Other(format!("creating the database: {e}")))?;
            let url = match servers.postgres.rsplit_once('/') {
                Some((base, _)) => format!("{base}/{database}"),
                None => return Err(Error::Other("the PostgreSQL URL names no database".into())),
            };
            let broker = KafkaConfig {
                brokers,
                group_prefix: format!("bench-{id}"),
                dead_letter_topic: String::new(),
                properties: servers.kafka_properties.clone(),
                ..KafkaConfig::default()
            };
            let topic = format!("bench-in-{id}");
            kafka::ensure_topics(&broker, &[(topic.clone(), KAFKA_PARTITIONS)])
                .await
                .map_err(|e| Error::Other(format!("creating the topic: {e}")))?;
            Ok(Self {
                broker,
                topic,
                database,
                url,
                admin: servers.postgres.clone(),
            })
        }

        /// Drops the database (the topics stay: the broker keeps them in
        /// memory or on its own disk).
        async fn finish(self) {
            use sqlx::Connection as _;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.database
                )))
                .execute(&mut conn)
                .await;
            }
        }

        /// A consumer of the input topic outside any group's offsets: it
        /// reads every partition from the start.
        fn consumer(&self) -> Result<StreamConsumer> {
            let consumer: StreamConsumer = kafka::client_config(&self.broker)
                .set("group.id", format!("{}.raw", self.broker.group_prefix))
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| Error::Other(e.to_string()))?;
            let mut list = rdkafka::TopicPartitionList::new();
            for p in 0..KAFKA_PARTITIONS {
                list.add_partition_offset(&self.topic, p, rdkafka::Offset::Beginning)
                    .map_err(|e| Error::Other(e.to_string()))?;
            }
            consumer
                .assign(&list)
                .map_err(|e| Error::Other(e.to_string()))?;
            Ok(consumer)
        }
    }

    /// Publishes events `0..workload.events` (paced by the workload) and
    /// returns when each was published, ms since the epoch, by number.
    ///
    /// Paced, a step's records are handed to the producer before the next
    /// step, in order, but the acknowledgements are awaited at the end:
    /// waiting for each step's (acks=all) kept the producer below the rate
    /// asked (3.2–3.5 K/s for 4 K/s). In a burst each step of 1,000 is
    /// acknowledged before the next, as the embedded setups append theirs.
    async fn produce(
        topic: &str,
        publisher: &kafka::KafkaPublisher,
        workload: Workload,
    ) -> Result<Vec<i64>> {
        use std::future::Future;
        use std::pin::Pin;
        type Sending<'p> = Pin<Box<dyn Future<Output = crate::backbone::Result<()>> + Send + 'p>>;
        let failed = |e: crate::backbone::Error| Error::Other(format!("publishing: {e}"));
        let started = Instant::now();
        let mut published = Vec::with_capacity(workload.events as usize);
        let mut sending: Vec<Sending<'_>> = Vec::new();
        let mut from = 0;
        while from < workload.events {
            workload.pace(started, from).await;
            let to = (from + workload.step()).min(workload.events);
            let at = now_ms();
            let mut events: Vec<Event> = super::events(workload, from, to);
            for e in &mut events {
                e.topic = topic.to_owned();
            }
            let mut send: Sending<'_> = Box::pin(async move { publisher.publish(&events).await });
            if from == 0 || workload.rate <= 0.0 {
                // The first may create the topic before it sends anything.
                send.await.map_err(failed)?;
            } else if let std::task::Poll::Ready(sent) = futures::poll!(send.as_mut()) {
                sent.map_err(failed)?;
            } else {
                // Its records are queued in the producer; the rest is the
                // acknowledgement.
                sending.push(send);
            }
            published.extend(std::iter::repeat_n(at, (to - from) as usize));
            from = to;
        }
        for send in sending {
            send.await.map_err(failed)?;
        }
        Ok(published)
    }

    pub(super) async fn run(
        kind: &str,
        setup: &str,
        workload: Workload,
        component: &std::path::Path,
        servers: &Servers,
    ) -> Result<Measurement> {
        let run = Run::new(servers, setup).await?;
        let publisher = kafka::KafkaPublisher::new(&run.broker, KAFKA_PARTITIONS as u32)
            .map_err(|e| Error::Other(e.to_string()))?;
        let measured = match kind {
            "raw" => raw(&run, &publisher, workload, setup).await,
            "native" => pipeline(&run, publisher, workload, component, setup, true).await,
            "wasm" => pipeline(&run, publisher, workload, component, setup, false).await,
            "naive" => naive(&run, publisher, workload, setup).await,
            other => Err(Error::Other(format!("unknown setup kafka-{other}"))),
        };
        run.finish().await;
        measured
    }

    /// The ceiling: an rdkafka consumer reading the records, nothing else.
    /// Paced (`--rate`), it reads while they are published and reports the
    /// broker's own latency, publish call to record received.
    async fn raw(
        run: &Run,
        publisher: &kafka::KafkaPublisher,
        workload: Workload,
        setup: &str,
    ) -> Result<Measurement> {
        if workload.rate > 0.0 {
            return raw_paced(run, publisher, workload, setup).await;
        }
        let producing = Instant::now();
        let burst = Workload {
            rate: 0.0,
            ..workload
        };
        produce(&run.topic, publisher, burst).await?;
        // What the broker takes: a bound on every Kafka setup, which all
        // publish their input, and the pipelines their output too.
        let took = producing.elapsed().as_secs_f64();
        eprintln!(
            "{setup}: {} events published (acks=all) in {took:.2} s: {:.0} events/s",
            workload.events,
            workload.events as f64 / took.max(1e-9)
        );
        let consumer = run.consumer()?;
        let (started, cpu) = (Instant::now(), super::Cpu::now());
        let mut read = 0;
        while read < workload.events {
            let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                .await
                .map_err(|_| Error::Other("no record for 60 s".into()))?
                .map_err(|e| Error::Other(e.to_string()))?;
            // Decoded as the pipeline decodes it.
            let (record, at) = kafka::record_of(&m);
            std::hint::black_box(cloudevents::decode(record, at));
            read += 1;
        }
        finish(setup, read, started, cpu)
    }

    /// [`raw`] at the workload's rate: the consumer reads while the
    /// producer publishes, and each record's latency is from its publish
    /// call to its arrival here.
    async fn raw_paced(
        run: &Run,
        publisher: &kafka::KafkaPublisher,
        workload: Workload,
        setup: &str,
    ) -> Result<Measurement> {
        let consumer = run.consumer()?;
        let (started, cpu) = (Instant::now(), super::Cpu::now());
        let reading = async {
            let mut received: Vec<(usize, i64)> = Vec::with_capacity(workload.events as usize);
            while received.len() < workload.events as usize {
                let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                    .await
                    .map_err(|_| Error::Other("no record for 60 s".into()))?
                    .map_err(|e| Error::Other(e.to_string()))?;
                let at = now_ms();
                let (record, position) = kafka::record_of(&m);
                let event = cloudevents::decode(record, position);
                if let Some(n) = number(&event.id) {
                    received.push((n, at));
                }
            }
            Ok::<_, Error>(received)
        };
        let (published, received) = tokio::join!(produce(&run.topic, publisher, workload), reading);
        let (published, received) = (published?, received?);
        let mut measured = finish(setup, received.len() as u64, started, cpu)?;
        let mut ms: Vec<i64> = received
            .iter()
            .filter_map(|(n, at)| Some(at - published.get(*n)?))
            .collect();
        measured.latency_ms = super::percentiles(&mut ms);
        Ok(measured)
    }

    /// The pipeline on Kafka and PostgreSQL, relay included: done when
    /// every event is processed and every emitted event is published.
    async fn pipeline(
        run: &Run,
        publisher: kafka::KafkaPublisher,
        workload: Workload,
        component: &std::path::Path,
        setup: &str,
        native: bool,
    ) -> Result<Measurement> {
        let store = store::open(&run.url, &StoreOptions::default()).await?;
        let mut config = Config::default();
        config.store.url = run.url.clone();
        config.broker = BackboneConfig::Kafka(run.broker.clone());
        config.topics = vec![TopicConfig {
            name: run.topic.clone(),
            partitions: KAFKA_PARTITIONS as u32,
        }];
        config.handlers = vec![super::bench_handler(component, &run.topic)];
        let signals = Signals::new();
        let commits = super::CommitTimes::collect(&signals);
        let pipeline = super::start_pipeline(&config, store.clone(), signals, native).await?;
        let stats = pipeline
            .stats(HANDLER)
            .ok_or_else(|| Error::Other("the bench handler did not start".into()))?;
        // Measured from when the group is formed.
        let deadline = Instant::now() + Duration::from_secs(60);
        while stats.snapshot().partitions < KAFKA_PARTITIONS as u64 {
            if Instant::now() > deadline {
                return Err(Error::Other(
                    "the consumer got no partitions in 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Warm-up, not measured: the first events after the group formed
        // waited up to 130 ms (consumers' first fetches, the output topic
        // created by the relay's first publish, first plans), which was
        // the p99 of a paced run of 20,000 events.
        let mut warm_up: Vec<Event> = super::events(workload, 0, WARM_UP.min(workload.events));
        for e in &mut warm_up {
            e.id = format!("warm-up-{}", e.id);
            e.topic = run.topic.clone();
        }
        let warmed = warm_up.len() as u64;
        publisher
            .publish(&warm_up)
            .await
            .map_err(|e| Error::Other(format!("publishing: {e}")))?;
        wait_done(&store, &stats, warmed).await?;
        let (started, cpu) = (Instant::now(), super::Cpu::now());
        let published = produce(&run.topic, &publisher, workload).await?;
        wait_done(&store, &stats, warmed + workload.events).await?;
        let measured = finish(setup, workload.events, started, cpu);
        pipeline.shutdown().await;
        let mut measured = measured?;
        let committed = commits.finish().await?;
        let mut ms: Vec<i64> = committed
            .iter()
            .filter_map(|(id, at)| Some(at - published.get(number(id)?)?))
            .collect();
        measured.latency_ms = super::percentiles(&mut ms);
        Ok(measured)
    }

    /// Waits until `events` are processed and every emitted event is
    /// published.
    async fn wait_done(
        store: &Arc<dyn Store>,
        stats: &crate::pipeline::HandlerStats,
        events: u64,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let done = stats.processed.load(std::sync::atomic::Ordering::Relaxed) >= events
                && store.outbox_backlog().await? == 0;
            if done {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Other("the pipeline did not finish in 600 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// The typical hand-written idempotent consumer on Kafka: for each
    /// record, one transaction (processed check, state read, then processed
    /// record, state, outbox row and position).
    async fn naive(
        run: &Run,
        publisher: kafka::KafkaPublisher,
        workload: Workload,
        setup: &str,
    ) -> Result<Measurement> {
        let store: Arc<dyn Store> = store::open(&run.url, &StoreOptions::default()).await?;
        let consumer = run.consumer()?;
        let (started, cpu) = (Instant::now(), super::Cpu::now());
        let topic = run.topic.clone();
        let producing = tokio::spawn(async move { produce(&topic, &publisher, workload).await });
        let mut read = 0;
        while read < workload.events {
            let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                .await
                .map_err(|_| Error::Other("no record for 60 s".into()))?
                .map_err(|e| Error::Other(e.to_string()))?;
            let (record, at) = kafka::record_of(&m);
            let partition = m.partition();
            drop(m);
            let offset = at.offset;
            let e = cloudevents::decode(record, at);
            read += 1;
            let position = Batch {
                broker_positions: vec![(HANDLER.into(), run.topic.clone(), partition, offset)],
                ..Batch::default()
            };
            naive_one(&*store, &e, offset, position).await?;
        }
        let measured = finish(setup, read, started, cpu);
        let published = producing.await.map_err(|e| Error::Other(e.to_string()))??;
        let mut measured = measured?;
        measured.latency_ms = naive_latencies(&run.url, &published).await?;
        Ok(measured)
    }

    /// The number of the bench event `id` (`b{n}`); warm-up events have none.
    fn number(id: &str) -> Option<usize> {
        id.strip_prefix('b')?.parse().ok()
    }

    /// p50 and p99 of (processed_at - published), from the database: the
    /// naive consumer commits each record alone, at once.
    async fn naive_latencies(url: &str, published: &[i64]) -> Result<Option<(f64, f64)>> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| Error::Other(format!("reading latencies: {e}")))?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT event_id, processed_at FROM processed WHERE handler = $1")
                .bind(HANDLER)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| Error::Other(format!("reading latencies: {e}")))?;
        let mut ms: Vec<i64> = rows
            .into_iter()
            .filter_map(|(id, at)| Some(at - published.get(number(&id)?)?))
            .collect();
        Ok(percentiles(&mut ms))
    }
}
