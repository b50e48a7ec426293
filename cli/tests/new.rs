//! `sluice new` as a newcomer uses it: for each language, scaffold a
//! project, run the build and unit-test commands its README gives, then run
//! the built component with `sluice test` and the project's expectation
//! file. A language whose toolchain is missing (node/npm, python3 with venv,
//! the wasm32-wasip2 Rust target) is skipped with the reason printed, unless
//! `SLUICE_REQUIRE_SERVERS=1`, where that fails the test.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use sluice_testkit::unavailable;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Where the Rust project builds (shared with the other tests' guests, so
/// that its dependencies are built once) and `sluice test` caches compiled
/// components.
fn guests_dir() -> PathBuf {
    workspace().join("target").join("guests")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd`, panicking with its output when it fails; prints its time.
fn run(what: &str, cmd: &mut Command) -> Output {
    let start = Instant::now();
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

/// Whether `program args` runs and exits 0; its stdout if so.
fn probe(program: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(text(&out.stdout)),
        Ok(out) => Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            text(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {program}: {e}")),
    }
}

/// The commands a project's README gives.
struct Readme {
    build: String,
    unit_test: String,
    sluice_test: String,
}

fn readme(project: &Path) -> Readme {
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let command = |label: &str| {
        let start = readme
            .find(&format!("{label} `"))
            .unwrap_or_else(|| panic!("README.md has no {label:?}:\n{readme}"))
            + label.len()
            + 2;
        let len = readme[start..].find('`').unwrap();
        readme[start..start + len].to_owned()
    };
    Readme {
        build: command("Build:"),
        unit_test: command("Unit tests:"),
        sluice_test: command("Run the component:"),
    }
}

/// `sluice new NAME --lang LANG` into a fresh temporary directory.
fn scaffold(lang: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join(name);
    let out = run(
        &format!("sluice new --lang {lang}"),
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["new", name, "--lang", lang, "--dir"])
            .arg(&project),
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("next"), "{stdout}");
    (tmp, project)
}

/// Runs a README command line with `sh` in the project.
fn shell(what: &str, project: &Path, line: &str, env: &[(&str, &Path)]) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(line).current_dir(project);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&format!("{what}: `{line}`"), &mut cmd);
}

/// Runs the README's `sluice test ...` line with this build's binary, the
/// component's path resolved in `component_dir` when given. The compile
/// cache is used only for components that build reproducibly (Rust): the
/// JS and Python builds differ every time, so caching them would only fill
/// the disk.
fn sluice_test(project: &Path, line: &str, component_dir: Option<&Path>, cache: bool) {
    let args: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(args[..2], ["sluice", "test"], "{line}");
    assert!(line.contains("--expect events/greet.expect.json"), "{line}");
    let mut component = PathBuf::from(args[2]);
    if let Some(dir) = component_dir {
        component = dir.join(component.file_name().unwrap());
    }
    let out = run(
        "sluice test",
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("test")
            .arg(&component)
            .args(&args[3..])
            .arg("--compact")
            .args((!cache).then_some("--no-cache"))
            .current_dir(project)
            .env("SLUICE_CACHE_DIR", guests_dir().join("compiled")),
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ok: matches events/greet.expect.json"),
        "{stderr}"
    );
}

#[test]
fn rust_project() {
    let sysroot = match probe("rustc", &["--print", "sysroot"]) {
        Ok(s) => PathBuf::from(s.trim()),
        Err(e) => return unavailable("rustc", "PATH", &e),
    };
    if !sysroot.join("lib/rustlib/wasm32-wasip2").is_dir() {
        return unavailable(
            "the wasm32-wasip2 Rust target",
            &sysroot.display().to_string(),
            "not installed (rustup target add wasm32-wasip2)",
        );
    }
    let (_tmp, project) = scaffold("rust", "new-rust");
    // The workspace's versions of the dependencies, already built in the
    // shared target directory; cargo drops what the project does not use.
    std::fs::copy(workspace().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let readme = readme(&project);
    let target = guests_dir();
    let env = [("CARGO_TARGET_DIR", target.as_path())];
    shell("build", &project, &readme.build, &env);
    shell("unit tests", &project, &readme.unit_test, &env);
    // The README's path is under the project's own target/.
    assert!(
        readme
            .sluice_test
            .contains("target/wasm32-wasip2/release/new_rust.wasm"),
        "{}",
        readme.sluice_test
    );
    sluice_test(
        &project,
        &readme.sluice_test,
        Some(&target.join("wasm32-wasip2").join("release")),
        true,
    );
}

#[test]
fn js_project() {
    match probe("node", &["--version"]) {
        Ok(v) => {
            let major: u32 = v
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 20 {
                return unavailable("Node 20 or later", "PATH", &format!("node is {}", v.trim()));
            }
        }
        Err(e) => return unavailable("node", "PATH", &e),
    }
    if let Err(e) = probe("npm", &["--version"]) {
        return unavailable("npm", "PATH", &e);
    }
    let (_tmp, project) = scaffold("js", "new-js");
    let readme = readme(&project);
    assert_eq!(readme.build, "npm run build");
    shell("build", &project, &readme.build, &[]);
    shell("unit tests", &project, &readme.unit_test, &[]);
    sluice_test(&project, &readme.sluice_test, None, false);
}

#[test]
fn python_project() {
    let check = "import sys, venv, ensurepip; assert sys.version_info >= (3, 10), sys.version";
    if let Err(e) = probe("python3", &["-c", check]) {
        return unavailable("python3 (3.10+, with venv and ensurepip)", "PATH", &e);
    }
    let (_tmp, project) = scaffold("python", "new-py");
    let readme = readme(&project);
    assert_eq!(readme.build, "python3 build.py");
    shell("build", &project, &readme.build, &[]);
    shell("unit tests", &project, &readme.unit_test, &[]);
    sluice_test(&project, &readme.sluice_test, None, false);
}

#[test]
fn refuses_a_checkout_without_the_sdk_and_a_non_empty_dir() {
    let tmp = tempfile::tempdir().unwrap();
    for (lang, marker) in [
        ("rust", "guest-sdk/Cargo.toml"),
        ("ts", "guest-sdk/js/package.json"),
        ("py", "guest-sdk/python/pyproject.toml"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["new", "x", "--lang", lang, "--sdk"])
            .arg(tmp.path())
            .arg("--dir")
            .arg(tmp.path().join("x"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains(marker), "{lang}: {stderr}");
        assert!(!tmp.path().join("x").exists());
    }
    std::fs::write(tmp.path().join("file"), "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["new", "x", "--lang", "python", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not empty"));
}
