//! Topics and events: append, read, and one event with its causation
//! chain.

use super::*;

pub(super) async fn list_topics(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let topics = state.store.topics().await?;
    Ok(Json(json!({ "topics": topics })))
}

/// One event in an append request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewEvent {
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

pub(super) async fn append_events(
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
pub(super) struct ReadParams {
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

pub(super) async fn read_events(
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

/// How far `GET /v1/events/{id}` follows a choreography, each way.
pub(super) const CHAIN_DEPTH: usize = 16;
/// Most events it lists downstream.
pub(super) const CHAIN_EVENTS: usize = 500;

/// An event, who processed it (version, outcome), what it emitted, and its
/// causation chain: `causes` up to the root, `effects` down as a tree.
pub(super) async fn get_event(
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

pub(super) fn effects_tree<'a>(
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
