//! Host bindings of the `sluice:handler` world: the one place where
//! `bindgen!` runs, and the host side of each imported interface (`outbox`,
//! `state`, `log`), implemented on the per-invocation [`GuestState`].

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{LimitExceeded, LimitKind, Limits, MemoryLimiter};
use super::stdio::CapturedOutput;
use super::{LogLevel, LogLine, LogStream};
use crate::event::{self, Event, StateMap};

/// Generated code lives in its own module so that the world-level `Event`
/// alias does not shadow the host's [`Event`].
mod wit {
    wasmtime::component::bindgen!({
        world: "handler",
        path: "../wit",
        // Host functions may stop the guest (limits); exports run on the async
        // executor so that epoch interruption can yield and time out.
        imports: { default: trappable },
        exports: { default: async },
    });
}

pub(crate) use wit::HandlerPre;
use wit::sluice::handler::types::Header as WitHeader;
pub(crate) use wit::sluice::handler::types::{Event as WitEvent, HandlerError as WitHandlerError};
use wit::sluice::handler::{log, outbox, state};

/// Everything one invocation accumulates. It lives in the wasmtime `Store`
/// and is dropped with it; the runtime reads the results out when the guest
/// returns.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
    pub(crate) call: CallState,
}

/// The part of [`GuestState`] that the WIT host functions act on.
pub(crate) struct CallState {
    pub(crate) handler: Arc<str>,
    pub(crate) limits: Arc<Limits>,
    /// The event being handled, for id derivation and header inheritance.
    pub(crate) cause: Arc<Event>,
    /// Headers every emitted event inherits (causation, correlation, trace).
    pub(crate) inherited: BTreeMap<String, String>,
    pub(crate) emitted: Vec<Event>,
    pub(crate) emitted_bytes: u64,
    /// Current view of the key's state: committed values plus this call's writes.
    pub(crate) state: StateMap,
    pub(crate) state_bytes: u64,
    /// This call's writes: `None` is a delete.
    pub(crate) changes: BTreeMap<String, Option<Vec<u8>>>,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) dropped_logs: u64,
}

impl GuestState {
    /// `pool_memory_bytes` is the runtime's slot size: the handler's memory
    /// limit is capped to it so that our limiter, which reports a clear
    /// `limit` outcome, always fires before the pool silently refuses growth.
    pub(crate) fn new(call: CallState, pool_memory_bytes: u64) -> Self {
        let limits = &call.limits;
        let stdio_cap = usize::try_from(limits.max_stdio_bytes).unwrap_or(usize::MAX);
        let stdout = CapturedOutput::new(stdio_cap);
        let stderr = CapturedOutput::new(stdio_cap);
        // No preopens, no environment, no arguments, no network: the defaults
        // of the builder, spelled out so that a change of defaults upstream
        // cannot widen what a guest may do.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_memory_bytes: usize::try_from(limits.max_memory_bytes.min(pool_memory_bytes))
                    .unwrap_or(usize::MAX),
                max_table_elements: 100_000,
            },
            stdout,
            stderr,
            call,
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Adds WASI and the `sluice:handler` imports to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::Handler::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    Ok(())
}

/// The WASI 0.2 packages [`add_to_linker`] links (any 0.2.x import of them
/// resolves: wasmtime matches semver-compatible versions).
const WASI_PACKAGES: &[&str] = &[
    "wasi:cli",
    "wasi:clocks",
    "wasi:filesystem",
    "wasi:io",
    "wasi:random",
    "wasi:sockets",
];

/// Why [`add_to_linker`] cannot satisfy the import named `name` (an
/// interface such as `wasi:http/types@0.2.10`), or `None` when it can.
/// Said before linking, because wasmtime's own error for a missing import
/// names a resource or function deep inside it, not the import.
pub(crate) fn unsupported_import(name: &str) -> Option<String> {
    let (package, version) = match name.split_once('@') {
        Some((path, version)) => (path.split('/').next().unwrap_or(path), version),
        None => (name.split('/').next().unwrap_or(name), ""),
    };
    if WASI_PACKAGES.contains(&package) {
        return (!version.starts_with("0.2.")).then(|| {
            format!(
                "`{name}`: this host provides WASI 0.2 (`{package}@0.2.x`), not version {version:?}"
            )
        });
    }
    if package == "sluice:handler" {
        return (version != "0.1.0").then(|| {
            format!(
                "`{name}`: this host provides `sluice:handler@0.1.0`; rebuild against its `wit/`"
            )
        });
    }
    if package == "wasi:http" {
        return Some(format!(
            "`{name}`: handlers get no HTTP or network access. A JavaScript handler built with \
             `jco componentize` must be built with `--disable http --disable fetch-event` \
             (the Sluice JS SDK's build does so)"
        ));
    }
    Some(format!(
        "`{name}`: the host provides only `sluice:handler@0.1.0` and WASI 0.2 \
         (cli, clocks, filesystem, io, random, sockets)"
    ))
}

