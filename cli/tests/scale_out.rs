//! Several `sluice run` instances on Kafka and PostgreSQL sharing the work
//! through the consumer groups: one of two is killed with SIGKILL
//! mid-stream and the survivor alone takes over its partitions, then a
//! third joins (a rebalance), while events flow through a two-handler chain.
//! Ledger: every key's state lists (the effects, in the shared store) hold
//! each number exactly once, in publish order. Skips without PostgreSQL or a
//! broker unless `SLUICE_REQUIRE_SERVERS=1`.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Host, chain_component, free_port, wait_healthy, workspace};

use serde_json::{Value, json};

const KEYS: u64 = 12;
const EVENTS: u64 = 600;
const BATCH: u64 = 30;

/// One `sluice run` process with its own admin port.
struct Instance {
    base: String,
    host: Host,
}

impl Instance {
    fn start(dir: &Path, name: &str, shared: &str) -> Instance {
        let port = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!("[admin]\naddr = \"127.0.0.1:{port}\"\n{shared}"),
        )
        .unwrap();
        let mut host = Host::new(config, dir.join(format!("{name}.log")));
        host.spawn();
        Instance {
            base: format!("http://127.0.0.1:{port}"),
            host,
        }
    }

    async fn wait_healthy(&self, client: &reqwest::Client) {
        wait_healthy(client, &self.base, &self.host.log).await;
    }
}

