//! The outbox relay, one loop for both targets. To the store's log
//! ([`Target::Log`], the embedded backbone) it moves committed outbox rows
//! into their topics, in outbox order (which keeps every key's order), and
//! marks them delivered in the same transaction. To an external broker
//! ([`Target::Broker`]) it publishes rows in outbox order and marks them
//! delivered only after the broker acknowledged them; one host instance at
//! a time does it, by holding a lease in the store. Either way it is woken
//! by the committer as soon as a commit wrote outbox rows, and polls as a
//! fallback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Signals;
use crate::backbone::Publisher;
use crate::store::Store;

/// The lease of the relay to an external broker.
pub const RELAY_LEASE: &str = "outbox-relay";

/// Where the relay moves outbox rows.
pub enum Target {
    /// The store's own log; topics created on first use get
    /// `default_partitions`.
    Log {
        /// Partitions of topics created on first use.
        default_partitions: u32,
    },
    /// An external broker, while this instance (`holder`) holds the relay
    /// lease. Rows are marked delivered only after the broker acknowledged
    /// them: a crash in between publishes them again, with the same ids (at
    /// least once). Waiting instances take over when the holder stops
    /// renewing.
    Broker {
        /// The broker's producer.
        publisher: Arc<dyn Publisher>,
        /// This instance, for the lease.
        holder: String,
    },
}

/// Runs until `shutdown` turns true, with one last round after it so that
/// nothing committed waits for the next start. Failed rounds are retried
/// with backoff.
pub async fn run(
    store: Arc<dyn Store>,
    target: Target,
    signals: Signals,
    batch: u32,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut target = match target {
        Target::Log { default_partitions } => Round::Log { default_partitions },
        Target::Broker { publisher, holder } => Round::Broker {
            publisher,
            lease: Lease::new(&holder, (poll * 10).max(Duration::from_secs(5))),
        },
    };
    let mut failures = 0u32;
    loop {
        match target.once(&*store, &signals, batch).await {
            Ok(moved) => {
                failures = 0;
                // A full batch likely means more: go again at once.
                if moved >= batch as usize && !*shutdown.borrow() {
                    continue;
                }
            }
            Err(error) => {
                failures += 1;
                let delay = Duration::from_millis(50u64 << failures.min(6));
                tracing::error!("outbox relay {target} failed, retrying in {delay:?}: {error}");
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

/// A [`Target`] with what its rounds keep.
enum Round {
    Log {
        default_partitions: u32,
    },
    Broker {
        publisher: Arc<dyn Publisher>,
        lease: Lease,
    },
}

impl std::fmt::Display for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Log { .. } => "to the log",
            Self::Broker { .. } => "to the broker",
        })
    }
}

impl Round {
    /// One round: `Ok(n)` rows moved (0 when not the lease holder).
    async fn once(
        &mut self,
        store: &dyn Store,
        signals: &Signals,
        batch: u32,
    ) -> Result<usize, RelayError> {
        match self {
            Self::Log { default_partitions } => {
                let appended = store.relay_outbox(batch, *default_partitions).await?;
                if let Some(last) = appended.iter().map(|a| a.seq).max() {
                    signals.appended(last);
                    tracing::debug!(events = appended.len(), "relayed outbox rows to the log");
                }
                Ok(appended.len())
            }
            Self::Broker { publisher, lease } => {
                relay_to_broker(store, &**publisher, batch, lease).await
            }
        }
    }
}

/// Why a round of the relay failed.
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

/// One round to a broker: `Ok(n)` rows published (0 when not the lease
/// holder).
async fn relay_to_broker(
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
