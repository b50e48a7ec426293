//! `sluice test` as a user runs it: the real binary, real components, and
//! the exit codes and messages a script would rely on.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{Value, json};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<Vec<PathBuf>> = OnceLock::new();
    const NAMES: &[&str] = &["inventory", "notifier", "payments", "other-world"];
    let built = BUILT.get_or_init(|| {
        sluice::harness::build_components(
            workspace(),
            NAMES,
            &workspace().join("target").join("guests"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    });
    built[NAMES.iter().position(|n| *n == name).unwrap()].clone()
}

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

fn sluice(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("test")
        .args(args)
        // Keep the compile cache inside the build tree, not in ~/.cache.
        .env(
            "SLUICE_CACHE_DIR",
            workspace().join("target").join("guests").join("compiled"),
        )
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Files {
    _dir: tempfile::TempDir,
    event: PathBuf,
    state: PathBuf,
    good: PathBuf,
    bad: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let event = write(
        dir.path(),
        "event.json",
        &json!({
            "id": "o-1", "type": "order.placed", "key": "A", "topic": "orders",
            "data": {"order_id": "o-1", "sku": "A", "qty": 2}
        }),
    );
    let state = write(dir.path(), "state.json", &json!({"available": 5}));
    let good = write(
        dir.path(),
        "good.json",
        &json!({
            "outcome": {"kind": "ok"},
            "state_writes": {"available": 3, "reserved": 2},
            "emitted": [{"type": "stock.reserved", "key": "o-1", "data": {"remaining": 3}}]
        }),
    );
    let bad = write(
        dir.path(),
        "bad.json",
        &json!({
            "outcome": {"kind": "ok"},
            "state_writes": {"available": 99},
            "emitted": []
        }),
    );
    Files {
        _dir: dir,
        event,
        state,
        good,
        bad,
    }
}

#[test]
fn prints_the_report_and_passes_a_matching_expectation() {
    let f = files();
    let wasm = component("inventory");
    let out = sluice(&[
        wasm.as_os_str(),
        "--event".as_ref(),
        f.event.as_os_str(),
        "--state".as_ref(),
        f.state.as_os_str(),
        "--expect".as_ref(),
        f.good.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"]["kind"], "ok");
    assert_eq!(report["emitted"][0]["type"], "stock.reserved");
    // The handler name defaults to the file stem.
    assert_eq!(report["emitted"][0]["source"], "sluice://handler/inventory");
    assert_eq!(report["logs"][0]["message"], "reserved 2 x A for o-1");
    assert!(text(&out.stderr).contains("ok: matches"));
}

#[test]
fn compiled_components_are_cached_between_runs() {
    let f = files();
    let cache = tempfile::tempdir().unwrap();
    let wasm = component("inventory");
    for _ in 0..2 {
        let out = sluice(&[
            wasm.as_os_str(),
            "--event".as_ref(),
            f.event.as_os_str(),
            "--cache-dir".as_ref(),
            cache.path().as_os_str(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let engine_dirs: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(engine_dirs.len(), 1);
    let files: Vec<_> = std::fs::read_dir(engine_dirs[0].as_ref().unwrap().path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(".cwasm"), "{files:?}");
}

#[test]
fn a_mismatch_exits_1_with_a_readable_diff() {
    let f = files();
    let wasm = component("inventory");
    let out = sluice(&[
        wasm.as_os_str(),
        "--event".as_ref(),
        f.event.as_os_str(),
        "--state".as_ref(),
        f.state.as_os_str(),
        "--expect".as_ref(),
        f.bad.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("MISMATCH"), "{err}");
    assert!(
        err.contains("$.state_writes.available: expected 99, got 3"),
        "{err}"
    );
    assert!(
        err.contains("$.emitted: expected 0 element(s), got 1"),
        "{err}"
    );
    // The report is still printed, for inspection.
    assert!(serde_json::from_slice::<Value>(&out.stdout).is_ok());
}

#[test]
fn limits_can_be_set_and_outcomes_are_reported() {
    let f = files();
    let wasm = component("inventory");
    // Without state the order is rejected, not an error.
    let out = sluice(&[
        wasm.as_os_str(),
        "--event".as_ref(),
        f.event.as_os_str(),
        "--limits".as_ref(),
        r#"{"timeout_ms": 2000, "max_emits": 0}"#.as_ref(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"]["kind"], "limit");
    assert_eq!(report["outcome"]["limit"], "emit-count");

    let out = sluice(&[
        wasm.as_os_str(),
        "--event".as_ref(),
        f.event.as_os_str(),
        "--limits".as_ref(),
        r#"{"timeout": 1}"#.as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown field `timeout`"));
}

#[test]
fn bad_inputs_exit_2_with_a_clear_error() {
    let f = files();
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").unwrap();
    let out = sluice(&[garbage.as_os_str(), "--event".as_ref(), f.event.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a WebAssembly component"),
        "{}",
        text(&out.stderr)
    );

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = sluice(&[core.as_os_str(), "--event".as_ref(), f.event.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("core WebAssembly module"),
        "{}",
        text(&out.stderr)
    );

    let other = component("other-world");
    let out = sluice(&[other.as_os_str(), "--event".as_ref(), f.event.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("does not target the sluice:handler/handler@0.1.0 world"),
        "{err}"
    );

    let bad_event = write(dir.path(), "bad-event.json", &json!({"data": {}}));
    let wasm = component("inventory");
    let out = sluice(&[wasm.as_os_str(), "--event".as_ref(), bad_event.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing field `type`"),
        "{}",
        text(&out.stderr)
    );

    let missing = dir.path().join("nope.wasm");
    let out = sluice(&[missing.as_os_str(), "--event".as_ref(), f.event.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nope.wasm"),
        "{}",
        text(&out.stderr)
    );
}

/// Every example under `examples/events` (`<handler>-<case>.event.json`,
/// optional `.state.json`, and `.expect.json`) passes, as the README shows.
#[test]
fn documented_examples_match_their_expectations() {
    let dir = workspace().join("examples").join("events");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(case) = name.strip_suffix(".event.json") else {
            continue;
        };
        let handler = case.split('-').next().unwrap();
        // `greeter-js-*` and `greeter-py-*` are the JavaScript and Python
        // examples' cases; the others are the Rust examples'.
        let wasm = if case.starts_with("greeter-js-") {
            match sluice_testkit::guests::js_component("examples/greeter-js/src/handler.js") {
                Some(wasm) => wasm,
                None => continue,
            }
        } else if case.starts_with("greeter-py-") {
            match sluice_testkit::guests::python_component("examples/greeter-py/greeter.py") {
                Some(wasm) => wasm,
                None => continue,
            }
        } else {
            component(handler)
        };
        let mut args: Vec<std::ffi::OsString> = vec![
            wasm.into(),
            "--name".into(),
            handler.into(),
            "--event".into(),
            path.clone().into(),
        ];
        let state = dir.join(format!("{case}.state.json"));
        if state.exists() {
            args.extend(["--state".into(), state.into()]);
        }
        args.extend([
            "--expect".into(),
            dir.join(format!("{case}.expect.json")).into(),
        ]);
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let out = sluice(&refs);
        assert!(out.status.success(), "{case}: {}", text(&out.stderr));
        checked += 1;
    }
    assert!(checked >= 5, "examples found under {}", dir.display());
}

#[test]
fn run_refuses_a_public_admin_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[admin]\naddr = \"0.0.0.0:18089\"\n",
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let out = run_with(&config);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to serve the admin API on 0.0.0.0:18089 without a token"),
        "{err}"
    );
}

/// `sluice run --config CONFIG` without an admin token, to completion.
fn run_with(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(config)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn run_reports_an_unusable_store_clearly() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the database directory should be.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}/sluice.db\"\n[admin]\naddr = \"127.0.0.1:0\"\n",
            blocker.display()
        ),
    )
    .unwrap();
    let out = run_with(&config);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("opening the store sqlite://"), "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[store]\nurl = \"mysql://nowhere\"\n").unwrap();
    let out = run_with(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unsupported scheme"),
        "{}",
        text(&out.stderr)
    );
    // An unreachable database: a clear error naming it, not a hang.
    let gone = dir.path().join("gone.toml");
    std::fs::write(
        &gone,
        "[store]\nurl = \"postgres://postgres@127.0.0.1:1/none\"\n[admin]\naddr = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = run_with(&gone);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("opening the store postgres://postgres@127.0.0.1:1/none"),
        "{}",
        text(&out.stderr)
    );

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[stor]\nurl = \"x\"\n").unwrap();
    let out = run_with(&typo);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown field `stor`"),
        "{}",
        text(&out.stderr)
    );
}
