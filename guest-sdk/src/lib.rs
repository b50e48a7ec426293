//! # sluice-sdk: write Sluice event handlers in Rust
//!
//! A Sluice handler is a WebAssembly component that the Sluice host calls
//! once per event. With this crate you write one function and export it with
//! one macro; the host takes care of delivery, deduplication, per-key
//! ordering, retries, the dead-letter queue and committing your effects
//! atomically.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sluice_sdk::{Ctx, Emit, Event, HandlerError};
//!
//! #[derive(Deserialize)]
//! struct OrderPlaced { order_id: String, email: String }
//!
//! #[derive(Serialize)]
//! struct EmailRequested { to: String, subject: String }
//!
//! fn handle(event: &Event, ctx: &mut Ctx) -> Result<(), HandlerError> {
//!     // A payload that does not parse is a poison event: `?` makes it fatal.
//!     let order: OrderPlaced = event.json()?;
//!     let sent: u64 = ctx.get_json("emails-sent")?.unwrap_or(0);
//!     ctx.set_json("emails-sent", &(sent + 1))?;
//!     ctx.emit(
//!         Emit::json("notifications", "email.requested", &EmailRequested {
//!             to: order.email,
//!             subject: format!("Order {} received", order.order_id),
//!         })?
//!         .key(order.order_id),
//!     )?;
//!     ctx.info("email requested");
//!     Ok(())
//! }
//!
//! sluice_sdk::export_handler!(handle);
//!
//! // The same function, tested natively with `cargo test`:
//! let mut host = sluice_sdk::testing::TestHost::new();
//! let event = Event::from_json("order.placed", &serde_json::json!({
//!     "order_id": "o-1", "email": "ada@example.com"
//! })).with_key("o-1");
//! host.run(handle, &event).unwrap();
//! assert_eq!(host.emitted().len(), 1);
//! assert_eq!(host.emitted()[0].ty, "email.requested");
//! assert_eq!(host.state_json::<u64>("emails-sent"), Some(1));
//! ```
//!
//! Build the component with `cargo build --target wasm32-wasip2 --release`
//! (the crate type must be `cdylib`) and run it locally with
//! `sluice test target/wasm32-wasip2/release/NAME.wasm --event event.json`.
//!
//! ## What the host guarantees, and what it expects
//!
//! * Everything a call does through [`Ctx`] (emits, state writes) commits
//!   together with the record that the event was processed, and only if the
//!   handler returns `Ok`. On an error, a trap or a timeout, all of it is
//!   discarded. So a handler needs no idempotency logic of its own.
//! * Events of one key run one at a time, in order; state is per key.
//! * Return [`HandlerError::retryable`] for transient failures (they are
//!   retried with backoff) and [`HandlerError::fatal`] for events that can
//!   never succeed (they go to the dead-letter queue at once).
//! * A panic traps the instance; the host treats it like a retryable error.
//! * There is no filesystem, network or environment. Clocks and random
//!   numbers work, and whatever you print is captured as log lines.

#![deny(missing_docs)]

// The generated bindings name their runtime through this crate's path, so
// that handler crates need no direct wit-bindgen dependency.
extern crate self as sluice_sdk;

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod ctx;
pub mod testing;

pub use ctx::{Backend, Ctx, StateError};

/// Generated bindings of the `sluice:handler` world. Handler authors do not
/// need them: [`export_handler!`], [`Event`] and [`Ctx`] wrap them.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "handler",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_handler_world",
        default_bindings_module: "sluice_sdk::bindings",
        runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
    });
}

/// Items the macros expand to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use crate::bindings::sluice::handler::types as wit;

    /// Converts the WIT event, runs the handler against the real host, and
    /// converts the result back.
    pub fn dispatch(
        event: wit::Event,
        handler: fn(&crate::Event, &mut crate::Ctx) -> Result<(), crate::HandlerError>,
    ) -> Result<(), wit::HandlerError> {
        let event = crate::Event::from_wit(event);
        let mut backend = crate::ctx::WitBackend;
        let mut ctx = crate::Ctx::new(&mut backend);
        handler(&event, &mut ctx).map_err(|e| match e {
            crate::HandlerError::Retryable(m) => wit::HandlerError::Retryable(m),
            crate::HandlerError::Fatal(m) => wit::HandlerError::Fatal(m),
        })
    }
}

/// Exports a handler function as the component's `handle`.
///
/// The function has the signature
/// `fn(&Event, &mut Ctx) -> Result<(), HandlerError>`. Use the macro once per
/// crate, at module level.
///
/// ```ignore
/// fn handle(event: &sluice_sdk::Event, ctx: &mut sluice_sdk::Ctx) -> Result<(), sluice_sdk::HandlerError> {
///     Ok(())
/// }
/// sluice_sdk::export_handler!(handle);
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:path) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct __SluiceHandler;

            impl $crate::bindings::Guest for __SluiceHandler {
                fn handle(
                    event: $crate::bindings::sluice::handler::types::Event,
                ) -> ::core::result::Result<(), $crate::bindings::sluice::handler::types::HandlerError>
                {
                    $crate::__private::dispatch(event, $handler)
                }
            }

            $crate::bindings::__export_handler_world!(__SluiceHandler with_types_in $crate::bindings);
        };
    };
}

/// Why a handler did not process an event. The variant decides what the
/// host does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Transient: the host discards this attempt's effects and retries later
    /// with exponential backoff, then dead-letters after the last attempt.
    Retryable(String),
    /// Permanent (a poison event): the host discards this attempt's effects
    /// and moves the event to the dead-letter queue at once.
    Fatal(String),
}

