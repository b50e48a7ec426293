//! # The `sluice` command
//!
//! The command line of Sluice: `sluice run` runs the host (the `sluice`
//! library); the other commands are a client of its admin API
//! ([`client`]), a local test runner (`sluice test`) and, with the `bench`
//! feature (on by default), the benchmarks (`sluice bench`, the
//! `sluice-bench` crate). This file holds the clap definitions and the
//! dispatch; each command group is a module of [`commands`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod client;
mod commands;

/// mimalloc instead of glibc's allocator: the pipeline allocates and frees
/// per event across threads, where glibc malloc took 18% of the CPU of
/// `sluice bench --setup wasm` (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: event handlers as sandboxed WebAssembly components.
#[derive(Parser)]
// The name and text `sluice --version` and `--help` showed when the binary
// was the host crate's.
#[command(
    name = "sluice",
    version,
    about = "Sluice host: runs event handlers as sandboxed WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: the admin API, the handlers, the relay. Stops
    /// gracefully on Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Append an event to a topic through the admin API.
    Publish(PublishArgs),
    /// Inspect and operate the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Inspect events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Show the handlers: configuration, versions, counters.
    Handlers(HandlersArgs),
    /// Upload a component as a new version of a handler and activate it
    /// (hot swap, no restart). With --topic/--type, first create the handler
    /// or change its subscriptions.
    Deploy(DeployArgs),
    /// Stop a handler and delete it with its versions.
    Remove(RemoveArgs),
    /// Activate a stored version of a handler (hot swap; rollback is
    /// activating an older version).
    Activate(ActivateArgs),
    /// Run a handler component against one event (or a sequence of events)
    /// and print the outcome,
    /// emitted events, state writes and logs as JSON.
    Test(TestArgs),
    /// Create a handler project (Rust, JavaScript/TypeScript or Python)
    /// that builds with one command and passes `sluice test` as created.
    New(NewArgs),
    /// Measure the embedded setups side by side: the raw log read, the
    /// pipeline with a native handler, the WASM pipeline and a naive
    /// one-transaction-per-event consumer (events/s,
    /// CPU-seconds per million events, peak RSS, p50/p99 latency). See
    /// BENCHMARKS.md.
    #[cfg(feature = "bench")]
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct NewArgs {
    /// Project and handler name: lowercase letters, digits and `-`.
    name: String,
    /// The handler's language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Where to create it (default: ./NAME); must be absent or empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The Sluice checkout whose SDKs the project uses (by path). Default:
    /// $SLUICE_SDK_DIR, else the checkout this binary was built from.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

/// A language `sluice new` scaffolds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Lang {
    /// Rust, with the `sluice-sdk` crate (`cargo build`).
    Rust,
    /// TypeScript, with `@sluice/sdk` (`npm run build`; Node 20+).
    #[value(alias = "ts", alias = "typescript", alias = "javascript")]
    Js,
    /// Python, with `sluice-sdk` (`python3 build.py`; Python 3.10+).
    #[value(alias = "py")]
    Python,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Configuration file. Without it, `./sluice.toml` if present, else the
    /// embedded defaults (SQLite under `./.sluice`, admin on 127.0.0.1:8080).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Bearer token required for mutating calls and for reading events,
    /// state and the DLQ. Mandatory when the admin address is not loopback.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// How to reach the admin API.
#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// Admin API base URL.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token of the admin API.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List entries, oldest first.
    List {
        /// Only this handler.
        #[arg(long)]
        handler: Option<String>,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only this status: pending, redriven or discarded.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Entries after this id (from the previous page).
        #[arg(long)]
        cursor: Option<i64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one entry with its event and every attempt.
    Show {
        /// Entry id.
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run the entry's event again on the handler that failed.
    Redrive {
        /// Entry id.
        id: i64,
        /// Run it on this stored version instead of the active one.
        #[arg(long)]
        version: Option<i64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drop the entry (and release its key if it was parked).
    Discard {
        /// Entry id.
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// An event, who processed it, what it emitted, and its causation chain.
    Show {
        /// Event id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(clap::Args)]
struct DeployArgs {
    /// Handler name.
    name: String,
    /// The component (`.wasm`).
    file: PathBuf,
    /// Topic to subscribe to (repeatable). Creates the handler if it does
    /// not exist; replaces the topics of an existing one.
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// Event type to receive (repeatable; a trailing `*` matches a prefix).
    /// Replaces the type filter; without it, an existing filter stays.
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Upload only; activate later with `sluice activate`.
    #[arg(long)]
    no_activate: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[cfg(feature = "bench")]
#[derive(clap::Args)]
struct BenchArgs {
    /// Events per setup.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Distinct event keys.
    #[arg(long, default_value_t = 64)]
    keys: u64,
    /// Events appended per second (0: as fast as possible). The latency
    /// target is measured at half of the maximum rate.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The bench-guest component; by default it is built from the
    /// repository (run from its root).
    #[arg(long)]
    component: Option<PathBuf>,
    /// Setups to run, in order (default: raw, native, wasm, naive, then
    /// kafka-raw, kafka-native, kafka-wasm, kafka-naive with `--brokers`).
    #[arg(long = "setup")]
    setups: Vec<String>,
    /// Kafka bootstrap servers for the Kafka + PostgreSQL setups.
    #[arg(long)]
    brokers: Option<String>,
    /// PostgreSQL database the Kafka setups create their databases from.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// An extra librdkafka property for every Kafka client of the Kafka
    /// setups (as `[broker.properties]`), `NAME=VALUE`; repeatable.
    #[arg(long = "kafka-property", value_name = "NAME=VALUE")]
    kafka_properties: Vec<String>,
    /// Run the one setup given in this process and print its measurement
    /// as JSON (each setup runs in a process of its own).
    #[arg(long, hide = true)]
    child: bool,
}

#[derive(clap::Args)]
struct RemoveArgs {
    /// Handler name.
    name: String,
    /// Also delete its positions, processed records, state and DLQ entries
    /// (a handler created again under the name then starts afresh).
    #[arg(long)]
    purge: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Args)]
struct ActivateArgs {
    /// Handler name.
    name: String,
    /// Version number (see `sluice handlers NAME`).
    version: i64,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Args)]
struct HandlersArgs {
    /// Only this handler.
    name: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Args)]
struct PublishArgs {
    /// Topic to append to.
    topic: String,
    /// Event type.
    #[arg(long = "type", short = 't')]
    ty: String,
    /// Ordering key.
    #[arg(long, short)]
    key: Option<String>,
    /// Event id (default: generated).
    #[arg(long)]
    id: Option<String>,
    /// Payload, as JSON.
    #[arg(long, short)]
    data: Option<String>,
    /// Payload schema or version (CloudEvents `dataschema`).
    #[arg(long)]
    data_schema: Option<String>,
    /// Header / extension attribute, `name=value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Args)]
struct TestArgs {
    /// The handler component (`.wasm`, built for wasm32-wasip2).
    component: PathBuf,
    /// The input event, as JSON.
    #[arg(long)]
    event: PathBuf,
    /// Initial state of the event's key, as a JSON object of fields.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Expected result, matched as a subset of the report; exit status 1 and
    /// a diff on a mismatch.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Handler name (enters emitted ids); default: the file's stem.
    #[arg(long)]
    name: Option<String>,
    /// Limits as a JSON object (fields of `Limits`, e.g.
    /// `{"timeout_ms": 500}`); unspecified fields keep their defaults.
    #[arg(long)]
    limits: Option<String>,
    /// Print compact JSON instead of pretty JSON.
    #[arg(long)]
    compact: bool,
    /// Where compiled components are cached, so that repeated runs do not
    /// recompile. Default: `$XDG_CACHE_HOME/sluice` or `~/.cache/sluice`.
    #[arg(long, env = "SLUICE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not cache compiled components on disk.
    #[arg(long)]
    no_cache: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The host tells what it does; the one-shot commands only warn.
    let default_filter = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Test(args) => commands::test::run(args),
        Command::New(args) => commands::new::run(args),
        #[cfg(feature = "bench")]
        Command::Bench(args) => async_main(commands::bench::run(args)),
        Command::Run(args) => async_main(commands::run::run(args)),
        Command::Publish(args) => async_main(commands::publish::run(args)),
        Command::Dlq { command } => async_main(commands::dlq::run(command)),
        Command::Events { command } => async_main(commands::events::run(command)),
        Command::Handlers(args) => async_main(commands::handlers::list(args)),
        Command::Deploy(args) => async_main(commands::handlers::deploy(args)),
        Command::Remove(args) => async_main(commands::handlers::remove(args)),
        Command::Activate(args) => async_main(commands::handlers::activate(args)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs `fut` on a multi-threaded runtime.
fn async_main(
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fut)
}
