//! The embedded store: one SQLite database (through sqlx) in WAL mode.
//!
//! Durability defaults to `synchronous=FULL`: every commit is fsynced, so a
//! committed event survives a power loss. `NORMAL` only fsyncs at WAL
//! checkpoints: much faster, still safe against a process crash (`kill -9`),
//! but a power loss or kernel crash can lose the most recent commits.
//!
//! Write transactions start with `BEGIN IMMEDIATE`, taking SQLite's write
//! lock up front, so that concurrent writers queue instead of failing when
//! a read transaction tries to upgrade. Within the process they queue on an
//! async lock first: SQLite's busy handler waits by sleeping (1, 2, 5, 10 ms
//! ...), which left the database idle most of the time under load. The busy
//! timeout still orders writers of other processes (the CLI, tests).

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use super::shared::builders::{NEW_PROCESSED, StoreDb};
use super::shared::commit::{OutcomeWriter, StateWrite, commit_in};
use super::shared::log::{self, LogWriter};
use super::shared::rows::{StoreRow, decode_dlq, decode_processed_key, decode_record};
use super::shared::sql::{Conn, args, event_columns, impl_conn, sql};
use super::shared::{SqlStore, outbox, outcomes};
use super::{
    Appended, AttemptRecord, Batch, Claim, CommitReport, DlqEntry, DlqFilter, Error, Log,
    LogRecord, Notices, Outbox, Outcomes, Processed, ProcessedRecord, Result, StoreOptions,
    Synchronous, TopicInfo, now_ms,
};
use crate::event::Event;
use crate::event::StateMap;

/// SQLite limits bound parameters per statement; chunk `IN (...)` lists.
const IN_CHUNK: usize = 500;
/// Rows per multi-row `INSERT` (at most 13 parameters a row).
const ROW_CHUNK: usize = 500;

/// The embedded SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// This process's writers take turns here (see the module docs).
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction that holds the process's turn to write until it
/// commits or drops (rolls back).
pub(crate) struct WriteTx {
    // Dropped first: the rollback is queued before the turn passes on.
    tx: sqlx::Transaction<'static, Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl StoreDb for Sqlite {
    // Causation is served by an index on `json_extract(headers, ...)`.
    const CAUSATION_COLUMN: bool = false;
}

impl_conn!(SqliteConnection, Sqlite, sqlite);

impl SqlStore for SqliteStore {
    type Conn = SqliteConnection;
    type Read = PoolConnection<Sqlite>;
    type Write = WriteTx;

    async fn read(&self) -> Result<PoolConnection<Sqlite>> {
        Ok(self.pool.acquire().await?)
    }