async fn state_list(
    client: &reqwest::Client,
    base: &str,
    handler: &str,
    key: &str,
    list: &str,
) -> Vec<u64> {
    let v: Value = client
        .get(format!("{base}/v1/handlers/{handler}/state/{key}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["state"][list]
        .as_array()
        .map(|a| a.iter().map(|n| n.as_u64().unwrap()).collect())
        .unwrap_or_default()
}

/// Waits until every key's state lists (the effects, in the shared store)
/// hold each number exactly once, in publish order, for both handlers of
/// the chain; fails at once on a gap, a duplicate or a reordering.
async fn check_ledger(
    client: &reqwest::Client,
    base: &str,
    run: &str,
    dir: &Path,
    names: &[&str],
    events: u64,
) {
    let logs = || {
        names
            .iter()
            .map(|n| {
                format!(
                    "--- {n}\n{}",
                    std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..events {
        expected
            .entry(format!("{run}-k{}", i % KEYS))
            .or_default()
            .push(i / KEYS);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (k, list) in &expected {
        for (handler, field) in [("first", "a"), ("second", "b")] {
            loop {
                let got = state_list(client, base, handler, k, field).await;
                if &got == list {
                    break;
                }
                // Never a duplicate or a reordering, even before it is done.
                assert!(
                    list.starts_with(&got),
                    "{handler} {k}: {got:?} is not a prefix of {list:?}\n{}",
                    logs()
                );
                assert!(
                    Instant::now() < deadline,
                    "{handler} {k}: {got:?}\n{}",
                    logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The configuration the chain tests share: both handlers of the chain
/// fixture on Kafka and PostgreSQL.
fn chain_config(database: &str, brokers: &str, run: &str, chain: &Path) -> String {
    format!(
        "[store]\nurl = \"{database}\"\n\
         [broker]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ngroup_prefix = \"scale-{run}\"\n\
         properties = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }}\n\
         [pipeline]\npoll_interval_ms = 100\n\
         [[topics]]\nname = \"scale-{run}\"\npartitions = 6\n\
         [[handlers]]\nname = \"first\"\ncomponent = \"{chain}\"\ntopics = [\"scale-{run}\"]\ntypes = [\"step.a\"]\n\
         [[handlers]]\nname = \"second\"\ncomponent = \"{chain}\"\ntopics = [\"mid\"]\ntypes = [\"step.b\"]\n",
        chain = chain.display(),
    )
}

/// What the chain tests start from: servers, a run id, its input topic, a
/// directory for the instances' files and their shared configuration.
struct ChainSetup {
    database: String,
    run: String,
    input: String,
    dir: tempfile::TempDir,
    shared: String,
    client: reqwest::Client,
}

impl ChainSetup {
    /// `None` (the test skips) without PostgreSQL or a broker, unless
    /// `SLUICE_REQUIRE_SERVERS=1`.
    async fn new() -> Option<Self> {
        let brokers = sluice_testkit::kafka_test_brokers().await?;
        let database = sluice_testkit::postgres_test_database().await?;
        let run = uuid::Uuid::now_v7().simple().to_string();
        let shared = chain_config(&database, &brokers, &run, &chain_component());
        Some(Self {
            database,
            input: format!("scale-{run}"),
            run,
            dir: tempfile::tempdir().unwrap(),
            shared,
            client: reqwest::Client::new(),
        })
    }
}

/// Events `from..from + BATCH` of run `run`: `step.a` over [`KEYS`] keys,
/// numbered per key.
fn inputs(run: &str, from: u64) -> Vec<Value> {
    (from..from + BATCH)
        .map(|i| {
            json!({"id": format!("{run}-{i}"), "type": "step.a", "key": format!("{run}-k{}", i % KEYS), "data": {"n": i / KEYS}})
        })
        .collect()
}

/// Publishes `batch` through `instance`'s API, resending after failures.
async fn publish(client: &reqwest::Client, instance: &Instance, input: &str, batch: &[Value]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .post(format!("{}/v1/topics/{input}/events", instance.base))
            .json(batch)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 202 => return,
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                assert!(Instant::now() < deadline, "{status}: {body}");
            }
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_work_and_survive_a_kill_and_a_rebalance() {
    let Some(ChainSetup {
        run,
        input,
        dir,
        shared,
        client,
        ..
    }) = ChainSetup::new().await
    else {
        return;
    };
    let a = Instance::start(dir.path(), "a", &shared);
    a.wait_healthy(&client).await;
    let mut b = Instance::start(dir.path(), "b", &shared);
    b.wait_healthy(&client).await;
    // B has work to lose when it dies.
    wait_shared(&client, &[&a, &b], "first", 6).await;

    // Mid-stream, B dies without a chance to clean up and stays dead: A
    // alone must take over B's partitions and finish the first two thirds.
    let third = EVENTS / BATCH / 3 * BATCH;
    let mut next = 0;
    while next < 2 * third {
        publish(&client, &a, &input, &inputs(&run, next)).await;
        next += BATCH;
        if next == third {
            tokio::time::sleep(Duration::from_millis(300)).await;
            b.host.kill();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivor_started = Instant::now();
    check_ledger(&client, &a.base, &run, dir.path(), &["a", "b"], next).await;
    eprintln!(
        "A alone finished {next} events {:?} after the last was published",
        survivor_started.elapsed()
    );
    let a_first = stats(&client, &a, "first").await;
    assert_eq!(a_first["partitions"].as_u64(), Some(6), "{a_first}");

    // A third instance joins mid-stream: the partitions are dealt again.
    let mut c: Option<Instance> = None;
    while next < EVENTS {
        publish(&client, &a, &input, &inputs(&run, next)).await;
        next += BATCH;
        if c.is_none() {
            let joined = Instance::start(dir.path(), "c", &shared);
            joined.wait_healthy(&client).await;
            c = Some(joined);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    check_ledger(&client, &a.base, &run, dir.path(), &["a", "b", "c"], EVENTS).await;
    // What became of a consumed event, from any instance.
    let story: Value = client
        .get(format!("{}/v1/events/{run}-0", a.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(story["event"].is_null(), "{story}");
    assert_eq!(story["processed_by"][0]["handler"], "first", "{story}");
    assert_eq!(story["processed_by"][0]["outcome"], "ok", "{story}");
    // The work was shared: the surviving instances both processed events.
    let c = c.expect("C joined");
    let mut processed = Vec::new();
    for base in [&a.base, &c.base] {
        let h: Value = client
            .get(format!("{base}/v1/handlers/first"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        processed.push(
            h["stats"]["processed"]
                .as_u64()
                .unwrap_or_else(|| panic!("{h}")),
        );
    }
    eprintln!("processed by first on A and C: {processed:?}");
    assert!(processed.iter().all(|n| *n > 0), "{processed:?}");
    if std::env::var_os("SLUICE_TEST_SHOW_LOGS").is_some() {
        eprintln!("--- a\n{}\n--- c\n{}", a.host.output(), c.host.output());
    }
}

/// The stats of `handler` on `instance`.
async fn stats(client: &reqwest::Client, instance: &Instance, handler: &str) -> Value {
    let h: Value = client
        .get(format!("{}/v1/handlers/{handler}", instance.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h["stats"].clone()
}

/// Waits until `instances` each own some of the `partitions` partitions
/// of `handler`'s topic, and together all of them.
async fn wait_shared(
    client: &reqwest::Client,
    instances: &[&Instance],
    handler: &str,
    partitions: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = Vec::new();
        for i in instances {
            owned.push(
                stats(client, i, handler).await["partitions"]
                    .as_u64()
                    .unwrap_or(0),
            );
        }
        if owned.iter().all(|n| *n > 0) && owned.iter().sum::<u64>() == partitions {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partitions of {handler} not shared: {owned:?}\n{}",
            instances
                .iter()
                .map(|i| i.host.output())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `{base}/v1/handlers/{handler}` until `running_digest` is `digest`;
/// returns how long it took.
async fn until_running(
    client: &reqwest::Client,
    instance: &Instance,
    handler: &str,
    digest: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        let h: Value = client
            .get(format!("{}/v1/handlers/{handler}", instance.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["running_digest"] == digest {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{handler} never ran {digest} here: {h}\n{}",
            instance.host.output()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler created, uploaded, activated, rolled back and deleted through
/// one instance's API runs (and stops) on the other instance too, without
/// a restart: PostgreSQL notices carry the registry changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_changes_reach_every_instance() {
    let Some(brokers) = sluice_testkit::kafka_test_brokers().await else {
        return;
    };
    let Some(database) = sluice_testkit::postgres_test_database().await else {
        return;
    };
    let built = sluice::harness::build_components(
        workspace(),
        &["chain", "chain-v2"],
        &workspace().join("target").join("guests"),
    )
    .unwrap();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let input = format!("registry-{run}");
    let dir = tempfile::tempdir().unwrap();
    let shared = format!(
        "[store]\nurl = \"{database}\"\n\
         [broker]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ngroup_prefix = \"registry-{run}\"\n\
         [pipeline]\npoll_interval_ms = 100\n\
         [[topics]]\nname = \"{input}\"\npartitions = 4\n"
    );
    let client = reqwest::Client::new();
    let a = Instance::start(dir.path(), "a", &shared);
    a.wait_healthy(&client).await;
    let b = Instance::start(dir.path(), "b", &shared);
    b.wait_healthy(&client).await;

    let r = client
        .put(format!("{}/v1/handlers/h", a.base))
        .json(&json!({"topics": [input], "types": ["step.a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let mut digests = Vec::new();
    let mut took = Vec::new();
    for path in &built {
        let r = client
            .post(format!("{}/v1/handlers/h/versions?activate=true", a.base))
            .header("content-type", "application/wasm")
            .body(std::fs::read(path).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        let digest = v["digest"].as_str().unwrap().to_owned();
        took.push(until_running(&client, &b, "h", &digest).await);
        digests.push(digest);
    }
    // Rollback through A: B follows.
    let r = client
        .post(format!("{}/v1/handlers/h/activate", a.base))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    took.push(until_running(&client, &b, "h", &digests[0]).await);
    eprintln!("activation on A running on B after: {took:?}");
    wait_shared(&client, &[&a, &b], "h", 4).await;

    // Both instances now run it and share the partitions.
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("{run}-{i}"), "type": "step.a", "key": format!("{run}-k{}", i % 8), "data": {"n": i / 8}}))
        .collect();
    let r = client
        .post(format!("{}/v1/topics/{input}/events", a.base))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let expected: Vec<u64> = (0..25).collect();
    for k in 0..8 {
        let key = format!("{run}-k{k}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = state_list(&client, &a.base, "h", &key, "a").await;
            if got == expected {
                break;
            }
            assert!(expected.starts_with(&got), "{key}: {got:?}");
            assert!(Instant::now() < deadline, "{key}: {got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut processed = Vec::new();
    for i in [&a, &b] {
        let h: Value = client
            .get(format!("{}/v1/handlers/h", i.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        processed.push(h["stats"]["processed"].as_u64().unwrap());
    }
    assert_eq!(processed.iter().sum::<u64>(), 200, "{processed:?}");
    assert!(
        processed.iter().all(|n| *n > 0),
        "{processed:?}\n--- a\n{}\n--- b\n{}",
        a.host.output(),
        b.host.output()
    );

    // Deleted through A: B stops it too.
    let r = client
        .delete(format!("{}/v1/handlers/h", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b
        .host
        .output()
        .contains("handler removed by another instance")
    {
        assert!(Instant::now() < deadline, "{}", b.host.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// PostgreSQL drops every connection of two instances (their backends are
/// terminated), three times mid-stream: the pools, the listeners and the
/// partition claims reconnect, and the ledger is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_loss_of_postgres_connections() {
    use sqlx::Connection as _;

    let Some(ChainSetup {
        run,
        input,
        dir,
        shared,
        client,
        database,
    }) = ChainSetup::new().await
    else {
        return;
    };
    let a = Instance::start(dir.path(), "a", &shared);
    a.wait_healthy(&client).await;
    let b = Instance::start(dir.path(), "b", &shared);
    b.wait_healthy(&client).await;
    wait_shared(&client, &[&a, &b], "first", 6).await;

    let mut admin = sqlx::PgConnection::connect(&database).await.unwrap();
    let mut next = 0;
    while next < EVENTS {
        publish(&client, &a, &input, &inputs(&run, next)).await;
        next += BATCH;
        if (next / BATCH).is_multiple_of(5) && next < EVENTS {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let terminated: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
            )
            .fetch_one(&mut admin)
            .await
            .unwrap();
            eprintln!("terminated {terminated} backends after {next} events");
            assert!(terminated > 0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_ledger(&client, &a.base, &run, dir.path(), &["a", "b"], EVENTS).await;
    if std::env::var_os("SLUICE_TEST_SHOW_LOGS").is_some() {
        eprintln!("--- a\n{}\n--- b\n{}", a.host.output(), b.host.output());
    }
}
