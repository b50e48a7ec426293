//! The embedded pipeline in-process, with real compiled components: a
//! two-handler chain, fan-out, type filters, idempotency, per-key order
//! under retries, the DLQ with redrive and discard, parking, restart and hot
//! swap. Every test runs twice: on a real SQLite file (`sqlite::<name>`) and
//! on a fresh PostgreSQL database (`postgres::<name>`; skipped with a printed
//! reason when no server is reachable, unless `SLUICE_REQUIRE_SERVERS=1`).

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice::config::{Config, DeadLetterMode, HandlerConfig, RetryPolicy};
use sluice::event::Event;
use sluice::pipeline::{Pipeline, Signals};
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice::store::{self, DlqAction, DlqFilter, DlqStatus, Store, StoreOptions};
use sluice_tests::guest;

/// The store a test host runs on.
enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh PostgreSQL database at this URL.
    Postgres(String),
}

/// Expands each test function (taking a [`Backend`]) into one test per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = sluice_testkit::postgres_test_database().await else {
                        return;
                    };
                    super::$name(super::Backend::Postgres(url)).await;
                }
            )*
        }
    };
}

on_both_stores! {
    chain_fan_out_ordering_and_idempotency,
    poison_events_are_dead_lettered_and_the_stream_goes_on,
    exhausted_retries_go_to_the_dlq_with_every_attempt,
    park_mode_holds_a_key_until_the_entry_is_discarded,
    a_restart_resumes_where_it_stopped,
    filtered_events_move_the_position_without_filling_the_window,
    hot_swap_under_load_then_roll_back,
    an_outcome_that_does_not_apply_undoes_the_work_built_on_it,
}

struct Host {
    _dir: Option<tempfile::TempDir>,
    config: Config,
    store: Arc<dyn Store>,
    signals: Signals,
    runtime: Arc<Runtime>,
    pipeline: Option<Pipeline>,
}

fn handler(name: &str, component: &str, topics: &[&str], types: &[&str]) -> HandlerConfig {
    HandlerConfig {
        name: name.into(),
        component: Some(guest(component)),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        types: types.iter().map(|t| t.to_string()).collect(),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 20,
            max_backoff_ms: 100,
            multiplier: 2.0,
        },
        limits: Default::default(),
        concurrency: 8,
        on_dead_letter: DeadLetterMode::Continue,
        start_from: Default::default(),
    }
}

impl Host {
    async fn start(backend: Backend, handlers: Vec<HandlerConfig>) -> Host {
        Self::start_with(backend, handlers, |_| {}).await
    }

