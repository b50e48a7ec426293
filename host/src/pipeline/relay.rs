//! The outbox relay of the embedded log: moves committed outbox rows into
//! their topics, in outbox order (which keeps every key's order), and marks
//! them delivered in the same transaction. It is woken by the committer as
//! soon as a commit wrote outbox rows, and polls as a fallback.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Signals;
use crate::store::Store;

/// Runs until `shutdown` turns true.
pub async fn run(
    store: Arc<dyn Store>,
    signals: Signals,
    batch: u32,
    default_partitions: u32,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        match store.relay_outbox(batch, default_partitions).await {
            Ok(appended) if !appended.is_empty() => {
                failures = 0;
                if let Some(last) = appended.iter().map(|a| a.seq).max() {
                    signals.appended(last);
                }
                tracing::debug!(events = appended.len(), "relayed outbox rows to the log");
                if *shutdown.borrow() {
                    return;
                }
                // A full batch likely means more: go again at once.
                if appended.len() as u32 >= batch {
                    continue;
                }
            }
            Ok(_) => failures = 0,
            Err(error) => {
                failures += 1;
                let delay = Duration::from_millis(50u64 << failures.min(6));
                tracing::error!("outbox relay failed, retrying in {delay:?}: {error}");
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        tokio::select! {
            _ = signals.relay.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            // One last pass so that nothing committed waits for the next start.
            if let Ok(appended) = store.relay_outbox(batch, default_partitions).await
                && let Some(last) = appended.iter().map(|a| a.seq).max()
            {
                signals.appended(last);
            }
            return;
        }
    }
}
