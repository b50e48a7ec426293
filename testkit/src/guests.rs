//! The JavaScript and Python toolchains and the components built with them.
//!
//! A test asks for a component built from a handler source with
//! [`js_component`] or [`python_component`]; the toolchain is installed
//! from the registries on first use (`npm ci` in `guest-sdk/js` and the
//! handler's package, a venv at `guest-sdk/python/.venv` with the SDK's
//! pinned `requirements-dev.txt`), and the component is built into
//! `target/guests/{js,python}`, under a name that carries a digest of every
//! input, so that test processes share one build. Without `npm` (or
//! `python3`) on the `PATH`, the answer is `None` after a printed skip,
//! or a panic under `SLUICE_REQUIRE_SERVERS=1`, like a missing server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A language the guests are built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lang {
    /// JavaScript or TypeScript, with `guest-sdk/js` (componentize-js).
    Js,
    /// Python, with `guest-sdk/python` (componentize-py).
    Python,
}

impl Lang {
    fn dir(self) -> &'static str {
        match self {
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }
}

/// Built components (and toolchain checks) of this process: one build per
/// input, and one at a time, since each takes a core for seconds.
static BUILT: Mutex<BTreeMap<(Lang, PathBuf), Option<PathBuf>>> = Mutex::new(BTreeMap::new());

/// The component of the JavaScript/TypeScript handler module `source`
/// (relative to the workspace root), built with `sluice-build-js` after
/// `npm ci` in the SDK and in the package that holds `source`.
pub fn js_component(source: &str) -> Option<PathBuf> {
    build(Lang::Js, source)
}

/// The component of the Python handler module `source` (relative to the
/// workspace root), built with `python -m sluice_sdk.build` in the SDK's
/// venv.
pub fn python_component(source: &str) -> Option<PathBuf> {
    build(Lang::Python, source)
}

fn build(lang: Lang, source: &str) -> Option<PathBuf> {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let key = (lang, PathBuf::from(source));
    if let Some(done) = built.get(&key) {
        return done.clone();
    }
    let result = build_now(lang, source);
    built.insert(key, result.clone());
    result
}

fn build_now(lang: Lang, source: &str) -> Option<PathBuf> {
    let root = workspace_root();
    let source = root.join(source);
    let package = package_dir(lang, &source);
    let sdk = root.join("guest-sdk").join(lang.dir());
    let digest = inputs_digest(&[
        &package,
        &sdk.join("src"),
        &sdk.join("bin"),
        &root.join("wit"),
    ]);
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "handler".into());
    let out_dir = root.join("target").join("guests").join(lang.dir());
    let out = out_dir.join(format!("{stem}-{}.wasm", &digest[..16]));
    if out.is_file() {
        return Some(out);
    }
    std::fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("{}: {e}", out_dir.display()));
    let partial = out.with_extension("partial");
    match lang {
        Lang::Js => {
            js_toolchain()?;
            npm_ci(&sdk);
            if package != sdk {
                npm_ci(&package);
            }
            run(Command::new("node")
                .arg(sdk.join("bin/sluice-build-js.js"))
                .arg(&source)
                .arg("-o")
                .arg(&partial)
                .arg("--quiet")
                .current_dir(&package));
        }
        Lang::Python => {
            let python = python_env()?;
            run(Command::new(python)
                .args(["-m", "sluice_sdk.build"])
                .arg(&source)
                .arg("-o")
                .arg(&partial)
                .current_dir(root));
        }
    }
    std::fs::rename(&partial, &out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    Some(out)
}

/// The directory whose package builds `source`: for JavaScript the nearest
/// one with a `package.json`, for Python the source's own directory.
fn package_dir(lang: Lang, source: &Path) -> PathBuf {
    let parent = source.parent().unwrap_or(Path::new("."));
    match lang {
        Lang::Js => parent
            .ancestors()
            .find(|d| d.join("package.json").is_file())
            .unwrap_or(parent)
            .to_owned(),
        Lang::Python => parent.to_owned(),
    }
}

/// `npm` and `node` on the `PATH`, or a skip.
pub fn js_toolchain() -> Option<()> {
    for tool in ["node", "npm"] {
        if let Err(e) = Command::new(tool).arg("--version").output() {
            crate::unavailable(
                &format!("the JavaScript toolchain ({tool})"),
                "PATH",
                &e.to_string(),
            );
            return None;
        }
    }
    Some(())
}

/// Installs `dir`'s locked npm dependencies when `node_modules` is older
/// than its `package-lock.json` (or absent).
pub fn npm_ci(dir: &Path) {
    let installed = dir.join("node_modules/.package-lock.json");
    if modified(&installed) >= modified(&dir.join("package-lock.json")) && installed.exists() {
        return;
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir));
}

/// The interpreter of the Python SDK's venv (`guest-sdk/python/.venv`),
/// created with the SDK and its pinned build and test tools when absent;
/// `None` (a skip) without `python3`.
pub fn python_env() -> Option<PathBuf> {
    let sdk = workspace_root().join("guest-sdk/python");
    let venv = sdk.join(".venv");
    let python = venv.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import componentize_py, pytest, sluice_sdk"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready() {
        return Some(python);
    }
    if let Err(e) = Command::new("python3").arg("--version").output() {
        crate::unavailable("the Python toolchain (python3)", "PATH", &e.to_string());
        return None;
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(sdk.join("requirements-dev.txt"))
        .arg("-e")
        .arg(&sdk));
    assert!(
        ready(),
        "the venv {} lacks the SDK's tools after installing them",
        venv.display()
    );
    Some(python)
}

/// Runs `command`, panicking with its output when it fails.
pub fn run(command: &mut Command) {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A digest of the paths and contents of every file under `dirs`, build
/// outputs and installed packages left out.
fn inputs_digest(dirs: &[&Path]) -> String {
    let mut files = Vec::new();
    for dir in dirs {
        collect(dir, &mut files);
    }
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.to_string_lossy().as_bytes());
        hash.update(std::fs::read(&file).unwrap_or_default());
    }
    hex::encode(hash.finalize())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(
            name.as_str(),
            "node_modules" | "__pycache__" | ".venv" | "build" | "target" | ".pytest_cache"
        ) || name.ends_with(".wasm")
        {
            continue;
        }
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
