//! The local test harness: run a real component in the real runtime against
//! one event, and compare the result with an expectation.
//!
//! `sluice test COMPONENT.wasm --event EVENT.json [--state STATE.json]
//! [--expect EXPECTED.json]` is a thin wrapper around this module, and the
//! same API serves `#[test]` functions in any crate:
//!
//! ```no_run
//! use sluice::harness::{Harness, RunOptions, TestEvent};
//!
//! #[test]
//! fn reserves_stock() {
//!     let harness = Harness::new().unwrap();
//!     let event = TestEvent::json("order.placed", serde_json::json!({
//!         "order_id": "o1", "sku": "A", "qty": 1
//!     }))
//!     .key("A");
//!     let options = RunOptions::default().state_json("available", serde_json::json!(5));
//!     let report = harness
//!         .run_file_blocking("inventory.wasm".as_ref(), &event, &options)
//!         .unwrap();
//!     report.expect(&serde_json::json!({
//!         "outcome": {"kind": "ok"},
//!         "state_writes": {"available": 4},
//!         "emitted": [{"type": "stock.reserved"}]
//!     })).unwrap();
//! }
//! ```
//!
//! ## File formats
//!
//! **Event** (`--event`): one event, or an array of events that run in
//! sequence (state carried from one to the next, per key; the report is then
//! an array too). An event is `{"type": ..., "data": <JSON> | "data_base64": ...,
//! "id"?, "source"?, "key"?, "topic"?, "time"?, "content_type"?,
//! "data_schema"?, "headers"?: {name: value}, "attempt"?}`. Defaults: id
//! `test-event-1`, source `/sluice/test`, topic `test`, attempt 1, content
//! type `application/json` when `data` is given.
//!
//! **State** (`--state`): `{field: value}`. A value is stored as its JSON
//! encoding; `{"$base64": "..."}` stores raw bytes.
//!
//! **Report** (printed): `{"outcome": {"kind": ok|retryable|fatal|trap|timeout|limit, ...},
//! "emitted": [...], "state_writes": {field: value | null}, "logs": [...],
//! "dropped_logs": n, "elapsed_ms": t}`. Payloads and state values that are
//! JSON are shown as JSON, others as `{"$base64": ...}`.
//!
//! **Expectation** (`--expect`): a JSON document matched as a *subset* of the
//! report: every field it names must be equal, fields it leaves out are
//! ignored (so `time` and `elapsed_ms` need not be pinned), and arrays must
//! have the same length with each element matching.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::event::Event;
use crate::runtime::{
    self, Invocation, Limits, LoadedComponent, LogLine, Outcome, Runtime, RuntimeConfig, StateMap,
};

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The component could not be loaded.
    #[error(transparent)]
    Load(#[from] runtime::Error),
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An input file is not what the harness expects.
    #[error("{path}: {message}")]
    Input {
        /// The file (or `<inline>`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The report does not match the expectation.
    #[error("the result does not match the expectation:\n{}", .0.join("\n"))]
    Mismatch(Vec<String>),
    /// Building a guest component failed.
    #[error("building guest components failed: {0}")]
    Build(String),
    /// No async runtime could be created for a blocking call.
    #[error("cannot start an async runtime: {0}")]
    Executor(std::io::Error),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An input event, as written in an `--event` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    /// Event id; default `test-event-1`.
    #[serde(default = "default_id")]
    pub id: String,
    /// Source; default `/sluice/test`.
    #[serde(default = "default_source")]
    pub source: String,
    /// Event type (required).
    #[serde(rename = "type")]
    pub ty: String,
    /// Time, RFC 3339.
    #[serde(default)]
    pub time: Option<String>,
    /// Content type; `application/json` by default when `data` is given.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Data schema / payload version.
    #[serde(default)]
    pub data_schema: Option<String>,
    /// JSON payload.
    #[serde(default)]
    pub data: Option<Value>,
    /// Raw payload, base64 (instead of `data`).
    #[serde(default)]
    pub data_base64: Option<String>,
    /// Headers / extension attributes.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Ordering key.
    #[serde(default)]
    pub key: Option<String>,
    /// Topic; default `test`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Delivery attempt; default 1.
    #[serde(default = "default_attempt")]
    pub attempt: u32,
}

fn default_id() -> String {
    "test-event-1".into()
}
fn default_source() -> String {
    "/sluice/test".into()
}
fn default_topic() -> String {
    "test".into()
}
fn default_attempt() -> u32 {
    1
}

impl TestEvent {
    /// An event of type `ty` with a JSON payload and default attributes.
    pub fn json(ty: &str, data: Value) -> Self {
        TestEvent {
            id: default_id(),
            source: default_source(),
            ty: ty.into(),
            time: None,
            content_type: None,
            data_schema: None,
            data: Some(data),
            data_base64: None,
            headers: BTreeMap::new(),
            key: None,
            topic: default_topic(),
            attempt: 1,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the id.
    pub fn id(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the attempt.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Reads an event file: one event, or an array of events to run in
    /// sequence (the `bool` tells which).
    pub fn from_file(path: &Path) -> Result<(Vec<Self>, bool)> {
        let input_error = |message: String| Error::Input {
            path: path.display().to_string(),
            message,
        };
        // Parse as a value first, then as the shape it has, so that errors
        // name the real problem (a missing field, say).
        let value = read_json(path)?;
        if value.is_array() {
            let events: Vec<TestEvent> = serde_json::from_value(value)
                .map_err(|e| input_error(format!("not a valid array of events: {e}")))?;
            if events.is_empty() {
                return Err(input_error("the array of events is empty".into()));
            }
            return Ok((events, true));
        }
        let event: TestEvent = serde_json::from_value(value)
            .map_err(|e| input_error(format!("not a valid event: {e}")))?;
        Ok((vec![event], false))
    }

    /// The host event this describes, and its attempt number.
    pub fn to_event(&self) -> Result<(Event, u32)> {
        let input_error = |message: String| Error::Input {
            path: "event".into(),
            message,
        };
        let (data, content_type) = match (&self.data, &self.data_base64) {
            (Some(_), Some(_)) => {
                return Err(input_error(
                    "give either `data` or `data_base64`, not both".into(),
                ));
            }
            (Some(value), None) => (
                serde_json::to_vec(value).map_err(|e| input_error(e.to_string()))?,
                Some(
                    self.content_type
                        .clone()
                        .unwrap_or_else(|| "application/json".into()),
                ),
            ),
            (None, Some(b64)) => (
                BASE64
                    .decode(b64)
                    .map_err(|e| input_error(format!("`data_base64` is not base64: {e}")))?,
                self.content_type.clone(),
            ),
            (None, None) => (Vec::new(), self.content_type.clone()),
        };
        if self.attempt == 0 {
            return Err(input_error("`attempt` starts at 1".into()));
        }
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        Ok((
            Event {
                id: self.id.clone(),
                source: self.source.clone(),
                ty: self.ty.clone(),
                time: self.time.clone(),
                content_type,
                data_schema: self.data_schema.clone(),
                data,
                headers,
                key: self.key.clone(),
                topic: self.topic.clone(),
            },
            self.attempt,
        ))
    }
}

/// Options of one harness run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Handler name, which enters emitted ids and sources; default `handler`.
    pub handler: String,
    /// Initial state of the event's key.
    pub state: StateMap,
    /// Limits to run under.
    pub limits: Limits,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            handler: "handler".into(),
            state: StateMap::new(),
            limits: Limits::default(),
        }
    }
}

impl RunOptions {
    /// Sets the handler name.
    pub fn handler(mut self, name: &str) -> Self {
        self.handler = name.into();
        self
    }

    /// Seeds a state field with a JSON value.
    pub fn state_json(mut self, name: &str, value: Value) -> Self {
        self.state
            .insert(name.into(), value.to_string().into_bytes());
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Reads the initial state from a `--state` file.
    pub fn state_file(mut self, path: &Path) -> Result<Self> {
        let input_error = |message: String| Error::Input {
            path: path.display().to_string(),
            message,
        };
        let value = read_json(path)?;
        let Value::Object(fields) = value else {
            return Err(input_error("state must be a JSON object of fields".into()));
        };
        for (name, value) in fields {
            let bytes = decode_bytes(&value).map_err(input_error)?;
            self.state.insert(name, bytes);
        }
        Ok(self)
    }
}

/// What one run produced; [`Report::to_json`] is what `sluice test` prints.
#[derive(Debug, Clone)]
pub struct Report {
    /// How the invocation ended.
    pub outcome: Outcome,
    /// Emitted events (only when the outcome is `ok`).
    pub emitted: Vec<Event>,
    /// State writes (only when the outcome is `ok`); `None` deletes.
    pub state_writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Logs and captured output.
    pub logs: Vec<LogLine>,
    /// Log lines dropped past the limit.
    pub dropped_logs: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl From<Invocation> for Report {
    fn from(i: Invocation) -> Self {
        Report {
            outcome: i.outcome,
            emitted: i.emitted,
            state_writes: i.state_changes,
            logs: i.logs,
            dropped_logs: i.dropped_logs,
            elapsed: i.elapsed,
        }
    }
}

impl Report {
    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let emitted: Vec<Value> = self.emitted.iter().map(event_json).collect();
        let writes: Map<String, Value> = self
            .state_writes
            .iter()
            .map(|(k, v)| (k.clone(), v.as_deref().map_or(Value::Null, encode_bytes)))
            .collect();
        json!({
            "outcome": self.outcome,
            "emitted": emitted,
            "state_writes": writes,
            "logs": self.logs,
            "dropped_logs": self.dropped_logs,
            "elapsed_ms": self.elapsed.as_secs_f64() * 1000.0,
        })
    }

    /// Compares the report with `expected` (subset semantics, see the module
    /// docs); on a mismatch the error lists every difference by path.
    pub fn expect(&self, expected: &Value) -> Result<()> {
        let differences = compare(expected, &self.to_json());
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::Mismatch(differences))
        }
    }
}