    /// Once it is this process's turn to write.
    async fn write(&self) -> Result<WriteTx> {
        let turn = self.writer.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    async fn commit_tx(tx: WriteTx) -> Result<()> {
        tx.tx.commit().await?;
        Ok(())
    }

    async fn list_dlq(conn: &mut SqliteConnection, filter: &DlqFilter) -> Result<Vec<DlqEntry>> {
        Sqlite::select_dlq(filter)
            .build()
            .fetch_all(conn)
            .await?
            .iter()
            .map(decode_dlq)
            .collect()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and migrates it.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Url {
                url: url.to_owned(),
                reason: e.to_string(),
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        if let Some(dir) = connect.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| Error::Url {
                url: url.to_owned(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .connect_with(connect)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// [`Outcomes::commit`]. Without `name_new` the processed records are
    /// inserted without RETURNING: its rows cross one by one from sqlx's
    /// connection thread to this task, which held up the one writer.
    /// Then the count of rows inserted must show every one new, or the
    /// transaction rolls back and this returns `None`.
    async fn commit_once(&self, original: &Batch, name_new: bool) -> Result<Option<CommitReport>> {
        let now = now_ms();
        let mut tx = self.write().await?;
        // Dropping the transaction rolls it back.
        let Some(report) = commit_in(&mut *tx, original, now, name_new).await? else {
            return Ok(None);
        };
        Self::commit_tx(tx).await?;
        Ok(Some(report))
    }

    /// The connection pool, for tests and tools.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// An append's statements, inside the caller's transaction.
impl LogWriter for SqliteConnection {
    const ROWS_PER_INSERT: usize = ROW_CHUNK;

    async fn insert_events(
        &mut self,
        events: &[&Event],
        places: &[(u32, i64)],
        now: i64,
    ) -> Result<Vec<((String, u32, i64), i64)>> {
        // No RETURNING: every row it returns crosses from sqlx's connection
        // thread to this task, which stalls the one writer while the task
        // waits for a core. Writers hold the write lock, so the rows got
        // consecutive sequence numbers in VALUES order, the last one
        // being the last rowid.
        let mut q = Sqlite::insert_events(events, places, now)?;
        let done = q.build().execute(&mut *self).await?;
        let n = events.len() as i64;
        if done.rows_affected() != n as u64 {
            return Err(Error::Corrupt(format!(
                "{} of {n} events inserted",
                done.rows_affected()
            )));
        }
        let first = done.last_insert_rowid() - n + 1;
        Ok(events
            .iter()
            .zip(places)
            .zip(first..)
            .map(|((e, (partition, offset)), seq)| ((e.topic.clone(), *partition, *offset), seq))
            .collect())
    }

    async fn set_next_offsets(&mut self, heads: &[(&str, u32, i64)]) -> Result<()> {
        for chunk in heads.chunks(ROW_CHUNK) {
            Sqlite::upsert_heads(chunk)
                .build()
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
}

/// A commit's statements: multi-row `VALUES` lists of at most
/// [`ROW_CHUNK`] rows, or a statement a row (each a call into the
/// connection's thread, no round trip).
impl OutcomeWriter for SqliteConnection {
    async fn stale_claims<'c>(&mut self, claims: &'c [Claim]) -> Result<Vec<&'c Claim>> {
        let mut stale = Vec::new();
        for claim in claims {
            let epoch = self
                .fetch_optional(
                    sql!("SELECT epoch FROM partition_claims WHERE handler = ? AND topic = ? AND partition = ?"),
                    args![&claim.handler, &claim.topic, i64::from(claim.partition)],
                )
                .await?
                .map(|row| row.int("epoch"))
                .transpose()?;
            if epoch != Some(claim.epoch) {
                stale.push(claim);
            }
        }
        Ok(stale)
    }

    async fn insert_processed(
        &mut self,
        processed: &[Processed],
        now: i64,
        name_new: bool,
    ) -> Result<Option<HashSet<(String, String)>>> {
        let mut fresh: HashSet<(String, String)> = HashSet::new();
        for chunk in processed.chunks(ROW_CHUNK) {
            let mut q = Sqlite::insert_processed(chunk, now);
            if name_new {
                q.push(NEW_PROCESSED);
                for row in q.build().fetch_all(&mut *self).await? {
                    fresh.insert(decode_processed_key(&row)?);
                }
                continue;
            }
            let done = q.build().execute(&mut *self).await?;
            if done.rows_affected() != chunk.len() as u64 {
                return Ok(None);
            }
            fresh.extend(
                chunk
                    .iter()
                    .map(|p| (p.handler.clone(), p.event_id.clone())),
            );
        }
        Ok(Some(fresh))
    }

    async fn delete_state(&mut self, fields: &[(&str, &str, &str)]) -> Result<()> {
        for (handler, key, name) in fields {
            self.execute(
                sql!("DELETE FROM state WHERE handler = ? AND key = ? AND name = ?"),
                args![*handler, *key, *name],
            )
            .await?;
        }
        Ok(())
    }

    async fn upsert_state(&mut self, fields: &[StateWrite<'_>]) -> Result<()> {
        for chunk in fields.chunks(ROW_CHUNK) {
            Sqlite::upsert_state(chunk)
                .build()
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }

    async fn insert_outbox(&mut self, rows: &[(&str, &Event)], now: i64) -> Result<()> {
        for chunk in rows.chunks(ROW_CHUNK) {
            Sqlite::insert_outbox(chunk, now)?
                .build()
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }

    async fn delete_attempts(&mut self, pairs: &[(&str, &str)]) -> Result<()> {
        for (handler, event_id) in pairs {
            self.execute(
                sql!("DELETE FROM attempts WHERE handler = ? AND event_id = ?"),
                args![*handler, *event_id],
            )
            .await?;
        }
        Ok(())
    }

    async fn delete_actions(&mut self, ids: &[i64]) -> Result<()> {
        for id in ids {
            self.execute(sql!("DELETE FROM dlq_actions WHERE id = ?"), args![*id])
                .await?;
        }
        Ok(())
    }

    async fn upsert_broker_positions(
        &mut self,
        positions: &[(String, String, i32, i64)],
    ) -> Result<()> {
        for (handler, topic, partition, position) in positions {
            self.execute(
                sql!("INSERT INTO broker_positions (handler, topic, partition, position) VALUES (?, ?, ?, ?) \
                      ON CONFLICT (handler, topic, partition) DO UPDATE SET position = MAX(position, excluded.position)"),
                args![handler, topic, i64::from(*partition), *position],
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Log for SqliteStore {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<u32> {
        let mut tx = self.write().await?;
        let n = tx.ensure_topic(topic, partitions).await?;
        Self::commit_tx(tx).await?;
        Ok(n)
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        log::topics(&mut *self.read().await?).await
    }

    async fn append(&self, events: &[Event], default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.write().await?;
        let out = log::append(
            &mut *tx,
            &events.iter().collect::<Vec<_>>(),
            default_partitions,
        )
        .await?;
        Self::commit_tx(tx).await?;
        Ok(out)
    }

    async fn read_log(&self, topic: &str, after: i64, limit: u32) -> Result<Vec<LogRecord>> {
        log::read_log(&mut *self.read().await?, topic, after, limit).await
    }

    async fn read_seqs(&self, seqs: &[i64]) -> Result<Vec<LogRecord>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(IN_CHUNK) {
            let mut q = QueryBuilder::new(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE seq IN ("
            ));
            let mut sep = q.separated(", ");
            for s in chunk {
                sep.push_bind(*s);
            }
            q.push(") ORDER BY seq");
            for row in q.build().fetch_all(&self.pool).await? {
                out.push(decode_record(&row)?);
            }
        }
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    async fn events_by_id(&self, id: &str) -> Result<Vec<LogRecord>> {
        log::events_by_id(&mut *self.read().await?, id).await
    }

    async fn events_caused_by(&self, id: &str) -> Result<Vec<LogRecord>> {
        // Served by the expression index `events_causation`.
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE json_extract(headers, '$.causationid') = ? ORDER BY seq LIMIT 1000"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_record).collect()
    }
}

#[async_trait::async_trait]
impl Outcomes for SqliteStore {
    async fn read_log_for(
        &self,
        handler: &str,
        topic: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(LogRecord, bool)>> {
        // One statement instead of a read and an `IN (...)` look-up of
        // every id read: a probe of the processed key per row.
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            ", EXISTS (SELECT 1 FROM processed p WHERE p.handler = ? AND p.event_id = events.id) AS done \
             FROM events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(handler)
        .bind(topic)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((decode_record(row)?, row.try_get::<bool, _>("done")?)))
            .collect()
    }

    async fn position(&self, handler: &str, topic: &str) -> Result<Option<i64>> {
        outcomes::position(&mut *self.read().await?, handler, topic).await
    }

    async fn processed_ids(&self, handler: &str, ids: &[String]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let mut q = QueryBuilder::new("SELECT event_id FROM processed WHERE handler = ");
            q.push_bind(handler);
            q.push(" AND event_id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id.as_str());
            }
            q.push(")");
            for row in q.build().fetch_all(&self.pool).await? {
                found.insert(row.try_get::<String, _>(0)?);
            }
        }
        Ok(found)
    }

    async fn load_state(&self, handler: &str, key: &str) -> Result<StateMap> {
        outcomes::load_state(&mut *self.read().await?, handler, key).await
    }

    async fn load_states(
        &self,
        handler: &str,
        keys: &[String],
    ) -> Result<HashMap<String, StateMap>> {
        let mut rows = Vec::new();
        for chunk in keys.chunks(IN_CHUNK) {
            let mut q = QueryBuilder::new("SELECT key, name, value FROM state WHERE handler = ");
            q.push_bind(handler).push(" AND key IN (");
            let mut list = q.separated(", ");
            for key in chunk {
                list.push_bind(key);
            }
            q.push(")");
            rows.extend(q.build().fetch_all(&self.pool).await?);
        }
        super::shared::rows::decode_states(keys, &rows)
    }

    async fn attempts(&self, handler: &str, event_id: &str) -> Result<Vec<AttemptRecord>> {
        outcomes::attempts(&mut *self.read().await?, handler, event_id).await
    }

    async fn pending_attempts(&self, handler: &str) -> Result<HashMap<String, Vec<AttemptRecord>>> {
        outcomes::pending_attempts(&mut *self.read().await?, handler).await
    }

    async fn commit(&self, original: &Batch) -> Result<CommitReport> {
        // Usually no outcome is a duplicate; when one is, the transaction
        // rolls back and runs again, naming the new processed records.
        if let Some(report) = self.commit_once(original, false).await? {
            return Ok(report);
        }
        self.commit_once(original, true)
            .await?
            .ok_or_else(|| Error::Corrupt("a commit naming its new records did not apply".into()))
    }

    async fn processed_records(&self, id: &str) -> Result<Vec<ProcessedRecord>> {
        outcomes::processed_records(&mut *self.read().await?, id).await
    }

    async fn lag(&self, handler: &str) -> Result<Vec<(String, i64)>> {
        outcomes::lag(&mut *self.read().await?, handler).await
    }
}

#[async_trait::async_trait]
impl Outbox for SqliteStore {
    async fn relay_outbox(&self, limit: u32, default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.write().await?;
        let (appended, taken) = outbox::relay(&mut *tx, limit, default_partitions).await?;
        let Some(&last) = taken.last() else {
            return Ok(appended);
        };
        // Rows are taken in seq order under the write lock, so everything up
        // to `last` that is still pending is exactly what was read.
        sqlx::query("UPDATE outbox SET delivered_at = ? WHERE delivered_at IS NULL AND seq <= ?")
            .bind(now_ms())
            .bind(last)
            .execute(&mut *tx)
            .await?;
        Self::commit_tx(tx).await?;
        Ok(appended)
    }

    async fn outbox_backlog(&self) -> Result<i64> {
        outbox::backlog(&mut *self.read().await?).await
    }

    async fn outbox_pending(&self, limit: u32) -> Result<Vec<(i64, Event)>> {
        let (events, seqs) = outbox::pending(&mut *self.read().await?, limit).await?;
        Ok(seqs.into_iter().zip(events).collect())
    }

    async fn outbox_delivered(&self, seqs: &[i64]) -> Result<()> {
        let mut tx = self.write().await?;
        for chunk in seqs.chunks(IN_CHUNK) {
            let mut q = QueryBuilder::new("UPDATE outbox SET delivered_at = ");
            q.push_bind(now_ms()).push(" WHERE seq IN (");
            let mut list = q.separated(", ");
            for seq in chunk {
                list.push_bind(*seq);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        Self::commit_tx(tx).await
    }

    async fn lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let mut tx = self.write().await?;
        outbox::take_lease(&mut *tx, name, holder, ttl_ms).await?;
        Self::commit_tx(tx).await?;
        outbox::holds_lease(&mut *self.read().await?, name, holder).await
    }
}

/// Private to this process, which learns of its own changes directly.
impl Notices for SqliteStore {}
