//! The WebAssembly component runtime: turns one event into a handler outcome.
//!
//! * One [`Runtime`] per process owns the wasmtime `Engine` (pooling
//!   allocator, epoch interruption) and a compile cache keyed by the SHA-256
//!   digest of the component bytes, in memory and on disk.
//! * [`Runtime::load`] validates and compiles a component once and keeps its
//!   `InstancePre`; [`Runtime::handler`] pairs it with a name and [`Limits`].
//! * [`Handler::invoke`] runs one event in a fresh `Store` and returns an
//!   [`Invocation`]: the classified [`Outcome`], the emitted events, the state
//!   changes and the logs. Nothing is written anywhere: the caller (the
//!   pipeline, or the local harness) decides what to commit, which is what
//!   lets it batch many invocations into one transaction and run handlers
//!   concurrently. `Handler` is cheap to clone and `invoke` takes `&self`.
//!
//! Whatever a guest does (trap, loop, allocate without end, flood the outbox)
//! ends as an `Outcome`; it never panics or stalls the host.

mod bindings;
mod cache;
mod limits;
mod stdio;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

pub use self::limits::{LimitExceeded, LimitKind, Limits};
pub use crate::event::StateMap;

use self::bindings::{CallState, GuestState, HandlerPre, WitHandlerError};
use self::cache::ComponentCache;
use crate::event::{self, Event};

/// The WIT world every handler component must target.
pub const WORLD: &str = "sluice:handler/handler@0.1.0";

/// Errors of loading a component or building the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly component: {0}")]
    NotWasm(String),
    /// A core module where a component was expected.
    #[error(
        "this is a core WebAssembly module, not a component; build the handler for the \
         wasm32-wasip2 target (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    /// A component that does not implement our world.
    #[error("the component does not target the {WORLD} world: {0}")]
    WrongWorld(String),
    /// A component that wasmtime refused to compile.
    #[error("the component is invalid: {0}")]
    Invalid(String),
    /// Reading a component file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The engine could not be created with the configuration given.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of the [`Runtime`], shared by all handlers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Directory for compiled components, so that a restart does not
    /// recompile. `None` keeps compiled code in memory only. The directory
    /// must be trusted: its files are loaded as native code.
    pub cache_dir: Option<PathBuf>,
    /// How many invocations can hold an instance at once (the size of the
    /// pooling allocator). Invocations past it fail with outcome `limit`
    /// (`concurrency`) and are retried by the pipeline.
    pub max_concurrent_instances: u32,
    /// The largest linear memory any handler may be configured to use, in
    /// bytes; it sizes the pool's memory slots. A handler's own
    /// `max_memory_bytes` is enforced below it.
    pub max_memory_bytes: u64,
    /// Interval of the epoch ticker, in milliseconds: the granularity of
    /// timeouts and of the cooperative yields of long-running guests.
    pub epoch_tick_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_concurrent_instances: 128,
            max_memory_bytes: 256 << 20,
            epoch_tick_ms: 5,
        }
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// `handle` returned `ok`: commit the emits and state changes.
    Ok,
    /// The handler reported a transient failure.
    Retryable {
        /// The handler's message.
        message: String,
    },
    /// The handler reported a permanent failure (poison event).
    Fatal {
        /// The handler's message.
        message: String,
    },
    /// The guest trapped: a panic, an `unreachable`, a stack overflow, an
    /// out-of-bounds access, or a failure to instantiate.
    Trap {
        /// The trap and, where known, the guest backtrace.
        message: String,
    },
    /// The guest ran past its timeout and was interrupted.
    Timeout {
        /// The budget that was exceeded.
        message: String,
    },
    /// The guest hit a resource limit and was stopped.
    Limit {
        /// Which limit.
        limit: LimitKind,
        /// The limit and what was attempted.
        message: String,
    },
}

impl Outcome {
    /// Short name of the outcome: `ok`, `retryable`, `fatal`, `trap`,
    /// `timeout` or `limit`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retryable { .. } => "retryable",
            Outcome::Fatal { .. } => "fatal",
            Outcome::Trap { .. } => "trap",
            Outcome::Timeout { .. } => "timeout",
            Outcome::Limit { .. } => "limit",
        }
    }

    /// Is it worth running the event again? Transient failures, traps and
    /// timeouts may pass on a later attempt; a fatal error will not, and a
    /// guest that blew its memory or emit budget will do so again (except
    /// when the instance pool was merely full).
    pub fn is_retryable(&self) -> bool {
        match self {
            Outcome::Ok | Outcome::Fatal { .. } => false,
            Outcome::Retryable { .. } | Outcome::Trap { .. } | Outcome::Timeout { .. } => true,
            Outcome::Limit { limit, .. } => *limit == LimitKind::Concurrency,
        }
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Recovered problems; also stderr output.
    Warn,
    /// Failures.
    Error,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The `log` import.
    Log,
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr (where Rust panics print).
    Stderr,
}