/// An emitted event as JSON, with the payload decoded where it is JSON.
fn event_json(e: &Event) -> Value {
    let mut map = e.attributes_json();
    map.insert("data".into(), encode_bytes(&e.data));
    Value::Object(map)
}

/// Bytes that are JSON are shown as that JSON; others as `{"$base64": ...}`.
pub fn encode_bytes(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| json!({"$base64": BASE64.encode(bytes)}))
}

/// The inverse of [`encode_bytes`].
pub fn decode_bytes(value: &Value) -> std::result::Result<Vec<u8>, String> {
    if let Value::Object(map) = value
        && map.len() == 1
        && let Some(b64) = map.get("$base64")
    {
        let b64 = b64.as_str().ok_or("`$base64` must be a string")?;
        return BASE64
            .decode(b64)
            .map_err(|e| format!("`$base64` is not base64: {e}"));
    }
    Ok(value.to_string().into_bytes())
}

/// Subset comparison of `expected` against `actual`; returns one line per
/// difference, each naming the JSON path.
pub fn compare(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    compare_at("$", expected, actual, &mut out);
    out
}

fn compare_at(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => compare_at(&p, ev, av, out),
                    None => out.push(format!("{p}: expected {ev}, but it is missing")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                compare_at(&format!("{path}[{i}]"), ev, av, out);
            }
            if e.len() != a.len() {
                out.push(format!(
                    "{path}: expected {} element(s), got {}{}",
                    e.len(),
                    a.len(),
                    if a.len() > e.len() {
                        format!("; extra: {}", Value::Array(a[e.len()..].to_vec()))
                    } else {
                        String::new()
                    }
                ));
            }
        }
        // 1 and 1.0 are the same number to a reader.
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => {}
        (e, a) if e == a => {}
        (e, a) => out.push(format!("{path}: expected {e}, got {a}")),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Input {
        path: path.display().to_string(),
        message: format!("not JSON: {e}"),
    })
}

