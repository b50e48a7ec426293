//! The admin HTTP API (axum). [`app`] builds the router from an
//! [`AppState`]; [`serve`] runs it until a shutdown future resolves, then
//! finishes the requests in progress.
//!
//! Every error is JSON `{"error": <kind>, "detail": <what was wrong>}` with
//! a fitting status code.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::HandlerConfig;
use crate::event::valid_topic_name;
use crate::event::{Event, valid_header_name};
use crate::pipeline::{self, HandlerStats, Pipeline, Signals};
use crate::store::{self, DlqAction, DlqFilter, DlqStatus, LogRecord, Store};

/// What the handlers of the API share.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Signals of the running pipeline (appends wake dispatchers).
    pub signals: Signals,
    /// Partitions of topics created on first append.
    pub default_partitions: u32,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Bearer token required for mutating calls and for reading events,
    /// state and the DLQ; `None` leaves them open (loopback only).
    pub token: Option<String>,
    /// Largest accepted component upload, in bytes.
    pub max_upload_bytes: usize,
    /// The running pipeline, for uploads and activations (`None` when the
    /// API runs without one, as in some tests).
    pub pipeline: Option<Arc<Pipeline>>,
}

/// An API error: status, kind and detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.kind, "detail": self.detail})),
        )
            .into_response()
    }
}

