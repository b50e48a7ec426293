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
//! Each reports events per second, CPU-seconds per million events, peak
//! RSS, and (for consumers that commit effects) p50/p99 latency from
//! append to effect committed. Not yet here: the Kafka + PostgreSQL setup
//! (issue 6).

use std::collections::BTreeMap;
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
pub const SETUPS: &[&str] = &["raw", "native", "wasm", "naive"];

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
    /// Peak resident set size of the process, in MiB.
    pub peak_rss_mib: f64,
    /// Latency from append to effect committed, in ms: p50 and p99.
    pub latency_ms: Option<(f64, f64)>,
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
) -> Result<Measurement> {
    let url = format!("sqlite://{}", dir.join(format!("{setup}.db")).display());
    let store = store::open(&url, &StoreOptions::default()).await?;
    store.ensure_topic(TOPIC, 4).await?;
    match setup {
        "raw" => raw(&store, workload, setup).await,
        "wasm" => pipeline(store, &url, workload, component, setup, false).await,
        "native" => pipeline(store, &url, workload, component, setup, true).await,
        "naive" => naive(&store, &url, workload, setup).await,
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
    let (started, cpu) = (Instant::now(), cpu_seconds());
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
    let mut config = Config::default();
    config.store.url = url.to_owned();
    config.topics = vec![TopicConfig {
        name: TOPIC.into(),
        partitions: 4,
    }];
    config.handlers = vec![HandlerConfig {
        name: HANDLER.into(),
        component: Some(component.to_owned()),
        topics: vec![TOPIC.into()],
        types: vec!["step".into()],
        retry: Default::default(),
        limits: Default::default(),
        concurrency: 8,
        on_dead_letter: Default::default(),
        start_from: Default::default(),
    }];
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let signals = Signals::new();
    let mut natives: BTreeMap<String, Arc<dyn crate::runtime::NativeHandler>> = BTreeMap::new();
    if native {
        natives.insert(HANDLER.into(), Arc::new(BenchStep));
    }
    let pipeline =
        Pipeline::start_with_natives(&config, store.clone(), runtime, signals.clone(), natives)
            .await?;
    let stats = pipeline
        .stats(HANDLER)
        .ok_or_else(|| Error::Other("the bench handler did not start".into()))?;
    let (started, cpu) = (Instant::now(), cpu_seconds());
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
    measured.latency_ms = latencies(url).await?;
    Ok(measured)
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
    let (started, cpu) = (Instant::now(), cpu_seconds());
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
                let e = &record.event;
                if !store
                    .processed_ids(HANDLER, std::slice::from_ref(&e.id))
                    .await?
                    .is_empty()
                {
                    continue;
                }
                let key = e.key.clone().unwrap_or_default();
                let state = store.load_state(HANDLER, &key).await?;
                let seen: u64 = state
                    .get("seen")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0);
                let out = Event {
                    id: format!("{}-out", e.id),
                    ty: "bench.stepped".into(),
                    topic: "bench-out".into(),
                    data: seen.to_string().into_bytes(),
                    ..e.clone()
                };
                store
                    .commit(&Batch {
                        processed: vec![Processed {
                            handler: HANDLER.into(),
                            version: "native".into(),
                            topic: e.topic.clone(),
                            seq: record.seq,
                            event_id: e.id.clone(),
                            attempts: 1,
                            key: e.key.clone(),
                            state_changes: BTreeMap::from([(
                                "seen".to_string(),
                                Some((seen + 1).to_string().into_bytes()),
                            )]),
                            emitted: vec![out],
                        }],
                        positions: vec![(HANDLER.into(), TOPIC.into(), record.seq)],
                        ..Batch::default()
                    })
                    .await?;
            }
        }
    }
    let mut measured = finish(setup, workload.events, started, cpu)?;
    measured.latency_ms = latencies(url).await?;
    Ok(measured)
}

fn finish(setup: &str, events: u64, started: Instant, cpu_before: f64) -> Result<Measurement> {
    Ok(Measurement {
        setup: setup.to_owned(),
        events,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds() - cpu_before,
        peak_rss_mib: peak_rss_mib(),
        latency_ms: None,
    })
}

/// p50 and p99 of (processed_at - appended_at), from the store file.
async fn latencies(url: &str) -> Result<Option<(f64, f64)>> {
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
    if ms.is_empty() {
        return Ok(None);
    }
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize] as f64;
    Ok(Some((at(0.50), at(0.99))))
}

/// User + system CPU time of this process so far, from `/proc/self/stat`.
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
        "{:<8} {:>10} {:>12} {:>14} {:>10} {:>9} {:>9}",
        "setup", "events", "events/s", "cpu-s/M ev", "peak MiB", "p50 ms", "p99 ms"
    );
    for m in results {
        let (p50, p99) = m
            .latency_ms
            .map_or(("-".to_owned(), "-".to_owned()), |(a, b)| {
                (format!("{a:.0}"), format!("{b:.0}"))
            });
        let _ = writeln!(
            out,
            "{:<8} {:>10} {:>12.0} {:>14.1} {:>10.1} {:>9} {:>9}",
            m.setup,
            m.events,
            m.rate(),
            m.cpu_per_million(),
            m.peak_rss_mib,
            p50,
            p99
        );
    }
    let rate = |s: &str| results.iter().find(|m| m.setup == s).map(Measurement::rate);
    if let Some(wasm) = rate("wasm") {
        for (other, label) in [
            ("native", "(c)/(b) wasm/native"),
            ("raw", "(c)/(a) wasm/raw"),
            ("naive", "(c)/(d) wasm/naive"),
        ] {
            if let Some(r) = rate(other) {
                let _ = writeln!(out, "{label}: {:.2}", wasm / r);
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
