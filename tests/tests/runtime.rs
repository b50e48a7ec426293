//! The component runtime against real compiled guests: the ok path, every
//! outcome class, hostile guests, invalid components and emitted-id
//! determinism.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::harness::{Harness, Report, RunOptions, TestEvent};
use sluice::runtime::{self, LimitKind, Limits, LoadedComponent, Outcome};
use sluice_tests::guest;

fn harness() -> Harness {
    Harness::new().expect("runtime")
}

fn load(h: &Harness, name: &str) -> Arc<LoadedComponent> {
    h.load(&guest(name)).expect("component loads")
}

async fn run(
    h: &Harness,
    c: &Arc<LoadedComponent>,
    event: TestEvent,
    options: &RunOptions,
) -> Report {
    h.run(c, &event, options).await.expect("harness run")
}

fn order(id: &str, sku: &str, qty: u64) -> TestEvent {
    TestEvent::json(
        "order.placed",
        json!({"order_id": id, "sku": sku, "qty": qty, "email": "ada@example.com"}),
    )
    .key(sku)
    .id(id)
}

fn hostile(mode: &str) -> TestEvent {
    TestEvent::json(mode, json!({})).key("k")
}

fn limits(timeout_ms: u64) -> Limits {
    Limits {
        timeout_ms,
        ..Limits::default()
    }
}

#[tokio::test]
async fn ok_path_emits_and_writes_state() {
    let h = harness();
    let inventory = load(&h, "inventory");
    let options = RunOptions::default()
        .handler("inventory")
        .state_json("available", json!(5));
    let event = order("o-1", "A", 2).header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    let report = run(&h, &inventory, event, &options).await;
    report
        .expect(&json!({
            "outcome": {"kind": "ok"},
            "state_writes": {"available": 3, "reserved": 2},
            "emitted": [{
                "type": "stock.reserved",
                "topic": "inventory",
                "key": "o-1",
                "source": "sluice://handler/inventory",
                "content_type": "application/json",
                "data": {"order_id": "o-1", "sku": "A", "quantity": 2, "remaining": 3},
                "headers": {
                    "causationid": "o-1",
                    "correlationid": "o-1",
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                }
            }],
            "logs": [{"level": "info", "stream": "log", "message": "reserved 2 x A for o-1"}]
        }))
        .unwrap();

    // Not enough stock: rejected, state untouched.
    let options = options.state_json("available", json!(1));
    let report = run(&h, &inventory, order("o-2", "A", 2), &options).await;
    report
        .expect(&json!({
            "outcome": {"kind": "ok"},
            "state_writes": {},
            "emitted": [{"type": "stock.rejected", "data": {"requested": 2, "available": 1}}]
        }))
        .unwrap();
}

#[tokio::test]
async fn correlation_is_inherited_along_a_chain() {
    let h = harness();
    let notifier = load(&h, "notifier");
    // An order that was itself emitted for an earlier event.
    let event = order("o-3", "A", 1)
        .header("correlationid", "checkout-77")
        .header("causationid", "cart-5");
    let report = run(
        &h,
        &notifier,
        event,
        &RunOptions::default().handler("notifier"),
    )
    .await;
    report
        .expect(&json!({
            "outcome": {"kind": "ok"},
            "emitted": [{
                "type": "email.requested",
                "topic": "notifications",
                "headers": {"causationid": "o-3", "correlationid": "checkout-77"},
                "data": {"to": "ada@example.com", "order_id": "o-3"}
            }]
        }))
        .unwrap();
    assert!(!report.emitted[0].headers.contains_key("traceparent"));
}

