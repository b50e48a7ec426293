//! The handler registry, the same on both backends: [`Registry`] for any
//! [`SqlStore`].

use super::SqlStore;
use super::rows::{StoreRow, decode_handler, decode_version};
use super::sql::{Conn, Sql, args, sql};
use crate::store::{
    Error, HandlerRecord, ManagedBy, Registry, Result, VersionInfo, now_ms, to_json,
};

/// Deletes a handler's rows from the tables besides `handlers`: always its
/// versions, with `purge` also what it recorded while consuming.
const HANDLER_VERSIONS: Sql = sql!("DELETE FROM handler_versions WHERE handler = ?");
const HANDLER_RECORDS: [Sql; 8] = [
    sql!("DELETE FROM positions WHERE handler = ?"),
    sql!("DELETE FROM processed WHERE handler = ?"),
    sql!("DELETE FROM state WHERE handler = ?"),
    sql!("DELETE FROM attempts WHERE handler = ?"),
    sql!("DELETE FROM parked_keys WHERE handler = ?"),
    sql!("DELETE FROM parked_events WHERE handler = ?"),
    sql!("DELETE FROM dlq_actions WHERE handler = ?"),
    sql!("DELETE FROM dlq WHERE handler = ?"),
];

/// Does handler `name` exist? On PostgreSQL its row is locked for the rest
/// of the transaction: that serializes uploads to one handler (concurrent
/// ones get distinct version numbers), and a concurrent delete either
/// finished or waits. SQLite's writer holds the whole database already.
async fn lock_handler<C: Conn>(conn: &mut C, name: &str) -> Result<bool> {
    let row = conn
        .fetch_optional(
            sql!("SELECT name FROM handlers WHERE name = ?"; postgres: " FOR UPDATE"),
            args![name],
        )
        .await?;
    Ok(row.is_some())
}

/// The handler `name`, which must exist.
async fn existing_handler(store: &impl Registry, name: &str) -> Result<HandlerRecord> {
    store
        .handler(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("handler {name}")))
}

#[async_trait::async_trait]
impl<S: SqlStore> Registry for S {
    async fn put_handler(
        &self,
        name: &str,
        config: &serde_json::Value,
        managed_by: ManagedBy,
    ) -> Result<HandlerRecord> {
        let now = now_ms();
        let config = to_json(config)?;
        let mut tx = self.write().await?;
        tx.execute(
            sql!("INSERT INTO handlers (name, config, created_at, updated_at, managed_by) VALUES (?, ?, ?, ?, ?) \
                  ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, updated_at = EXCLUDED.updated_at, \
                  managed_by = EXCLUDED.managed_by"),
            args![name, config.as_str(), now, now, managed_by.as_str()],
        )
        .await?;
        S::commit_tx(tx).await?;
        existing_handler(self, name).await
    }

    async fn handler(&self, name: &str) -> Result<Option<HandlerRecord>> {
        let mut conn = self.read().await?;
        let Some(row) = conn
            .fetch_optional(sql!("SELECT * FROM handlers WHERE name = ?"), args![name])
            .await?
        else {
            return Ok(None);
        };
        let versions = conn
            .fetch_all(
                sql!("SELECT version, digest, size, uploaded_at FROM handler_versions WHERE handler = ? ORDER BY version"),
                args![name],
            )
            .await?
            .iter()
            .map(decode_version)
            .collect::<Result<Vec<_>>>()?;
        decode_handler(&row, versions).map(Some)
    }

    async fn handlers(&self) -> Result<Vec<HandlerRecord>> {
        let names = self
            .read()
            .await?
            .fetch_all(
                sql!("SELECT name FROM handlers ORDER BY name"; postgres: " COLLATE \"C\""),
                args![],
            )
            .await?
            .iter()
            .map(|row| row.text("name"))
            .collect::<Result<Vec<_>>>()?;
        // Those that still exist, in that order.
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(h) = self.handler(&name).await? {
                out.push(h);
            }
        }
        Ok(out)
    }

    async fn delete_handler(&self, name: &str, purge: bool) -> Result<bool> {
        let mut tx = self.write().await?;
        // The handler's row first: it is the lock `add_version` and
        // `activate` take, so they either finish before or find no handler.
        let gone = tx
            .execute(sql!("DELETE FROM handlers WHERE name = ?"), args![name])
            .await?;
        tx.execute(HANDLER_VERSIONS, args![name]).await?;
        if purge {
            for table in HANDLER_RECORDS {
                tx.execute(table, args![name]).await?;
            }
        }
        S::commit_tx(tx).await?;
        Ok(gone == 1)
    }

    async fn add_version(
        &self,
        name: &str,
        digest: &str,
        component: &[u8],
    ) -> Result<(VersionInfo, bool)> {
        let mut tx = self.write().await?;
        if !lock_handler(&mut *tx, name).await? {
            return Err(Error::NotFound(format!("handler {name}")));
        }
        if let Some(r) = tx
            .fetch_optional(
                sql!("SELECT version, digest, size, uploaded_at FROM handler_versions WHERE handler = ? AND digest = ?"),
                args![name, digest],
            )
            .await?
        {
            return Ok((decode_version(&r)?, false));
        }
        let version = tx
            .fetch_one(
                sql!("SELECT COALESCE(MAX(version), 0) + 1 AS version FROM handler_versions WHERE handler = ?"),
                args![name],
            )
            .await?
            .int("version")?;
        let now = now_ms();
        let size = i64::try_from(component.len()).unwrap_or(i64::MAX);
        tx.execute(
            sql!("INSERT INTO handler_versions (handler, version, digest, component, size, uploaded_at) VALUES (?, ?, ?, ?, ?, ?)"),
            args![name, version, digest, component, size, now],
        )
        .await?;
        S::commit_tx(tx).await?;
        let info = VersionInfo {
            version,
            digest: digest.to_owned(),
            size,
            uploaded_at: now,
        };
        Ok((info, true))
    }

    async fn component(&self, name: &str, version: i64) -> Result<Option<Vec<u8>>> {
        self.read()
            .await?
            .fetch_optional(
                sql!("SELECT component FROM handler_versions WHERE handler = ? AND version = ?"),
                args![name, version],
            )
            .await?
            .map(|row| row.bytes("component"))
            .transpose()
    }

    async fn activate(&self, name: &str, version: i64) -> Result<HandlerRecord> {
        let mut tx = self.write().await?;
        lock_handler(&mut *tx, name).await?;
        let known = tx
            .fetch_optional(
                sql!("SELECT version FROM handler_versions WHERE handler = ? AND version = ?"),
                args![name, version],
            )
            .await?;
        if known.is_none() {
            return Err(Error::NotFound(format!(
                "version {version} of handler {name}"
            )));
        }
        tx.execute(
            sql!("UPDATE handlers SET active_version = ?, updated_at = ? WHERE name = ?"),
            args![version, now_ms(), name],
        )
        .await?;
        S::commit_tx(tx).await?;
        existing_handler(self, name).await
    }
}
