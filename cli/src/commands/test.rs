//! `sluice test`: a component against events, locally, no host.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use sluice::harness::{self, Harness, RunOptions, TestEvent};
use sluice::runtime::{Limits, RuntimeConfig};

use crate::TestArgs;

/// The per-user cache directory, if the environment names a home.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("sluice"))
}

/// Runs the component on the events and prints the reports; exit status 1
/// when they do not match `--expect`.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
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
