//! The `sluice` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use sluice::harness::{self, Harness, RunOptions, TestEvent};
use sluice::runtime::{Limits, RuntimeConfig};

/// Sluice: event handlers as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a handler component against one event (or a sequence of events)
    /// and print the outcome,
    /// emitted events, state writes and logs as JSON.
    Test(TestArgs),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Test(args) => run_test(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
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
