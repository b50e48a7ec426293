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

mod dlq;
mod error;
mod events;
mod handlers;
mod metrics;

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

use dlq::*;
pub use error::ApiError;
use error::ApiResult;
pub use events::record_json;
use events::*;
use handlers::*;
use metrics::*;

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