impl From<pipeline::Error> for ApiError {
    fn from(e: pipeline::Error) -> Self {
        use crate::runtime::Error as R;
        match e {
            pipeline::Error::UnknownHandler(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_handler",
                format!("no handler named {name}"),
            ),
            pipeline::Error::Component { source, .. } => match source {
                R::WrongWorld(_) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "wrong_world",
                    source.to_string(),
                ),
                R::NotWasm(_) | R::CoreModule | R::Invalid(_) | R::Read { .. } => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_component",
                    source.to_string(),
                ),
                R::Engine(_) => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    source.to_string(),
                ),
            },
            pipeline::Error::ManagedByConfig(name) => ApiError::new(
                StatusCode::CONFLICT,
                "managed_by_config",
                format!(
                    "handler {name} is declared in the host's configuration file, which owns it: change it there"
                ),
            ),
            pipeline::Error::Broker(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                e.to_string(),
            ),
            pipeline::Error::Unsupported(detail) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unsupported", detail)
            }
            pipeline::Error::Stopping => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                "the host is shutting down",
            ),
            pipeline::Error::Store(e) => e.into(),
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NotFound(what) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            store::Error::Conflict(detail) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", detail)
            }
            other => {
                tracing::error!("store error in the admin API: {other}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    other.to_string(),
                )
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router of the admin API.
pub fn app(state: AppState) -> Router {
    let body_limit = state.max_body_bytes;
    // Everything that changes something, or reads event data, state or the
    // DLQ, needs the token; health, topic names and counters do not.
    let protected = Router::new()
        .route(
            "/v1/topics/{topic}/events",
            post(append_events).get(read_events),
        )
        .route("/v1/handlers/{name}/state/{key}", get(get_state))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/dlq", get(list_dlq))
        .route("/v1/dlq/{id}", get(get_dlq).delete(discard_dlq))
        .route("/v1/dlq/{id}/redrive", post(redrive_dlq))
        .route("/v1/dlq/redrive", post(redrive_many))
        .route(
            "/v1/handlers/{name}/versions",
            post(upload_version).layer(DefaultBodyLimit::max(state.max_upload_bytes)),
        )
        .route("/v1/handlers/{name}/activate", post(activate_version))
        .route(
            "/v1/handlers/{name}",
            axum::routing::put(put_handler).delete(delete_handler),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/v1/topics", get(list_topics))
        .route("/v1/handlers", get(list_handlers))
        .route("/v1/handlers/{name}", get(get_handler))
        .merge(protected)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests in progress finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Rejects requests without the configured bearer token.
async fn require_token(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(expected) = &state.token {
        let presented = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes())) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this call needs a valid bearer token: Authorization: Bearer <token>",
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    next.run(request).await
}

/// Compares without an early exit, so that response time does not reveal
/// how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers: the pipeline is running (the server only
/// starts after it) and can make progress.
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.store.outbox_backlog().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// A counter of the exposition: name suffix, help text, and how to read it.
type Counter = (&'static str, &'static str, fn(&HandlerStats) -> u64);

/// Prometheus text exposition of per-handler counters, latency histograms,
/// lag, and the outbox backlog.
async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;

    use crate::pipeline::LATENCY_BUCKETS;

    let stats = handler_stats(&state);
    let mut out = String::new();
    let counters: [Counter; 7] = [
        ("processed_total", "Events processed successfully.", |s| {
            s.processed.load(Relaxed)
        }),
        (
            "failed_total",
            "Failed attempts (retried or dead-lettered).",
            |s| s.failed.load(Relaxed),
        ),
        ("retried_total", "Failed attempts that were retried.", |s| {
            s.retries.load(Relaxed)
        }),
        (
            "dead_lettered_total",
            "Events sent to the dead-letter queue.",
            |s| s.dead_lettered.load(Relaxed),
        ),
        (
            "duplicates_total",
            "Redelivered events skipped by the idempotency check.",
            |s| s.duplicates.load(Relaxed),
        ),
        (
            "filtered_total",
            "Events skipped by the type filter.",
            |s| s.filtered.load(Relaxed),
        ),
        (
            "parked_total",
            "Events held back behind a parked key.",
            |s| s.parked.load(Relaxed),
        ),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(
            out,
            "# HELP sluice_handler_{name} {help}\n# TYPE sluice_handler_{name} counter"
        );
        for (handler, stats) in &stats {
            let _ = writeln!(
                out,
                "sluice_handler_{name}{{handler=\"{handler}\"}} {}",
                read(stats)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sluice_handler_in_flight Events read and not yet committed.\n# TYPE sluice_handler_in_flight gauge"
    );
    for (handler, stats) in &stats {
        let _ = writeln!(
            out,
            "sluice_handler_in_flight{{handler=\"{handler}\"}} {}",
            stats.in_flight.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_handler_lag Events of a topic after the handler's committed position.\n# TYPE sluice_handler_lag gauge"
    );
    for (handler, _) in &stats {
        for (topic, lag) in lag(&state, handler).await? {
            let _ = writeln!(
                out,
                "sluice_handler_lag{{handler=\"{handler}\",topic=\"{topic}\"}} {lag}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sluice_handler_duration_seconds Time of one invocation (instantiation and handle).\n# TYPE sluice_handler_duration_seconds histogram"
    );
    for (handler, stats) in &stats {
        let h = &stats.latency;
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "sluice_handler_duration_seconds_bucket{{handler=\"{handler}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Relaxed);
        let _ = writeln!(
            out,
            "sluice_handler_duration_seconds_bucket{{handler=\"{handler}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "sluice_handler_duration_seconds_sum{{handler=\"{handler}\"}} {}",
            h.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "sluice_handler_duration_seconds_count{{handler=\"{handler}\"}} {count}"
        );
    }
    let backlog = state.store.outbox_backlog().await?;
    let _ = writeln!(
        out,
        "# HELP sluice_outbox_backlog Outbox rows not yet published.\n# TYPE sluice_outbox_backlog gauge\nsluice_outbox_backlog {backlog}"
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}

async fn list_topics(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let topics = state.store.topics().await?;
    Ok(Json(json!({ "topics": topics })))
}

/// One event in an append request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEvent {
    id: Option<String>,
    #[serde(rename = "type")]
    ty: String,
    key: Option<String>,
    source: Option<String>,
    time: Option<String>,
    data: Option<Value>,
    data_base64: Option<String>,
    content_type: Option<String>,
    data_schema: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl NewEvent {
    fn into_event(self, topic: &str, index: usize) -> Result<Event, String> {
        use base64::Engine as _;
        let at = |m: String| format!("event {index}: {m}");
        if self.ty.trim().is_empty() {
            return Err(at("`type` must not be empty".into()));
        }
        let id = match self.id {
            Some(id) if id.is_empty() || id.len() > 256 => {
                return Err(at("`id` must have 1 to 256 characters".into()));
            }
            Some(id) => id,
            None => uuid::Uuid::now_v7().to_string(),
        };
        if self.key.as_ref().is_some_and(|k| k.len() > 1024) {
            return Err(at("`key` is longer than 1024 bytes".into()));
        }
        let (data, content_type) = match (self.data, self.data_base64) {
            (Some(_), Some(_)) => {
                return Err(at("give `data` or `data_base64`, not both".into()));
            }
            (Some(value), None) => (
                serde_json::to_vec(&value).map_err(|e| at(e.to_string()))?,
                Some(
                    self.content_type
                        .unwrap_or_else(|| "application/json".into()),
                ),
            ),
            (None, Some(b64)) => (
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| at(format!("`data_base64` is not base64: {e}")))?,
                self.content_type,
            ),
            (None, None) => (Vec::new(), self.content_type),
        };
        let texts = [
            Some(&id),
            Some(&self.ty),
            self.key.as_ref(),
            self.source.as_ref(),
            self.time.as_ref(),
            content_type.as_ref(),
            self.data_schema.as_ref(),
        ];
        if texts.into_iter().flatten().any(|t| t.contains('\0'))
            || self.headers.values().any(|v| v.contains('\0'))
        {
            return Err(at(
                "attributes and header values must not contain NUL characters".into(),
            ));
        }
        let mut headers = BTreeMap::new();
        for (name, value) in self.headers {
            let name = name.to_ascii_lowercase();
            if !valid_header_name(&name) {
                return Err(at(format!("header name {name:?} is not valid")));
            }
            headers.insert(name, value);
        }
        Ok(Event {
            id,
            source: self.source.unwrap_or_else(|| "/sluice/api".into()),
            ty: self.ty,
            time: Some(self.time.unwrap_or_else(|| {
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            })),
            content_type,
            data_schema: self.data_schema,
            data,
            headers,
            key: self.key,
            topic: topic.to_owned(),
        })
    }
}

async fn append_events(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !valid_topic_name(&topic) {
        return Err(ApiError::bad_request(format!(
            "topic name {topic:?} is not valid: letters, digits, '.', '_' and '-'"
        )));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    let items: Vec<Value> = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("no events in the request"));
    }
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let new: NewEvent = serde_json::from_value(item)
            .map_err(|e| ApiError::bad_request(format!("event {index}: {e}")))?;
        events.push(
            new.into_event(&topic, index)
                .map_err(ApiError::bad_request)?,
        );
    }
    // With Kafka as the broker, events go there (acknowledged by all
    // in-sync replicas before the answer), not to the embedded log.
    if let Some(publisher) = state.pipeline.as_ref().and_then(|p| p.publisher()) {
        publisher.publish(&events).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                e.to_string(),
            )
        })?;
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        return Ok((StatusCode::ACCEPTED, Json(json!({ "ids": ids }))));
    }
    let appended = state
        .store
        .append(&events, state.default_partitions)
        .await?;
    if let Some(last) = appended.iter().map(|a| a.seq).max() {
        state.signals.appended(last);
    }
    let ids: Vec<&str> = appended.iter().map(|a| a.id.as_str()).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "ids": ids, "events": appended })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    after: Option<i64>,
    limit: Option<u32>,
}

/// A log record as the API shows it: the payload as JSON when it is JSON,
/// otherwise as `data_base64`.
pub fn record_json(r: &LogRecord) -> Value {
    use base64::Engine as _;
    let e = &r.event;
    let mut map = serde_json::Map::new();
    map.insert("seq".into(), r.seq.into());
    map.insert("partition".into(), r.partition.into());
    map.insert("offset".into(), r.offset.into());
    map.insert("appended_at".into(), r.appended_at.into());
    map.extend(e.attributes_json());
    let is_json = e
        .content_type
        .as_deref()
        .is_none_or(|ct| ct.contains("json"));
    match is_json
        .then(|| serde_json::from_slice::<Value>(&e.data).ok())
        .flatten()
    {
        Some(data) => map.insert("data".into(), data),
        None => map.insert(
            "data_base64".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(&e.data)),
        ),
    };
    Value::Object(map)
}

