//! The setups on the embedded store (SQLite).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::config::{Config, TopicConfig};
use sluice::pipeline::Signals;
use sluice::store::{Batch, Store};

use crate::handler::{bench_handler, events, naive_one, start_pipeline};
use crate::measure::{CommitTimes, Cpu, finish, percentiles};
use crate::{Error, HANDLER, Measurement, Result, TOPIC, Workload};

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
pub(crate) async fn raw(
    store: &Arc<dyn Store>,
    workload: Workload,
    setup: &str,
) -> Result<Measurement> {
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

/// The pipeline running the benchmark handler, as a component or natively
/// (`native`); events are appended while it runs.
pub(crate) async fn pipeline(
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

/// The typical hand-written idempotent consumer: for each event, one
/// transaction that checks it was not processed, reads the key's state,
/// writes the new state, the processed record and the outbox row.
pub(crate) async fn naive(
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

/// How many hot swaps the `swap` setup makes.
const SWAPS: usize = 6;

/// Hot swaps under a steady load (the workload's rate, or 2,000 events/s):
/// the bench component and a copy of it with an extra custom section (so
/// another version, which behaves the same) are activated in turn; each
/// swap is timed from the activation call to the first event committed by
/// the version activated.
pub(crate) async fn swap(
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
        let (since, at) = (sluice::store::now_ms(), Instant::now());
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
