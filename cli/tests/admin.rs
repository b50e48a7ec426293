//! The admin API over real HTTP, on a real SQLite store: appends, reads,
//! DLQ endpoints, and the error answers.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::{Value, json};
use sluice::admin::{AppState, app, serve};
use sluice::pipeline::Signals;
use sluice::store::{self, Batch, DeadLetter, Store, StoreOptions};

struct Api {
    _dir: tempfile::TempDir,
    base: String,
    store: Arc<dyn Store>,
    signals: Signals,
    client: reqwest::Client,
    token: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Api {
    async fn start() -> Api {
        Self::start_with(None).await
    }

    async fn start_with(token: Option<&str>) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = store::open(&url, &StoreOptions::default()).await.unwrap();
        let signals = Signals::new();
        let state = AppState {
            store: store.clone(),
            signals: signals.clone(),
            default_partitions: 3,
            max_body_bytes: 64 << 10,
            token: token.map(Into::into),
            max_upload_bytes: 1 << 20,
            pipeline: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app(state), async {
            let _ = stopped.await;
        }));
        Api {
            _dir: dir,
            base,
            store,
            signals,
            client: reqwest::Client::new(),
            token: token.map(Into::into),
            stop: Some(stop),
            server: Some(server),
        }
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .auth(self.client.post(format!("{}{path}", self.base)))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .auth(self.client.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .auth(self.client.delete(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn append_and_read_back() {
    let api = Api::start().await;
    let mut log_rx = api.signals.log.subscribe();
    let (status, body) = api
        .post(
            "/v1/topics/orders/events",
            r#"[{"type": "order.placed", "key": "A", "data": {"n": 1}, "headers": {"TraceParent": "00-abc"}},
                {"id": "fixed", "type": "raw", "data_base64": "AAEC", "content_type": "application/octet-stream"}]"#,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let ids = body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], "fixed");
    // Dispatchers are woken with the new end of the log.
    assert!(log_rx.has_changed().unwrap());
    assert_eq!(
        *log_rx.borrow_and_update(),
        body["events"][1]["seq"].as_i64().unwrap()
    );

    let (status, page) = api.get("/v1/topics/orders/events?after=0&limit=10").await;
    assert_eq!(status, 200);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "order.placed");
    assert_eq!(events[0]["data"], json!({"n": 1}));
    assert_eq!(events[0]["content_type"], "application/json");
    assert_eq!(events[0]["headers"]["traceparent"], "00-abc");
    assert_eq!(events[0]["source"], "/sluice/api");
    assert!(events[0]["time"].is_string());
    assert_eq!(events[1]["data_base64"], "AAEC");
    let next = page["next_after"].as_i64().unwrap();
    let (_, rest) = api
        .get(&format!("/v1/topics/orders/events?after={next}"))
        .await;
    assert!(rest["events"].as_array().unwrap().is_empty());

    let (_, topics) = api.get("/v1/topics").await;
    assert_eq!(topics["topics"][0]["name"], "orders");
    assert_eq!(topics["topics"][0]["partitions"], 3);
    assert_eq!(topics["topics"][0]["events"], 2);
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_write_nothing() {
    let api = Api::start().await;
    let cases = [
        ("/v1/topics/orders/events", "{not json", "bad_json"),
        (
            "/v1/topics/orders/events",
            r#"{"data": 1}"#,
            "missing field `type`",
        ),
        (
            "/v1/topics/orders/events",
            r#"{"type": ""}"#,
            "must not be empty",
        ),
        (
            "/v1/topics/orders/events",
            r#"{"type": "t", "data": 1, "data_base64": "AA=="}"#,
            "not both",
        ),
        (
            "/v1/topics/orders/events",
            r#"{"type": "t", "bogus": 1}"#,
            "unknown field `bogus`",
        ),
        (
            "/v1/topics/orders/events",
            r#"{"type": "t", "data_base64": "%%"}"#,
            "not base64",
        ),
        (
            "/v1/topics/orders/events",
            r#"{"type": "t", "headers": {"bad name": "x"}}"#,
            "header name",
        ),
        (
            "/v1/topics/orders/events",
            r#"{"type": "t", "key": "a\u0000b"}"#,
            "NUL",
        ),
        ("/v1/topics/orders/events", "[]", "no events"),
        // One bad event rejects the whole request: nothing half-written.
        (
            "/v1/topics/orders/events",
            r#"[{"type": "ok"}, {"type": ""}]"#,
            "event 1",
        ),
        (
            "/v1/topics/bad%20name/events",
            r#"{"type": "t"}"#,
            "topic name",
        ),
    ];
    for (path, body, needle) in cases {
        let (status, answer) = api.post(path, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
        let text = answer.to_string();
        assert!(text.contains(needle), "{body}: {text}");
    }
    assert!(
        api.store.topics().await.unwrap().is_empty(),
        "nothing was written"
    );

    // Too large: refused while the body streams in.
    let big = format!(r#"{{"type": "t", "data": "{}"}}"#, "x".repeat(100 << 10));
    let (status, _) = api.post("/v1/topics/orders/events", &big).await;
    assert_eq!(status, 413);

    let (status, answer) = api.get("/v1/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(answer["error"], "not_found");
}

// Multi-threaded: the CLI calls block a thread while the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_endpoints() {
    let api = Api::start().await;
    let (_, body) = api
        .post(
            "/v1/topics/in/events",
            r#"{"id": "bad-1", "type": "t", "key": "k", "data": {}}"#,
        )
        .await;
    let seq = body["events"][0]["seq"].as_i64().unwrap();
    let record = api.store.read_seqs(&[seq]).await.unwrap().remove(0);
    let report = api
        .store
        .commit(&Batch {
            dead_letters: vec![DeadLetter {
                handler: "h".into(),
                version: "abc".into(),
                record,
                attempts: vec![store::AttemptRecord {
                    attempt: 1,
                    outcome: "fatal".into(),
                    error: "nope".into(),
                    version: "abc".into(),
                    at: 1,
                }],
                park: false,
                publish_to: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let id = report.dlq_ids[0];

    let (status, list) = api.get("/v1/dlq?handler=h").await;
    assert_eq!(status, 200);
    assert_eq!(list["entries"][0]["id"], id);
    assert_eq!(list["entries"][0]["event"]["id"], "bad-1");
    assert_eq!(list["entries"][0]["error"], "fatal: nope");
    let (_, none) = api.get("/v1/dlq?handler=other").await;
    assert!(none["entries"].as_array().unwrap().is_empty());

    let (status, entry) = api.get(&format!("/v1/dlq/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(entry["attempts"][0]["error"], "nope");
    assert_eq!(api.get("/v1/dlq/999").await.0, 404);

    // The CLI client shows the same.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .args(["--url", &api.base])
            .output()
            .unwrap()
    };
    let out = cli(&["dlq", "list", "--handler", "h"]);
    assert!(out.status.success());
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(listed.starts_with("ID"), "{listed}");
    assert!(
        listed.contains("bad-1") && listed.contains("fatal: nope"),
        "{listed}"
    );
    let shown = String::from_utf8(cli(&["dlq", "show", &id.to_string()]).stdout).unwrap();
    assert!(
        shown.contains("for handler h") && shown.contains("nope"),
        "{shown}"
    );

    let (status, entry) = api.post(&format!("/v1/dlq/{id}/redrive"), "").await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["status"], "redriven");
    // A second action on the same entry conflicts.
    let (status, answer) = api.delete(&format!("/v1/dlq/{id}")).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "conflict");
    let out = cli(&["dlq", "discard", &id.to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("409") && err.contains("already redriven"),
        "{err}"
    );
    let (_, pending) = api.get("/v1/dlq?status=pending").await;
    assert!(pending["entries"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn shutdown_is_graceful() {
    let mut api = Api::start().await;
    assert_eq!(api.get("/healthz").await.0, 200);
    api.stop.take().unwrap().send(()).unwrap();
    api.server.take().unwrap().await.unwrap().unwrap();
    assert!(
        api.client
            .get(format!("{}/healthz", api.base))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_token_guards_mutations_and_data_but_not_health() {
    let api = Api::start_with(Some("s3cret")).await;
    let anonymous = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", api.base);

    for public in ["/healthz", "/v1/topics", "/v1/handlers"] {
        let r = anonymous.get(url(public)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{public}");
    }
    let guarded = [
        ("POST", "/v1/topics/t/events"),
        ("GET", "/v1/topics/t/events"),
        ("GET", "/v1/handlers/h/state/k"),
        ("GET", "/v1/events/x"),
        ("GET", "/v1/dlq"),
        ("GET", "/v1/dlq/1"),
        ("POST", "/v1/dlq/1/redrive"),
        ("DELETE", "/v1/dlq/1"),
        ("POST", "/v1/handlers/h/versions"),
        ("POST", "/v1/handlers/h/activate"),
        ("POST", "/v1/dlq/redrive"),
    ];
    for (method, path) in guarded {
        let method: reqwest::Method = method.parse().unwrap();
        for token in [None, Some("wrong"), Some("s3cret-but-longer")] {
            let mut r = anonymous
                .request(method.clone(), url(path))
                .body(r#"{"type":"t"}"#);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
    }
    assert!(
        api.store.topics().await.unwrap().is_empty(),
        "nothing got through"
    );
    // With the token, the same calls work.
    let (status, _) = api.post("/v1/topics/t/events", r#"{"type": "t"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(api.get("/v1/topics/t/events").await.0, 200);
    assert_eq!(api.get("/v1/dlq").await.0, 200);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let api = Api::start().await;
    let (status, doc) = api.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/v1/openapi.json"),
        ("get", "/v1/topics"),
        ("post", "/v1/topics/{topic}/events"),
        ("get", "/v1/topics/{topic}/events"),
        ("get", "/v1/handlers"),
        ("get", "/v1/handlers/{name}"),
        ("put", "/v1/handlers/{name}"),
        ("delete", "/v1/handlers/{name}"),
        ("post", "/v1/handlers/{name}/versions"),
        ("post", "/v1/handlers/{name}/activate"),
        ("get", "/v1/handlers/{name}/state/{key}"),
        ("get", "/v1/events/{id}"),
        ("get", "/v1/dlq"),
        ("get", "/v1/dlq/{id}"),
        ("delete", "/v1/dlq/{id}"),
        ("post", "/v1/dlq/{id}/redrive"),
        ("post", "/v1/dlq/redrive"),
    ];
    for (method, path) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not described"
        );
        // And the route really exists (not a 404 from the fallback).
        let url = format!(
            "{}{}",
            api.base,
            path.replace("{topic}", "t")
                .replace("{name}", "h")
                .replace("{key}", "k")
                .replace("{id}", "1")
        );
        let r = api
            .client
            .request(method.to_uppercase().parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(body["detail"], "no such endpoint", "{method} {path}");
    }
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        routes
            .iter()
            .map(|r| r.1)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        "every described path is a route"
    );
}