async fn read_events(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(params): Query<ReadParams>,
) -> ApiResult<Json<Value>> {
    let after = params.after.unwrap_or(0);
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let records = state.store.read_log(&topic, after, limit).await?;
    let next = records.last().map_or(after, |r| r.seq);
    let events: Vec<Value> = records.iter().map(record_json).collect();
    Ok(Json(json!({ "events": events, "next_after": next })))
}

/// Counters of every handler the pipeline knows, by name.
fn handler_stats(state: &AppState) -> Vec<(String, Arc<HandlerStats>)> {
    state
        .pipeline
        .as_ref()
        .map(|p| p.all_stats())
        .unwrap_or_default()
}

/// A handler's lag per topic it subscribes to now (positions on topics it
/// left are kept, in case it subscribes again, but are not lag).
async fn lag(state: &AppState, handler: &str) -> ApiResult<Vec<(String, i64)>> {
    let topics = state.pipeline.as_ref().and_then(|p| p.topics(handler));
    let all = state.store.lag(handler).await?;
    Ok(match topics {
        Some(topics) => all
            .into_iter()
            .filter(|(t, _)| topics.contains(t))
            .collect(),
        None => all,
    })
}

/// A handler as the API shows it: configuration, versions, active version,
/// whether it runs here, counters and lag.
async fn handler_json(state: &AppState, record: store::HandlerRecord) -> ApiResult<Value> {
    let pipeline = state.pipeline.as_ref();
    let stats = pipeline
        .and_then(|p| p.stats(&record.name))
        .map(|s| s.snapshot());
    let running = pipeline.is_some_and(|p| p.is_running(&record.name));
    let lag: BTreeMap<String, i64> = lag(state, &record.name).await?.into_iter().collect();
    Ok(json!({
        "name": record.name,
        "config": record.config,
        "managed_by": record.managed_by,
        "active_version": record.active_version,
        "versions": record.versions,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "running": running,
        // What this instance runs now; every instance converges on the
        // active version within a second (a shared store's notices).
        "running_digest": pipeline.and_then(|p| p.active_digest(&record.name)),
        "stats": stats,
        "lag": lag,
    }))
}

