//! `sluice bench`: each setup of `sluice-bench` in a process of its own,
//! then the table.

use std::process::ExitCode;

use anyhow::Context as _;
use sluice_bench as bench;

use crate::BenchArgs;

/// Runs each setup in a child process (its own CPU time and peak RSS),
/// then prints the table.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
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
