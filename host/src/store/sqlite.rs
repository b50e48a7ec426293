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

use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use super::shared::{
    self, EVENT_COLUMNS, LogWriter, StoreDb, decode_action, decode_dlq, decode_handler, decode_lag,
    decode_parked_key, decode_processed, decode_processed_key, decode_record, decode_state,
    decode_topic, decode_version, event_columns_of,
};
use super::{
    Appended, AttemptRecord, Batch, CommitReport, DlqAction, DlqEntry, DlqFilter, Error,
    HandlerRecord, LogRecord, ManagedBy, PendingAction, ProcessedRecord, Result, Store,
    StoreOptions, Synchronous, TopicInfo, VersionInfo, now_ms, to_json,
};
use crate::event::Event;
use crate::runtime::StateMap;

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
struct WriteTx {
    // Dropped first: the rollback is queued before the turn passes on.
    tx: sqlx::Transaction<'static, Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
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

    /// Starts a write transaction once it is this process's turn to write.
    async fn write(&self) -> Result<WriteTx> {
        let turn = self.writer.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// [`Store::commit`]. Without `name_new` the processed records are
    /// inserted without RETURNING: its rows cross one by one from sqlx's
    /// connection thread to this task, which held up the one writer.
    /// Then the count of rows inserted must show every one new, or the
    /// transaction rolls back and this returns `None`.
    async fn commit_once(&self, original: &Batch, name_new: bool) -> Result<Option<CommitReport>> {
        let now = now_ms();
        let mut report = CommitReport::default();
        let mut tx = self.write().await?;
        // Outcomes of partitions claimed since they were read are left out.
        let mut stale = Vec::new();
        for claim in &original.claims {
            let epoch: Option<i64> = sqlx::query_scalar(
                "SELECT epoch FROM partition_claims WHERE handler = ? AND topic = ? AND partition = ?",
            )
            .bind(&claim.handler)
            .bind(&claim.topic)
            .bind(i64::from(claim.partition))
            .fetch_optional(&mut *tx)
            .await?;
            if epoch != Some(claim.epoch) {
                stale.push(claim);
            }
        }
        let kept = shared::fence(original, &stale, &mut report);
        let batch = kept.as_ref().unwrap_or(original);
        // Processed records of the whole batch in a few multi-row
        // statements. A row that already existed is a duplicate: its
        // effects are not applied again.
        let mut fresh: HashSet<(String, String)> = HashSet::new();
        for chunk in batch.processed.chunks(ROW_CHUNK) {
            let mut q = Sqlite::insert_processed(chunk, now);
            if name_new {
                q.push(shared::NEW_PROCESSED);
                for row in q.build().fetch_all(&mut *tx).await? {
                    fresh.insert(decode_processed_key(&row)?);
                }
                continue;
            }
            let done = q.build().execute(&mut *tx).await?;
            if done.rows_affected() != chunk.len() as u64 {
                // Dropping the transaction rolls it back.
                return Ok(None);
            }
            fresh.extend(
                chunk
                    .iter()
                    .map(|p| (p.handler.clone(), p.event_id.clone())),
            );
        }
        let effects = shared::effects(&batch.processed, fresh, &mut report.duplicates);
        for (handler, event_id) in &effects.retried {
            sqlx::query("DELETE FROM attempts WHERE handler = ? AND event_id = ?")
                .bind(handler)
                .bind(event_id)
                .execute(&mut *tx)
                .await?;
        }
        // In (handler, key, name) order, each field once: its last change.
        for (handler, key, name) in &effects.state_deletes {
            sqlx::query("DELETE FROM state WHERE handler = ? AND key = ? AND name = ?")
                .bind(handler)
                .bind(key)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in effects.state_writes.chunks(ROW_CHUNK) {
            Sqlite::upsert_state(chunk)
                .build()
                .execute(&mut *tx)
                .await?;
        }
        if let Some(partitions) = batch.emit_to_log {
            report.appended_seq =
                shared::append_emitted(&mut *tx, &effects.outbox, partitions).await?;
        } else {
            for chunk in effects.outbox.chunks(ROW_CHUNK) {
                Sqlite::insert_outbox(chunk, now)?
                    .build()
                    .execute(&mut *tx)
                    .await?;
                report.outbox_rows += chunk.len() as u64;
            }
        }
        for (handler, event_id, a) in &batch.failures {
            sqlx::query(
                "INSERT INTO attempts (handler, event_id, attempt, outcome, error, version, at) VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (handler, event_id, attempt) DO UPDATE SET outcome = excluded.outcome, error = excluded.error, version = excluded.version, at = excluded.at",
            )
            .bind(handler)
            .bind(event_id)
            .bind(i64::from(a.attempt))
            .bind(&a.outcome)
            .bind(&a.error)
            .bind(&a.version)
            .bind(a.at)
            .execute(&mut *tx)
            .await?;
        }
        for d in &batch.dead_letters {
            let e = &d.record.event;
            let attempts = u32::try_from(d.attempts.len()).unwrap_or(u32::MAX);
            let row = ProcessedRow {
                handler: &d.handler,
                event_id: &e.id,
                topic: &e.topic,
                seq: d.record.seq,
                outcome: "dead-lettered",
                version: &d.version,
                attempts,
            };
            let fresh = insert_processed(&mut tx, row, now).await?;
            if !fresh {
                report.duplicates.insert((d.handler.clone(), e.id.clone()));
                report.dlq_ids.push(0);
                continue;
            }
            let error = shared::dead_letter_error(d);
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO dlq (handler, version, topic, seq, event_id, key, event, attempts, error, status, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) RETURNING id",
            )
            .bind(&d.handler)
            .bind(&d.version)
            .bind(&e.topic)
            .bind(d.record.seq)
            .bind(&e.id)
            .bind(&e.key)
            .bind(to_json(&d.record)?)
            .bind(to_json(&d.attempts)?)
            .bind(error)
            .bind(now)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            report.dlq_ids.push(id);
            if let Some(event) = shared::dead_letter_outbox(d, id) {
                Sqlite::insert_outbox(&[(d.handler.as_str(), &event)], now)?
                    .build()
                    .execute(&mut *tx)
                    .await?;
                report.outbox_rows += 1;
            }
            sqlx::query("DELETE FROM attempts WHERE handler = ? AND event_id = ?")
                .bind(&d.handler)
                .bind(&e.id)
                .execute(&mut *tx)
                .await?;
            if d.park
                && let Some(key) = &e.key
            {
                sqlx::query(
                    "INSERT INTO parked_keys (handler, key, dlq_id) VALUES (?, ?, ?) ON CONFLICT (handler, key) DO NOTHING",
                )
                .bind(&d.handler)
                .bind(key)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        for pe in &batch.parked {
            sqlx::query(
                "INSERT INTO parked_events (handler, key, seq, topic) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&pe.handler)
            .bind(&pe.key)
            .bind(pe.seq)
            .bind(&pe.topic)
            .execute(&mut *tx)
            .await?;
        }
        for (handler, key) in &batch.unparked {
            sqlx::query("DELETE FROM parked_keys WHERE handler = ? AND key = ?")
                .bind(handler)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM parked_events WHERE handler = ? AND key = ?")
                .bind(handler)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        for id in &batch.actions_done {
            sqlx::query("DELETE FROM dlq_actions WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for (handler, topic, position) in &batch.positions {
            sqlx::query(
                "INSERT INTO positions (handler, topic, position) VALUES (?, ?, ?) \
                 ON CONFLICT (handler, topic) DO UPDATE SET position = MAX(position, excluded.position)",
            )
            .bind(handler)
            .bind(topic)
            .bind(position)
            .execute(&mut *tx)
            .await?;
        }
        for (handler, topic, partition, position) in &batch.broker_positions {
            sqlx::query(
                "INSERT INTO broker_positions (handler, topic, partition, position) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (handler, topic, partition) DO UPDATE SET position = MAX(position, excluded.position)",
            )
            .bind(handler)
            .bind(topic)
            .bind(i64::from(*partition))
            .bind(position)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        report.dlq_ids = shared::realign_dlq_ids(original, &report.fenced, report.dlq_ids);
        Ok(Some(report))
    }

    /// The connection pool, for tests and tools.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Log records matching `condition` (with one `?`, bound to `value`),
    /// in log order.
    async fn events_where(
        &self,
        condition: &'static str,
        value: &str,
        limit: u32,
    ) -> Result<Vec<LogRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE {condition} ORDER BY seq LIMIT {limit}"
        )))
        .bind(value)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_record).collect()
    }
}

async fn ensure_topic_in(conn: &mut SqliteConnection, topic: &str, partitions: u32) -> Result<u32> {
    const COUNT: &str = "SELECT partitions FROM topics WHERE name = ?";
    // Usually the topic exists: one statement.
    let known: Option<i64> = sqlx::query_scalar(COUNT)
        .bind(topic)
        .fetch_optional(&mut *conn)
        .await?;
    let n = match known {
        Some(n) => n,
        None => {
            sqlx::query("INSERT INTO topics (name, partitions, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
                .bind(topic)
                .bind(i64::from(partitions.max(1)))
                .bind(now_ms())
                .execute(&mut *conn)
                .await?;
            sqlx::query_scalar(COUNT)
                .bind(topic)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    shared::to_u32(n, &format!("partition count of topic {topic}:"))
}

/// An append's statements, inside the caller's transaction.
impl LogWriter for SqliteConnection {
    const ROWS_PER_INSERT: usize = ROW_CHUNK;

    async fn ensure_topic(&mut self, topic: &str, partitions: u32) -> Result<u32> {
        ensure_topic_in(self, topic, partitions).await
    }

    async fn next_offsets(&mut self, topic: &str) -> Result<HashMap<u32, i64>> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT partition, next_offset FROM partition_heads WHERE topic = ?")
                .bind(topic)
                .fetch_all(&mut *self)
                .await?;
        shared::decode_heads(topic, rows)
    }

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

/// A processed record about to be written.
struct ProcessedRow<'a> {
    handler: &'a str,
    event_id: &'a str,
    topic: &'a str,
    seq: i64,
    outcome: &'a str,
    version: &'a str,
    attempts: u32,
}

/// Inserts a processed record unless one exists; `false` means the event
/// was already processed and its effects must not be applied again.
async fn insert_processed(
    conn: &mut SqliteConnection,
    row: ProcessedRow<'_>,
    now: i64,
) -> Result<bool> {
    let ProcessedRow {
        handler,
        event_id,
        topic,
        seq,
        outcome,
        version,
        attempts,
    } = row;
    let done = sqlx::query(
        "INSERT INTO processed (handler, event_id, topic, seq, outcome, version, attempts, processed_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (handler, event_id) DO NOTHING",
    )
    .bind(handler)
    .bind(event_id)
    .bind(topic)
    .bind(seq)
    .bind(outcome)
    .bind(version)
    .bind(i64::from(attempts))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<u32> {
        let mut tx = self.write().await?;
        let n = ensure_topic_in(&mut tx, topic, partitions).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let rows = sqlx::query(
            "SELECT t.name, t.partitions, \
               (SELECT COUNT(*) FROM events e WHERE e.topic = t.name) AS events, \
               (SELECT COALESCE(MAX(seq), 0) FROM events e WHERE e.topic = t.name) AS last_seq \
             FROM topics t ORDER BY t.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_topic).collect()
    }

    async fn append(&self, events: &[Event], default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.write().await?;
        let out = shared::append(
            &mut *tx,
            &events.iter().collect::<Vec<_>>(),
            default_partitions,
        )
        .await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn read_log(&self, topic: &str, after: i64, limit: u32) -> Result<Vec<LogRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?"
        )))
        .bind(topic)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_record).collect()
    }

    async fn read_log_for(
        &self,
        handler: &str,
        topic: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(LogRecord, bool)>> {
        // One statement instead of a read and an `IN (...)` look-up of
        // every id read: a probe of the processed key per row.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS}, EXISTS (SELECT 1 FROM processed p WHERE p.handler = ? AND p.event_id = events.id) AS done \
             FROM events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?"
        )))
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

