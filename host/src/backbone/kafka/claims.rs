//! A subscription's partition claims, kept in the store: each assigned
//! partition is claimed (with a new epoch) and read from the position the
//! store holds, inside the rebalance itself.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::Store;

/// The store's side of a subscription: its partition claims (see
/// [`crate::store::Claims::claim_partitions`]). Called on the
/// subscription's thread, during rebalances too, so it may block.
pub trait ClaimStore: Send + Sync {
    /// Claims `partitions` of `topic` for the consumer `owner` and reads
    /// their positions: partition → (last offset done, epoch).
    fn claim(
        &self,
        topic: &str,
        partitions: &[i32],
        owner: &str,
    ) -> std::result::Result<HashMap<i32, (Option<i64>, i64)>, String>;

    /// The latest claim of each partition: (topic, partition, owner).
    fn owners(&self) -> std::result::Result<Vec<(String, i32, String)>, String>;
}

/// A shared [`ClaimStore`].
pub type Claims = Arc<dyn ClaimStore>;

/// The claims of one handler's subscription, in the store; blocks the
/// subscription's thread on the tokio runtime.
pub(super) struct StoreClaims {
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) store: Arc<dyn Store>,
    pub(super) handler: String,
}

impl ClaimStore for StoreClaims {
    fn claim(
        &self,
        topic: &str,
        partitions: &[i32],
        owner: &str,
    ) -> Result<HashMap<i32, (Option<i64>, i64)>, String> {
        self.runtime
            .block_on(
                self.store
                    .claim_partitions(&self.handler, topic, partitions, owner),
            )
            .map_err(|e| e.to_string())
    }

    fn owners(&self) -> Result<Vec<(String, i32, String)>, String> {
        self.runtime
            .block_on(self.store.partition_owners(&self.handler))
            .map_err(|e| e.to_string())
    }
}
