//! `sluice bench` runs on a tiny workload and prints its table: every
//! setup measured, with the ratios. (Benchmarks are not timed tests: the
//! numbers are not checked, only that they are there.)

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::workspace;

#[tokio::test]
async fn bench_runs_every_setup_on_a_tiny_workload() {
    let component = sluice::harness::build_components(
        workspace(),
        &["bench-guest"],
        &workspace().join("target").join("guests"),
    )
    .unwrap()
    .remove(0);
    // The Kafka + PostgreSQL setups too, where the servers are (always in
    // CI: a missing server fails there).
    let brokers = sluice_testkit::kafka_test_brokers().await;
    let postgres = match brokers {
        Some(_) => sluice_testkit::postgres_test_database().await,
        None => None,
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["bench", "--events", "300", "--keys", "7", "--component"])
        .arg(&component);
    let mut setups = vec!["raw", "native", "wasm", "naive"];
    if let (Some(brokers), Some(postgres)) = (&brokers, &postgres) {
        command.args(["--brokers", brokers, "--postgres", postgres]);
        setups.extend(["kafka-raw", "kafka-native", "kafka-wasm", "kafka-naive"]);
    }
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for setup in &setups {
        let row = rows
            .iter()
            .find(|r| r.first() == Some(setup))
            .unwrap_or_else(|| panic!("no {setup} row:\n{stdout}"));
        assert_eq!(row[1], "300", "{stdout}");
        let rate: f64 = row[2].parse().unwrap();
        assert!(rate > 0.0, "{stdout}");
    }
    // The consumers that commit effects report their latency.
    let wasm = rows.iter().find(|r| r.first() == Some(&"wasm")).unwrap();
    assert_ne!(wasm[5], "-", "{stdout}");
    // The machine's CPU per million events and how busy its cores were.
    let machine: f64 = wasm[7].parse().unwrap();
    let busy: f64 = wasm[8].trim_end_matches('%').parse().unwrap();
    // (Both from 10 ms ticks: on a tiny run only their presence counts.)
    assert!(machine >= 0.0 && busy >= 0.0, "{stdout}");
    assert!(stdout.contains("(c)/(b) wasm/native:"), "{stdout}");
    assert!(stdout.contains("(c)/(a) wasm/raw:"), "{stdout}");
    assert!(stdout.contains("(c)/(d) wasm/naive:"), "{stdout}");
    assert!(
        stdout.contains("hot swap, activate -> first event committed on the new version: median"),
        "{stdout}"
    );
    if brokers.is_some() {
        assert!(stdout.contains("kafka-(c)/(b) wasm/native:"), "{stdout}");
        let wasm = rows
            .iter()
            .find(|r| r.first() == Some(&"kafka-wasm"))
            .unwrap();
        assert_ne!(wasm[5], "-", "{stdout}");
        // Paced, the raw consumer reads while the producer publishes and
        // reports the broker's own latency.
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "bench",
                "--events",
                "300",
                "--rate",
                "1000",
                "--setup",
                "kafka-raw",
            ])
            .args(["--brokers", brokers.as_deref().unwrap()])
            .args(["--postgres", postgres.as_deref().unwrap()])
            .arg("--component")
            .arg(&component)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let raw: Vec<&str> = stdout
            .lines()
            .find(|l| l.starts_with("kafka-raw"))
            .unwrap_or_else(|| panic!("no kafka-raw row:\n{stdout}"))
            .split_whitespace()
            .collect();
        assert_eq!(raw[1], "300", "{stdout}");
        assert_ne!(raw[5], "-", "{stdout}");
    }
}