    async fn start_with(
        backend: Backend,
        handlers: Vec<HandlerConfig>,
        tune: impl FnOnce(&mut Config),
    ) -> Host {
        let mut config = Config::default();
        let dir = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                config.store.url = format!("sqlite://{}", dir.path().join("sluice.db").display());
                Some(dir)
            }
            Backend::Postgres(url) => {
                config.store.url = url;
                None
            }
        };
        config.handlers = handlers;
        config.pipeline.poll_interval_ms = 100;
        tune(&mut config);
        let store = store::open(&config.store.url, &StoreOptions::default())
            .await
            .unwrap();
        let runtime = Arc::new(
            Runtime::new(RuntimeConfig {
                max_concurrent_instances: 64,
                ..Default::default()
            })
            .unwrap(),
        );
        let mut host = Host {
            _dir: dir,
            config,
            store,
            signals: Signals::new(),
            runtime,
            pipeline: None,
        };
        host.restart().await;
        host
    }

    async fn restart(&mut self) {
        if let Some(p) = self.pipeline.take() {
            p.shutdown().await;
        }
        self.signals = Signals::new();
        self.pipeline = Some(
            Pipeline::start(
                &self.config,
                self.store.clone(),
                self.runtime.clone(),
                self.signals.clone(),
            )
            .await
            .unwrap(),
        );
    }

    async fn stop(&mut self) {
        if let Some(p) = self.pipeline.take() {
            p.shutdown().await;
        }
    }

    async fn publish(&self, events: &[Event]) {
        let appended = self.store.append(events, 4).await.unwrap();
        self.signals
            .appended(appended.iter().map(|a| a.seq).max().unwrap());
    }

    fn stat(&self, handler: &str) -> sluice::pipeline::StatsSnapshot {
        self.pipeline
            .as_ref()
            .unwrap()
            .stats(handler)
            .unwrap()
            .snapshot()
    }

    async fn state_list(&self, handler: &str, key: &str, list: &str) -> Vec<u64> {
        let state = self.store.load_state(handler, key).await.unwrap();
        state
            .get(list)
            .map(|v| serde_json::from_slice(v).unwrap())
            .unwrap_or_default()
    }

    /// Waits (bounded) until `done` holds.
    async fn wait(&self, what: &str, mut done: impl AsyncFnMut(&Host) -> bool) {
        for _ in 0..600 {
            if done(self).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn all_events(&self, topic: &str) -> Vec<Event> {
        self.store
            .read_log(topic, 0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect()
    }
}

fn step(id: &str, ty: &str, key: &str, n: u64) -> Event {
    Event {
        id: id.into(),
        source: "/test".into(),
        ty: ty.into(),
        time: None,
        content_type: Some("application/json".into()),
        data_schema: None,
        data: serde_json::to_vec(&json!({ "n": n })).unwrap(),
        headers: BTreeMap::new(),
        key: Some(key.into()),
        topic: "in".into(),
    }
}

/// `count` events over `keys` keys; every 7th fails once first.
fn workload(prefix: &str, keys: usize, count: u64) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let key = format!("k{}", i as usize % keys);
            let n = i / keys as u64;
            let ty = if i % 7 == 3 { "fail.once" } else { "step.a" };
            step(&format!("{prefix}-{i}"), ty, &key, n)
        })
        .collect()
}

fn expected_lists(keys: usize, count: u64) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..count {
        out.entry(format!("k{}", i as usize % keys))
            .or_default()
            .push(i / keys as u64);
    }
    out
}

async fn chain_fan_out_ordering_and_idempotency(backend: Backend) {
    let host = Host::start(
        backend,
        vec![
            handler("first", "chain", &["in"], &["step.a", "fail.once"]),
            handler("second", "chain", &["mid"], &["step.b"]),
            // Fan-out: a second subscriber of `in` sees every event too.
            handler("audit", "notifier", &["in"], &[]),
        ],
    )
    .await;
    let (keys, count) = (10, 300);
    let events = workload("e", keys, count);
    for chunk in events.chunks(50) {
        host.publish(chunk).await;
    }
    // Redeliveries: the same ids again.
    host.publish(&events[..20]).await;

    host.wait("the chain to drain", async |h| {
        h.stat("second").processed == count && h.stat("audit").processed == count
    })
    .await;
    host.wait("duplicates to be counted", async |h| {
        h.stat("first").duplicates == 20
    })
    .await;

    let expected = expected_lists(keys, count);
    for (key, list) in &expected {
        assert_eq!(
            &host.state_list("first", key, "a").await,
            list,
            "first, {key}"
        );
        assert_eq!(
            &host.state_list("second", key, "b").await,
            list,
            "second, {key}"
        );
    }
    let first = host.stat("first");
    assert_eq!(first.processed, count);
    assert_eq!(
        first.retries,
        count.div_ceil(7),
        "every 7th event failed once"
    );
    assert_eq!(first.dead_lettered, 0);
    assert_eq!(host.stat("audit").duplicates, 20);

    // Every input caused exactly one `mid` and one `out` event, with
    // deterministic, distinct ids, in per-key order.
    for topic in ["mid", "out"] {
        let log = host.all_events(topic).await;
        assert_eq!(log.len() as u64, count, "{topic}");
        let ids: std::collections::HashSet<_> = log.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids.len() as u64, count, "{topic} ids are distinct");
        let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for e in &log {
            let n = serde_json::from_slice::<serde_json::Value>(&e.data).unwrap()["n"]
                .as_u64()
                .unwrap();
            per_key.entry(e.key.clone().unwrap()).or_default().push(n);
        }
        assert_eq!(per_key, expected, "{topic} keeps per-key order");
    }
    let out = host.all_events("out").await;
    assert!(out.iter().all(|e| e.source == "sluice://handler/second"));
    // Causation points at the `mid` event, correlation at the input (the
    // `mid` event's cause).
    let mid_causes: BTreeMap<String, String> = host
        .all_events("mid")
        .await
        .into_iter()
        .map(|e| (e.id.clone(), e.headers["causationid"].clone()))
        .collect();
    for e in &out {
        let input = &mid_causes[&e.headers["causationid"]];
        assert_eq!(&e.headers["correlationid"], input, "{}", e.id);
    }
    assert!(
        out.iter()
            .all(|e| e.headers["correlationid"].starts_with("e-"))
    );

    // Positions reached the end of each topic.
    let last_in = host
        .store
        .read_log("in", 0, 100_000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    host.wait("the position to be committed", async |h| {
        h.store.position("first", "in").await.unwrap() == Some(last_in)
    })
    .await;
}