fn unknown_handler(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_handler",
        format!("no handler named {name}"),
    )
}

/// Every registered handler, as [`get_handler`] shows one.
async fn list_handlers(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let mut handlers = Vec::new();
    for record in state.store.handlers().await? {
        handlers.push(handler_json(&state, record).await?);
    }
    Ok(Json(json!({ "handlers": handlers })))
}

/// How far `GET /v1/events/{id}` follows a choreography, each way.
const CHAIN_DEPTH: usize = 16;
/// Most events it lists downstream.
const CHAIN_EVENTS: usize = 500;

/// An event, who processed it (version, outcome), what it emitted, and its
/// causation chain: `causes` up to the root, `effects` down as a tree.
async fn get_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let records = state.store.events_by_id(&id).await?;
    let processed_by = state.store.processed_records(&id).await?;
    let Some(first) = records.first() else {
        // Consumed from an external broker (Kafka): its body stays there,
        // but what the handlers did with it is here.
        if processed_by.is_empty() {
            return Err(store::Error::NotFound(format!("event {id}")).into());
        }
        return Ok(Json(json!({
            "event": null,
            "copies_in_log": 0,
            "processed_by": processed_by,
            "emitted": [],
            "causes": [],
            "effects": [],
        })));
    };
    // Up: follow `causationid` until an event without one (or not in the log).
    let mut causes = Vec::new();
    let mut cursor = first.event.causation_id().map(str::to_owned);
    while let Some(parent) = cursor.take() {
        if causes.len() >= CHAIN_DEPTH {
            break;
        }
        let Some(record) = state.store.events_by_id(&parent).await?.into_iter().next() else {
            break;
        };
        cursor = record.event.causation_id().map(str::to_owned);
        causes.push(record_json(&record));
    }
    // Down: breadth-first over what each event caused.
    let mut budget = CHAIN_EVENTS;
    let effects = effects_tree(&*state.store, &id, 0, &mut budget).await?;
    Ok(Json(json!({
        "event": record_json(first),
        "copies_in_log": records.len(),
        "processed_by": processed_by,
        "emitted": effects.iter().map(|e| e["event"].clone()).collect::<Vec<_>>(),
        "causes": causes,
        "effects": effects,
    })))
}

