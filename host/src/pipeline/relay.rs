//! The outbox relays. [`run`] serves the embedded log: it moves committed
//! outbox rows into their topics, in outbox order (which keeps every key's
//! order), and marks them delivered in the same transaction.
//! [`run_to_broker`] serves an external broker (Kafka): it publishes rows in
//! outbox order and marks them delivered only after the broker acknowledged
//! them; one host instance at a time does it, by holding a lease in the
//! store. Both are woken by the committer as soon as a commit wrote outbox
//! rows, and poll as a fallback.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Signals;
use crate::broker::Publisher;
use crate::store::Store;

/// The lease of the relay to an external broker.
pub const RELAY_LEASE: &str = "outbox-relay";

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

/// Publishes outbox rows to `publisher` while this instance (`holder`)
/// holds the relay lease, until `shutdown` turns true. Rows are marked
/// delivered only after the broker acknowledged them: a crash in between
/// publishes them again, with the same ids (at least once). Waiting
/// instances take over when the holder stops renewing (after `lease`).
pub async fn run_to_broker(
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    signals: Signals,
    batch: u32,
    poll: Duration,
    holder: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let ttl =
        i64::try_from((poll * 10).max(Duration::from_secs(5)).as_millis()).unwrap_or(i64::MAX);
    let mut failures = 0u32;
    loop {
        match relay_once(&*store, &*publisher, batch, &holder, ttl).await {
            Ok(moved) => {
                failures = 0;
                if moved >= batch as usize && !*shutdown.borrow() {
                    continue;
                }
            }
            Err(error) => {
                failures += 1;
                let delay = Duration::from_millis(50u64 << failures.min(6));
                tracing::error!(
                    "outbox relay to the broker failed, retrying in {delay:?}: {error}"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = signals.relay.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Why a round of the relay to a broker failed.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Broker(#[from] crate::broker::Error),
}

/// One round: `Ok(n)` rows published (0 when not the lease holder).
async fn relay_once(
    store: &dyn Store,
    publisher: &dyn Publisher,
    batch: u32,
    holder: &str,
    ttl_ms: i64,
) -> Result<usize, RelayError> {
    if !store.lease(RELAY_LEASE, holder, ttl_ms).await? {
        return Ok(0);
    }
    let rows = store.outbox_pending(batch).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let (seqs, events): (Vec<i64>, Vec<_>) = rows.into_iter().unzip();
    publisher.publish(&events).await?;
    store.outbox_delivered(&seqs).await?;
    tracing::debug!(events = events.len(), "relayed outbox rows to the broker");
    Ok(events.len())
}