async fn poison_events_are_dead_lettered_and_the_stream_goes_on(backend: Backend) {
    let host = Host::start(backend, vec![handler("first", "chain", &["in"], &[])]).await;
    host.publish(&[
        step("a0", "step.a", "k", 0),
        step("p1", "poison", "k", 1),
        step("a2", "step.a", "k", 2),
    ])
    .await;
    host.wait("processing", async |h| {
        let s = h.stat("first");
        s.processed == 2 && s.dead_lettered == 1
    })
    .await;
    assert_eq!(host.state_list("first", "k", "a").await, vec![0, 2]);
    let entries = host
        .store
        .dlq_list(&DlqFilter {
            handler: Some("first".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.record.event.id, "p1");
    assert_eq!(entry.attempts.len(), 1, "fatal errors are not retried");
    assert_eq!(entry.attempts[0].outcome, "fatal");
    assert_eq!(entry.error, "fatal: poison event 1");
    assert_eq!(entry.version, entry.attempts[0].version);

    // Redrive runs it again for this handler only; still poison, so it
    // comes back as a new entry.
    host.store
        .dlq_act(entry.id, DlqAction::Redrive)
        .await
        .unwrap();
    host.signals.actions.notify_waiters();
    host.wait("the redrive", async |h| h.stat("first").dead_lettered == 2)
        .await;
    let all = host.store.dlq_list(&DlqFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].status, DlqStatus::Redriven);
    assert_eq!(all[1].status, DlqStatus::Pending);
    assert_eq!(all[1].record.event.id, "p1");
    assert_eq!(host.state_list("first", "k", "a").await, vec![0, 2]);
}

async fn exhausted_retries_go_to_the_dlq_with_every_attempt(backend: Backend) {
    let host = Host::start(backend, vec![handler("payments", "payments", &["in"], &[])]).await;
    let mut e = step("pay-1", "payment.requested", "o1", 0);
    e.data =
        serde_json::to_vec(&json!({"order_id": "o1", "amount_cents": 5, "card": "down"})).unwrap();
    host.publish(&[e]).await;
    host.wait("dead letter", async |h| {
        h.stat("payments").dead_lettered == 1
    })
    .await;
    let entry = host
        .store
        .dlq_list(&DlqFilter::default())
        .await
        .unwrap()
        .remove(0);
    let attempts: Vec<u32> = entry.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert!(
        entry
            .attempts
            .iter()
            .all(|a| a.error == "payment gateway unavailable")
    );
    assert!(entry.attempts.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(host.stat("payments").retries, 2);
}

async fn park_mode_holds_a_key_until_the_entry_is_discarded(backend: Backend) {
    let mut first = handler("first", "chain", &["in"], &[]);
    first.on_dead_letter = DeadLetterMode::Park;
    let mut host = Host::start(backend, vec![first]).await;
    host.publish(&[
        step("a0", "step.a", "k1", 0),
        step("p1", "poison", "k1", 1),
        step("a2", "step.a", "k1", 2),
        step("b0", "step.a", "k2", 0),
        step("a3", "step.a", "k1", 3),
        step("b1", "step.a", "k2", 1),
    ])
    .await;
    host.wait("k2 to finish and k1 to park", async |h| {
        let s = h.stat("first");
        s.processed == 3 && s.dead_lettered == 1 && s.parked == 2
    })
    .await;
    assert_eq!(host.state_list("first", "k1", "a").await, vec![0]);
    assert_eq!(host.state_list("first", "k2", "a").await, vec![0, 1]);
    // Events arriving while parked are held too, and survive a restart.
    host.publish(&[step("a4", "step.a", "k1", 4)]).await;
    host.wait("the new event to park", async |h| {
        h.stat("first").parked == 3
    })
    .await;
    host.restart().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(host.state_list("first", "k1", "a").await, vec![0]);

    let id = host.store.dlq_list(&DlqFilter::default()).await.unwrap()[0].id;
    host.store.dlq_act(id, DlqAction::Discard).await.unwrap();
    host.signals.actions.notify_waiters();
    host.wait("the key to be released", async |h| {
        h.state_list("first", "k1", "a").await.len() == 4
    })
    .await;
    assert_eq!(host.state_list("first", "k1", "a").await, vec![0, 2, 3, 4]);
    // Released for good: new events flow directly.
    host.publish(&[step("a5", "step.a", "k1", 5)]).await;
    host.wait("a new event", async |h| {
        h.state_list("first", "k1", "a").await.len() == 5
    })
    .await;
    assert!(host.store.parked_keys("first").await.unwrap().is_empty());
    host.stop().await;
}

async fn a_restart_resumes_where_it_stopped(backend: Backend) {
    let mut host = Host::start(
        backend,
        vec![
            handler("first", "chain", &["in"], &["step.a", "fail.once"]),
            handler("second", "chain", &["mid"], &["step.b"]),
        ],
    )
    .await;
    let events = workload("r", 4, 200);
    host.publish(&events[..100]).await;
    host.wait("some progress", async |h| h.stat("first").processed >= 20)
        .await;
    host.restart().await;
    host.publish(&events[100..]).await;
    host.wait("everything", async |h| {
        h.store.read_log("out", 0, 1000).await.unwrap().len() == 200
    })
    .await;
    let expected = expected_lists(4, 200);
    for (key, list) in &expected {
        assert_eq!(&host.state_list("first", key, "a").await, list);
        assert_eq!(&host.state_list("second", key, "b").await, list);
    }
    // Work committed before the restart was not redone. (Events re-read
    // behind an event that was waiting for a retry are skipped as
    // duplicates: that is the idempotency check at work.)
    let after = host.stat("first");
    assert!(after.processed < 200, "{after:?}");
    assert!(after.processed + after.duplicates >= 100, "{after:?}");
    host.stop().await;
}

async fn filtered_events_move_the_position_without_filling_the_window(backend: Backend) {
    let host = Host::start_with(
        backend,
        vec![handler("picky", "chain", &["in"], &["never.sent"])],
        |c| {
            c.pipeline.max_in_flight = 16;
            c.pipeline.fetch_batch = 8;
        },
    )
    .await;
    let events: Vec<Event> = (0..100)
        .map(|i| step(&format!("f{i}"), "step.a", "k", i))
        .collect();
    host.publish(&events).await;
    let last = host
        .store
        .read_log("in", 0, 1000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    host.wait("the position to reach the end", async |h| {
        h.store.position("picky", "in").await.unwrap() == Some(last)
    })
    .await;
    let s = host.stat("picky");
    assert_eq!((s.filtered, s.processed, s.in_flight), (100, 0, 0));
}

async fn hot_swap_under_load_then_roll_back(backend: Backend) {
    let host = Arc::new(
        Host::start(
            backend,
            vec![
                handler("first", "chain", &["in"], &["step.a"]),
                handler("second", "chain", &["mid"], &["step.b"]),
            ],
        )
        .await,
    );
    let v1 = host.runtime.load_file(&guest("chain")).unwrap();
    let v2 = host.runtime.load_file(&guest("chain-v2")).unwrap();
    assert_ne!(v1.digest(), v2.digest());
    let pipeline = host.pipeline.as_ref().unwrap();
    assert_eq!(
        pipeline.active_digest("first").as_deref(),
        Some(v1.digest())
    );

    // Publish continuously while v2 is activated, then v1 again.
    let (keys, count) = (20usize, 1200u64);
    let events: Vec<Event> = (0..count)
        .map(|i| {
            step(
                &format!("h{i}"),
                "step.a",
                &format!("k{}", i as usize % keys),
                i / keys as u64,
            )
        })
        .collect();
    let publisher = {
        let host = host.clone();
        tokio::spawn(async move {
            for chunk in events.chunks(20) {
                host.publish(chunk).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let v2_bytes = std::fs::read(guest("chain-v2")).unwrap();
    let (uploaded, _) = pipeline.upload("first", v2_bytes, true).await.unwrap();
    assert_eq!(uploaded.version, 2);
    // The switch is visible to the next event that starts: a marker on a
    // key of its own runs on v2.
    let activated = std::time::Instant::now();
    host.publish(&[step("marker-v2", "step.a", "marker", 0)])
        .await;
    host.wait("the marker", async |h| {
        !h.store
            .processed_records("marker-v2")
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let seen_after = activated.elapsed();
    let marker = host.store.processed_records("marker-v2").await.unwrap();
    assert_eq!(marker[0].version, v2.digest());
    eprintln!("activation -> first event on v2 committed: {seen_after:?}");
    // The issue's acceptance bound, not a performance target (the bench
    // measures that): far above what it takes, so it fails only if the
    // switch does not reach the next event.
    assert!(
        seen_after < Duration::from_secs(1),
        "the switch took {seen_after:?}"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    pipeline.activate_version("first", 1).await.unwrap(); // rollback
    publisher.await.unwrap();
    host.wait("everything", async |h| {
        h.stat("second").processed == count + 1
    })
    .await;

    // Zero lost, zero duplicated: the state lists are exact.
    let expected = expected_lists(keys, count);
    for (key, list) in &expected {
        assert_eq!(&host.state_list("first", key, "a").await, list, "{key}");
    }
    // Every event was processed once, by exactly one version, and its
    // emitted event carries that version; per key the versions go
    // v1* v2* v1* (no event ran on a version out of order).
    let mid: BTreeMap<String, Event> = host
        .all_events("mid")
        .await
        .into_iter()
        .map(|e| (e.headers["causationid"].clone(), e))
        .collect();
    let mut per_key: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let (mut on_v1, mut on_v2) = (0, 0);
    for i in 0..count {
        let id = format!("h{i}");
        let records = host.store.processed_records(&id).await.unwrap();
        assert_eq!(records.len(), 1, "{id}");
        let version = if records[0].version == v1.digest() {
            on_v1 += 1;
            "1"
        } else {
            assert_eq!(records[0].version, v2.digest(), "{id}");
            on_v2 += 1;
            "2"
        };
        assert_eq!(
            mid[&id].headers["x-version"], version,
            "{id}'s effect is tagged by its version"
        );
        per_key
            .entry(format!("k{}", i as usize % keys))
            .or_default()
            .push(version);
    }
    assert!(on_v1 > 0 && on_v2 > 0, "v1: {on_v1}, v2: {on_v2}");
    for (key, versions) in per_key {
        let phases = versions.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(phases <= 2, "{key}: {versions:?}");
        if phases == 2 {
            assert_eq!(versions[0], "1", "{key}: {versions:?}");
        }
    }
    assert_eq!(
        pipeline.active_digest("first").as_deref(),
        Some(v1.digest())
    );
}

/// Counts a key's events in its state field `n`, slowly (300 ms each).
/// Event `e1` also says when it started, then waits for `go`.
#[derive(Default)]
struct SlowCounter {
    started: std::sync::atomic::AtomicBool,
    go: std::sync::atomic::AtomicBool,
}

impl sluice::runtime::NativeHandler for SlowCounter {
    fn handle(
        &self,
        event: &Event,
        state: &sluice::runtime::StateMap,
        out: &mut sluice::runtime::NativeOutput,
    ) -> Result<(), String> {
        use std::sync::atomic::Ordering::SeqCst;
        let n: u64 = state
            .get("n")
            .map(|v| serde_json::from_slice(v).map_err(|e| e.to_string()))
            .transpose()?
            .unwrap_or(0);
        // It blocks its thread, a runtime worker: tell the runtime, or the
        // test's own timers and I/O can wait for it (with two workers,
        // `e1 to start` was seen only after the 30 s below had run out).
        tokio::task::block_in_place(|| {
            if event.id == "e1" {
                self.started.store(true, SeqCst);
                for _ in 0..3000 {
                    if self.go.load(SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        });
        out.state_changes
            .insert("n".into(), Some(serde_json::to_vec(&(n + 1)).unwrap()));
        Ok(())
    }
}

/// A key's next event runs while the previous outcome commits, against
/// the state that outcome wrote. Here the previous outcome does not apply
/// (another writer processed that event first, with its own state): the
/// next event must run again on the stored state, not keep what it
/// computed from the outcome that never applied.
async fn an_outcome_that_does_not_apply_undoes_the_work_built_on_it(backend: Backend) {
    let mut host = Host::start(backend, Vec::new()).await;
    host.stop().await;
    host.config.handlers = vec![handler("count", "chain", &["in"], &["tick"])];
    let counter = Arc::new(SlowCounter::default());
    let natives: BTreeMap<String, Arc<dyn sluice::runtime::NativeHandler>> =
        BTreeMap::from([("count".to_string(), counter.clone() as _)]);
    host.pipeline = Some(
        Pipeline::start_with_natives(
            &host.config,
            host.store.clone(),
            host.runtime.clone(),
            host.signals.clone(),
            natives,
        )
        .await
        .unwrap(),
    );
    let tick = |id: &str| Event {
        ty: "tick".into(),
        ..step(id, "tick", "k", 0)
    };
    let appended = host
        .store
        .append(&[tick("e1"), tick("e2")], 4)
        .await
        .unwrap();
    host.signals.appended(appended[1].seq);
    // While e1 runs, another writer processes it, leaving n = 100.
    host.wait("e1 to start", async |_| {
        counter.started.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    host.store
        .commit(&store::Batch {
            processed: vec![store::Processed {
                handler: "count".into(),
                version: "elsewhere".into(),
                topic: "in".into(),
                seq: appended[0].seq,
                event_id: "e1".into(),
                attempts: 1,
                key: Some("k".into()),
                state_changes: BTreeMap::from([("n".to_string(), Some(b"100".to_vec()))]),
                emitted: Vec::new(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    counter.go.store(true, std::sync::atomic::Ordering::SeqCst);
    host.wait("both events", async |h| {
        let s = h.stat("count");
        s.processed + s.duplicates >= 2
    })
    .await;
    let s = host.stat("count");
    assert_eq!((s.processed, s.duplicates), (1, 1), "{s:?}");
    let state = host.store.load_state("count", "k").await.unwrap();
    assert_eq!(state.get("n").map(Vec::as_slice), Some(&b"101"[..]));
    host.stop().await;
}
