//! The `sluice` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use sluice::harness::{self, Harness, RunOptions, TestEvent};
use std::sync::Arc;

use sluice::admin;
use sluice::config::Config;
use sluice::pipeline::{Pipeline, Signals};
use sluice::runtime::{Limits, Runtime, RuntimeConfig};
use sluice::store::{self, StoreOptions};

/// mimalloc instead of glibc's allocator: the pipeline allocates and frees
/// per event across threads, where glibc malloc took 18% of the CPU of
/// `sluice bench --setup wasm` (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: event handlers as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
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
    /// Measure the embedded setups side by side: the raw log read, the
    /// pipeline with a native handler, the WASM pipeline and a naive
    /// one-transaction-per-event consumer (events/s,
    /// CPU-seconds per million events, peak RSS, p50/p99 latency). See
    /// BENCHMARKS.md.
    Bench(BenchArgs),
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

/// The per-user cache directory, if the environment names a home.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("sluice"))
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
        Command::Test(args) => run_test(args),
        Command::Bench(args) => async_main(bench(args)),
        Command::Run(args) => async_main(run_host(args)),
        Command::Publish(args) => async_main(publish(args)),
        Command::Dlq { command } => async_main(dlq(command)),
        Command::Events { command } => async_main(events(command)),
        Command::Handlers(args) => async_main(handlers(args)),
        Command::Deploy(args) => async_main(deploy(args)),
        Command::Remove(args) => async_main(remove(args)),
        Command::Activate(args) => async_main(activate(args)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn async_main(
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fut)
}

