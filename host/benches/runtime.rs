//! criterion micro-benchmarks of the per-event costs:
//!
//! * `invoke/noop`: instantiating a trivial component and calling it;
//! * `invoke/step`: the typical event (one state read and write, one
//!   emit);
//! * `host_calls/emit` and `host_calls/state`: 100 host calls in one
//!   invocation, reported per call (throughput in elements);
//! * `group_commit/N`: committing N outcomes (processed record, a state
//!   write and an outbox row each) in one SQLite transaction.
//!
//! `cargo bench -p sluice --bench runtime`. The component is built from
//! `tests/fixtures/bench-guest` first (the wasm32-wasip2 target is needed).

// A benchmark's setup failing is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::event::Event;
use sluice::runtime::{Handler, Limits, Outcome, Runtime, RuntimeConfig, StateMap};
use sluice::store::{Batch, Processed, StoreOptions};

fn handler() -> Handler {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = sluice::harness::build_components(
        workspace,
        &["bench-guest"],
        &workspace.join("target").join("guests"),
    )
    .unwrap()
    .remove(0);
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let component = runtime.load(&std::fs::read(path).unwrap()).unwrap();
    runtime.handler("bench", component, Limits::default())
}

fn event(ty: &str, n: u64, id: u64) -> Event {
    Event {
        id: format!("e{id}"),
        source: "/bench".into(),
        ty: ty.into(),
        time: None,
        content_type: Some("application/json".into()),
        data_schema: None,
        data: format!(r#"{{"n":{n}}}"#).into_bytes(),
        headers: BTreeMap::new(),
        key: Some(format!("k{}", id % 64)),
        topic: "bench-in".into(),
    }
}

/// Benchmarks one invocation of `handler` for an event of type `ty` with
/// `{"n": n}`, which must succeed.
fn bench_invoke(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    tokio: &tokio::runtime::Runtime,
    handler: &Handler,
    ty: &str,
    n: u64,
) {
    let e = event(ty, n, 1);
    group.bench_function(ty, |b| {
        b.to_async(tokio).iter(|| async {
            let done = handler.invoke(&e, 1, StateMap::new()).await;
            assert!(matches!(done.outcome, Outcome::Ok), "{:?}", done.outcome);
            done
        })
    });
}

fn invocations(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let handler = handler();
    let mut group = c.benchmark_group("invoke");
    for ty in ["noop", "step"] {
        bench_invoke(&mut group, &tokio, &handler, ty, 1);
    }
    group.finish();

    let mut group = c.benchmark_group("host_calls");
    const CALLS: u64 = 100;
    group.throughput(Throughput::Elements(CALLS));
    for ty in ["emit", "state"] {
        bench_invoke(&mut group, &tokio, &handler, ty, CALLS);
    }
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = tokio
        .block_on(sluice::store::open(&url, &StoreOptions::default()))
        .unwrap();
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("group_commit");
    for n in [1u64, 100, 1000] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.to_async(&tokio).iter_batched(
                || {
                    // Fresh event ids: a duplicate would skip the effects.
                    let first = next.fetch_add(n, Ordering::Relaxed);
                    Batch {
                        processed: (first..first + n)
                            .map(|i| {
                                let e = event("step", 1, i);
                                Processed {
                                    handler: "bench".into(),
                                    version: "v1".into(),
                                    topic: e.topic.clone(),
                                    seq: i64::try_from(i).unwrap(),
                                    event_id: e.id.clone(),
                                    attempts: 1,
                                    key: e.key.clone(),
                                    state_changes: BTreeMap::from([(
                                        "seen".to_string(),
                                        Some(i.to_string().into_bytes()),
                                    )]),
                                    emitted: vec![Event {
                                        id: format!("out-{i}"),
                                        topic: "bench-out".into(),
                                        ..e
                                    }],
                                }
                            })
                            .collect(),
                        // As the embedded pipeline commits: emitted
                        // events straight into the log.
                        emit_to_log: Some(4),
                        ..Batch::default()
                    }
                },
                |batch| {
                    let store = store.clone();
                    async move { store.commit(&batch).await.unwrap() }
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, invocations, group_commit);
criterion_main!(benches);
