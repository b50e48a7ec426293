//! The handler's view of the host: emit, per-key state and logging, behind
//! one small trait so that the same handler code runs against the real host
//! (in the component) and against [`crate::testing::TestHost`] (natively).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::sluice::handler::{log, outbox, state, types};
use crate::{Emit, HandlerError, Level};

/// Why a state call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The event has no key, so it has no state.
    NoKey,
    /// The write would exceed the handler's state limits.
    TooLarge(String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::NoKey => f.write_str("the event has no key, so it has no state"),
            StateError::TooLarge(m) => write!(f, "state too large: {m}"),
        }
    }
}

impl std::error::Error for StateError {}

/// Using state on a keyless event, or outgrowing the limits, is a bug in
/// the handler or the event, not a transient condition: fatal.
impl From<StateError> for HandlerError {
    fn from(e: StateError) -> Self {
        HandlerError::Fatal(e.to_string())
    }
}

/// The operations a handler can ask of its host. Implemented by the real
/// host bindings and by [`crate::testing::TestHost`]; handler code uses
/// [`Ctx`] instead.
pub trait Backend {
    /// Buffers an event for publication; returns its id.
    fn emit(&mut self, event: Emit) -> Result<String, HandlerError>;
    /// Reads a state field of the current key.
    fn state_get(&mut self, name: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Writes a state field of the current key.
    fn state_set(&mut self, name: &str, value: &[u8]) -> Result<(), StateError>;
    /// Deletes a state field of the current key.
    fn state_delete(&mut self, name: &str) -> Result<(), StateError>;
    /// Lists the state fields of the current key, sorted.
    fn state_keys(&mut self) -> Result<Vec<String>, StateError>;
    /// Records a log line.
    fn log(&mut self, level: Level, message: &str);
}

/// What a handler uses to act: emit events, read and write the state of the
/// event's key, and log. Effects are buffered by the host and commit only if
/// the handler returns `Ok`.
pub struct Ctx<'a> {
    backend: &'a mut dyn Backend,
}

impl<'a> Ctx<'a> {
    /// A context over `backend`. Handler code receives one; tests get one
    /// from [`crate::testing::TestHost`].
    pub fn new(backend: &'a mut dyn Backend) -> Self {
        Ctx { backend }
    }

    /// Emits `event`; returns the id the host assigned, which is the same on
    /// every retry of the current event. An invalid event (empty topic or
    /// type, bad header name) is a fatal error.
    pub fn emit(&mut self, event: Emit) -> Result<String, HandlerError> {
        self.backend.emit(event)
    }

    /// Reads a raw state field.
    pub fn get(&mut self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.backend.state_get(name)
    }

    /// Writes a raw state field.
    pub fn set(&mut self, name: &str, value: &[u8]) -> Result<(), StateError> {
        self.backend.state_set(name, value)
    }

    /// Deletes a state field.
    pub fn delete(&mut self, name: &str) -> Result<(), StateError> {
        self.backend.state_delete(name)
    }

    /// Names of the state fields that are set, sorted.
    pub fn keys(&mut self) -> Result<Vec<String>, StateError> {
        self.backend.state_keys()
    }

    /// Reads a state field stored as JSON. A value that does not parse as
    /// `T` is a fatal error (the stored state and the code disagree).
    pub fn get_json<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, HandlerError> {
        match self.get(name)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                HandlerError::fatal(format!(
                    "state field {name:?} is not the expected JSON: {e}"
                ))
            }),
        }
    }

    /// Writes a state field as JSON.
    pub fn set_json<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<(), HandlerError> {
        let bytes = serde_json::to_vec(value)?;
        Ok(self.set(name, &bytes)?)
    }

    /// Logs at `level`.
    pub fn log(&mut self, level: Level, message: impl AsRef<str>) {
        self.backend.log(level, message.as_ref());
    }

    /// Logs at debug level.
    pub fn debug(&mut self, message: impl AsRef<str>) {
        self.log(Level::Debug, message);
    }

    /// Logs at info level.
    pub fn info(&mut self, message: impl AsRef<str>) {
        self.log(Level::Info, message);
    }

    /// Logs at warn level.
    pub fn warn(&mut self, message: impl AsRef<str>) {
        self.log(Level::Warn, message);
    }

    /// Logs at error level.
    pub fn error(&mut self, message: impl AsRef<str>) {
        self.log(Level::Error, message);
    }
}

/// The real host, through the component's imports.
pub(crate) struct WitBackend;

fn state_error(e: state::StateError) -> StateError {
    match e {
        state::StateError::NoKey => StateError::NoKey,
        state::StateError::TooLarge(m) => StateError::TooLarge(m),
    }
}

impl Backend for WitBackend {
    fn emit(&mut self, event: Emit) -> Result<String, HandlerError> {
        let outgoing = outbox::OutgoingEvent {
            topic: event.topic,
            type_: event.ty,
            key: event.key,
            data: event.data,
            content_type: event.content_type,
            data_schema: event.data_schema,
            headers: event
                .headers
                .into_iter()
                .map(|(name, value)| types::Header { name, value })
                .collect(),
        };
        outbox::emit(&outgoing).map_err(|e| match e {
            outbox::EmitError::Invalid(m) => HandlerError::fatal(format!("invalid emit: {m}")),
        })
    }

    fn state_get(&mut self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        state::get(name).map_err(state_error)
    }

    fn state_set(&mut self, name: &str, value: &[u8]) -> Result<(), StateError> {
        state::set(name, value).map_err(state_error)
    }

    fn state_delete(&mut self, name: &str) -> Result<(), StateError> {
        state::delete(name).map_err(state_error)
    }

    fn state_keys(&mut self) -> Result<Vec<String>, StateError> {
        state::keys().map_err(state_error)
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }
}
