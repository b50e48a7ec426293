//! Crash safety: `sluice run` is killed with SIGKILL again and again while a
//! workload flows through a chain of two handlers, and restarted each time.
//! At the end a ledger must hold: every input's effects (state entries and
//! emitted events) exist exactly once, in per-key order.
//!
//! The publisher behaves like a real producer: when a request fails because
//! the host died, it sends the same events (same ids) again once the host is
//! back, so the log holds duplicates that the pipeline must absorb.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Host, chain_component, free_port, wait_healthy};

use serde_json::{Value, json};

const KEYS: u64 = 8;
const EVENTS: u64 = 1200;
const BATCH: u64 = 20;
/// How long each incarnation of the host lives before SIGKILL, in ms.
const LIFETIMES_MS: &[u64] = &[700, 350, 1100, 200, 900, 500, 1500, 300];

fn input(i: u64) -> Value {
    json!({
        "id": format!("in-{i}"),
        "type": "step.a",
        "key": format!("k{}", i % KEYS),
        "data": {"n": i / KEYS},
    })
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn topic_events(client: &reqwest::Client, base: &str, topic: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = get_json(
            client,
            &format!("{base}/v1/topics/{topic}/events?after={after}&limit=1000"),
        )
        .await;
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        after = page["next_after"].as_i64().unwrap();
        out.extend(events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_duplicates_nothing() {
    let chain = chain_component();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[store]
url = "sqlite://{db}"

[admin]
addr = "127.0.0.1:{port}"

[runtime]
cache_dir = "{cache}"

[pipeline]
poll_interval_ms = 100

[[handlers]]
name = "first"
component = "{chain}"
topics = ["in"]
types = ["step.a"]

[[handlers]]
name = "second"
component = "{chain}"
topics = ["mid"]
types = ["step.b"]
"#,
            db = dir.path().join("sluice.db").display(),
            cache = dir.path().join("cache").display(),
            chain = chain.display(),
        ),
    )
    .unwrap();
    let mut host = Host::new(config, dir.path().join("host.log"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Publish in batches while the host is killed and restarted.
    let mut next = 0u64;
    let mut resent = 0u64;
    for lifetime in LIFETIMES_MS {
        host.spawn();
        wait_healthy(&client, &base, &host.log).await;
        let until = Instant::now() + Duration::from_millis(*lifetime);
        let mut failed_batch = false;
        while Instant::now() < until && next < EVENTS {
            let batch: Vec<Value> = (next..(next + BATCH).min(EVENTS)).map(input).collect();
            match client
                .post(format!("{base}/v1/topics/in/events"))
                .json(&batch)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => next += batch.len() as u64,
                _ => {
                    failed_batch = true;
                    break;
                }
            }
        }
        // The killer: a real SIGKILL, mid-stream.
        host.kill();
        if failed_batch {
            resent += 1;
        }
        // A batch sent just before the kill may or may not have committed:
        // send it again (same ids) as a producer would.
        next = next.saturating_sub(BATCH);
        resent += 1;
    }
    // Last incarnation: publish the rest and let it drain.
    host.spawn();
    wait_healthy(&client, &base, &host.log).await;
    while next < EVENTS {
        let batch: Vec<Value> = (next..(next + BATCH).min(EVENTS)).map(input).collect();
        let r = client
            .post(format!("{base}/v1/topics/in/events"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        next += batch.len() as u64;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let handlers = get_json(&client, &format!("{base}/v1/handlers")).await;
        let out = topic_events(&client, &base, "out").await;
        let listed = handlers["handlers"].as_array().cloned().unwrap_or_default();
        let idle = listed.len() == 2 && listed.iter().all(|h| h["stats"]["in_flight"] == 0);
        if out.len() as u64 >= EVENTS && idle {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not drain: {} of {EVENTS} out events; {handlers}",
            out.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The ledger.
    let inputs = topic_events(&client, &base, "in").await;
    assert!(
        inputs.len() as u64 >= EVENTS,
        "the input log has every event (and resent duplicates)"
    );
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..EVENTS {
        expected
            .entry(format!("k{}", i % KEYS))
            .or_default()
            .push(i / KEYS);
    }
    for (key, list) in &expected {
        for (handler, field) in [("first", "a"), ("second", "b")] {
            let state = get_json(
                &client,
                &format!("{base}/v1/handlers/{handler}/state/{key}"),
            )
            .await;
            let seen: Vec<u64> = serde_json::from_value(state["state"][field].clone()).unwrap();
            assert_eq!(
                &seen, list,
                "state of {handler} for {key}: exactly once, in order"
            );
        }
    }
    for topic in ["mid", "out"] {
        let events = topic_events(&client, &base, topic).await;
        assert_eq!(events.len() as u64, EVENTS, "{topic}: one event per input");
        let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len() as u64, EVENTS, "{topic}: distinct ids");
        let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for e in &events {
            per_key
                .entry(e["key"].as_str().unwrap().to_owned())
                .or_default()
                .push(e["data"]["n"].as_u64().unwrap());
        }
        assert_eq!(per_key, expected, "{topic}: per-key order");
    }
    // An event's story: who processed it, what it caused, where it came from.
    let story = get_json(&client, &format!("{base}/v1/events/in-5")).await;
    assert_eq!(story["event"]["id"], "in-5");
    assert_eq!(story["processed_by"][0]["handler"], "first");
    assert_eq!(story["processed_by"][0]["outcome"], "ok");
    assert_eq!(story["emitted"].as_array().unwrap().len(), 1);
    assert_eq!(story["effects"][0]["event"]["topic"], "mid");
    assert_eq!(story["effects"][0]["effects"][0]["event"]["topic"], "out");
    assert!(story["causes"].as_array().unwrap().is_empty());
    let leaf = story["effects"][0]["effects"][0]["event"]["id"]
        .as_str()
        .unwrap();
    let up = get_json(&client, &format!("{base}/v1/events/{leaf}")).await;
    let causes: Vec<&str> = up["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["topic"].as_str().unwrap())
        .collect();
    assert_eq!(causes, vec!["mid", "in"]);
    assert_eq!(
        client
            .get(format!("{base}/v1/events/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // The same through the CLI client.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .args(["--url", &base])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = cli(&["events", "show", "in-5"]);
    assert!(
        shown.starts_with("event in-5 (step.a) on in key k5"),
        "{shown}"
    );
    assert!(shown.contains("first") && shown.contains("-> "), "{shown}");
    let table = cli(&["handlers"]);
    assert!(
        table.lines().next().unwrap().starts_with("HANDLER"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("second")), "{table}");
    let json: Value = serde_json::from_str(&cli(&["handlers", "first", "--json"])).unwrap();
    assert_eq!(json["stats"]["in_flight"], 0);
    assert_eq!(json["active_version"], 1);
    let detail = cli(&["handlers", "second"]);
    assert!(
        detail.starts_with("handler second (running, managed by config): topics [\"mid\"]"),
        "{detail}"
    );
    assert!(
        detail
            .lines()
            .any(|l| l.starts_with("*") && l.contains(" 1 ")),
        "{detail}"
    );
    let dlq = cli(&["dlq", "list"]);
    assert_eq!(
        dlq.lines().count(),
        1,
        "only the header: no dead letters\n{dlq}"
    );

    // The operator's view agrees: nothing lags, nothing waits in the outbox.
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sluice_handler_lag{handler=\"first\",topic=\"in\"} 0",
        "sluice_handler_lag{handler=\"second\",topic=\"mid\"} 0",
        "sluice_outbox_backlog 0",
        "# TYPE sluice_handler_duration_seconds histogram",
        "sluice_handler_in_flight{handler=\"second\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    let processed = count("sluice_handler_processed_total{handler=\"second\"}");
    let observed = count("sluice_handler_duration_seconds_count{handler=\"second\"}");
    assert!(
        processed > 0 && observed >= processed,
        "{processed} {observed}"
    );
    eprintln!(
        "kill -9 ledger ok: {} kills, {} input records for {EVENTS} events ({} resent batches)",
        LIFETIMES_MS.len(),
        inputs.len(),
        resent
    );
}
