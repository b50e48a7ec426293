//! The `sluice` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use sluice::harness::{self, Harness, RunOptions, TestEvent};
use sluice::runtime::Limits;

/// Sluice: event handlers as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a handler component against one event and print the outcome,
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
    let event = TestEvent::from_file(&args.event)?;
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

    let harness = Harness::new()?;
    let report = harness
        .run_file_blocking(&args.component, &event, &options)
        .with_context(|| format!("running {}", args.component.display()))?;
    let json = report.to_json();
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