async fn run_host(args: RunArgs) -> anyhow::Result<ExitCode> {
    let path = args
        .config
        .or_else(|| Some(PathBuf::from("sluice.toml")).filter(|p| p.exists()));
    let mut config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let token = args.admin_token.filter(|t| !t.is_empty());
    if token.is_none() && !config.admin.addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve the admin API on {} without a token: set --admin-token or SLUICE_ADMIN_TOKEN, or listen on a loopback address",
            config.admin.addr
        );
    }
    if config.runtime.cache_dir.is_none() {
        config.runtime.cache_dir = Some(PathBuf::from(".sluice/cache"));
    }
    tracing::info!(
        config = %path.as_ref().map_or("(embedded defaults)".into(), |p| p.display().to_string()),
        store = %config.store.url,
        "starting sluice"
    );
    let store = store::open(
        &config.store.url,
        &StoreOptions {
            synchronous: config.store.synchronous,
            max_connections: config.store.max_connections,
        },
    )
    .await
    .with_context(|| format!("opening the store {}", config.store.url))?;
    let runtime = Arc::new(Runtime::new(config.runtime.clone())?);
    let signals = Signals::new();
    let pipeline =
        Arc::new(Pipeline::start(&config, store.clone(), runtime, signals.clone()).await?);
    pipeline
        .follow_store()
        .await
        .context("listening for the store's notices")?;
    let listener = tokio::net::TcpListener::bind(config.admin.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.admin.addr))?;
    tracing::info!("admin API listening on http://{}", listener.local_addr()?);
    let state = admin::AppState {
        store,
        signals,
        default_partitions: config.pipeline.default_partitions,
        max_body_bytes: config.admin.max_body_bytes,
        token,
        max_upload_bytes: config.admin.max_upload_bytes,
        pipeline: Some(pipeline.clone()),
    };
    admin::serve(listener, admin::app(state), shutdown_signal())
        .await
        .context("admin API server failed")?;
    tracing::info!("shutting down: finishing in-flight events");
    pipeline.shutdown().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({ "type": args.ty });
    if let Some(id) = args.id {
        body["id"] = id.into();
    }
    if let Some(key) = args.key {
        body["key"] = key.into();
    }
    if let Some(schema) = args.data_schema {
        body["data_schema"] = schema.into();
    }
    if let Some(data) = args.data {
        body["data"] = serde_json::from_str(&data).context("--data is not valid JSON")?;
    }
    let mut headers = serde_json::Map::new();
    for h in args.headers {
        let (name, value) = h
            .split_once('=')
            .with_context(|| format!("--header {h:?} is not name=value"))?;
        headers.insert(name.to_owned(), value.into());
    }
    if !headers.is_empty() {
        body["headers"] = headers.into();
    }
    let answer = call(
        &args.client,
        reqwest::Method::POST,
        &format!("/v1/topics/{}/events", args.topic),
        Some(body),
    )
    .await?;
    if args.client.json {
        println!("{answer}");
    } else {
        for id in answer["ids"].as_array().into_iter().flatten() {
            println!("{}", id.as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One admin API call with a JSON body (or none); an error answer becomes
/// an error with its detail.
async fn call(
    client: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    send(client, method, path, |r| match body {
        Some(body) => r.json(&body),
        None => r,
    })
    .await
}

/// [`call`] with any body: `with_body` adds it to the request.
async fn send(
    client: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    with_body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> anyhow::Result<serde_json::Value> {
    let (status, value, text) = request(client, method, path, with_body).await?;
    if !status.is_success() {
        match (value["error"].as_str(), value["detail"].as_str()) {
            (Some(error), Some(detail)) => anyhow::bail!("{status}: {error}: {detail}"),
            _ => anyhow::bail!("{status}: {text}"),
        }
    }
    Ok(value)
}

/// One admin API call, whatever its status: status, JSON body (`null` if
/// it is not JSON) and the raw text.
async fn request(
    client: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    with_body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value, String)> {
    let url = format!("{}{path}", client.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().request(method, &url);
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    request = with_body(request);
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Ok((status, value, text))
}

/// Creates the handler, or changes its subscriptions, as `--topic` and
/// `--type` ask; the rest of an existing configuration stays.
async fn subscribe(args: &DeployArgs) -> anyhow::Result<()> {
    let path = format!("/v1/handlers/{}", args.name);
    let (status, mut record, text) =
        request(&args.client, reqwest::Method::GET, &path, |r| r).await?;
    let mut config = if status == reqwest::StatusCode::NOT_FOUND {
        if args.topics.is_empty() {
            anyhow::bail!(
                "handler {} does not exist: give --topic to create it",
                args.name
            );
        }
        serde_json::json!({})
    } else if status.is_success() {
        record["config"].take()
    } else {
        anyhow::bail!("reading handler {}: {status}: {text}", args.name);
    };
    if let Some(fields) = config.as_object_mut() {
        fields.remove("name");
        fields.remove("component");
    }
    if !args.topics.is_empty() {
        config["topics"] = args.topics.clone().into();
    }
    if !args.types.is_empty() {
        config["types"] = args.types.clone().into();
    }
    call(&args.client, reqwest::Method::PUT, &path, Some(config)).await?;
    Ok(())
}

async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    if !args.topics.is_empty() || !args.types.is_empty() {
        subscribe(&args).await?;
    }
    let answer = send(
        &args.client,
        reqwest::Method::POST,
        &format!(
            "/v1/handlers/{}/versions?activate={}",
            args.name, !args.no_activate
        ),
        |r| r.header("content-type", "application/wasm").body(bytes),
    )
    .await
    .map_err(|e| {
        if args.topics.is_empty() && e.to_string().contains("unknown_handler") {
            e.context(format!(
                "handler {} does not exist: give --topic to create it",
                args.name
            ))
        } else {
            e
        }
    })?;
    if args.client.json {
        print_json(&answer)?;
    } else {
        println!(
            "{} version {} ({}){}{}",
            args.name,
            cell(&answer["version"]),
            short(&answer["digest"]),
            if answer["created"] == true {
                ""
            } else {
                ", identical to a stored version"
            },
            if args.no_activate {
                ", not activated"
            } else {
                ", active"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs each setup in a child process (its own CPU time and peak RSS),
/// then prints the table.
async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    use sluice::bench;
    let workload = bench::Workload {
        events: args.events.max(1),
        keys: args.keys.max(1),
        rate: args.rate.max(0.0),
    };
    let component = bench::component(args.component.clone())?;
    let mut kafka_properties = std::collections::BTreeMap::new();
    for property in &args.kafka_properties {
        let (name, value) = property
            .split_once('=')
            .with_context(|| format!("--kafka-property {property}: expected NAME=VALUE"))?;
        kafka_properties.insert(name.to_owned(), value.to_owned());
    }
    let servers = bench::Servers {
        brokers: args.brokers.clone(),
        postgres: args.postgres.clone(),
        kafka_properties,
    };
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if args.child {
        let setup = args.setups.first().context("--child needs one --setup")?;
        let measured = bench::run_setup(setup, workload, &component, &dir, &servers).await;
        let _ = std::fs::remove_dir_all(&dir);
        println!("{}", serde_json::to_string(&measured?)?);
        return Ok(ExitCode::SUCCESS);
    }
    let setups: Vec<String> = if args.setups.is_empty() {
        let kafka = if args.brokers.is_some() {
            bench::KAFKA_SETUPS
        } else {
            &[]
        };
        bench::SETUPS
            .iter()
            .chain(kafka)
            .map(|s| s.to_string())
            .collect()
    } else {
        args.setups.clone()
    };
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut results = Vec::new();
    for setup in &setups {
        eprintln!("running {setup} ({} events)...", workload.events);
        let out = tokio::process::Command::new(&exe)
            .args(["bench", "--child", "--setup", setup])
            .args(["--events", &workload.events.to_string()])
            .args(["--keys", &workload.keys.to_string()])
            .args(["--rate", &workload.rate.to_string()])
            .args(["--postgres", &args.postgres])
            .args(args.brokers.iter().flat_map(|b| ["--brokers", b.as_str()]))
            .args(
                args.kafka_properties
                    .iter()
                    .flat_map(|p| ["--kafka-property", p.as_str()]),
            )
            .arg("--component")
            .arg(&component)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .with_context(|| format!("running setup {setup}"))?
            .wait_with_output()
            .await
            .with_context(|| format!("running setup {setup}"))?;
        anyhow::ensure!(out.status.success(), "setup {setup} failed");
        let measured: bench::Measurement = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("reading the measurement of {setup}"))?;
        results.push(measured);
    }
    let _ = std::fs::remove_dir_all(&dir);
    print!("{}", bench::table(&results));
    Ok(ExitCode::SUCCESS)
}

async fn remove(args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let answer = call(
        &args.client,
        reqwest::Method::DELETE,
        &format!("/v1/handlers/{}?purge={}", args.name, args.purge),
        None,
    )
    .await?;
    if args.client.json {
        print_json(&answer)?;
    } else if args.purge {
        println!("{} deleted, with its records", args.name);
    } else {
        println!(
            "{} deleted (its positions, state and DLQ entries are kept)",
            args.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn activate(args: ActivateArgs) -> anyhow::Result<ExitCode> {
    let answer = call(
        &args.client,
        reqwest::Method::POST,
        &format!("/v1/handlers/{}/activate", args.name),
        Some(serde_json::json!({ "version": args.version })),
    )
    .await?;
    if args.client.json {
        print_json(&answer)?;
    } else {
        println!(
            "{} now runs version {}",
            args.name,
            cell(&answer["active_version"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One handler: configuration, versions (the active one marked), counters.
async fn handler_detail(name: &str, client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let h = call(
        client,
        reqwest::Method::GET,
        &format!("/v1/handlers/{name}"),
        None,
    )
    .await?;
    if client.json {
        print_json(&h)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = &h["config"];
    println!(
        "handler {name} ({}, managed by {}): topics {} types {} concurrency {} on_dead_letter {}",
        if h["running"] == true {
            "running"
        } else {
            "not running"
        },
        cell(&h["managed_by"]),
        config["topics"],
        config["types"],
        cell(&config["concurrency"]),
        cell(&config["on_dead_letter"])
    );
    println!("retry {} limits {}", config["retry"], config["limits"]);
    let active = h["active_version"].as_i64();
    let rows = h["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            vec![
                if v["version"].as_i64() == active {
                    "*".into()
                } else {
                    String::new()
                },
                cell(&v["version"]),
                short(&v["digest"]),
                cell(&v["size"]),
                cell(&v["uploaded_at"]),
            ]
        })
        .collect();
    table(&["", "VERSION", "DIGEST", "SIZE", "UPLOADED(ms)"], rows);
    if let Some(stats) = h["stats"].as_object() {
        let counters: Vec<String> = stats.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{}", counters.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints rows as aligned columns under a header.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn short(digest: &serde_json::Value) -> String {
    cell(digest).chars().take(12).collect()
}

fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    let (client, answer) = match command {
        DlqCommand::List {
            handler,
            topic,
            status,
            limit,
            cursor,
            client,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (name, value) in [("handler", handler), ("topic", topic), ("status", status)] {
                if let Some(v) = value {
                    query.push(format!("{name}={v}"));
                }
            }
            if let Some(c) = cursor {
                query.push(format!("cursor={c}"));
            }
            let answer = call(
                &client,
                reqwest::Method::GET,
                &format!("/v1/dlq?{}", query.join("&")),
                None,
            )
            .await?;
            if client.json {
                print_json(&answer)?;
            } else {
                let rows = answer["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            cell(&e["id"]),
                            cell(&e["handler"]),
                            short(&e["version"]),
                            cell(&e["status"]),
                            cell(&e["event"]["topic"]),
                            cell(&e["event"]["id"]),
                            e["attempts"].as_array().map_or(0, Vec::len).to_string(),
                            cell(&e["error"]),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "HANDLER", "VERSION", "STATUS", "TOPIC", "EVENT", "ATTEMPTS", "ERROR",
                    ],
                    rows,
                );
                if let Some(next) = answer["next_cursor"].as_i64() {
                    println!("(more: --cursor {next})");
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        DlqCommand::Show { id, client } => {
            let answer = call(
                &client,
                reqwest::Method::GET,
                &format!("/v1/dlq/{id}"),
                None,
            )
            .await?;
            (client, answer)
        }
        DlqCommand::Redrive {
            id,
            version,
            client,
        } => {
            let answer = call(
                &client,
                reqwest::Method::POST,
                &format!("/v1/dlq/{id}/redrive"),
                Some(serde_json::json!({ "version": version })),
            )
            .await?;
            (client, answer)
        }
        DlqCommand::Discard { id, client } => {
            let answer = call(
                &client,
                reqwest::Method::DELETE,
                &format!("/v1/dlq/{id}"),
                None,
            )
            .await?;
            (client, answer)
        }
    };
    if client.json {
        print_json(&answer)?;
    } else {
        println!(
            "entry {} ({}) for handler {} at version {}",
            cell(&answer["id"]),
            cell(&answer["status"]),
            cell(&answer["handler"]),
            short(&answer["version"])
        );
        println!(
            "event {} ({}) on {} key {}",
            cell(&answer["event"]["id"]),
            cell(&answer["event"]["type"]),
            cell(&answer["event"]["topic"]),
            cell(&answer["event"]["key"])
        );
        let rows = answer["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                vec![
                    cell(&a["attempt"]),
                    cell(&a["outcome"]),
                    short(&a["version"]),
                    cell(&a["at"]),
                    cell(&a["error"]),
                ]
            })
            .collect();
        table(&["ATTEMPT", "OUTCOME", "VERSION", "AT(ms)", "ERROR"], rows);
    }
    Ok(ExitCode::SUCCESS)
}

async fn events(command: EventsCommand) -> anyhow::Result<ExitCode> {
    let EventsCommand::Show { id, client } = command;
    let answer = call(
        &client,
        reqwest::Method::GET,
        &format!("/v1/events/{id}"),
        None,
    )
    .await?;
    if client.json {
        print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let e = &answer["event"];
    println!(
        "event {} ({}) on {} key {} seq {}",
        cell(&e["id"]),
        cell(&e["type"]),
        cell(&e["topic"]),
        cell(&e["key"]),
        cell(&e["seq"])
    );
    for cause in answer["causes"].as_array().into_iter().flatten() {
        println!(
            "  caused by {} ({}) on {}",
            cell(&cause["id"]),
            cell(&cause["type"]),
            cell(&cause["topic"])
        );
    }
    let rows = answer["processed_by"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                cell(&p["handler"]),
                cell(&p["outcome"]),
                short(&p["version"]),
                cell(&p["attempts"]),
            ]
        })
        .collect();
    table(&["HANDLER", "OUTCOME", "VERSION", "ATTEMPTS"], rows);
    fn walk(effects: &serde_json::Value, depth: usize) {
        for e in effects.as_array().into_iter().flatten() {
            let ev = &e["event"];
            println!(
                "{}-> {} ({}) on {} key {}",
                "  ".repeat(depth),
                cell(&ev["id"]),
                cell(&ev["type"]),
                cell(&ev["topic"]),
                cell(&ev["key"])
            );
            walk(&e["effects"], depth + 1);
        }
    }
    walk(&answer["effects"], 1);
    Ok(ExitCode::SUCCESS)
}

async fn handlers(args: HandlersArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.name {
        return handler_detail(name, &args.client).await;
    }
    let answer = call(&args.client, reqwest::Method::GET, "/v1/handlers", None).await?;
    if args.client.json {
        print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let columns = [
        "processed",
        "duplicates",
        "failed",
        "retries",
        "dead_lettered",
        "parked",
        "in_flight",
    ];
    let rows = answer["handlers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let lag: i64 = h["lag"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, v)| v.as_i64())
                .sum();
            let topics: Vec<&str> = h["config"]["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            [
                cell(&h["name"]),
                cell(&h["active_version"]),
                if h["running"] == true { "yes" } else { "no" }.into(),
                topics.join(","),
            ]
            .into_iter()
            .chain(columns.iter().map(|c| cell(&h["stats"][*c])))
            .chain(std::iter::once(lag.to_string()))
            .collect()
        })
        .collect();
    table(
        &[
            "HANDLER",
            "VERSION",
            "RUNNING",
            "TOPICS",
            "PROCESSED",
            "DUPLICATES",
            "FAILED",
            "RETRIES",
            "DEAD",
            "PARKED",
            "IN_FLIGHT",
            "LAG",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

fn run_test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let (events, sequence) = TestEvent::from_file(&args.event)?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.component
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "handler".into())
    });
    let mut options = RunOptions::default().handler(&name);
    if let Some(path) = &args.state {
        options = options.state_file(path)?;
    }
    if let Some(limits) = &args.limits {
        options.limits = serde_json::from_str::<Limits>(limits).context("--limits")?;
    }
    let expected = match &args.expect {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?,
            )
        }
        None => None,
    };

    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let harness = Harness::with_config(RuntimeConfig {
        cache_dir,
        max_concurrent_instances: 4,
        ..RuntimeConfig::default()
    })?;
    let component = harness.load(&args.component)?;
    let reports = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(harness.run_sequence(&component, &events, &options))
        .with_context(|| format!("running {}", args.component.display()))?;
    let json = if sequence {
        serde_json::Value::Array(reports.iter().map(|r| r.to_json()).collect())
    } else {
        reports
            .first()
            .map(|r| r.to_json())
            .unwrap_or(serde_json::Value::Null)
    };
    let text = if args.compact {
        serde_json::to_string(&json)?
    } else {
        serde_json::to_string_pretty(&json)?
    };
    println!("{text}");

    if let Some(expected) = expected {
        let differences = harness::compare(&expected, &json);
        if !differences.is_empty() {
            eprintln!(
                "MISMATCH against {}:",
                args.expect.unwrap_or_default().display()
            );
            for line in differences {
                eprintln!("  {line}");
            }
            return Ok(ExitCode::from(1));
        }
        eprintln!("ok: matches {}", args.expect.unwrap_or_default().display());
    }
    Ok(ExitCode::SUCCESS)
}
