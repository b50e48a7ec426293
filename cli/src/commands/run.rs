//! `sluice run`: the host, until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use sluice::admin;
use sluice::config::Config;
use sluice::pipeline::{Pipeline, Signals};
use sluice::runtime::Runtime;
use sluice::store::{self, StoreOptions};

use crate::RunArgs;

/// Serves the admin API and runs the handlers and the relay of the
/// configuration; on a stop signal, finishes the events in flight.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let path = args
        .config
        .or_else(|| Some(PathBuf::from("sluice.toml")).filter(|p| p.exists()));
    let mut config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let token = args.admin_token.filter(|t| !t.is_empty());
    if token.is_none() && !config.admin.addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve the admin API on {} without a token: set --admin-token or SLUICE_ADMIN_TOKEN, or listen on a loopback address",
            config.admin.addr
        );
    }
    if config.runtime.cache_dir.is_none() {
        config.runtime.cache_dir = Some(PathBuf::from(".sluice/cache"));
    }
    tracing::info!(
        config = %path.as_ref().map_or("(embedded defaults)".into(), |p| p.display().to_string()),
        store = %config.store.url,
        "starting sluice"
    );
    let store = store::open(
        &config.store.url,
        &StoreOptions {
            synchronous: config.store.synchronous,
            max_connections: config.store.max_connections,
        },
    )
    .await
    .with_context(|| format!("opening the store {}", config.store.url))?;
    let runtime = Arc::new(Runtime::new(config.runtime.clone())?);
    let signals = Signals::new();
    let pipeline =
        Arc::new(Pipeline::start(&config, store.clone(), runtime, signals.clone()).await?);
    pipeline
        .follow_store()
        .await
        .context("listening for the store's notices")?;
    let listener = tokio::net::TcpListener::bind(config.admin.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.admin.addr))?;
    tracing::info!("admin API listening on http://{}", listener.local_addr()?);
    let state = admin::AppState {
        store,
        signals,
        default_partitions: config.pipeline.default_partitions,
        max_body_bytes: config.admin.max_body_bytes,
        token,
        max_upload_bytes: config.admin.max_upload_bytes,
        pipeline: Some(pipeline.clone()),
    };
    admin::serve(listener, admin::app(state), shutdown_signal())
        .await
        .context("admin API server failed")?;
    tracing::info!("shutting down: finishing in-flight events");
    pipeline.shutdown().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