/// One line a guest logged or printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Severity.
    pub level: LogLevel,
    /// Origin.
    pub stream: LogStream,
    /// The text.
    pub message: String,
}

/// The result of one call of `handle`.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// How it ended.
    pub outcome: Outcome,
    /// Events to put in the outbox. Empty unless the outcome is `Ok`.
    pub emitted: Vec<Event>,
    /// State writes for the event's key, by field: `None` deletes. Empty
    /// unless the outcome is `Ok`.
    pub state_changes: std::collections::BTreeMap<String, Option<Vec<u8>>>,
    /// What the guest logged and printed, whatever the outcome.
    pub logs: Vec<LogLine>,
    /// Log lines dropped past `max_log_lines`.
    pub dropped_logs: u64,
    /// Wall-clock time of instantiation plus the call.
    pub elapsed: Duration,
}

/// A validated, compiled component, ready to instantiate.
pub struct LoadedComponent {
    digest: String,
    pre: HandlerPre<GuestState>,
}

impl LoadedComponent {
    /// Hex SHA-256 of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// Stops the epoch ticker thread when the runtime goes away.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The process-wide WebAssembly runtime. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: ComponentCache,
    config: RuntimeConfig,
    _ticker: Ticker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine, the linker and the compile cache, and starts the
    /// epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        let engine = build_engine(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        bindings::add_to_linker(&mut linker).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let cache = ComponentCache::new(&engine, config.cache_dir.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let tick = Duration::from_millis(config.epoch_tick_ms.max(1));
        {
            // A thread rather than a task: it must keep ticking even when
            // every executor thread is busy running guests.
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sluice-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?;
        }
        Ok(Self {
            engine,
            linker,
            cache,
            config,
            _ticker: Ticker(stop),
        })
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Validates and compiles `bytes`, or returns the cached compilation of
    /// identical bytes. Compilation is CPU-heavy: call it from a blocking
    /// context (`spawn_blocking`) inside an async executor.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedComponent>> {
        check_header(bytes)?;
        let digest = cache::digest(bytes);
        if let Some(hit) = self.cache.get_memory(&digest) {
            return Ok(hit);
        }
        let component = match self.cache.get_disk(&self.engine, &digest) {
            Some(component) => component,
            None => {
                let component = Component::new(&self.engine, bytes)
                    .map_err(|e| Error::Invalid(format!("{e:#}")))?;
                validate_world(&self.engine, &component)?;
                self.cache.put_disk(&digest, &component);
                component
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::WrongWorld(format!("{e:#}")))?;
        let pre = HandlerPre::new(pre).map_err(|e| Error::WrongWorld(format!("{e:#}")))?;
        let loaded = Arc::new(LoadedComponent { digest, pre });
        self.cache.put_memory(loaded.clone());
        Ok(loaded)
    }

    /// [`Runtime::load`] on the contents of a file.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedComponent>> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load(&bytes)
    }

    /// A handler named `name` running `component` under `limits`.
    pub fn handler(
        self: &Arc<Self>,
        name: &str,
        component: Arc<LoadedComponent>,
        limits: Limits,
    ) -> Handler {
        Handler {
            runtime: self.clone(),
            name: Arc::from(name),
            component,
            limits: Arc::new(limits),
            native: None,
        }
    }
}

fn build_engine(config: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let instances = config.max_concurrent_instances.max(1);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        // A Rust wasip2 component has a handful of core instances (the
        // program plus adapter shims); leave room for other toolchains.
        .max_core_instances_per_component(32)
        .total_core_instances(instances.saturating_mul(8))
        .max_memories_per_component(4)
        .total_memories(instances.saturating_mul(2))
        .max_tables_per_component(8)
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        // Every event gets a fresh instance, so slots are recycled all the
        // time. Resetting memory with memset instead of madvise, and
        // batching decommits, avoids a TLB shootdown (an IPI to every core)
        // per event; PAGEMAP_SCAN (Linux 6.7+, else ignored) finds the
        // pages an instance dirtied, so only those are reset. Without it,
        // a Rust guest's 1 MiB stack region was memset whole each time:
        // 19% of the CPU in `sluice bench --setup wasm` (BENCHMARKS.md).
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .decommit_batch_size(32);
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    Engine::new(&cfg)
}

