//! An in-memory fake of the host, for unit-testing handler logic natively
//! with `cargo test`, without building a component.
//!
//! [`TestHost`] mimics the host's contract: state is scoped to the event's
//! key (a keyless event gets [`StateError::NoKey`]), and the effects of a
//! call that returns an error are rolled back, as the real host discards
//! them. To run the real component in the real runtime, use the `sluice`
//! crate's harness (`sluice test`).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::{Backend, Ctx, Emit, Event, HandlerError, Level, StateError};

/// A handler function, as passed to [`crate::export_handler!`].
pub type HandlerFn = fn(&Event, &mut Ctx) -> Result<(), HandlerError>;

/// An emitted event with the id the fake host assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Assigned id: `<source event id>/<handler-local index>`.
    pub id: String,
    /// The event as the handler built it.
    pub event: Emit,
}

impl std::ops::Deref for Emitted {
    type Target = Emit;
    fn deref(&self) -> &Emit {
        &self.event
    }
}

/// The in-memory host. State persists across [`TestHost::run`] calls, per
/// key, so a sequence of events can be tested.
#[derive(Debug, Default)]
pub struct TestHost {
    state: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    emitted: Vec<Emitted>,
    logs: Vec<(Level, String)>,
}

impl TestHost {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Seeds a state field of `key` with `value` as JSON.
    ///
    /// # Panics
    /// If `value` does not serialize; meant for tests.
    #[allow(clippy::expect_used)]
    pub fn with_state_json<T: serde::Serialize>(
        mut self,
        key: &str,
        name: &str,
        value: &T,
    ) -> Self {
        let bytes = serde_json::to_vec(value).expect("state serializes to JSON");
        self.state
            .entry(key.to_owned())
            .or_default()
            .insert(name.to_owned(), bytes);
        self
    }

    /// Runs `handler` on `event`. On `Err`, this call's emits and state
    /// writes are rolled back, as the real host does; logs are kept.
    pub fn run(&mut self, handler: HandlerFn, event: &Event) -> Result<(), HandlerError> {
        let mut call = Call {
            key: event.key.clone(),
            state: event
                .key
                .as_ref()
                .and_then(|k| self.state.get(k).cloned())
                .unwrap_or_default(),
            emitted: Vec::new(),
            logs: Vec::new(),
            event_id: event.id.clone(),
        };
        let result = handler(event, &mut Ctx::new(&mut call));
        self.logs.append(&mut call.logs);
        if result.is_ok() {
            if let Some(key) = &call.key {
                self.state.insert(key.clone(), call.state);
            }
            self.emitted.append(&mut call.emitted);
        }
        result
    }

    /// Every event emitted by successful calls so far, in order.
    pub fn emitted(&self) -> &[Emitted] {
        &self.emitted
    }

    /// Removes and returns the emitted events.
    pub fn take_emitted(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.emitted)
    }

    /// Log lines of all calls.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// A raw state field of `key`.
    pub fn state(&self, key: &str, name: &str) -> Option<&[u8]> {
        self.state.get(key)?.get(name).map(Vec::as_slice)
    }

    /// A JSON state field of `key`, parsed; `None` when absent or when it
    /// does not parse as `T`.
    pub fn state_json_of<T: DeserializeOwned>(&self, key: &str, name: &str) -> Option<T> {
        serde_json::from_slice(self.state(key, name)?).ok()
    }

    /// A JSON state field, when exactly one key has state (the common case
    /// in a unit test).
    pub fn state_json<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let mut keys = self.state.keys();
        match (keys.next(), keys.next()) {
            (Some(key), None) => self.state_json_of(key, name),
            _ => None,
        }
    }
}

struct Call {
    key: Option<String>,
    state: BTreeMap<String, Vec<u8>>,
    emitted: Vec<Emitted>,
    logs: Vec<(Level, String)>,
    event_id: String,
}

impl Call {
    fn scope(&mut self) -> Result<&mut BTreeMap<String, Vec<u8>>, StateError> {
        match self.key {
            Some(_) => Ok(&mut self.state),
            None => Err(StateError::NoKey),
        }
    }
}

impl Backend for Call {
    fn emit(&mut self, event: Emit) -> Result<String, HandlerError> {
        if event.topic.trim().is_empty() {
            return Err(HandlerError::fatal("invalid emit: topic is empty"));
        }
        if event.ty.trim().is_empty() {
            return Err(HandlerError::fatal("invalid emit: type is empty"));
        }
        let id = format!("{}/{}", self.event_id, self.emitted.len());
        self.emitted.push(Emitted {
            id: id.clone(),
            event,
        });
        Ok(id)
    }

    fn state_get(&mut self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.scope()?.get(name).cloned())
    }

    fn state_set(&mut self, name: &str, value: &[u8]) -> Result<(), StateError> {
        self.scope()?.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn state_delete(&mut self, name: &str) -> Result<(), StateError> {
        self.scope()?.remove(name);
        Ok(())
    }

    fn state_keys(&mut self) -> Result<Vec<String>, StateError> {
        Ok(self.scope()?.keys().cloned().collect())
    }

    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(event: &Event, ctx: &mut Ctx) -> Result<(), HandlerError> {
        let n: u64 = ctx.get_json("n")?.unwrap_or(0);
        ctx.set_json("n", &(n + 1))?;
        ctx.emit(Emit::new("out", "counted", n.to_string()))?;
        if event.ty == "fail" {
            return Err(HandlerError::retryable("boom"));
        }
        Ok(())
    }

    #[test]
    fn state_is_per_key_and_failures_roll_back() {
        let mut host = TestHost::new();
        host.run(counter, &Event::new("ok", "").with_key("a"))
            .unwrap();
        host.run(counter, &Event::new("ok", "").with_key("a"))
            .unwrap();
        let err = host
            .run(counter, &Event::new("fail", "").with_key("a"))
            .unwrap_err();
        assert!(err.is_retryable());
        host.run(counter, &Event::new("ok", "").with_key("b"))
            .unwrap();
        assert_eq!(host.state_json_of::<u64>("a", "n"), Some(2));
        assert_eq!(host.state_json_of::<u64>("b", "n"), Some(1));
        assert_eq!(host.emitted().len(), 3);
    }

    #[test]
    fn keyless_events_have_no_state() {
        let mut host = TestHost::new();
        let err = host.run(counter, &Event::new("ok", "")).unwrap_err();
        assert_eq!(err, HandlerError::from(StateError::NoKey));
    }
}