fn effects_tree<'a>(
    store: &'a dyn Store,
    id: &'a str,
    depth: usize,
    budget: &'a mut usize,
) -> futures::future::BoxFuture<'a, ApiResult<Vec<Value>>> {
    Box::pin(async move {
        if depth >= CHAIN_DEPTH || *budget == 0 {
            return Ok(Vec::new());
        }
        let children = store.events_caused_by(id).await?;
        let mut out = Vec::with_capacity(children.len());
        for child in children {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let below = effects_tree(store, &child.event.id, depth + 1, budget).await?;
            out.push(json!({ "event": record_json(&child), "effects": below }));
        }
        Ok(out)
    })
}

fn running(state: &AppState) -> ApiResult<&Arc<Pipeline>> {
    state.pipeline.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_pipeline",
            "this server runs no pipeline",
        )
    })
}

/// A handler's configuration, versions (with digests and upload times),
/// active version and counters.
async fn get_handler(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let record = state
        .store
        .handler(&name)
        .await?
        .ok_or_else(|| unknown_handler(&name))?;
    Ok(Json(handler_json(&state, record).await?))
}

/// Creates (201) or reconfigures (200) a handler: the body is its
/// configuration as in `sluice.toml`, without `name` (it is in the path) and
/// `component` (versions are uploaded separately).
async fn put_handler(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let pipeline = running(&state)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object: {\"topics\": [...], ...}",
        ));
    };
    if fields.contains_key("component") {
        return Err(ApiError::bad_request(format!(
            "`component` is not part of the configuration: upload versions with POST /v1/handlers/{name}/versions"
        )));
    }
    match fields.get("name") {
        Some(Value::String(n)) if *n == name => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`name` in the body ({other}) differs from the path ({name})"
            )));
        }
        None => {
            fields.insert("name".into(), Value::String(name.clone()));
        }
    }
    let config: HandlerConfig = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::bad_request(format!("handler configuration: {e}")))?;
    config.validate().map_err(ApiError::bad_request)?;
    let existed = state.store.handler(&name).await?.is_some();
    let record = pipeline.configure(config).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(handler_json(&state, record).await?)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    #[serde(default)]
    purge: bool,
}

/// Stops a handler and removes it with its versions; `?purge=true` also
/// removes its positions, processed records, state and DLQ entries.
async fn delete_handler(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Json<Value>> {
    let pipeline = running(&state)?;
    pipeline.remove(&name, params.purge).await?;
    Ok(Json(
        json!({ "name": name, "deleted": true, "purged": params.purge }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadParams {
    #[serde(default)]
    activate: bool,
}

/// Uploads a component: validated and compiled before the answer; 201 with
/// the new version, or 200 with the existing one for identical bytes.
async fn upload_version(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<UploadParams>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        if !(ct.starts_with("application/wasm") || ct.starts_with("application/octet-stream")) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send the component as application/wasm, not {ct}"),
            ));
        }
    }
    let pipeline = running(&state)?;
    let (info, created) = pipeline
        .upload(&name, body.to_vec(), params.activate)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "version": info.version,
            "digest": info.digest,
            "size": info.size,
            "uploaded_at": info.uploaded_at,
            "created": created,
            "activated": params.activate,
        })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    version: i64,
}

/// The hot swap: later events run the given version; in-flight ones finish
/// on theirs.
async fn activate_version(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: ActivateBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    let pipeline = running(&state)?;
    let record = pipeline.activate_version(&name, request.version).await?;
    Ok(Json(json!({
        "name": record.name,
        "active_version": record.active_version,
        "versions": record.versions,
    })))
}