#[tokio::test]
async fn handler_errors_are_classified() {
    let h = harness();
    let payments = load(&h, "payments");
    let options = RunOptions::default().handler("payments");
    let pay = |card: &str, amount: i64| {
        TestEvent::json(
            "payment.requested",
            json!({"order_id": "o1", "amount_cents": amount, "card": card}),
        )
        .key("o1")
    };

    let r = run(&h, &payments, pay("stolen", 100), &options).await;
    assert_eq!(
        r.outcome,
        Outcome::Fatal {
            message: "card declined: reported stolen".into()
        }
    );
    assert!(!r.outcome.is_retryable());

    let r = run(&h, &payments, pay("ok", 0), &options).await;
    assert_eq!(r.outcome.kind(), "fatal");

    // A malformed payload is poison: fatal, with the parse error.
    let garbage = TestEvent::json("payment.requested", json!({"order_id": 7})).key("o1");
    let r = run(&h, &payments, garbage, &options).await;
    match &r.outcome {
        Outcome::Fatal { message } => {
            assert!(message.contains("not the expected JSON"), "{message}")
        }
        other => panic!("expected fatal, got {other:?}"),
    }

    let r = run(&h, &payments, pay("down", 100), &options).await;
    assert_eq!(
        r.outcome,
        Outcome::Retryable {
            message: "payment gateway unavailable".into()
        }
    );
    assert!(r.outcome.is_retryable());
    // The failed attempt's log line survives; its effects do not.
    assert!(r.logs.iter().any(|l| l.message.contains("charge failed")));
    assert!(r.emitted.is_empty() && r.state_writes.is_empty());

    // The attempt number reaches the guest: "flaky" passes on attempt 3.
    let r = run(&h, &payments, pay("flaky", 100), &options).await;
    assert_eq!(r.outcome.kind(), "retryable");
    let r = run(&h, &payments, pay("flaky", 100).attempt(3), &options).await;
    r.expect(&json!({
        "outcome": {"kind": "ok"},
        "emitted": [{"type": "payment.captured", "data": {"attempt": 3}}]
    }))
    .unwrap();
}

#[tokio::test]
async fn failed_invocations_discard_their_effects() {
    let h = harness();
    let c = load(&h, "hostile");
    let r = run(&h, &c, hostile("emit-then-fail"), &RunOptions::default()).await;
    assert_eq!(r.outcome.kind(), "retryable");
    assert!(r.emitted.is_empty());
    assert!(r.state_writes.is_empty());
}

