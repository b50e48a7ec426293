//! Handlers: the registry, configuration, versions, hot swap, state.

use super::*;

/// Counters of every handler the pipeline knows, by name.
pub(super) fn handler_stats(state: &AppState) -> Vec<(String, Arc<HandlerStats>)> {
    state
        .pipeline
        .as_ref()
        .map(|p| p.all_stats())
        .unwrap_or_default()
}

/// A handler's lag per topic it subscribes to now (positions on topics it
/// left are kept, in case it subscribes again, but are not lag).
pub(super) async fn lag(state: &AppState, handler: &str) -> ApiResult<Vec<(String, i64)>> {
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
pub(super) async fn handler_json(
    state: &AppState,
    record: store::HandlerRecord,
) -> ApiResult<Value> {
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

pub(super) fn unknown_handler(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_handler",
        format!("no handler named {name}"),
    )
}

/// Every registered handler, as [`get_handler`] shows one.
pub(super) async fn list_handlers(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let mut handlers = Vec::new();
    for record in state.store.handlers().await? {
        handlers.push(handler_json(&state, record).await?);
    }
    Ok(Json(json!({ "handlers": handlers })))
}

pub(super) fn running(state: &AppState) -> ApiResult<&Arc<Pipeline>> {
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
pub(super) async fn get_handler(
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
pub(super) async fn put_handler(
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
pub(super) struct DeleteParams {
    #[serde(default)]
    purge: bool,
}

/// Stops a handler and removes it with its versions; `?purge=true` also
/// removes its positions, processed records, state and DLQ entries.
pub(super) async fn delete_handler(
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
pub(super) struct UploadParams {
    #[serde(default)]
    activate: bool,
}

/// Uploads a component: validated and compiled before the answer; 201 with
/// the new version, or 200 with the existing one for identical bytes.
pub(super) async fn upload_version(
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
    // Validating and compiling a large (JS, Python) component takes seconds
    // the first time: the answer says how long it took.
    let started = std::time::Instant::now();
    let (info, created) = pipeline
        .upload(&name, body.to_vec(), params.activate)
        .await?;
    let prepared_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
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
            "prepared_ms": prepared_ms,
        })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActivateBody {
    version: i64,
}

/// The hot swap: later events run the given version; in-flight ones finish
/// on theirs.
pub(super) async fn activate_version(
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

pub(super) async fn get_state(
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
