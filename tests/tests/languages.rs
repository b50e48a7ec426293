//! Handlers written in JavaScript/TypeScript and Python, built by their
//! SDKs' real toolchains (componentize-js, componentize-py), in the real
//! runtime: the SDKs' and examples' own unit tests, the inventory ports
//! against the Rust example's files and reports, and hostile guests of
//! each language stopped by the same limits as a Rust guest.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sluice::harness::{self, Harness, RunOptions, TestEvent};
use sluice::runtime::{Limits, RuntimeConfig};
use sluice_testkit::guests::{self, js_component, python_component, workspace_root};

/// The inventory handler in each language, built (Rust first).
fn inventories() -> Option<Vec<(&'static str, PathBuf)>> {
    Some(vec![
        ("rust", sluice_tests::guest("inventory")),
        ("js", js_component("examples/inventory-js/src/handler.ts")?),
        (
            "python",
            python_component("examples/inventory-py/inventory.py")?,
        ),
    ])
}

/// A harness whose compile cache is shared by the tests (a JS or Python
/// component takes seconds to compile).
fn harness() -> Harness {
    Harness::with_config(RuntimeConfig {
        cache_dir: Some(workspace_root().join("target/guests/compiled")),
        max_concurrent_instances: 8,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn events(name: &str) -> PathBuf {
    workspace_root().join("examples/events").join(name)
}

/// The reports of `component` on an event file (with a state file), as
/// `sluice test` prints them, without the timings.
async fn reports(harness: &Harness, component: &Path, case: &str, state: bool) -> Value {
    let loaded = harness.load(component).unwrap();
    let (list, _) = TestEvent::from_file(&events(&format!("{case}.event.json"))).unwrap();
    let mut options = RunOptions::default().handler("inventory");
    if state {
        options = options
            .state_file(&events(&format!("{case}.state.json")))
            .unwrap();
    }
    let reports = harness
        .run_sequence(&loaded, &list, &options)
        .await
        .unwrap();
    let mut json = Value::Array(reports.iter().map(|r| r.to_json()).collect());
    for report in json.as_array_mut().unwrap() {
        report.as_object_mut().unwrap().remove("elapsed_ms");
        for emitted in report["emitted"].as_array_mut().unwrap() {
            // The host's clock at the emit.
            emitted.as_object_mut().unwrap().remove("time");
        }
    }
    json
}

#[tokio::test]
async fn inventory_ports_match_the_rust_example() {
    let Some(builds) = inventories() else { return };
    let harness = harness();
    for (case, state) in [
        ("inventory-order-placed", true),
        ("inventory-restock-then-orders", false),
    ] {
        let text = std::fs::read_to_string(events(&format!("{case}.expect.json"))).unwrap();
        let expected: Value = serde_json::from_str(&text).unwrap();
        // A single event's expectation is one report.
        let expected = match expected {
            Value::Array(list) => Value::Array(list),
            one => Value::Array(vec![one]),
        };
        let rust = reports(&harness, &builds[0].1, case, state).await;
        for (lang, component) in &builds {
            let got = reports(&harness, component, case, state).await;
            let differences = harness::compare(&expected, &got);
            assert!(differences.is_empty(), "{lang} on {case}: {differences:#?}");
            // Beyond the expectation: the same outcome, emitted events (ids,
            // headers, payloads as JSON), state writes and log lines as Rust.
            assert_eq!(got, rust, "{lang} on {case} differs from the Rust handler");
        }
    }
}

#[tokio::test]
async fn inventory_ports_refuse_poison_like_the_rust_example() {
    let Some(builds) = inventories() else { return };
    let harness = harness();
    let poison = [
        TestEvent::json("order.placed", serde_json::json!("not an object")).key("A"),
        TestEvent::json(
            "order.placed",
            serde_json::json!({"order_id": "o1", "sku": "A", "qty": 1}),
        )
        .key("B"),
        TestEvent::json(
            "order.placed",
            serde_json::json!({"order_id": "o1", "sku": "A", "qty": 0}),
        )
        .key("A"),
    ];
    for (lang, component) in &builds {
        let loaded = harness.load(component).unwrap();
        for event in &poison {
            let report = harness
                .run(&loaded, event, &RunOptions::default().handler("inventory"))
                .await
                .unwrap()
                .to_json();
            assert_eq!(report["outcome"]["kind"], "fatal", "{lang}: {report}");
            assert_eq!(report["emitted"], serde_json::json!([]), "{lang}");
        }
    }
}

#[test]
fn sdk_and_example_unit_tests_pass() {
    if guests::js_toolchain().is_some() {
        let root = workspace_root();
        for dir in [
            "guest-sdk/js",
            "examples/inventory-js",
            "examples/greeter-js",
        ] {
            let dir = root.join(dir);
            guests::npm_ci(&root.join("guest-sdk/js"));
            guests::npm_ci(&dir);
            guests::run(
                Command::new("npm")
                    .args(["test", "--silent"])
                    .current_dir(&dir),
            );
        }
    }
    if let Some(python) = guests::python_env() {
        guests::run(
            Command::new(python)
                .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
                .args([
                    "guest-sdk/python",
                    "examples/inventory-py",
                    "examples/greeter-py",
                ])
                .current_dir(workspace_root()),
        );
    }
}

/// A hostile guest's outcome on `kind` (its event type), under the default
/// limits (5 s, 64 MiB), except a 500 ms timeout for `loop`.
async fn hostile(harness: &Harness, component: &Path, kind: &str) -> Value {
    let loaded = harness.load(component).unwrap();
    let mut limits = Limits::default();
    if kind == "loop" {
        limits.timeout_ms = 500;
    }
    let options = RunOptions::default().handler("hostile").limits(limits);
    let event = TestEvent::json(kind, serde_json::json!({})).id(&format!("hostile-{kind}"));
    let report = harness.run(&loaded, &event, &options).await.unwrap();
    report.to_json()["outcome"].clone()
}

#[tokio::test]
async fn hostile_guests_of_every_language_are_stopped() {
    let builds = [
        (
            "js",
            js_component("guest-sdk/js/test/fixtures/hostile/handler.js"),
            "throw",
        ),
        (
            "python",
            python_component("guest-sdk/python/tests/fixtures/hostile/hostile.py"),
            "raise",
        ),
    ];
    let harness = harness();
    for (lang, component, throw) in builds {
        let Some(component) = component else { continue };
        let looped = hostile(&harness, &component, "loop").await;
        assert_eq!(looped["kind"], "timeout", "{lang}: {looped}");
        let alloc = hostile(&harness, &component, "alloc").await;
        assert_eq!(alloc["kind"], "limit", "{lang}: {alloc}");
        assert_eq!(alloc["limit"], "memory", "{lang}: {alloc}");
        // Deep recursion is the language's own error in both engines.
        let recursed = hostile(&harness, &component, "recurse").await;
        assert_eq!(recursed["kind"], "retryable", "{lang}: {recursed}");
        // An unexpected exception: retried, with the language's message and
        // stack in the outcome (and so in the dead letter).
        let thrown = hostile(&harness, &component, throw).await;
        assert_eq!(thrown["kind"], "retryable", "{lang}: {thrown}");
        let message = thrown["message"].as_str().unwrap();
        let stack = match lang {
            "js" => "at validate@",
            _ => "Traceback",
        };
        assert!(message.contains(stack), "{lang}: {message}");
        // The runtime that stopped them runs the next event as usual.
        let fine = hostile(&harness, &component, "ok").await;
        assert_eq!(fine["kind"], "ok", "{lang}: {fine}");
    }
}
