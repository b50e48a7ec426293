//! Helpers shared by the tests that run `sluice run` as real processes.

// Each test binary uses its own subset of these.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The chain test fixture, built as a component.
pub fn chain_component() -> PathBuf {
    sluice::harness::build_components(
        workspace(),
        &["chain"],
        &workspace().join("target").join("guests"),
    )
    .unwrap()
    .remove(0)
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `sluice run --config CONFIG` process, its output appended to `log`
/// across restarts; killed (SIGKILL) when dropped.
pub struct Host {
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Host {
    /// A host not started yet.
    pub fn new(config: PathBuf, log: PathBuf) -> Self {
        Self {
            config,
            log,
            child: None,
        }
    }

    /// Starts the process.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
        }
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `{base}/healthz` answers, or fails with the host's log.
pub async fn wait_healthy(client: &reqwest::Client, base: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the host did not come up:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