async fn get_state(
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let fields = state.store.load_state(&name, &key).await?;
    let fields: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.clone(), crate::harness::encode_bytes(v)))
        .collect();
    Ok(Json(
        json!({ "handler": name, "key": key, "state": fields }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqParams {
    handler: Option<String>,
    topic: Option<String>,
    status: Option<DlqStatus>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

fn dlq_json(entry: &store::DlqEntry) -> Value {
    json!({
        "id": entry.id,
        "handler": entry.handler,
        "version": entry.version,
        "status": entry.status,
        "error": entry.error,
        "attempts": entry.attempts,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
        "event": record_json(&entry.record),
    })
}

async fn list_dlq(
    State(state): State<AppState>,
    Query(params): Query<DlqParams>,
) -> ApiResult<Json<Value>> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let entries = state
        .store
        .dlq_list(&DlqFilter {
            handler: params.handler,
            topic: params.topic,
            status: params.status,
            after: params.cursor,
            limit: Some(limit),
        })
        .await?;
    let next_cursor = (entries.len() as u32 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let entries: Vec<Value> = entries.iter().map(dlq_json).collect();
    Ok(Json(
        json!({ "entries": entries, "next_cursor": next_cursor }),
    ))
}

async fn get_dlq(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let entry = state
        .store
        .dlq_get(id)
        .await?
        .ok_or_else(|| ApiError::from(store::Error::NotFound(format!("DLQ entry {id}"))))?;
    Ok(Json(dlq_json(&entry)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    version: Option<i64>,
}

/// Redrives one entry, optionally on a chosen stored version of its handler.
async fn redrive_dlq(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: RedriveBody = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?
    };
    let entry = state
        .store
        .dlq_get(id)
        .await?
        .ok_or_else(|| ApiError::from(store::Error::NotFound(format!("DLQ entry {id}"))))?;
    if !handler_exists(&state, &entry.handler) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "handler_gone",
            format!(
                "handler {} no longer exists: create it again (PUT /v1/handlers/{}) or discard the entry",
                entry.handler, entry.handler
            ),
        ));
    }
    if let Some(version) = request.version
        && state
            .store
            .component(&entry.handler, version)
            .await?
            .is_none()
    {
        return Err(store::Error::NotFound(format!(
            "version {version} of handler {}",
            entry.handler
        ))
        .into());
    }
    let entry = state
        .store
        .dlq_act_on(id, DlqAction::Redrive, request.version)
        .await?;
    state.signals.actions.notify_waiters();
    Ok(Json(dlq_json(&entry)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RedriveFilter {
    handler: Option<String>,
    topic: Option<String>,
}

/// Whether a redrive of `handler`'s entries would reach a dispatcher (always
/// true when this server runs no pipeline: nothing to check against).
fn handler_exists(state: &AppState, handler: &str) -> bool {
    state
        .pipeline
        .as_ref()
        .is_none_or(|p| p.stats(handler).is_some())
}

/// Bulk redrive: every pending entry matching the filter (an empty body
/// matches all), each to the handler that failed it.
async fn redrive_many(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let filter: RedriveFilter = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveFilter::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?
    };
    let mut redriven = Vec::new();
    // Entries of handlers that no longer exist: nobody would run them.
    let mut skipped = Vec::new();
    let mut cursor = None;
    loop {
        let page = state
            .store
            .dlq_list(&DlqFilter {
                handler: filter.handler.clone(),
                topic: filter.topic.clone(),
                status: Some(DlqStatus::Pending),
                after: cursor,
                limit: Some(500),
            })
            .await?;
        let Some(last) = page.last().map(|e| e.id) else {
            break;
        };
        for entry in page {
            if !handler_exists(&state, &entry.handler) {
                skipped.push(entry.id);
                continue;
            }
            match state.store.dlq_act(entry.id, DlqAction::Redrive).await {
                Ok(_) => redriven.push(entry.id),
                // Acted on meanwhile by someone else: not ours to count.
                Err(store::Error::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        cursor = Some(last);
    }
    state.signals.actions.notify_waiters();
    Ok(Json(json!({ "redriven": redriven, "skipped": skipped })))
}

async fn discard_dlq(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let entry = state.store.dlq_act(id, DlqAction::Discard).await?;
    state.signals.actions.notify_waiters();
    Ok(Json(dlq_json(&entry)))
}
