//! JavaScript and Python handlers in a real `sluice run`: deployed with
//! `sluice deploy`, processing events with per-key state and emits,
//! hot-swapped to a new version (the inventory logic in the other
//! language, which carries on from the state the first one wrote), and
//! retried, then dead-lettered with the language's message and stack.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_testkit::guests::{js_component, python_component};

use common::{Host, free_port, wait_healthy};

const TOKEN: &str = "languages-test-token";

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.call(self.client.get(format!("{}{path}", self.base)))
            .await
            .1
    }

    async fn publish(&self, topic: &str, event: Value) {
        let (status, answer) = self
            .call(
                self.client
                    .post(format!("{}/v1/topics/{topic}/events", self.base))
                    .json(&event),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
    }

    async fn wait_for(&self, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.get(path).await;
            if check(&value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: {value}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `sluice ARGS` against this host; its stdout, after asserting success.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .args(["--url", &self.base, "--token", TOKEN])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sluice {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_and_python_handlers_run_swap_and_dead_letter() {
    let (Some(js), Some(py)) = (
        js_component("examples/inventory-js/src/handler.ts"),
        python_component("examples/inventory-py/inventory.py"),
    ) else {
        return;
    };
    let hostile_js = js_component("guest-sdk/js/test/fixtures/hostile/handler.js").unwrap();
    let hostile_py =
        python_component("guest-sdk/python/tests/fixtures/hostile/hostile.py").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{db}\"\n[admin]\naddr = \"127.0.0.1:{port}\"\n\
             [runtime]\ncache_dir = \"{cache}\"\n",
            db = dir.path().join("s.db").display(),
            cache = sluice_testkit::guests::workspace_root()
                .join("target/guests/compiled")
                .display(),
        ),
    )
    .unwrap();
    let mut host = Host::new(config, dir.path().join("host.log"));
    host.spawn();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    wait_healthy(&api.client, &api.base, &host.log).await;

    // The TypeScript inventory, deployed and created in one command.
    let js_path = js.to_str().unwrap();
    let out = api.cli(&[
        "deploy",
        "inventory",
        js_path,
        "--topic",
        "orders",
        "--topic",
        "stock",
    ]);
    assert!(out.starts_with("inventory version 1"), "{out}");
    api.publish(
        "stock",
        json!({"id": "restock-1", "type": "stock.received", "key": "sku-7",
               "data": {"sku": "sku-7", "quantity": 3}}),
    )
    .await;
    api.publish(
        "orders",
        json!({"id": "order-1", "type": "order.placed", "key": "sku-7",
               "data": {"order_id": "order-1", "sku": "sku-7", "qty": 1}}),
    )
    .await;
    let story = api
        .wait_for(
            "/v1/events/order-1",
            "order-1 processed by the JS version",
            |s| s["emitted"].as_array().is_some_and(|e| !e.is_empty()),
        )
        .await;
    assert_eq!(story["processed_by"][0]["version"], sha256(&js), "{story}");
    assert_eq!(story["emitted"][0]["type"], "stock.reserved", "{story}");
    assert_eq!(
        api.get("/v1/handlers/inventory/state/sku-7").await["state"],
        json!({"available": 2, "reserved": 1})
    );

    // Hot swap to the Python port: it reads the state the JS one wrote.
    let out = api.cli(&["deploy", "inventory", py.to_str().unwrap()]);
    assert!(out.starts_with("inventory version 2"), "{out}");
    assert!(out.contains(", ready in "), "{out}");
    api.publish(
        "orders",
        json!({"id": "order-2", "type": "order.placed", "key": "sku-7",
               "data_schema": "urn:sluice:example:order-placed:v2",
               "data": {"order_id": "order-2", "sku": "sku-7", "quantity": 2}}),
    )
    .await;
    let story = api
        .wait_for(
            "/v1/events/order-2",
            "order-2 processed by the Python version",
            |s| s["emitted"].as_array().is_some_and(|e| !e.is_empty()),
        )
        .await;
    assert_eq!(story["processed_by"][0]["version"], sha256(&py), "{story}");
    assert_eq!(story["emitted"][0]["data"]["remaining"], 0, "{story}");
    assert_eq!(
        api.get("/v1/handlers/inventory/state/sku-7").await["state"],
        json!({"available": 0, "reserved": 3})
    );
    // A poison event is fatal at once: dead-lettered after one attempt.
    api.publish(
        "orders",
        json!({"id": "order-3", "type": "order.placed", "key": "sku-7", "data": "garbage"}),
    )
    .await;
    let entries = api
        .wait_for("/v1/dlq?handler=inventory", "order-3 dead-lettered", |d| {
            d["entries"].as_array().is_some_and(|e| !e.is_empty())
        })
        .await;
    assert_eq!(
        entries["entries"][0]["attempts"].as_array().unwrap().len(),
        1
    );

    // Unexpected exceptions: retried, then dead-lettered with the stack.
    for (name, component, ty, stack) in [
        ("hostile-js", &hostile_js, "throw", "at validate@"),
        ("hostile-py", &hostile_py, "raise", "Traceback"),
    ] {
        let (status, answer) = api
            .call(
                api.client
                    .put(format!("{}/v1/handlers/{name}", api.base))
                    .json(&json!({"topics": [name], "retry": {
                        "max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100}})),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        api.cli(&["deploy", name, component.to_str().unwrap()]);
        api.publish(
            name,
            json!({"id": format!("{name}-1"), "type": ty, "data": {}}),
        )
        .await;
        let list = api
            .wait_for(&format!("/v1/dlq?handler={name}"), "dead-lettered", |d| {
                d["entries"].as_array().is_some_and(|e| !e.is_empty())
            })
            .await;
        let id = list["entries"][0]["id"].as_i64().unwrap();
        let entry = api.get(&format!("/v1/dlq/{id}")).await;
        let attempts = entry["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{entry}");
        let error = entry["error"].as_str().unwrap();
        assert!(error.contains(stack), "{name}: {error}");
        // The CLI keeps a table row per entry, and shows the whole stack
        // with the entry.
        let list = api.cli(&["dlq", "list", "--handler", name]);
        assert_eq!(list.lines().count(), 2, "{list}");
        let shown = api.cli(&["dlq", "show", &id.to_string()]);
        assert!(
            shown.contains("last error:") && shown.contains(stack),
            "{shown}"
        );
    }
    // The host kept running throughout.
    assert_eq!(api.get("/healthz").await["status"], "ok");
}
