//! Several `sluice run` instances on Kafka and PostgreSQL sharing the work
//! through the consumer groups: one is killed with SIGKILL mid-stream and a
//! third joins (a rebalance) while events flow through a two-handler chain.
//! Ledger: every key's state lists (the effects, in the shared store) hold
//! each number exactly once, in publish order. Skips without PostgreSQL or a
//! broker unless `SLUICE_REQUIRE_SERVERS=1`.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEYS: u64 = 12;
const EVENTS: u64 = 600;
const BATCH: u64 = 30;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `sluice run` process.
struct Instance {
    base: String,
    log: PathBuf,
    child: Option<Child>,
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
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--config"])
            .arg(&config)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Instance {
            base: format!("http://127.0.0.1:{port}"),
            log,
            child: Some(child),
        }
    }

    async fn wait_healthy(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "instance did not start:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
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

// Known failures, measured on tansu 0.6.0 (see the session notes): with a
// third instance joining, a key's state list lost entries (e.g. 16 and 17
// of 0..49 missing, later ones present): a rebalance still lets an update
// computed from stale state commit. After a SIGKILL, the survivor's
// rebalance 45 s later left the dead member's partitions unassigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known bug: lost updates across rebalances between instances; see the notes"]
async fn instances_share_the_work_and_survive_a_kill_and_a_rebalance() {
    let Some(brokers) = sluice::test_servers::kafka_test_brokers().await else {
        return;
    };
    let Some(database) = sluice::store::postgres_test_database().await else {
        return;
    };
    let chain = sluice::harness::build_components(
        workspace(),
        &["chain"],
        &workspace().join("target").join("guests"),
    )
    .unwrap()
    .remove(0);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let input = format!("scale-{run}");
    let dir = tempfile::tempdir().unwrap();
    let shared = format!(
        "[store]\nurl = \"{database}\"\n\
         [broker]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ngroup_prefix = \"scale-{run}\"\n\
         [pipeline]\npoll_interval_ms = 100\n\
         [[topics]]\nname = \"{input}\"\npartitions = 6\n\
         [[handlers]]\nname = \"first\"\ncomponent = \"{chain}\"\ntopics = [\"{input}\"]\ntypes = [\"step.a\"]\n\
         [[handlers]]\nname = \"second\"\ncomponent = \"{chain}\"\ntopics = [\"mid\"]\ntypes = [\"step.b\"]\n",
        chain = chain.display(),
    );
    let client = reqwest::Client::new();
    let a = Instance::start(dir.path(), "a", &shared);
    a.wait_healthy(&client).await;
    let mut b = Instance::start(dir.path(), "b", &shared);
    b.wait_healthy(&client).await;
    let mut c: Option<Instance> = None;

    let key = |i: u64| format!("{run}-k{}", i % KEYS);
    let mut next = 0;
    while next < EVENTS {
        let batch: Vec<Value> = (next..next + BATCH)
            .map(|i| json!({"id": format!("{run}-{i}"), "type": "step.a", "key": key(i), "data": {"n": i / KEYS}}))
            .collect();
        let r = client
            .post(format!("{}/v1/topics/{input}/events", a.base))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
        next += BATCH;
        let batches = next / BATCH;
        if batches == EVENTS / BATCH / 3 {
            // Mid-stream: B dies without a chance to clean up.
            tokio::time::sleep(Duration::from_millis(300)).await;
            b.kill();
        }
        if batches == 2 * EVENTS / BATCH / 3 {
            // A third instance joins: the partitions are dealt again.
            let joined = Instance::start(dir.path(), "c", &shared);
            joined.wait_healthy(&client).await;
            c = Some(joined);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..EVENTS {
        expected.entry(key(i)).or_default().push(i / KEYS);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (k, list) in &expected {
        for (handler, field) in [("first", "a"), ("second", "b")] {
            loop {
                let got = state_list(&client, &a.base, handler, k, field).await;
                if &got == list {
                    break;
                }
                // Never a duplicate or a reordering, even before it is done.
                assert!(
                    list.starts_with(&got),
                    "{handler} {k}: {got:?} is not a prefix of {list:?}"
                );
                assert!(
                    Instant::now() < deadline,
                    "{handler} {k}: {got:?}\n{}",
                    ["a", "b", "c"]
                        .map(|n| format!(
                            "--- {n}\n{}",
                            std::fs::read_to_string(dir.path().join(format!("{n}.log")))
                                .unwrap_or_default()
                        ))
                        .join("\n")
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(b.child.is_none(), "B was killed");
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
}