/// Tells garbage, core modules and components apart before compiling, so
/// that each gets an error that says what it is.
fn check_header(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Error::NotWasm(format!(
            "{} bytes without the WebAssembly magic number `\\0asm`",
            bytes.len()
        )));
    }
    match (bytes[4..6] == [1, 0], bytes[6..8] == [0, 0]) {
        (true, true) => Err(Error::CoreModule),
        _ if bytes[6..8] == [1, 0] => Ok(()),
        _ => Err(Error::NotWasm(format!(
            "unknown WebAssembly version/layer {:02x?}",
            &bytes[4..8]
        ))),
    }
}

/// Checks the component's imports and export before linking, for a
/// message that names what is missing or unsupported; the types are then
/// checked by `instantiate_pre`.
fn validate_world(engine: &Engine, component: &Component) -> Result<()> {
    let ty = component.component_type();
    let unsupported: Vec<String> = ty
        .imports(engine)
        .filter_map(|(name, _)| bindings::unsupported_import(name))
        .collect();
    if !unsupported.is_empty() {
        return Err(Error::WrongWorld(format!(
            "it imports what the host does not provide: {}",
            unsupported.join("; ")
        )));
    }
    if ty.get_export(engine, "handle").is_none() {
        let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
        return Err(Error::WrongWorld(format!(
            "it does not export the `handle` function (its exports: {})",
            if exports.is_empty() {
                "none".to_owned()
            } else {
                exports.join(", ")
            }
        )));
    }
    Ok(())
}

/// A named handler bound to a compiled component and its limits.
#[derive(Clone)]
pub struct Handler {
    runtime: Arc<Runtime>,
    name: Arc<str>,
    component: Arc<LoadedComponent>,
    limits: Arc<Limits>,
    /// Runs instead of the component (which then only names the version).
    native: Option<Arc<dyn NativeHandler>>,
}

/// A handler compiled into the host instead of a component: the baseline
/// `sluice bench` compares the WASM pipeline with. It gets the event and
/// its key's committed state, and fills in state changes and events to
/// emit; ids, sources, times and inherited headers are given to those
/// events as for a component's.
pub trait NativeHandler: Send + Sync + 'static {
    /// Handles one event; `Err` is a fatal failure.
    fn handle(
        &self,
        event: &Event,
        state: &StateMap,
        out: &mut NativeOutput,
    ) -> std::result::Result<(), String>;
}