#[tokio::test]
async fn a_panic_is_a_trap_with_the_message_in_the_logs() {
    let h = harness();
    let c = load(&h, "hostile");
    let r = run(&h, &c, hostile("panic"), &RunOptions::default()).await;
    match &r.outcome {
        Outcome::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(r.outcome.is_retryable());
    assert!(
        r.logs
            .iter()
            .any(|l| l.message.contains("hostile guest panics on purpose")),
        "{:?}",
        r.logs
    );
}

#[tokio::test]
async fn stack_overflow_is_a_trap() {
    let h = harness();
    let c = load(&h, "hostile");
    let r = run(&h, &c, hostile("stack"), &RunOptions::default()).await;
    match &r.outcome {
        Outcome::Trap { message } => assert!(message.contains("call stack exhausted"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn infinite_loop_times_out_and_the_host_carries_on() {
    let h = harness();
    let c = load(&h, "hostile");
    let inventory = load(&h, "inventory");
    let looping = RunOptions::default().limits(limits(1_500));

    // While the loop spins, other invocations on the same (single-threaded)
    // executor still complete: the guest yields at every epoch tick.
    let started = Instant::now();
    let (looped, other) = tokio::join!(run(&h, &c, hostile("loop"), &looping), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = run(
            &h,
            &inventory,
            order("o-1", "A", 1),
            &RunOptions::default().state_json("available", json!(1)),
        )
        .await;
        (r, started.elapsed())
    });
    match &looped.outcome {
        Outcome::Timeout { message } => assert!(message.contains("1500 ms"), "{message}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(looped.outcome.is_retryable());
    let (other, finished_at) = other;
    assert_eq!(other.outcome, Outcome::Ok);
    assert!(
        finished_at < looped.elapsed,
        "the healthy event ({finished_at:?}) waited for the loop ({:?})",
        looped.elapsed
    );

    // And afterwards the runtime works as before.
    let r = run(
        &h,
        &c,
        hostile("loop"),
        &RunOptions::default().limits(limits(200)),
    )
    .await;
    assert_eq!(r.outcome.kind(), "timeout");
    let r = run(&h, &inventory, order("o-2", "A", 1), &RunOptions::default()).await;
    assert_eq!(r.outcome, Outcome::Ok);
}

#[tokio::test]
async fn a_guest_blocked_in_a_host_call_also_times_out() {
    let h = harness();
    let c = load(&h, "hostile");
    let r = run(
        &h,
        &c,
        hostile("sleep"),
        &RunOptions::default().limits(limits(300)),
    )
    .await;
    assert_eq!(r.outcome.kind(), "timeout", "{:?}", r.outcome);
}

#[tokio::test]
async fn memory_bomb_hits_the_limit_and_the_host_carries_on() {
    let h = harness();
    let c = load(&h, "hostile");
    let options = RunOptions::default().limits(Limits {
        max_memory_bytes: 32 << 20,
        ..Limits::default()
    });
    let r = run(&h, &c, hostile("alloc"), &options).await;
    match &r.outcome {
        Outcome::Limit {
            limit: LimitKind::Memory,
            message,
        } => assert!(message.contains("33554432"), "{message}"),
        other => panic!("expected the memory limit, got {other:?}"),
    }
    assert!(!r.outcome.is_retryable());
    // Again, concurrently, to be sure the pool slots come back.
    let (a, b) = tokio::join!(
        run(&h, &c, hostile("alloc"), &options),
        run(&h, &c, hostile("alloc"), &options)
    );
    assert_eq!(a.outcome.kind(), "limit");
    assert_eq!(b.outcome.kind(), "limit");
    let inventory = load(&h, "inventory");
    let r = run(&h, &inventory, order("o-1", "A", 1), &RunOptions::default()).await;
    assert_eq!(r.outcome, Outcome::Ok);
}

#[tokio::test]
async fn a_memory_limit_above_the_pool_slot_is_capped_to_it() {
    let h = Harness::with_config(runtime::RuntimeConfig {
        max_memory_bytes: 48 << 20,
        max_concurrent_instances: 4,
        ..Default::default()
    })
    .unwrap();
    let c = load(&h, "hostile");
    let options = RunOptions::default().limits(Limits {
        max_memory_bytes: 4 << 30,
        ..Limits::default()
    });
    let r = run(&h, &c, hostile("alloc"), &options).await;
    match &r.outcome {
        Outcome::Limit {
            limit: LimitKind::Memory,
            message,
        } => assert!(message.contains(&(48u64 << 20).to_string()), "{message}"),
        other => panic!("expected the memory limit, got {other:?}"),
    }
}

#[tokio::test]
async fn outbox_flood_hits_the_emit_limits() {
    let h = harness();
    let c = load(&h, "hostile");
    let r = run(&h, &c, hostile("flood"), &RunOptions::default()).await;
    assert!(
        matches!(
            r.outcome,
            Outcome::Limit {
                limit: LimitKind::EmitCount,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert!(
        r.emitted.is_empty(),
        "a stopped guest's emits are discarded"
    );

    let r = run(&h, &c, hostile("big-emit"), &RunOptions::default()).await;
    assert!(
        matches!(
            r.outcome,
            Outcome::Limit {
                limit: LimitKind::EmitBytes,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );

    let r = run(&h, &c, hostile("bad-emit"), &RunOptions::default()).await;
    match &r.outcome {
        Outcome::Fatal { message } => assert!(message.contains("is not valid"), "{message}"),
        other => panic!("expected fatal, got {other:?}"),
    }
    // NUL characters cannot be stored (PostgreSQL text): refused at the
    // call, with a message that says so.
    let r = run(&h, &c, hostile("nul-emit"), &RunOptions::default()).await;
    match &r.outcome {
        Outcome::Fatal { message } => assert!(message.contains("NUL"), "{message}"),
        other => panic!("expected fatal, got {other:?}"),
    }
    let r = run(&h, &c, hostile("nul-state"), &RunOptions::default()).await;
    assert!(
        format!("{:?}", r.outcome).contains("NUL") && r.state_writes.is_empty(),
        "{:?}",
        r.outcome
    );
}

#[tokio::test]
async fn chatty_output_is_capped_not_fatal() {
    let h = harness();
    let c = load(&h, "hostile");
    let r = run(&h, &c, hostile("chatty"), &RunOptions::default()).await;
    assert_eq!(r.outcome, Outcome::Ok);
    let limits = Limits::default();
    assert_eq!(r.logs.len(), limits.max_log_lines as usize);
    assert!(r.dropped_logs > 0);
}

#[tokio::test]
async fn guests_have_no_filesystem_environment_or_network() {
    let h = harness();
    let c = load(&h, "hostile");
    let r = run(&h, &c, hostile("escape"), &RunOptions::default()).await;
    r.expect(&json!({
        "outcome": {"kind": "ok"},
        "state_writes": {"denied": ["fs", "env", "net"]}
    }))
    .unwrap();
}

#[tokio::test]
async fn keyless_events_get_no_state() {
    let h = harness();
    let inventory = load(&h, "inventory");
    let mut event = order("o-1", "A", 1);
    event.key = None;
    let r = run(&h, &inventory, event, &RunOptions::default()).await;
    assert_eq!(r.outcome.kind(), "fatal");
    // The notifier keeps no state, so keyless is fine for it.
    let notifier = load(&h, "notifier");
    let mut event = order("o-1", "A", 1);
    event.key = None;
    let r = run(&h, &notifier, event, &RunOptions::default()).await;
    assert_eq!(r.outcome, Outcome::Ok);
}

#[tokio::test]
async fn invalid_components_get_clear_errors() {
    let h = harness();
    let rt = h.runtime();

    let err = rt.load(b"\x7fELF definitely not wasm").unwrap_err();
    assert!(matches!(err, runtime::Error::NotWasm(_)), "{err}");

    let core = wat::parse_str(r#"(module (func (export "handle")))"#).unwrap();
    let err = rt.load(&core).unwrap_err();
    assert!(matches!(err, runtime::Error::CoreModule), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");

    let other = std::fs::read(guest("other-world")).unwrap();
    let err = rt.load(&other).unwrap_err();
    assert!(matches!(err, runtime::Error::WrongWorld(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("sluice:handler/handler@0.1.0"), "{text}");
    assert!(
        text.contains("greet"),
        "the error names what it does export: {text}"
    );

    // A component that exports `handle` with the wrong signature.
    let wrong_sig = wat::parse_str(
        r#"(component
            (core module $m (func (export "f") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $f (result u32) (canon lift (core func $i "f")))
            (export "handle" (func $f)))"#,
    )
    .unwrap();
    let err = rt.load(&wrong_sig).unwrap_err();
    assert!(matches!(err, runtime::Error::WrongWorld(_)), "{err}");

    // Truncated component: valid header, broken body.
    let mut truncated = std::fs::read(guest("inventory")).unwrap();
    truncated.truncate(truncated.len() / 2);
    let err = rt.load(&truncated).unwrap_err();
    assert!(matches!(err, runtime::Error::Invalid(_)), "{err}");

    // None of that disturbed the runtime.
    assert!(rt.load_file(&guest("inventory")).is_ok());
}

#[tokio::test]
async fn emitted_ids_are_identical_across_runs() {
    let event = order("o-42", "A", 1);
    let options = RunOptions::default()
        .handler("inventory")
        .state_json("available", json!(10));
    let mut ids = Vec::new();
    // Two separate runtimes, as after a restart.
    for _ in 0..2 {
        let h = harness();
        let c = load(&h, "inventory");
        let r = run(&h, &c, event.clone(), &options).await;
        assert_eq!(r.outcome, Outcome::Ok);
        ids.push(r.emitted.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    }
    assert_eq!(ids[0].len(), 1);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(
        ids[0][0],
        sluice::event::emitted_event_id("o-42", "inventory", 0)
    );
    // Another handler emitting for the same event gets other ids.
    let h = harness();
    let c = load(&h, "inventory");
    let r = run(&h, &c, event, &options.clone().handler("inventory-2")).await;
    assert_ne!(r.emitted[0].id, ids[0][0]);
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("sluice-cache-test-{}", std::process::id()));
    let config = runtime::RuntimeConfig {
        cache_dir: Some(dir.clone()),
        ..Default::default()
    };
    let bytes = std::fs::read(guest("notifier")).unwrap();
    let first = runtime::Runtime::new(config.clone()).unwrap();
    let t = Instant::now();
    let a = first.load(&bytes).unwrap();
    let compile = t.elapsed();
    // Same bytes, same runtime: the very same compiled component.
    assert!(Arc::ptr_eq(&a, &first.load(&bytes).unwrap()));
    drop(first);

    let cached: Vec<_> = walk(&dir);
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(
        cached[0]
            .to_string_lossy()
            .ends_with(&format!("{}.cwasm", a.digest()))
    );

    // A new runtime (a restart) loads it from disk and it runs.
    let second = Arc::new(runtime::Runtime::new(config.clone()).unwrap());
    let t = Instant::now();
    let b = second.load(&bytes).unwrap();
    eprintln!("compile {compile:?}, load from cache {:?}", t.elapsed());
    assert_eq!(a.digest(), b.digest());
    let handler = second.handler("notifier", b, Limits::default());
    let (event, attempt) = order("o-1", "A", 1).to_event().unwrap();
    let r = handler.invoke(&event, attempt, Default::default()).await;
    assert_eq!(r.outcome, Outcome::Ok);

    // A corrupted cache file is ignored and recompiled over.
    std::fs::write(&cached[0], b"garbage").unwrap();
    let third = runtime::Runtime::new(config).unwrap();
    assert!(third.load(&bytes).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
