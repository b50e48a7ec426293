//! Claims on the partitions of a partitioned external broker, the same on
//! both backends: [`Claims`] for any [`SqlStore`].

use std::collections::HashMap;

use super::SqlStore;
use super::rows::StoreRow;
use super::sql::{Conn, args, sql};
use crate::store::{Claims, Error, Result};

/// A stored broker partition number.
fn partition(row: &impl StoreRow) -> Result<i32> {
    let partition = row.int("partition")?;
    i32::try_from(partition).map_err(|_| Error::Corrupt(format!("broker partition {partition}")))
}

#[async_trait::async_trait]
impl<S: SqlStore> Claims for S {
    async fn broker_positions(&self, handler: &str, topic: &str) -> Result<HashMap<i32, i64>> {
        let rows = self
            .read()
            .await?
            .fetch_all(
                sql!("SELECT partition, position FROM broker_positions WHERE handler = ? AND topic = ?"),
                args![handler, topic],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((partition(row)?, row.int("position")?)))
            .collect()
    }

    async fn claim_partitions(
        &self,
        handler: &str,
        topic: &str,
        partitions: &[i32],
        owner: &str,
    ) -> Result<HashMap<i32, (Option<i64>, i64)>> {
        let mut tx = self.write().await?;
        let mut claimed = HashMap::with_capacity(partitions.len());
        for partition in partitions {
            let epoch = tx
                .fetch_one(
                    sql!("INSERT INTO partition_claims (handler, topic, partition, epoch, owner) VALUES (?, ?, ?, 1, ?) \
                          ON CONFLICT (handler, topic, partition) DO UPDATE SET epoch = partition_claims.epoch + 1, owner = EXCLUDED.owner \
                          RETURNING epoch"),
                    args![handler, topic, i64::from(*partition), owner],
                )
                .await?
                .int("epoch")?;
            // After the claim: every commit under an earlier epoch is in.
            let position = tx
                .fetch_optional(
                    sql!("SELECT position FROM broker_positions WHERE handler = ? AND topic = ? AND partition = ?"),
                    args![handler, topic, i64::from(*partition)],
                )
                .await?
                .map(|row| row.int("position"))
                .transpose()?;
            claimed.insert(*partition, (position, epoch));
        }
        S::commit_tx(tx).await?;
        Ok(claimed)
    }

    async fn partition_owners(&self, handler: &str) -> Result<Vec<(String, i32, String)>> {
        let rows = self
            .read()
            .await?
            .fetch_all(
                sql!("SELECT topic, partition, owner FROM partition_claims WHERE handler = ?"),
                args![handler],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.text("topic")?, partition(row)?, row.text("owner")?)))
            .collect()
    }
}