/// What a [`NativeHandler`] did.
#[derive(Debug, Default)]
pub struct NativeOutput {
    /// State writes for the event's key; `None` deletes.
    pub state_changes: std::collections::BTreeMap<String, Option<Vec<u8>>>,
    /// Events to emit: (topic, type, data, key).
    pub emitted: Vec<(String, String, Vec<u8>, Option<String>)>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("name", &self.name)
            .field("digest", &self.component.digest)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Raised by the epoch callback when an invocation runs out of time.
#[derive(Debug, thiserror::Error)]
#[error("the handler ran longer than its timeout of {0} ms")]
struct TimedOut(u64);

impl Handler {
    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component it runs.
    pub fn component(&self) -> &Arc<LoadedComponent> {
        &self.component
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The runtime it runs in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The same handler (name, limits) running another component.
    pub fn with_component(&self, component: Arc<LoadedComponent>) -> Handler {
        Handler {
            component,
            ..self.clone()
        }
    }

    /// The same handler, running `native` in the host instead of its
    /// component (which still names the version).
    pub fn with_native(&self, native: Arc<dyn NativeHandler>) -> Handler {
        Handler {
            native: Some(native),
            ..self.clone()
        }
    }

    fn invoke_native(
        &self,
        native: &dyn NativeHandler,
        event: &Event,
        state: &StateMap,
    ) -> Invocation {
        let started = Instant::now();
        let mut out = NativeOutput::default();
        let outcome = match native.handle(event, state, &mut out) {
            Ok(()) => Outcome::Ok,
            Err(message) => Outcome::Fatal { message },
        };
        let inherited = event::inherited_headers(event);
        let emitted = if matches!(outcome, Outcome::Ok) {
            out.emitted
                .into_iter()
                .enumerate()
                .map(|(i, (topic, ty, data, key))| Event {
                    id: event::emitted_event_id(
                        &event.id,
                        &self.name,
                        u32::try_from(i).unwrap_or(u32::MAX),
                    ),
                    source: event::handler_source(&self.name),
                    ty,
                    time: Some(
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    ),
                    content_type: None,
                    data_schema: None,
                    data,
                    headers: inherited.clone(),
                    key,
                    topic,
                })
                .collect()
        } else {
            Vec::new()
        };
        Invocation {
            state_changes: if matches!(outcome, Outcome::Ok) {
                out.state_changes
            } else {
                Default::default()
            },
            outcome,
            emitted,
            logs: Vec::new(),
            dropped_logs: 0,
            elapsed: started.elapsed(),
        }
    }

    /// Runs `handle` for `event` (delivery attempt `attempt`, from 1) in a
    /// fresh instance, against `state`: the committed state of the event's
    /// key, ignored for keyless events.
    pub async fn invoke(&self, event: &Event, attempt: u32, state: StateMap) -> Invocation {
        if let Some(native) = &self.native {
            return self.invoke_native(native.as_ref(), event, &state);
        }
        let started = Instant::now();
        let cause = Arc::new(event.clone());
        let state_bytes = bindings::state_size(&state);
        let call = CallState {
            handler: self.name.clone(),
            limits: self.limits.clone(),
            inherited: event::inherited_headers(&cause),
            cause,
            emitted: Vec::new(),
            emitted_bytes: 0,
            state,
            state_bytes,
            changes: Default::default(),
            logs: Vec::new(),
            dropped_logs: 0,
        };
        let mut store = Store::new(
            &self.runtime.engine,
            GuestState::new(call, self.runtime.config.max_memory_bytes),
        );
        store.limiter(|s| &mut s.limiter);
        let timeout_ms = self.limits.timeout_ms;
        let deadline = started + Duration::from_millis(timeout_ms);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(TimedOut(timeout_ms)))
            } else {
                // Yield at every tick so that one long guest cannot starve
                // the other tasks of the executor.
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let wit_event = bindings::to_wit_event(event, attempt);
        let run = async {
            let instance = self.component.pre.instantiate_async(&mut store).await?;
            instance.call_handle(&mut store, &wit_event).await
        };
        // The epoch deadline stops guest code; this outer timeout also stops
        // a guest blocked in a host call (a WASI sleep, say). The grace
        // period lets the epoch trap, with its backtrace, win when it can.
        let grace = Duration::from_millis(self.runtime.config.epoch_tick_ms.max(1) * 4 + 50);
        let result = tokio::time::timeout(Duration::from_millis(timeout_ms) + grace, run).await;
        let outcome = match result {
            Err(_elapsed) => Outcome::Timeout {
                message: TimedOut(timeout_ms).to_string(),
            },
            Ok(Ok(Ok(()))) => Outcome::Ok,
            Ok(Ok(Err(WitHandlerError::Retryable(message)))) => Outcome::Retryable { message },
            Ok(Ok(Err(WitHandlerError::Fatal(message)))) => Outcome::Fatal { message },
            Ok(Err(error)) => classify(&error),
        };

        let GuestState {
            mut call,
            stdout,
            stderr,
            ..
        } = store.into_data();
        let (out, out_dropped) = stdout.take();
        let (err, err_dropped) = stderr.take();
        call.absorb_stdio(LogStream::Stdout, &out, out_dropped);
        call.absorb_stdio(LogStream::Stderr, &err, err_dropped);
        let ok = outcome == Outcome::Ok;
        Invocation {
            outcome,
            emitted: if ok { call.emitted } else { Vec::new() },
            state_changes: if ok { call.changes } else { Default::default() },
            logs: call.logs,
            dropped_logs: call.dropped_logs,
            elapsed: started.elapsed(),
        }
    }
}

/// Turns a wasmtime error into an outcome, by what caused it.
fn classify(error: &wasmtime::Error) -> Outcome {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return Outcome::Limit {
            limit: limit.kind,
            message: limit.to_string(),
        };
    }
    if let Some(timeout) = error.downcast_ref::<TimedOut>() {
        return Outcome::Timeout {
            message: timeout.to_string(),
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Outcome::Limit {
            limit: LimitKind::Concurrency,
            message: format!("{error:#}"),
        };
    }
    Outcome::Trap {
        message: trap_message(error),
    }
}

/// Frames of the guest backtrace kept in a trap message: enough to find the
/// culprit, short enough for a log line (a stack overflow has thousands).
const BACKTRACE_FRAMES: usize = 12;

/// "cause: cause: ..." followed by the top of the guest backtrace.
fn trap_message(error: &wasmtime::Error) -> String {
    let mut message = error
        .chain()
        .map(|cause| cause.to_string())
        // The backtrace is attached as a context whose text is the whole
        // backtrace; it is rendered, shortened, below.
        .filter(|text| !text.starts_with("error while executing at wasm backtrace"))
        .collect::<Vec<_>>()
        .join(": ");
    if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        let text = backtrace.to_string();
        let frames: Vec<&str> = text
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .collect();
        message.push_str("\nguest backtrace:");
        for line in frames.iter().take(BACKTRACE_FRAMES) {
            message.push('\n');
            message.push_str(line.trim_end());
        }
        if frames.len() > BACKTRACE_FRAMES {
            message.push_str(&format!(
                "\n    ... {} more frames",
                frames.len() - BACKTRACE_FRAMES
            ));
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_kinds_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(Error::NotWasm(_))
        ));
        assert!(matches!(check_header(b""), Err(Error::NotWasm(_))));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(check_header(core), Err(Error::CoreModule)));
        let component = b"\0asm\x0d\0\x01\0";
        assert!(check_header(component).is_ok());
        assert!(matches!(
            check_header(b"\0asm\x02\0\x07\0"),
            Err(Error::NotWasm(_))
        ));
    }

    #[test]
    fn retry_classification() {
        assert!(!Outcome::Ok.is_retryable());
        assert!(
            !Outcome::Fatal {
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(
            Outcome::Trap {
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(
            Outcome::Timeout {
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(
            !Outcome::Limit {
                limit: LimitKind::Memory,
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(
            Outcome::Limit {
                limit: LimitKind::Concurrency,
                message: "x".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn runtime_starts_and_rejects_garbage() {
        let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
        let err = rt.load(b"not wasm").unwrap_err();
        assert!(matches!(err, Error::NotWasm(_)), "{err}");
        let core = wat::parse_str("(module)").unwrap();
        assert!(matches!(rt.load(&core).unwrap_err(), Error::CoreModule));
        // A component of another world: it exports nothing.
        let other = wat::parse_str("(component)").unwrap();
        let err = rt.load(&other).unwrap_err();
        assert!(matches!(err, Error::WrongWorld(_)), "{err}");
        assert!(err.to_string().contains("handle"), "{err}");
    }

    /// What componentize-js builds by default: a handler that also imports
    /// `wasi:http`. The error names that import and the build flag.
    #[test]
    fn unsupported_imports_are_named() {
        let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
        let importing = |name: &str| {
            wat::parse_str(format!(
                r#"(component
                    (import "{name}" (instance (export "fields" (type (sub resource)))))
                    (import "wasi:io/streams@0.2.10" (instance (export "input-stream" (type (sub resource)))))
                    (core module $m (func (export "f")))
                    (core instance $i (instantiate $m))
                    (func $f (canon lift (core func $i "f")))
                    (export "handle" (func $f)))"#
            ))
            .unwrap()
        };
        let err = rt.load(&importing("wasi:http/types@0.2.10")).unwrap_err();
        assert!(matches!(err, Error::WrongWorld(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("`wasi:http/types@0.2.10`"), "{text}");
        assert!(text.contains("--disable http"), "{text}");
        assert!(
            !text.contains("wasi:io"),
            "0.2.x of wasi:io is provided: {text}"
        );

        let text = rt
            .load(&importing("acme:db/query@1.0.0"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("`acme:db/query@1.0.0`"), "{text}");
        let text = rt
            .load(&importing("sluice:handler/state@0.2.0"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("sluice:handler@0.1.0"), "{text}");
        // Supported imports pass this check and fail later on the export's type.
        let text = rt
            .load(&importing("wasi:random/random@0.2.3"))
            .unwrap_err()
            .to_string();
        assert!(!text.contains("does not provide"), "{text}");
    }
}
