//! The OpenAPI 3.1 description of the admin API, served at
//! `/v1/openapi.json`. Kept by hand beside the router; a test checks that
//! every route of the router is described.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": schema}}
    })
}

/// The document.
pub fn document() -> Value {
    let secured = json!([{"bearer": []}]);
    let unauthorized = error_response("missing or wrong bearer token");
    let unavailable = error_response("the store is unavailable");
    let any_object = json!({"type": "object"});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Operate a Sluice host: append and read events, inspect handlers, state and choreographies, and operate the dead-letter queue. Errors are JSON {error, detail}."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"type": "string", "description": "kind: bad_request, bad_json, unauthorized, not_found, unknown_handler, invalid_component, wrong_world, unsupported_media_type, managed_by_config, handler_gone, conflict, store_unavailable"},
                        "detail": {"type": "string", "description": "what was wrong"}
                    }
                },
                "NewEvent": {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": false,
                    "properties": {
                        "id": {"type": "string", "description": "generated (UUIDv7) when absent"},
                        "type": {"type": "string"},
                        "key": {"type": "string", "description": "ordering / partition key"},
                        "source": {"type": "string", "description": "default /sluice/api"},
                        "time": {"type": "string", "description": "RFC 3339; default now"},
                        "data": {"description": "JSON payload (content type application/json by default)"},
                        "data_base64": {"type": "string", "description": "raw payload, instead of data"},
                        "content_type": {"type": "string"},
                        "data_schema": {"type": "string"},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                },
                "Event": {
                    "type": "object",
                    "description": "A log record: position, CloudEvents attributes, and data (JSON) or data_base64.",
                    "properties": {
                        "seq": {"type": "integer"}, "partition": {"type": "integer"}, "offset": {"type": "integer"},
                        "appended_at": {"type": "integer"}, "id": {"type": "string"}, "source": {"type": "string"},
                        "type": {"type": "string"}, "time": {"type": ["string", "null"]}, "topic": {"type": "string"},
                        "key": {"type": ["string", "null"]}, "content_type": {"type": ["string", "null"]},
                        "data_schema": {"type": ["string", "null"]},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                        "data": {}, "data_base64": {"type": "string"}
                    }
                },
                "HandlerConfig": {
                    "type": "object",
                    "required": ["topics"],
                    "additionalProperties": false,
                    "description": "A handler's configuration, as in sluice.toml (without component; name optional, must match the path)",
                    "properties": {
                        "name": {"type": "string"},
                        "topics": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        "types": {"type": "array", "items": {"type": "string"}, "description": "event types; empty: all; a trailing * matches a prefix"},
                        "retry": {"type": "object", "additionalProperties": false, "properties": {
                            "max_attempts": {"type": "integer", "minimum": 1, "default": 5},
                            "initial_backoff_ms": {"type": "integer", "default": 200},
                            "max_backoff_ms": {"type": "integer", "default": 30000},
                            "multiplier": {"type": "number", "minimum": 1, "default": 2.0}}},
                        "limits": {"type": "object", "description": "per-invocation limits: timeout_ms, max_memory_bytes, max_emits, max_emit_bytes, max_state_value_bytes, max_state_bytes_per_key, max_log_lines, max_stdio_bytes"},
                        "concurrency": {"type": "integer", "minimum": 1, "default": 16},
                        "on_dead_letter": {"enum": ["continue", "park"], "default": "continue"},
                        "start_from": {"enum": ["earliest", "latest"], "default": "earliest", "description": "where a topic without a stored position starts; pinned when the handler is created"}
                    }
                },
                "Handler": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "config": {"$ref": "#/components/schemas/HandlerConfig"},
                        "managed_by": {"enum": ["config", "api"]},
                        "active_version": {"type": ["integer", "null"]},
                        "versions": {"type": "array", "items": {"type": "object", "properties": {
                            "version": {"type": "integer"}, "digest": {"type": "string"},
                            "size": {"type": "integer"}, "uploaded_at": {"type": "integer"}}}},
                        "created_at": {"type": "integer"}, "updated_at": {"type": "integer"},
                        "running": {"type": "boolean"},
                        "running_digest": {"type": ["string", "null"], "description": "The version (component digest) this instance runs now."},
                        "stats": {"type": ["object", "null"], "description": "processed, failed, duplicates, partitions (Kafka partitions owned here), fenced (outcomes left to the instance that claimed their partition), filtered, retries, dead_lettered, parked, in_flight"},
                        "lag": {"type": "object", "additionalProperties": {"type": "integer"}}
                    }
                },
                "DlqEntry": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"}, "handler": {"type": "string"}, "version": {"type": "string"},
                        "status": {"enum": ["pending", "redriven", "discarded"]}, "error": {"type": "string"},
                        "attempts": {"type": "array", "items": {"type": "object"}},
                        "created_at": {"type": "integer"}, "updated_at": {"type": "integer"},
                        "event": {"$ref": "#/components/schemas/Event"}
                    }
                }
            }
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": ok_json("alive", any_object.clone())}}},
            "/readyz": {"get": {"summary": "Readiness: the store answers", "responses": {
                "200": ok_json("ready", any_object.clone()), "503": unavailable.clone()}}},
            "/metrics": {"get": {"summary": "Prometheus metrics: per-handler counters, latency histograms, lag, outbox backlog",
                "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok_json("OpenAPI 3.1", any_object.clone())}}},
            "/v1/topics": {"get": {"summary": "Topics with partition counts and sizes", "responses": {"200": ok_json("topics", any_object.clone())}}},
            "/v1/topics/{topic}/events": {
                "parameters": [{"name": "topic", "in": "path", "required": true, "schema": {"type": "string"}}],
                "post": {
                    "summary": "Append one event or an array of events",
                    "security": secured.clone(),
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/NewEvent"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/NewEvent"}}
                    ]}}}},
                    "responses": {
                        "202": ok_json("accepted; the ids and log positions", any_object.clone()),
                        "400": error_response("invalid JSON or event (nothing is written)"),
                        "401": unauthorized.clone(),
                        "413": {"description": "body over the size limit"},
                        "503": unavailable.clone()
                    }
                },
                "get": {
                    "summary": "Read the log after a sequence number",
                    "security": secured.clone(),
                    "parameters": [
                        {"name": "after", "in": "query", "schema": {"type": "integer", "default": 0}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}}
                    ],
                    "responses": {
                        "200": ok_json("events and next_after", json!({"type": "object", "properties": {
                            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                            "next_after": {"type": "integer"}}})),
                        "401": unauthorized.clone()
                    }
                }
            },
            "/v1/handlers": {"get": {"summary": "Every registered handler, as GET /v1/handlers/{name} shows one",
                "responses": {"200": ok_json("handlers", json!({"type": "object", "properties": {
                    "handlers": {"type": "array", "items": {"$ref": "#/components/schemas/Handler"}}}}))}}},
            "/v1/handlers/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {
                    "summary": "A handler: configuration, versions with digests and upload times, active version, whether it runs, counters, lag",
                    "responses": {"200": ok_json("the handler", json!({"$ref": "#/components/schemas/Handler"})), "404": error_response("unknown handler")}
                },
                "put": {
                    "summary": "Create or reconfigure a handler (subscriptions, type filter, retry policy, limits, concurrency, DLQ mode). A running handler drains its in-flight events and restarts on the same version; a new one runs once a version is uploaded. Unset fields take their defaults.",
                    "security": secured.clone(),
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HandlerConfig"}}}},
                    "responses": {
                        "201": ok_json("created", json!({"$ref": "#/components/schemas/Handler"})),
                        "200": ok_json("reconfigured", json!({"$ref": "#/components/schemas/Handler"})),
                        "400": error_response("bad JSON, unknown field, or an invalid value (the detail names it)"),
                        "401": unauthorized.clone(),
                        "409": error_response("managed_by_config: the handler is declared in the host's configuration file"),
                        "503": unavailable.clone()
                    }
                },
                "delete": {
                    "summary": "Stop a handler (in-flight events finish) and delete it with its versions. Its positions, processed records, state and DLQ entries stay, so a handler created again under the name resumes; ?purge=true deletes them too.",
                    "security": secured.clone(),
                    "parameters": [{"name": "purge", "in": "query", "schema": {"type": "boolean", "default": false}}],
                    "responses": {
                        "200": ok_json("deleted", any_object.clone()),
                        "400": error_response("bad query"),
                        "401": unauthorized.clone(),
                        "404": error_response("unknown handler"),
                        "409": error_response("managed_by_config: the handler is declared in the host's configuration file")
                    }
                }
            },
            "/v1/handlers/{name}/versions": {"post": {
                "summary": "Upload a component version (validated and compiled before the answer); ?activate=true activates it",
                "security": secured.clone(),
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "activate", "in": "query", "schema": {"type": "boolean", "default": false}}
                ],
                "requestBody": {"required": true, "content": {"application/wasm": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {
                    "201": ok_json("a new version: {version, digest, size, uploaded_at, created, activated, prepared_ms (validating, compiling or finding it in the compile cache, and storing it)}", any_object.clone()),
                    "200": ok_json("identical bytes: the existing version", any_object.clone()),
                    "400": error_response("not a valid component (garbage, core module, broken)"),
                    "401": unauthorized.clone(),
                    "404": error_response("unknown handler"),
                    "413": {"description": "larger than admin.max_upload_bytes (default 50 MiB)"},
                    "415": error_response("not application/wasm"),
                    "422": error_response("a component of another world")
                }
            }},
            "/v1/handlers/{name}/activate": {"post": {
                "summary": "Hot swap: later events run this version; in-flight ones finish on theirs. Rollback is activating an older version.",
                "security": secured.clone(),
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["version"], "additionalProperties": false,
                    "properties": {"version": {"type": "integer"}}}}}},
                "responses": {
                    "200": ok_json("the handler's versions and active version", any_object.clone()),
                    "400": error_response("bad JSON"),
                    "401": unauthorized.clone(),
                    "404": error_response("unknown handler or version")
                }
            }},
            "/v1/handlers/{name}/state/{key}": {"get": {
                "summary": "Per-key state of a handler",
                "security": secured.clone(),
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "key", "in": "path", "required": true, "schema": {"type": "string"}}
                ],
                "responses": {"200": ok_json("fields; JSON values as JSON, others as {\"$base64\": ...}", any_object.clone()), "401": unauthorized.clone()}
            }},
            "/v1/events/{id}": {"get": {
                "summary": "An event, the handlers that processed it (version, outcome), what it emitted, and its causation chain up and down. An event consumed from Kafka has `event: null` (its body stays in Kafka) and its processed records.",
                "security": secured.clone(),
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok_json("the event's story", any_object.clone()), "401": unauthorized.clone(), "404": error_response("no such event")}
            }},
            "/v1/dlq": {"get": {
                "summary": "Dead-letter entries, oldest first",
                "security": secured.clone(),
                "parameters": [
                    {"name": "handler", "in": "query", "schema": {"type": "string"}},
                    {"name": "topic", "in": "query", "schema": {"type": "string"}},
                    {"name": "status", "in": "query", "schema": {"enum": ["pending", "redriven", "discarded"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}},
                    {"name": "cursor", "in": "query", "schema": {"type": "integer"}}
                ],
                "responses": {"200": ok_json("entries and next_cursor", json!({"type": "object", "properties": {
                    "entries": {"type": "array", "items": {"$ref": "#/components/schemas/DlqEntry"}},
                    "next_cursor": {"type": ["integer", "null"]}}})), "401": unauthorized.clone()}
            }},
            "/v1/dlq/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "get": {"summary": "One entry", "security": secured.clone(), "responses": {
                    "200": ok_json("the entry", json!({"$ref": "#/components/schemas/DlqEntry"})),
                    "401": unauthorized.clone(), "404": error_response("no such entry")}},
                "delete": {"summary": "Discard a pending entry (and release its key if parked)", "security": secured.clone(), "responses": {
                    "200": ok_json("the entry", json!({"$ref": "#/components/schemas/DlqEntry"})),
                    "401": unauthorized.clone(), "404": error_response("no such entry"), "409": error_response("not pending")}}
            },
            "/v1/dlq/redrive": {"post": {
                "summary": "Bulk redrive: every pending entry matching the filter (empty body: all)",
                "security": secured.clone(),
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                    "properties": {"handler": {"type": "string"}, "topic": {"type": "string"}}}}}},
                "responses": {"200": ok_json("ids of the entries redriven, and of those skipped because their handler was deleted", any_object.clone()), "400": error_response("bad JSON"), "401": unauthorized.clone()}
            }},
            "/v1/dlq/{id}/redrive": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "post": {"summary": "Run a pending entry's event again on the handler that failed, on its active version or on a chosen stored version",
                    "security": secured,
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                        "properties": {"version": {"type": "integer"}}}}}},
                    "responses": {
                    "200": ok_json("the entry", json!({"$ref": "#/components/schemas/DlqEntry"})),
                    "401": unauthorized, "404": error_response("no such entry, or no such version"),
                    "409": error_response("not pending, or its handler was deleted (handler_gone)")}}
            }
        }
    })
}
