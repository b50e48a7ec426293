//! `sluice bench` runs on a tiny workload and prints its table: every
//! setup measured, with the ratios. (Benchmarks are not timed tests: the
//! numbers are not checked, only that they are there.)

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::workspace;

#[test]
fn bench_runs_every_setup_on_a_tiny_workload() {
    let component = sluice::harness::build_components(
        workspace(),
        &["bench-guest"],
        &workspace().join("target").join("guests"),
    )
    .unwrap()
    .remove(0);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bench", "--events", "300", "--keys", "7", "--component"])
        .arg(&component)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for setup in ["raw", "native", "wasm", "naive"] {
        let row = rows
            .iter()
            .find(|r| r.first() == Some(&setup))
            .unwrap_or_else(|| panic!("no {setup} row:\n{stdout}"));
        assert_eq!(row[1], "300", "{stdout}");
        let rate: f64 = row[2].parse().unwrap();
        assert!(rate > 0.0, "{stdout}");
    }
    // The consumers that commit effects report their latency.
    let wasm = rows.iter().find(|r| r.first() == Some(&"wasm")).unwrap();
    assert_ne!(wasm[5], "-", "{stdout}");
    assert!(stdout.contains("(c)/(b) wasm/native:"), "{stdout}");
    assert!(stdout.contains("(c)/(a) wasm/raw:"), "{stdout}");
    assert!(stdout.contains("(c)/(d) wasm/naive:"), "{stdout}");
}