/// Converts a host event into the WIT record handed to the guest.
pub(crate) fn to_wit_event(event: &Event, attempt: u32) -> WitEvent {
    WitEvent {
        id: event.id.clone(),
        source: event.source.clone(),
        type_: event.ty.clone(),
        time: event.time.clone(),
        content_type: event.content_type.clone(),
        data: event.data.clone(),
        data_schema: event.data_schema.clone(),
        headers: event
            .headers
            .iter()
            .map(|(name, value)| WitHeader {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        key: event.key.clone(),
        topic: event.topic.clone(),
        attempt,
    }
}

impl wit::sluice::handler::types::Host for GuestState {}

impl outbox::Host for GuestState {
    fn emit(
        &mut self,
        ev: outbox::OutgoingEvent,
    ) -> wasmtime::Result<Result<String, outbox::EmitError>> {
        self.call.check_emit_limits(ev.data.len())?;
        Ok(self.call.emit(ev))
    }
}

impl CallState {
    fn emit(&mut self, ev: outbox::OutgoingEvent) -> Result<String, outbox::EmitError> {
        use outbox::EmitError::Invalid;
        if !crate::event::valid_topic_name(&ev.topic) {
            return Err(Invalid(format!(
                "topic {:?} is not valid: 1 to 200 letters, digits, '.', '_' or '-'",
                ev.topic
            )));
        }
        if ev.type_.trim().is_empty() {
            return Err(Invalid("type is empty".into()));
        }
        // Databases (PostgreSQL text) and brokers refuse NUL in strings; a
        // stored event must never be one the store cannot write.
        let texts = [
            Some(&ev.type_),
            ev.key.as_ref(),
            ev.content_type.as_ref(),
            ev.data_schema.as_ref(),
        ];
        if texts.into_iter().flatten().any(|t| t.contains('\0'))
            || ev.headers.iter().any(|h| h.value.contains('\0'))
        {
            return Err(Invalid("type, key, content type, data schema and header values must not contain NUL characters".into()));
        }
        let mut headers = self.inherited.clone();
        for WitHeader { name, value } in ev.headers {
            let name = name.to_ascii_lowercase();
            if !event::valid_header_name(&name) {
                return Err(Invalid(format!(
                    "header name {name:?} is not allowed: use lowercase letters, digits, '-', '_' or '.'"
                )));
            }
            if event::RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(Invalid(format!("header {name:?} is set by the host")));
            }
            headers.insert(name, value);
        }
        let index = u32::try_from(self.emitted.len()).unwrap_or(u32::MAX);
        let id = event::emitted_event_id(&self.cause.id, &self.handler, index);
        self.emitted.push(Event {
            id: id.clone(),
            source: event::handler_source(&self.handler),
            ty: ev.type_,
            time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            content_type: ev.content_type,
            data_schema: ev.data_schema,
            data: ev.data,
            headers,
            key: ev.key,
            topic: ev.topic,
        });
        Ok(id)
    }

    /// Checks the emit limits before an event is buffered. Exceeding them
    /// stops the guest: a guest that ignored an error could loop forever.
    fn check_emit_limits(&mut self, data_len: usize) -> wasmtime::Result<()> {
        let count = self.emitted.len() as u64 + 1;
        if count > u64::from(self.limits.max_emits) {
            return Err(wasmtime::Error::new(LimitExceeded {
                kind: LimitKind::EmitCount,
                detail: format!(
                    "more than {} events emitted by one invocation",
                    self.limits.max_emits
                ),
            }));
        }
        let bytes = self.emitted_bytes + data_len as u64;
        if bytes > self.limits.max_emit_bytes {
            return Err(wasmtime::Error::new(LimitExceeded {
                kind: LimitKind::EmitBytes,
                detail: format!(
                    "more than {} payload bytes emitted by one invocation",
                    self.limits.max_emit_bytes
                ),
            }));
        }
        self.emitted_bytes = bytes;
        Ok(())
    }

    fn has_key(&self) -> bool {
        self.cause.key.is_some()
    }

    fn push_log(&mut self, level: LogLevel, stream: LogStream, message: String) {
        if self.logs.len() >= self.limits.max_log_lines as usize {
            self.dropped_logs += 1;
            return;
        }
        tracing::debug!(
            target: "sluice::guest",
            handler = %self.handler,
            event = %self.cause.id,
            ?level,
            "{message}"
        );
        self.logs.push(LogLine {
            level,
            stream,
            message,
        });
    }
}

/// A state field name the store can hold. A NUL cannot be stored (the WIT
/// error type has no case for it), so it stops the invocation with a clear
/// message; the event is retried and then dead-lettered with it.
fn check_state_name(name: &str) -> wasmtime::Result<()> {
    if name.contains('\0') {
        return Err(wasmtime::Error::msg(format!(
            "state field name {name:?} contains a NUL character"
        )));
    }
    Ok(())
}

impl state::Host for GuestState {
    fn get(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, state::StateError>> {
        if !self.call.has_key() {
            return Ok(Err(state::StateError::NoKey));
        }
        Ok(Ok(self.call.state.get(&name).cloned()))
    }

    fn set(
        &mut self,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), state::StateError>> {
        let call = &mut self.call;
        check_state_name(&name)?;
        if !call.has_key() {
            return Ok(Err(state::StateError::NoKey));
        }
        let limits = &call.limits;
        if value.len() as u64 > limits.max_state_value_bytes {
            return Ok(Err(state::StateError::TooLarge(format!(
                "value of {} bytes exceeds the limit of {} bytes",
                value.len(),
                limits.max_state_value_bytes
            ))));
        }
        let old = call
            .state
            .get(&name)
            .map(|v| (name.len() + v.len()) as u64)
            .unwrap_or(0);
        let new_total = call.state_bytes - old + (name.len() + value.len()) as u64;
        if new_total > limits.max_state_bytes_per_key {
            return Ok(Err(state::StateError::TooLarge(format!(
                "state of this key would reach {new_total} bytes, the limit is {} bytes",
                limits.max_state_bytes_per_key
            ))));
        }
        call.state_bytes = new_total;
        call.state.insert(name.clone(), value.clone());
        call.changes.insert(name, Some(value));
        Ok(Ok(()))
    }

    fn delete(&mut self, name: String) -> wasmtime::Result<Result<(), state::StateError>> {
        let call = &mut self.call;
        check_state_name(&name)?;
        if !call.has_key() {
            return Ok(Err(state::StateError::NoKey));
        }
        if let Some(old) = call.state.remove(&name) {
            call.state_bytes -= (name.len() + old.len()) as u64;
        }
        call.changes.insert(name, None);
        Ok(Ok(()))
    }

    fn keys(&mut self) -> wasmtime::Result<Result<Vec<String>, state::StateError>> {
        if !self.call.has_key() {
            return Ok(Err(state::StateError::NoKey));
        }
        Ok(Ok(self.call.state.keys().cloned().collect()))
    }
}

impl log::Host for GuestState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.call.push_log(level, LogStream::Log, message);
        Ok(())
    }
}

impl CallState {
    /// Appends captured stdout/stderr as log lines, one per line of text.
    pub(crate) fn absorb_stdio(&mut self, stream: LogStream, bytes: &[u8], dropped: u64) {
        if bytes.is_empty() && dropped == 0 {
            return;
        }
        let level = match stream {
            LogStream::Stderr => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines().filter(|l| !l.is_empty()) {
            self.push_log(level, stream, line.to_owned());
        }
        if dropped > 0 {
            self.push_log(
                LogLevel::Warn,
                stream,
                format!("[{dropped} bytes of output dropped: over max_stdio_bytes]"),
            );
        }
    }
}

pub(crate) fn state_size(state: &StateMap) -> u64 {
    state.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}