impl HandlerError {
    /// A transient failure, worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError::Retryable(message.into())
    }

    /// A permanent failure: the event goes to the dead-letter queue.
    pub fn fatal(message: impl Into<String>) -> Self {
        HandlerError::Fatal(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            HandlerError::Retryable(m) | HandlerError::Fatal(m) => m,
        }
    }

    /// Is this a retryable error?
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::Retryable(_))
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Retryable(m) => write!(f, "retryable: {m}"),
            HandlerError::Fatal(m) => write!(f, "fatal: {m}"),
        }
    }
}

impl std::error::Error for HandlerError {}

/// A payload that does not (de)serialize will not on a retry either, so it
/// is fatal.
impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        HandlerError::Fatal(format!("invalid JSON payload: {e}"))
    }
}

/// One event delivered to the handler: CloudEvents attributes, the ordering
/// key and delivery metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id (CloudEvents `id`); the host deduplicates on it.
    pub id: String,
    /// Origin, a URI reference (CloudEvents `source`).
    pub source: String,
    /// Event type, e.g. `order.placed` (CloudEvents `type`).
    pub ty: String,
    /// When it happened, RFC 3339 (CloudEvents `time`).
    pub time: Option<String>,
    /// Media type of `data` (CloudEvents `datacontenttype`).
    pub content_type: Option<String>,
    /// Payload schema or version (CloudEvents `dataschema`).
    pub data_schema: Option<String>,
    /// The payload.
    pub data: Vec<u8>,
    /// Extension attributes and headers, by lowercase name.
    pub headers: BTreeMap<String, String>,
    /// Ordering key; `None` for keyless events (which have no state).
    pub key: Option<String>,
    /// Topic it was consumed from.
    pub topic: String,
    /// Delivery attempt, from 1.
    pub attempt: u32,
}

impl Event {
    fn from_wit(e: bindings::sluice::handler::types::Event) -> Self {
        Event {
            id: e.id,
            source: e.source,
            ty: e.type_,
            time: e.time,
            content_type: e.content_type,
            data_schema: e.data_schema,
            data: e.data,
            headers: e.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            key: e.key,
            topic: e.topic,
            attempt: e.attempt,
        }
    }

    /// An event of type `ty` with raw `data`, for tests. The other
    /// attributes get test defaults; change them with the `with_*` methods.
    pub fn new(ty: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Event {
            id: "test-event-1".into(),
            source: "/sluice/test".into(),
            ty: ty.into(),
            time: None,
            content_type: None,
            data_schema: None,
            data: data.into(),
            headers: BTreeMap::new(),
            key: None,
            topic: "test".into(),
            attempt: 1,
        }
    }

    /// An event of type `ty` with `value` as its JSON payload, for tests.
    ///
    /// # Panics
    /// If `value` cannot be serialized (only possible with maps whose keys
    /// are not strings); this constructor is meant for tests.
    #[allow(clippy::expect_used)]
    pub fn from_json<T: Serialize>(ty: impl Into<String>, value: &T) -> Self {
        let data = serde_json::to_vec(value).expect("test payload serializes to JSON");
        Event::new(ty, data).with_content_type("application/json")
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the ordering key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the data schema (payload version).
    pub fn with_data_schema(mut self, schema: impl Into<String>) -> Self {
        self.data_schema = Some(schema.into());
        self
    }

    /// Adds a header / extension attribute.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the delivery attempt.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Parses the payload as JSON. A payload that does not parse is a
    /// [`HandlerError::Fatal`]: retrying would not help.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.data).map_err(|e| {
            HandlerError::fatal(format!(
                "event {} ({}): payload is not the expected JSON: {e}",
                self.id, self.ty
            ))
        })
    }

    /// The payload as UTF-8 text.
    pub fn text(&self) -> Result<&str, HandlerError> {
        std::str::from_utf8(&self.data)
            .map_err(|e| HandlerError::fatal(format!("payload is not UTF-8: {e}")))
    }

    /// A header or extension attribute by (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// An event to emit, built with [`Emit::new`] or [`Emit::json`] and the
/// builder methods. The host assigns its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    /// Destination topic.
    pub topic: String,
    /// Event type.
    pub ty: String,
    /// Ordering key.
    pub key: Option<String>,
    /// Payload.
    pub data: Vec<u8>,
    /// Media type of the payload.
    pub content_type: Option<String>,
    /// Payload schema or version.
    pub data_schema: Option<String>,
    /// Extra headers / extension attributes.
    pub headers: BTreeMap<String, String>,
}

impl Emit {
    /// An event of type `ty` for `topic` with raw `data`.
    pub fn new(topic: impl Into<String>, ty: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Emit {
            topic: topic.into(),
            ty: ty.into(),
            key: None,
            data: data.into(),
            content_type: None,
            data_schema: None,
            headers: BTreeMap::new(),
        }
    }

    /// An event of type `ty` for `topic` with `value` as JSON payload
    /// (`application/json`).
    pub fn json<T: Serialize>(
        topic: impl Into<String>,
        ty: impl Into<String>,
        value: &T,
    ) -> Result<Self, HandlerError> {
        let data = serde_json::to_vec(value)?;
        Ok(Emit::new(topic, ty, data).content_type("application/json"))
    }

    /// Sets the ordering key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the data schema (payload version).
    pub fn data_schema(mut self, schema: impl Into<String>) -> Self {
        self.data_schema = Some(schema.into());
        self
    }

    /// Adds a header / extension attribute.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Parses the payload as JSON (useful in tests).
    pub fn data_json<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        Ok(serde_json::from_slice(&self.data)?)
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Recovered problems.
    Warn,
    /// Failures.
    Error,
}
