//! Helpers for Sluice's cross-crate integration tests: build the example
//! handlers and the hostile test fixtures as real `wasm32-wasip2`
//! components, once per test process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Every guest crate the tests use.
pub const GUESTS: &[&str] = &[
    "inventory",
    "notifier",
    "payments",
    "hostile",
    "other-world",
    "chain",
    "chain-v2",
];

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
}

/// Paths of the built guest components, by crate name. Builds them on the
/// first call (into `target/guests`, apart from the test build's own target
/// directory so that the nested cargo does not wait on its lock).
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<Vec<PathBuf>, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target_dir = workspace_root().join("target").join("guests");
        sluice::harness::build_components(workspace_root(), GUESTS, &target_dir)
            .map_err(|e| e.to_string())
    });
    match built {
        Ok(paths) => match GUESTS.iter().position(|g| *g == name) {
            Some(i) => paths[i].clone(),
            None => panic!("{name} is not one of the test guests {GUESTS:?}"),
        },
        Err(e) => panic!("cannot build the guest components: {e}"),
    }
}
