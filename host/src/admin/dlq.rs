//! The dead-letter queue: list, inspect, redrive, discard.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DlqParams {
    handler: Option<String>,
    topic: Option<String>,
    status: Option<DlqStatus>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

pub(super) fn dlq_json(entry: &store::DlqEntry) -> Value {
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

pub(super) async fn list_dlq(
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

pub(super) async fn get_dlq(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let entry = state
        .store
        .dlq_get(id)
        .await?
        .ok_or_else(|| ApiError::from(store::Error::NotFound(format!("DLQ entry {id}"))))?;
    Ok(Json(dlq_json(&entry)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RedriveBody {
    version: Option<i64>,
}

/// Redrives one entry, optionally on a chosen stored version of its handler.
pub(super) async fn redrive_dlq(
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
pub(super) struct RedriveFilter {
    handler: Option<String>,
    topic: Option<String>,
}

/// Whether a redrive of `handler`'s entries would reach a dispatcher (always
/// true when this server runs no pipeline: nothing to check against).
pub(super) fn handler_exists(state: &AppState, handler: &str) -> bool {
    state
        .pipeline
        .as_ref()
        .is_none_or(|p| p.stats(handler).is_some())
}

/// Bulk redrive: every pending entry matching the filter (an empty body
/// matches all), each to the handler that failed it.
pub(super) async fn redrive_many(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
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

pub(super) async fn discard_dlq(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let entry = state.store.dlq_act(id, DlqAction::Discard).await?;
    state.signals.actions.notify_waiters();
    Ok(Json(dlq_json(&entry)))
}
