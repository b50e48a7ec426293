//! # Sluice benchmarks
//!
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
//! commit that held the outcome ([`sluice::pipeline::Signals::commits`]); for
//! the naive consumers, which commit each event alone, to `processed_at`.
//!
//! The crate is a library of the `sluice` command (`sluice bench`, the
//! `bench` feature of `sluice-cli`): [`run_setup`] runs one setup in this
//! process, [`table`] lays the measurements out as text. Its modules, one role each:
//! the workload and its handler (`handler`), the embedded setups
//! (`embedded`), the Kafka + PostgreSQL setups (`kafka`), what is measured
//! (`measure`) and the table (`report`).
//!
//! Native handlers reach the pipeline through
//! [`Pipeline::start_with_natives`](sluice::pipeline::Pipeline::start_with_natives).

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice::store::{self, StoreOptions};

mod embedded;
mod handler;
mod kafka;
mod measure;
mod report;

pub use handler::BenchStep;
pub use measure::Measurement;
pub use report::table;

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The pipeline failed to start.
    #[error(transparent)]
    Pipeline(#[from] sluice::pipeline::Error),
    /// The runtime failed to start.
    #[error(transparent)]
    Runtime(#[from] sluice::runtime::Error),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

/// Result of this crate.
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
pub(crate) const KAFKA_PARTITIONS: i32 = 8;

/// Events run through a Kafka pipeline before it is measured.
pub(crate) const WARM_UP: u64 = 500;

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
    pub(crate) fn step(&self) -> u64 {
        if self.rate > 0.0 {
            ((self.rate / 100.0) as u64).clamp(1, 1000)
        } else {
            1000
        }
    }

    /// Waits until events `from..` are due (at `rate`, from `started`).
    pub(crate) async fn pace(&self, started: Instant, from: u64) {
        if self.rate > 0.0 {
            let due = started + Duration::from_secs_f64(from as f64 / self.rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// The input topic of the embedded setups.
pub(crate) const TOPIC: &str = "bench-in";
/// The benchmark handler's name.
pub(crate) const HANDLER: &str = "bench";

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
        "raw" => embedded::raw(&store, workload, setup).await,
        "wasm" => embedded::pipeline(store, &url, workload, component, setup, false).await,
        "native" => embedded::pipeline(store, &url, workload, component, setup, true).await,
        "naive" => embedded::naive(&store, &url, workload, setup).await,
        "swap" => embedded::swap(store, &url, workload, component, setup).await,
        other => Err(Error::Other(format!("unknown setup {other}"))),
    }
}

/// Where the benchmark component is: `component`, or built from the
/// workspace's `tests/fixtures/bench-guest` when run from a checkout.
pub fn component(component: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = component {
        return Ok(path);
    }
    let workspace = std::env::current_dir().map_err(|e| Error::Other(e.to_string()))?;
    sluice::harness::build_components(
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