/// Runs components in a private [`Runtime`].
#[derive(Debug, Clone)]
pub struct Harness {
    runtime: Arc<Runtime>,
}

impl Harness {
    /// A harness with the default runtime settings (no disk cache).
    pub fn new() -> Result<Self> {
        Self::with_config(RuntimeConfig {
            max_concurrent_instances: 16,
            ..RuntimeConfig::default()
        })
    }

    /// A harness with explicit runtime settings.
    pub fn with_config(config: RuntimeConfig) -> Result<Self> {
        Ok(Self {
            runtime: Arc::new(Runtime::new(config)?),
        })
    }

    /// The underlying runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Loads (validates and compiles) a component file.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedComponent>> {
        Ok(self.runtime.load_file(path)?)
    }

    /// Runs `event` through `component`.
    pub async fn run(
        &self,
        component: &Arc<LoadedComponent>,
        event: &TestEvent,
        options: &RunOptions,
    ) -> Result<Report> {
        let (event, attempt) = event.to_event()?;
        let handler =
            self.runtime
                .handler(&options.handler, component.clone(), options.limits.clone());
        Ok(handler
            .invoke(&event, attempt, options.state.clone())
            .await
            .into())
    }

    /// Runs `events` in order, the way the pipeline delivers them one after
    /// another: each event sees the state its key has after the earlier
    /// successful events (every key starts from `options.state`), and an
    /// event that fails changes nothing.
    pub async fn run_sequence(
        &self,
        component: &Arc<LoadedComponent>,
        events: &[TestEvent],
        options: &RunOptions,
    ) -> Result<Vec<Report>> {
        let handler =
            self.runtime
                .handler(&options.handler, component.clone(), options.limits.clone());
        let mut states: BTreeMap<Option<String>, StateMap> = BTreeMap::new();
        let mut reports = Vec::with_capacity(events.len());
        for test_event in events {
            let (event, attempt) = test_event.to_event()?;
            let state = states
                .entry(event.key.clone())
                .or_insert_with(|| options.state.clone());
            let report: Report = handler.invoke(&event, attempt, state.clone()).await.into();
            for (name, value) in &report.state_writes {
                match value {
                    Some(v) => state.insert(name.clone(), v.clone()),
                    None => state.remove(name),
                };
            }
            reports.push(report);
        }
        Ok(reports)
    }

    /// Loads the component at `path` and runs `event` through it.
    pub async fn run_file(
        &self,
        path: &Path,
        event: &TestEvent,
        options: &RunOptions,
    ) -> Result<Report> {
        let component = self.load(path)?;
        self.run(&component, event, options).await
    }

    /// [`Harness::run_file`] for synchronous code such as a plain `#[test]`.
    pub fn run_file_blocking(
        &self,
        path: &Path,
        event: &TestEvent,
        options: &RunOptions,
    ) -> Result<Report> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Executor)?
            .block_on(self.run_file(path, event, options))
    }
}

