//! The dead-letter queue, the same on both backends: [`Dlq`] for any
//! [`SqlStore`].

use std::collections::HashMap;

use super::SqlStore;
use super::log::records;
use super::rows::{decode_action, decode_dlq, decode_parked_key};
use super::sql::{Conn, args, event_columns, sql};
use crate::store::{
    Dlq, DlqAction, DlqEntry, DlqFilter, DlqStatus, Error, LogRecord, PendingAction, Result, now_ms,
};

#[async_trait::async_trait]
impl<S: SqlStore> Dlq for S {
    async fn parked_keys(&self, handler: &str) -> Result<HashMap<String, i64>> {
        let rows = self
            .read()
            .await?
            .fetch_all(
                sql!("SELECT key, dlq_id FROM parked_keys WHERE handler = ?"),
                args![handler],
            )
            .await?;
        rows.iter().map(decode_parked_key).collect()
    }

    async fn dlq_list(&self, filter: &DlqFilter) -> Result<Vec<DlqEntry>> {
        S::list_dlq(&mut *self.read().await?, filter).await
    }

    async fn dlq_get(&self, id: i64) -> Result<Option<DlqEntry>> {
        self.read()
            .await?
            .fetch_optional(sql!("SELECT * FROM dlq WHERE id = ?"), args![id])
            .await?
            .as_ref()
            .map(decode_dlq)
            .transpose()
    }

    async fn dlq_act_on(
        &self,
        id: i64,
        action: DlqAction,
        version: Option<i64>,
    ) -> Result<DlqEntry> {
        let mut tx = self.write().await?;
        // Locked on PostgreSQL: of two operators acting at once, the second
        // waits, then reads the status the first set and gets a conflict.
        let row = tx
            .fetch_optional(
                sql!("SELECT * FROM dlq WHERE id = ?"; postgres: " FOR UPDATE"),
                args![id],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("DLQ entry {id}")))?;
        let mut entry = decode_dlq(&row)?;
        let (status, action_name) = dlq_transition(&entry, id, action)?;
        let now = now_ms();
        tx.execute(
            sql!("UPDATE dlq SET status = ?, updated_at = ? WHERE id = ?"),
            args![status.as_str(), now, id],
        )
        .await?;
        if action == DlqAction::Redrive {
            tx.execute(
                sql!("DELETE FROM processed WHERE handler = ? AND event_id = ?"),
                args![&entry.handler, &entry.record.event.id],
            )
            .await?;
        }
        tx.execute(
            sql!("INSERT INTO dlq_actions (handler, dlq_id, action, version, created_at) VALUES (?, ?, ?, ?, ?)"),
            args![&entry.handler, id, action_name, version, now],
        )
        .await?;
        S::commit_tx(tx).await?;
        entry.status = status;
        entry.updated_at = now;
        Ok(entry)
    }

    async fn pending_actions(&self, handler: &str) -> Result<Vec<PendingAction>> {
        let rows = self
            .read()
            .await?
            .fetch_all(
                sql!("SELECT a.id AS action_id, a.action, a.version AS action_version, d.* FROM dlq_actions a \
                      JOIN dlq d ON d.id = a.dlq_id WHERE a.handler = ? ORDER BY a.id"),
                args![handler],
            )
            .await?;
        rows.iter().map(decode_action).collect()
    }

    async fn parked_events(&self, handler: &str, key: &str) -> Result<Vec<LogRecord>> {
        records(
            &mut *self.read().await?,
            sql!(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE seq IN (SELECT seq FROM parked_events WHERE handler = ? AND key = ?) ORDER BY seq"
            )),
            args![handler, key],
        )
        .await
    }
}

/// Checks that an operator can act on `entry` (entry `id`): it must be
/// pending. Returns its new status and the stored name of the action.
fn dlq_transition(
    entry: &DlqEntry,
    id: i64,
    action: DlqAction,
) -> Result<(DlqStatus, &'static str)> {
    if entry.status != DlqStatus::Pending {
        return Err(Error::Conflict(format!(
            "DLQ entry {id} is already {}",
            entry.status.as_str()
        )));
    }
    Ok(match action {
        DlqAction::Redrive => (DlqStatus::Redriven, "redrive"),
        DlqAction::Discard => (DlqStatus::Discarded, "discard"),
    })
}