    async fn read_seqs(&self, seqs: &[i64]) -> Result<Vec<LogRecord>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(IN_CHUNK) {
            let mut q =
                QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq IN ("));
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

    async fn position(&self, handler: &str, topic: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT position FROM positions WHERE handler = ? AND topic = ?")
                .bind(handler)
                .bind(topic)
                .fetch_optional(&self.pool)
                .await?,
        )
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
        let rows = sqlx::query("SELECT name, value FROM state WHERE handler = ? AND key = ?")
            .bind(handler)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_state).collect()
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
        shared::decode_states(keys, &rows)
    }

    async fn attempts(&self, handler: &str, event_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT event_id, attempt, outcome, error, version, at FROM attempts \
             WHERE handler = ? AND event_id = ? ORDER BY attempt",
        )
        .bind(handler)
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?;
        shared::decode_attempts(&rows)
    }

    async fn pending_attempts(&self, handler: &str) -> Result<HashMap<String, Vec<AttemptRecord>>> {
        let rows = sqlx::query(
            "SELECT event_id, attempt, outcome, error, version, at FROM attempts \
             WHERE handler = ? ORDER BY event_id, attempt",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        shared::group_attempts(&rows)
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

    async fn relay_outbox(&self, limit: u32, default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.write().await?;
        let rows = sqlx::query(
            "SELECT seq, event FROM outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let (events, seqs) = shared::decode_outbox(&rows)?;
        let Some(&last) = seqs.last() else {
            return Ok(Vec::new());
        };
        let appended = shared::append(
            &mut *tx,
            &events.iter().collect::<Vec<_>>(),
            default_partitions,
        )
        .await?;
        // Rows are taken in seq order under the write lock, so everything up
        // to `last` that is still pending is exactly what was read.
        sqlx::query("UPDATE outbox SET delivered_at = ? WHERE delivered_at IS NULL AND seq <= ?")
            .bind(now_ms())
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(appended)
    }

    async fn outbox_pending(&self, limit: u32) -> Result<Vec<(i64, Event)>> {
        let rows = sqlx::query(
            "SELECT seq, event FROM outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let (events, seqs) = shared::decode_outbox(&rows)?;
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
        tx.commit().await
    }

    async fn lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let mut tx = self.write().await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT holder FROM leases WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(current.as_deref() == Some(holder))
    }

    async fn broker_positions(&self, handler: &str, topic: &str) -> Result<HashMap<i32, i64>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT partition, position FROM broker_positions WHERE handler = ? AND topic = ?",
        )
        .bind(handler)
        .bind(topic)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(partition, position)| {
                let partition = i32::try_from(partition)
                    .map_err(|_| Error::Corrupt(format!("broker partition {partition}")))?;
                Ok((partition, position))
            })
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
            let epoch: i64 = sqlx::query_scalar(
                "INSERT INTO partition_claims (handler, topic, partition, epoch, owner) VALUES (?, ?, ?, 1, ?) ON CONFLICT (handler, topic, partition) DO UPDATE SET epoch = epoch + 1, owner = excluded.owner RETURNING epoch",
            )
            .bind(handler)
            .bind(topic)
            .bind(i64::from(*partition))
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?;
            // After the claim: every commit under an earlier epoch is in.
            let position: Option<i64> =
                sqlx::query_scalar("SELECT position FROM broker_positions WHERE handler = ? AND topic = ? AND partition = ?")
                    .bind(handler)
                    .bind(topic)
                    .bind(i64::from(*partition))
                    .fetch_optional(&mut *tx)
                    .await?;
            claimed.insert(*partition, (position, epoch));
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn partition_owners(&self, handler: &str) -> Result<Vec<(String, i32, String)>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT topic, partition, owner FROM partition_claims WHERE handler = ?",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(topic, partition, owner)| {
                let partition = i32::try_from(partition)
                    .map_err(|_| Error::Corrupt(format!("broker partition {partition}")))?;
                Ok((topic, partition, owner))
            })
            .collect()
    }

    async fn outbox_backlog(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn events_by_id(&self, id: &str) -> Result<Vec<LogRecord>> {
        self.events_where("id = ?", id, 100).await
    }

    async fn events_caused_by(&self, id: &str) -> Result<Vec<LogRecord>> {
        // Served by the expression index `events_causation`.
        self.events_where("json_extract(headers, '$.causationid') = ?", id, 1000)
            .await
    }

    async fn processed_records(&self, id: &str) -> Result<Vec<ProcessedRecord>> {
        let rows = sqlx::query(
            "SELECT handler, outcome, version, attempts, processed_at FROM processed WHERE event_id = ? ORDER BY handler",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_processed).collect()
    }

    async fn put_handler(
        &self,
        name: &str,
        config: &serde_json::Value,
        managed_by: ManagedBy,
    ) -> Result<HandlerRecord> {
        let now = now_ms();
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO handlers (name, config, created_at, updated_at, managed_by) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at, \
             managed_by = excluded.managed_by",
        )
        .bind(name)
        .bind(to_json(config)?)
        .bind(now)
        .bind(now)
        .bind(managed_by.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        shared::existing_handler(self, name).await
    }

    async fn handler(&self, name: &str) -> Result<Option<HandlerRecord>> {
        let Some(row) = sqlx::query("SELECT * FROM handlers WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let versions = sqlx::query(
            "SELECT version, digest, size, uploaded_at FROM handler_versions WHERE handler = ? ORDER BY version",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode_version)
        .collect::<Result<Vec<_>>>()?;
        decode_handler(&row, versions).map(Some)
    }

    async fn handlers(&self) -> Result<Vec<HandlerRecord>> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM handlers ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        shared::handlers_named(self, names).await
    }

    async fn delete_handler(&self, name: &str, purge: bool) -> Result<bool> {
        let mut tx = self.write().await?;
        for table in shared::handler_tables(purge) {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE handler = ?"
            )))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        let gone = sqlx::query("DELETE FROM handlers WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone == 1)
    }

    async fn add_version(
        &self,
        name: &str,
        digest: &str,
        component: &[u8],
    ) -> Result<(VersionInfo, bool)> {
        let mut tx = self.write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM handlers WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::NotFound(format!("handler {name}")));
        }
        if let Some(r) = sqlx::query(
            "SELECT version, digest, size, uploaded_at FROM handler_versions WHERE handler = ? AND digest = ?",
        )
        .bind(name)
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?
        {
            return Ok((decode_version(&r)?, false));
        }
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM handler_versions WHERE handler = ?",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let now = now_ms();
        let size = shared::component_size(component);
        sqlx::query(
            "INSERT INTO handler_versions (handler, version, digest, component, size, uploaded_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(name)
        .bind(version)
        .bind(digest)
        .bind(component)
        .bind(size)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((shared::version_info(version, digest, size, now), true))
    }

    async fn component(&self, name: &str, version: i64) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT component FROM handler_versions WHERE handler = ? AND version = ?",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn activate(&self, name: &str, version: i64) -> Result<HandlerRecord> {
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM handler_versions WHERE handler = ? AND version = ?",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        if known.is_none() {
            return Err(Error::NotFound(format!(
                "version {version} of handler {name}"
            )));
        }
        let mut tx = self.write().await?;
        sqlx::query("UPDATE handlers SET active_version = ?, updated_at = ? WHERE name = ?")
            .bind(version)
            .bind(now_ms())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        shared::existing_handler(self, name).await
    }

    async fn lag(&self, handler: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT p.topic, (SELECT COUNT(*) FROM events e WHERE e.topic = p.topic AND e.seq > p.position) AS lag \
             FROM positions p WHERE p.handler = ? ORDER BY p.topic",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_lag).collect()
    }

    async fn parked_keys(&self, handler: &str) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query("SELECT key, dlq_id FROM parked_keys WHERE handler = ?")
            .bind(handler)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_parked_key).collect()
    }

    async fn dlq_list(&self, filter: &DlqFilter) -> Result<Vec<DlqEntry>> {
        Sqlite::select_dlq(filter)
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode_dlq)
            .collect()
    }

    async fn dlq_get(&self, id: i64) -> Result<Option<DlqEntry>> {
        sqlx::query("SELECT * FROM dlq WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
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
        let row = sqlx::query("SELECT * FROM dlq WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::NotFound(format!("DLQ entry {id}")))?;
        let entry = decode_dlq(&row)?;
        let (status, action_name) = shared::dlq_transition(&entry, id, action)?;
        let now = now_ms();
        sqlx::query("UPDATE dlq SET status = ?, updated_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if action == DlqAction::Redrive {
            sqlx::query("DELETE FROM processed WHERE handler = ? AND event_id = ?")
                .bind(&entry.handler)
                .bind(&entry.record.event.id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO dlq_actions (handler, dlq_id, action, version, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&entry.handler)
        .bind(id)
        .bind(action_name)
        .bind(version)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(shared::dlq_acted(entry, status, now))
    }

    async fn pending_actions(&self, handler: &str) -> Result<Vec<PendingAction>> {
        let rows = sqlx::query(
            "SELECT a.id AS action_id, a.action, a.version AS action_version, d.* FROM dlq_actions a \
             JOIN dlq d ON d.id = a.dlq_id WHERE a.handler = ? ORDER BY a.id",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_action).collect()
    }

    async fn parked_events(&self, handler: &str, key: &str) -> Result<Vec<LogRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM parked_events p JOIN events e ON e.seq = p.seq \
             WHERE p.handler = ? AND p.key = ? ORDER BY p.seq",
            event_columns_of("e")
        )))
        .bind(handler)
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_record).collect()
    }
}