/// The Rust target that produces handler components.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Installs the `wasm32-wasip2` Rust target with rustup when it is missing.
pub fn ensure_wasm_target() -> Result<()> {
    let installed = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| Error::Build(format!("cannot run rustup: {e}")))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    let status = std::process::Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .map_err(|e| Error::Build(format!("cannot run rustup: {e}")))?;
    if !status.success() {
        return Err(Error::Build(format!(
            "`rustup target add {WASM_TARGET}` failed ({status})"
        )));
    }
    Ok(())
}

/// Builds the cdylib `packages` of the Cargo workspace at `workspace` as
/// release components (installing the target first if needed) into
/// `target_dir`, and returns their paths in the same order.
///
/// A `#[test]` calls this to test the real component of a handler crate;
/// cargo makes repeated calls cheap. Use a `target_dir` of its own, so that
/// the nested build does not wait on the lock of the test's own build.
pub fn build_components(
    workspace: &Path,
    packages: &[&str],
    target_dir: &Path,
) -> Result<Vec<std::path::PathBuf>> {
    ensure_wasm_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let output = cmd
        .output()
        .map_err(|e| Error::Build(format!("cannot run cargo: {e}")))?;
    if !output.status.success() {
        return Err(Error::Build(format!(
            "cargo build for {WASM_TARGET} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let out_dir = target_dir.join(WASM_TARGET).join("release");
    packages
        .iter()
        .map(|p| {
            let path = out_dir.join(format!("{}.wasm", p.replace('-', "_")));
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Build(format!(
                    "{} was not produced: is `{p}` a cdylib crate?",
                    path.display()
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_comparison_names_paths() {
        let actual = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}, "t": 5});
        assert!(compare(&json!({"a": 1.0, "b": {"c": [1, 2]}}), &actual).is_empty());
        let diff = compare(&json!({"a": 2, "b": {"c": [1], "e": true}}), &actual);
        assert_eq!(
            diff,
            vec![
                "$.a: expected 2, got 1".to_string(),
                "$.b.c: expected 1 element(s), got 2; extra: [2]".to_string(),
                "$.b.e: expected true, but it is missing".to_string(),
            ]
        );
    }

    #[test]
    fn bytes_round_trip() {
        for bytes in [
            b"{\"x\":1}".to_vec(),
            vec![0, 159, 146, 150],
            b"\"s\"".to_vec(),
        ] {
            let v = encode_bytes(&bytes);
            let back = decode_bytes(&v).unwrap();
            // JSON round-trips to an equivalent encoding, raw bytes exactly.
            assert_eq!(encode_bytes(&back), v);
        }
        assert_eq!(encode_bytes(&[0, 1]), json!({"$base64": "AAE="}));
    }

    #[test]
    fn event_defaults_and_errors() {
        let e: TestEvent = serde_json::from_value(json!({"type": "t", "data": {"k": 1}})).unwrap();
        let (event, attempt) = e.to_event().unwrap();
        assert_eq!(event.id, "test-event-1");
        assert_eq!(event.content_type.as_deref(), Some("application/json"));
        assert_eq!(attempt, 1);
        let both: TestEvent =
            serde_json::from_value(json!({"type": "t", "data": 1, "data_base64": "AA=="})).unwrap();
        assert!(both.to_event().is_err());
        assert!(serde_json::from_value::<TestEvent>(json!({"type": "t", "bogus": 1})).is_err());
    }
}
