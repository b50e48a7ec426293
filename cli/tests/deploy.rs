//! Uploading and activating handler versions through the admin API of a
//! real `sluice run`: validation errors, deduplication, hot swap, rollback,
//! and activations that survive a restart.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "deploy-test-token";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

struct Host {
    child: Child,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, log: &Path) -> Host {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(config)
        .env("SLUICE_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Host { child }
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn wait_up(&self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = self
                .client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "host did not start:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (u16, Value) {
        let r = r.bearer_auth(TOKEN).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn upload(&self, handler: &str, bytes: Vec<u8>, query: &str) -> (u16, Value) {
        self.send(
            self.client
                .post(format!(
                    "{}/v1/handlers/{handler}/versions{query}",
                    self.base
                ))
                .header("content-type", "application/wasm")
                .body(bytes),
        )
        .await
    }

    async fn activate(&self, handler: &str, body: &str) -> (u16, Value) {
        self.send(
            self.client
                .post(format!("{}/v1/handlers/{handler}/activate", self.base))
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
            .1
    }

    /// Publishes one event and returns the version digest that processed
    /// it for `first`, and the `x-version` its emitted event carries.
    async fn run_one(&self, id: &str) -> (String, String) {
        let (status, _) = self
            .send(
                self.client
                    .post(format!("{}/v1/topics/in/events", self.base))
                    .json(&json!({"id": id, "type": "step.a", "key": id, "data": {"n": 0}})),
            )
            .await;
        assert_eq!(status, 202);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let story = self.get(&format!("/v1/events/{id}")).await;
            if let (Some(version), Some(tag)) = (
                story["processed_by"][0]["version"].as_str(),
                story["emitted"][0]["headers"]["x-version"].as_str(),
            ) {
                return (version.to_owned(), tag.to_owned());
            }
            assert!(Instant::now() < deadline, "{id} was not processed: {story}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn sha256(path: &PathBuf) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_activate_roll_back_and_survive_a_restart() {
    let built = sluice::harness::build_components(
        workspace(),
        &["chain", "chain-v2", "other-world"],
        &workspace().join("target").join("guests"),
    )
    .unwrap();
    let (v1_path, v2_path, other_path) = (&built[0], &built[1], &built[2]);
    let (v1, v2) = (sha256(v1_path), sha256(v2_path));

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{db}\"\n[admin]\naddr = \"127.0.0.1:{port}\"\nmax_upload_bytes = 8388608\n\
             [runtime]\ncache_dir = \"{cache}\"\n\
             [[handlers]]\nname = \"first\"\ncomponent = \"{v1}\"\ntopics = [\"in\"]\ntypes = [\"step.a\", \"poison\"]\n",
            db = dir.path().join("s.db").display(),
            cache = dir.path().join("cache").display(),
            v1 = v1_path.display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("host.log");
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    let host = spawn(&config, &log);
    api.wait_up(&log).await;

    // The configured component is version 1, active.
    let h = api.get("/v1/handlers/first").await;
    assert_eq!(h["active_version"], 1, "{h}");
    assert_eq!(h["versions"][0]["digest"], v1.as_str());
    assert_eq!(h["config"]["topics"], json!(["in"]));
    assert_eq!(api.run_one("e1").await, (v1.clone(), "1".into()));

    // Upload v2 (validated and compiled first); identical bytes again: same version.
    let bytes = std::fs::read(v2_path).unwrap();
    let (status, answer) = api.upload("first", bytes.clone(), "").await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        (answer["version"].clone(), answer["digest"].clone()),
        (json!(2), json!(v2))
    );
    let (status, answer) = api.upload("first", bytes, "").await;
    assert_eq!(
        (status, answer["version"].clone(), answer["created"].clone()),
        (200, json!(2), json!(false))
    );
    // Not active yet.
    assert_eq!(api.run_one("e2").await.0, v1);

    // Every way an upload can be wrong.
    let (status, answer) = api.upload("first", b"garbage".to_vec(), "").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_component")),
        "{answer}"
    );
    let (status, answer) = api.upload("first", b"\0asm\x01\0\0\0".to_vec(), "").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_component")),
        "{answer}"
    );
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module")
    );
    let (status, answer) = api
        .upload("first", std::fs::read(other_path).unwrap(), "")
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("wrong_world")),
        "{answer}"
    );
    let (status, answer) = api.upload("nobody", b"x".to_vec(), "").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_handler")),
        "{answer}"
    );
    // Too large: refused while the body streams in, so the server may close
    // the connection before the client has sent it all; then the answer is
    // lost, and a closed connection is the refusal. A client of its own, so
    // that the closed connection is not reused by the next request.
    let too_big = reqwest::Client::new()
        .post(format!("{}/v1/handlers/first/versions", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/wasm")
        .body(vec![0u8; 9 << 20])
        .send()
        .await;
    match too_big {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let (status, answer) = api
        .send(
            api.client
                .post(format!("{}/v1/handlers/first/versions", api.base))
                .header("content-type", "text/plain")
                .body("hello"),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let r = api
        .client
        .post(format!("{}/v1/handlers/first/versions", api.base))
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "uploads need the token");
    let h = api.get("/v1/handlers/first").await;
    assert_eq!(
        h["versions"].as_array().unwrap().len(),
        2,
        "nothing bad was stored"
    );

    // The hot swap, then the rollback.
    let (status, answer) = api.activate("first", r#"{"version": 2}"#).await;
    assert_eq!(
        (status, answer["active_version"].clone()),
        (200, json!(2)),
        "{answer}"
    );
    assert_eq!(api.run_one("e3").await, (v2.clone(), "2".into()));
    let (status, _) = api.activate("first", r#"{"version": 1}"#).await;
    assert_eq!(status, 200);
    assert_eq!(api.run_one("e4").await, (v1.clone(), "1".into()));
    let (status, answer) = api.activate("first", r#"{"version": 7}"#).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("not_found")),
        "{answer}"
    );
    let (status, answer) = api.activate("first", r#"{"versoin": 2}"#).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("bad_json")),
        "{answer}"
    );

    // The same through the CLI.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .args(["--url", &api.base, "--token", TOKEN])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["deploy", "first", v2_path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("first version 2 (") && out.contains("identical") && out.contains("active"),
        "{out}"
    );
    assert_eq!(api.run_one("e4b").await.0, v2);
    let (code, out, _) = cli(&["activate", "first", "1"]);
    assert_eq!((code, out.trim()), (Some(0), "first now runs version 1"));
    let (code, _, err) = cli(&["deploy", "first", other_path.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("wrong_world"), "{err}");

    // An activation survives a restart (the config file did not change).
    let (status, _) = api.activate("first", r#"{"version": 2}"#).await;
    assert_eq!(status, 200);
    drop(host);
    let _host = spawn(&config, &log);
    api.wait_up(&log).await;
    assert_eq!(api.get("/v1/handlers/first").await["active_version"], 2);
    assert_eq!(api.run_one("e5").await, (v2.clone(), "2".into()));

    // A buggy v1 dead-letters events; v2 fixes the bug; a bulk redrive
    // drains the DLQ and the effects appear exactly once.
    let (status, _) = api.activate("first", r#"{"version": 1}"#).await;
    assert_eq!(status, 200);
    let poison: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("p{i}"), "type": "poison", "key": format!("pk{i}"), "data": {"n": i}}))
        .collect();
    let (status, _) = api
        .send(
            api.client
                .post(format!("{}/v1/topics/in/events", api.base))
                .json(&poison),
        )
        .await;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get("/v1/dlq?status=pending&handler=first").await["entries"]
        .as_array()
        .unwrap()
        .len()
        < 5
    {
        assert!(
            Instant::now() < deadline,
            "v1 did not dead-letter the poison events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = api.get("/v1/dlq?handler=first").await;
    assert!(
        dead["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["version"] == v1.as_str())
    );
    let (status, _) = api.activate("first", r#"{"version": 2}"#).await;
    assert_eq!(status, 200);
    let (status, answer) = api
        .send(
            api.client
                .post(format!("{}/v1/dlq/redrive", api.base))
                .json(&json!({"handler": "first"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["redriven"].as_array().unwrap().len(), 5);
    for i in 0..5 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = api.get(&format!("/v1/handlers/first/state/pk{i}")).await;
            if state["state"]["a"] == json!([i]) {
                break;
            }
            assert!(Instant::now() < deadline, "pk{i}: {state}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let story = api.get(&format!("/v1/events/p{i}")).await;
        let by = &story["processed_by"][0];
        assert_eq!(
            (by["outcome"].as_str(), by["version"].as_str()),
            (Some("ok"), Some(v2.as_str())),
            "{story}"
        );
    }
    assert!(
        api.get("/v1/dlq?status=pending").await["entries"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (_, again) = api
        .send(api.client.post(format!("{}/v1/dlq/redrive", api.base)))
        .await;
    assert_eq!(again["redriven"], json!([]));
    // A redrive on a chosen version: v1 stays active, the entry runs on v2.
    let (status, _) = api.activate("first", r#"{"version": 1}"#).await;
    assert_eq!(status, 200);
    let (status, _) = api
        .send(
            api.client
                .post(format!("{}/v1/topics/in/events", api.base))
                .json(&json!({"id": "p9", "type": "poison", "key": "pk9", "data": {"n": 9}})),
        )
        .await;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    let entry_id = loop {
        let pending = api.get("/v1/dlq?status=pending&handler=first").await;
        if let Some(id) = pending["entries"][0]["id"].as_i64() {
            break id;
        }
        assert!(Instant::now() < deadline, "p9 was not dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, answer) = api
        .send(
            api.client
                .post(format!("{}/v1/dlq/{entry_id}/redrive", api.base))
                .json(&json!({"version": 7})),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("not_found")),
        "{answer}"
    );
    let (code, out, err) = cli(&["dlq", "redrive", &entry_id.to_string(), "--version", "2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("redriven"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let story = api.get("/v1/events/p9").await;
        if story["processed_by"][0]["outcome"] == "ok" {
            assert_eq!(story["processed_by"][0]["version"], v2.as_str(), "{story}");
            break;
        }
        assert!(Instant::now() < deadline, "{story}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(api.get("/v1/handlers/first").await["active_version"], 1);

    // Exactly once: a moment later the state is still a single entry.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = api.get("/v1/handlers/first/state/pk3").await;
    assert_eq!(state["state"]["a"], json!([3]));
}

impl Api {
    async fn put_handler(&self, name: &str, body: &str) -> (u16, Value) {
        self.send(
            self.client
                .put(format!("{}/v1/handlers/{name}", self.base))
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    async fn delete_handler(&self, name: &str, query: &str) -> (u16, Value) {
        self.send(
            self.client
                .delete(format!("{}/v1/handlers/{name}{query}", self.base)),
        )
        .await
    }

    async fn publish(&self, topic: &str, events: &Value) {
        let (status, answer) = self
            .send(
                self.client
                    .post(format!("{}/v1/topics/{topic}/events", self.base))
                    .json(events),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
    }

    /// Waits until `check` accepts what `path` returns.
    async fn wait_for(&self, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.get(path).await;
            if check(&value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: {value}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn host_config(dir: &Path, port: u16, handlers: &str) -> PathBuf {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{db}\"\n[admin]\naddr = \"127.0.0.1:{port}\"\n\
             [runtime]\ncache_dir = \"{cache}\"\n{handlers}",
            db = dir.join("s.db").display(),
            cache = dir.join("cache").display(),
        ),
    )
    .unwrap();
    config
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Handlers created, reconfigured under load, restarted with the host and
/// deleted, all through the API; the file-declared handler is off limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_are_created_reconfigured_and_deleted_at_runtime() {
    let built = sluice::harness::build_components(
        workspace(),
        &["chain", "chain-v2"],
        &workspace().join("target").join("guests"),
    )
    .unwrap();
    let (v1_path, v2_path) = (&built[0], &built[1]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // One handler declared in the file (on a topic nobody else reads).
    let config = host_config(
        dir.path(),
        port,
        &format!(
            "[[handlers]]\nname = \"declared\"\ncomponent = \"{}\"\ntopics = [\"elsewhere\"]\n",
            v1_path.display()
        ),
    );
    let log = dir.path().join("host.log");
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    let host = spawn(&config, &log);
    api.wait_up(&log).await;

    // Create: no version yet, so it does not run, and events wait for it.
    let (status, h) = api
        .put_handler(
            "api",
            r#"{"topics": ["in"], "types": ["step.a", "poison"]}"#,
        )
        .await;
    assert_eq!(status, 201, "{h}");
    assert_eq!(
        (
            h["running"].clone(),
            h["managed_by"].clone(),
            h["active_version"].clone()
        ),
        (json!(false), json!("api"), Value::Null)
    );
    assert_eq!(
        h["config"]["retry"]["max_attempts"], 5,
        "defaults filled in"
    );
    api.publish(
        "in",
        &json!({"id": "early", "type": "step.a", "key": "k0", "data": {"n": 0}}),
    )
    .await;
    let (status, answer) = api
        .upload("api", std::fs::read(v1_path).unwrap(), "?activate=true")
        .await;
    assert_eq!(status, 201, "{answer}");
    api.wait_for("/v1/handlers/api/state/k0", "the waiting event ran", |s| {
        s["state"]["a"] == json!([0])
    })
    .await;
    assert_eq!(api.get("/v1/handlers/api").await["running"], true);

    // Reconfigure three times while events flow: each change drains the
    // running invocations and restarts on the same version. Ledger: every
    // key's list holds each of its numbers once, in publish order.
    let changes = [
        r#"{"topics": ["in"], "types": ["step.a"], "concurrency": 1}"#,
        r#"{"topics": ["in"], "types": ["step.*"], "concurrency": 8, "retry": {"max_attempts": 2, "initial_backoff_ms": 10}}"#,
        r#"{"topics": ["in"], "types": ["step.a", "poison"], "on_dead_letter": "park", "limits": {"timeout_ms": 3000}}"#,
    ];
    let keys = 10;
    let per_batch = 40;
    let mut n = 1;
    for (round, change) in changes.iter().enumerate() {
        for _ in 0..3 {
            let batch: Vec<Value> = (0..per_batch)
                .map(|i| {
                    let e = json!({"id": format!("r{n}"), "type": "step.a",
                        "key": format!("k{}", i % keys), "data": {"n": n}});
                    n += 1;
                    e
                })
                .collect();
            api.publish("in", &json!(batch)).await;
        }
        let (status, h) = api.put_handler("api", change).await;
        assert_eq!(status, 200, "round {round}: {h}");
        assert_eq!(h["active_version"], 1);
    }
    let total = n - 1;
    let h = api
        .wait_for("/v1/handlers/api", "every event processed", |h| {
            h["stats"]["processed"] == json!(total + 1) && h["lag"]["in"] == 0
        })
        .await;
    assert_eq!(h["config"]["on_dead_letter"], "park");
    assert_eq!(
        h["config"]["concurrency"], 16,
        "unset fields are defaults again"
    );
    assert_eq!(h["running"], true);
    for k in 0..keys {
        let expected: Vec<u64> = (1..=total)
            .filter(|n| (n - 1) % per_batch % keys == k)
            .collect();
        let mut expected_all = if k == 0 { vec![0] } else { vec![] };
        expected_all.extend(expected);
        let state = api.get(&format!("/v1/handlers/api/state/k{k}")).await;
        assert_eq!(state["state"]["a"], json!(expected_all), "key k{k}");
    }

    // Every way a PUT or DELETE can be wrong, and nothing changes.
    let bad: [(&str, &str, u16, &str, &str); 8] = [
        ("api", "{", 400, "bad_json", ""),
        ("api", "[1]", 400, "bad_request", "JSON object"),
        ("api", r#"{"topics": []}"#, 400, "bad_request", "no topic"),
        (
            "api",
            r#"{"topics": ["in"], "retries": 3}"#,
            400,
            "bad_request",
            "unknown field `retries`",
        ),
        (
            "api",
            r#"{"topics": ["in"], "component": "x.wasm"}"#,
            400,
            "bad_request",
            "versions",
        ),
        (
            "api",
            r#"{"name": "other", "topics": ["in"]}"#,
            400,
            "bad_request",
            "differs",
        ),
        (
            "Bad-Name",
            r#"{"topics": ["in"]}"#,
            400,
            "bad_request",
            "not valid",
        ),
        (
            "declared",
            r#"{"topics": ["in"]}"#,
            409,
            "managed_by_config",
            "configuration file",
        ),
    ];
    for (name, body, status, kind, detail) in bad {
        let (got, answer) = api.put_handler(name, body).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(kind)),
            "{body}: {answer}"
        );
        assert!(
            answer["detail"].as_str().unwrap().contains(detail),
            "{body}: {answer}"
        );
    }
    let (status, answer) = api.delete_handler("declared", "").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("managed_by_config"))
    );
    let (status, answer) = api.delete_handler("nobody", "").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_handler"))
    );
    let (status, answer) = api.delete_handler("api", "?purge=maybe").await;
    assert_eq!(status, 400, "{answer}");
    for r in [
        api.client
            .put(format!("{}/v1/handlers/api", api.base))
            .body("{}"),
        api.client.delete(format!("{}/v1/handlers/api", api.base)),
    ] {
        assert_eq!(r.send().await.unwrap().status(), 401, "needs the token");
    }
    let h = api.get("/v1/handlers/api").await;
    assert_eq!(
        (h["running"].clone(), h["config"]["on_dead_letter"].clone()),
        (json!(true), json!("park"))
    );

    // A poison event parks its key (the configured mode); then the host
    // restarts and the API-created handler runs again from the registry.
    api.publish(
        "in",
        &json!([
            {"id": "bad1", "type": "poison", "key": "pk", "data": {"n": 1}},
            {"id": "after1", "type": "step.a", "key": "pk", "data": {"n": 2}},
        ]),
    )
    .await;
    api.wait_for(
        "/v1/dlq?handler=api&status=pending",
        "poison dead-lettered",
        |d| d["entries"].as_array().is_some_and(|e| e.len() == 1),
    )
    .await;
    drop(host);
    let host = spawn(&config, &log);
    api.wait_up(&log).await;
    let h = api.get("/v1/handlers").await;
    let names: Vec<&str> = h["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "declared"]);
    assert!(
        h["handlers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["running"] == true),
        "{h}"
    );
    let (status, _) = api
        .upload("api", std::fs::read(v2_path).unwrap(), "?activate=true")
        .await;
    assert_eq!(status, 201);
    let dlq = api.get("/v1/dlq?handler=api&status=pending").await;
    let entry = dlq["entries"][0]["id"].as_i64().unwrap();
    let (status, _) = api
        .send(
            api.client
                .post(format!("{}/v1/dlq/{entry}/redrive", api.base)),
        )
        .await;
    assert_eq!(status, 200);
    api.wait_for(
        "/v1/handlers/api/state/pk",
        "the parked key released in order",
        |s| s["state"]["a"] == json!([1, 2]),
    )
    .await;

    // Delete: it stops; a later event is not processed; what it recorded
    // stays, so a re-created handler resumes without running anything twice.
    let (status, answer) = api.delete_handler("api", "").await;
    assert_eq!(
        (status, answer["deleted"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    let (status, _) = api
        .send(api.client.get(format!("{}/v1/handlers/api", api.base)))
        .await;
    assert_eq!(status, 404);
    api.publish(
        "in",
        &json!({"id": "late", "type": "step.a", "key": "k0", "data": {"n": 99}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.get("/v1/events/late").await["processed_by"], json!([]));
    let (status, _) = api
        .put_handler("api", r#"{"topics": ["in"], "types": ["step.a"]}"#)
        .await;
    assert_eq!(status, 201);
    let (status, answer) = api
        .upload("api", std::fs::read(v1_path).unwrap(), "?activate=true")
        .await;
    assert_eq!(
        (status, answer["version"].clone()),
        (201, json!(1)),
        "versions went with the delete"
    );
    let mut expected: Vec<u64> = vec![0];
    expected.extend((1..=total).filter(|n| (n - 1) % per_batch % keys == 0));
    expected.push(99);
    api.wait_for(
        "/v1/handlers/api/state/k0",
        "resumed after the last event, nothing twice",
        |s| s["state"]["a"] == json!(expected),
    )
    .await;

    // A purge removes what it recorded too.
    let (status, _) = api.delete_handler("api", "?purge=true").await;
    assert_eq!(status, 200);
    assert_eq!(
        api.get("/v1/handlers/api/state/k0").await["state"],
        json!({})
    );
    assert_eq!(api.get("/v1/dlq?handler=api").await["entries"], json!([]));

    // The CLI: create and deploy in one command, list, remove.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .args(["--url", &api.base, "--token", TOKEN])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let v1 = v1_path.to_str().unwrap();
    let (code, _, err) = cli(&["deploy", "viacli", v1]);
    assert_eq!(code, Some(2));
    assert!(err.contains("give --topic"), "{err}");
    let (code, out, err) = cli(&["deploy", "viacli", v1, "--topic", "in", "--type", "step.a"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("viacli version 1"), "{out}");
    let h = api.get("/v1/handlers/viacli").await;
    assert_eq!(
        (h["config"]["topics"].clone(), h["config"]["types"].clone()),
        (json!(["in"]), json!(["step.a"]))
    );
    // Changing the topics keeps the rest of the configuration.
    let (code, _, err) = cli(&["deploy", "viacli", v1, "--topic", "in", "--topic", "more"]);
    assert_eq!(code, Some(0), "{err}");
    let h = api.get("/v1/handlers/viacli").await;
    assert_eq!(
        (h["config"]["topics"].clone(), h["config"]["types"].clone()),
        (json!(["in", "more"]), json!(["step.a"]))
    );
    let (code, out, _) = cli(&["handlers"]);
    assert_eq!(code, Some(0));
    let row = out
        .lines()
        .find(|l| l.starts_with("viacli"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("in,more") && row.contains(" yes "), "{row}");
    let (code, out, err) = cli(&["remove", "viacli"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("viacli deleted"), "{out}");
    let (code, _, err) = cli(&["remove", "declared"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("managed_by_config"), "{err}");
    drop(host);
}
