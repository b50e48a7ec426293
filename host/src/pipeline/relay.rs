//! The outbox relays. [`run`] serves the embedded log: it moves committed
//! outbox rows into their topics, in outbox order (which keeps every key's
//! order), and marks them delivered in the same transaction.
//! [`run_to_broker`] serves an external broker (Kafka): it publishes rows in
//! outbox order and marks them delivered only after the broker acknowledged
//! them; one host instance at a time does it, by holding a lease in the
//! store. Both are woken by the committer as soon as a commit wrote outbox
//! rows, and poll as a fallback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Signals;
use crate::backbone::Publisher;
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
    let mut lease = Lease::new(&holder, (poll * 10).max(Duration::from_secs(5)));
    let mut failures = 0u32;
    loop {
        match relay_once(&*store, &*publisher, batch, &mut lease).await {
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
    Broker(#[from] crate::backbone::Error),
}

/// This instance's hold on [`RELAY_LEASE`]. It is renewed in the store
/// only once a third of its ttl has passed, not on every round: under load
/// the relay runs a round per commit, and each renewal is a durable write.
/// A round therefore starts with at least two thirds of the ttl left.
struct Lease {
    holder: String,
    ttl: Duration,
    /// Until when the store has it ours, by this host's clock (counted from
    /// before the renewal was asked).
    held_until: Option<Instant>,
}

impl Lease {
    fn new(holder: &str, ttl: Duration) -> Self {
        Self {
            holder: holder.to_owned(),
            ttl,
            held_until: None,
        }
    }

    /// Whether this instance holds the lease now, renewing it if due.
    async fn hold(&mut self, store: &dyn Store) -> crate::store::Result<bool> {
        let asked = Instant::now();
        if self
            .held_until
            .is_some_and(|until| until.saturating_duration_since(asked) > self.ttl * 2 / 3)
        {
            return Ok(true);
        }
        self.held_until = None;
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let held = store.lease(RELAY_LEASE, &self.holder, ttl_ms).await?;
        self.held_until = held.then(|| asked + self.ttl);
        Ok(held)
    }
}

/// One round: `Ok(n)` rows published (0 when not the lease holder).
async fn relay_once(
    store: &dyn Store,
    publisher: &dyn Publisher,
    batch: u32,
    lease: &mut Lease,
) -> Result<usize, RelayError> {
    if !lease.hold(store).await? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use crate::store::sqlite::SqliteStore;

    async fn expires_at(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT expires_at FROM leases WHERE name = ?")
            .bind(RELAY_LEASE)
            .fetch_one(store.pool())
            .await
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_lease_is_renewed_once_a_third_of_its_ttl_has_passed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqliteStore::open(&url, &StoreOptions::default()).await?;
        let mut mine = Lease::new("a", Duration::from_millis(600));
        let mut theirs = Lease::new("b", Duration::from_millis(600));
        assert!(mine.hold(&store).await?);
        let first = expires_at(&store).await;
        assert!(first > 0);
        // Within the first third: no write.
        assert!(mine.hold(&store).await?);
        assert_eq!(expires_at(&store).await, first);
        assert!(!theirs.hold(&store).await?);
        // Past it: renewed, and still not the other holder's.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(mine.hold(&store).await?);
        assert!(expires_at(&store).await > first);
        assert!(!theirs.hold(&store).await?);
        // Not renewed at all: the other holder takes it after the ttl.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(theirs.hold(&store).await?);
        assert!(mine.hold(&store).await.map(|held| !held)?);
        Ok(())
    }
}
