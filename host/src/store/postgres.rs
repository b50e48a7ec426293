//! The shared store: one PostgreSQL database (through sqlx), so that several
//! hosts can run against the same log.
//!
//! Semantics are those of [`super::sqlite::SqliteStore`]. SQLite has one
//! writer and gets some guarantees from it for free; here they are explicit:
//!
//! - The log's sequence numbers must increase in commit order (dispatchers
//!   follow a topic with `seq > position`, so a lower `seq` that became
//!   visible after a higher one would be skipped for good). Identity values
//!   are handed out before commit, so every transaction that inserts into
//!   `events` ([`Store::append`], [`Store::relay_outbox`]) first takes one
//!   transaction-level advisory lock, `LOG_LOCK`. Locks are released only
//!   after the commit is visible, so log writers commit one after the other,
//!   in `seq` order. The same lock makes the relay publish each outbox row
//!   once when several hosts relay at the same time.
//! - Read-modify-write transactions that SQLite runs under `BEGIN IMMEDIATE`
//!   lock the rows they depend on (`SELECT ... FOR UPDATE`) instead.
//!
//! Statements with an array parameter (`= ANY($n)`) are planned at each
//! call (`persistent(false)`): a prepared statement's generic plan is made
//! once, while the tables are still small, and one made for the empty
//! `processed` table used the primary key for `handler` only and filtered
//! the ids row by row, 5-10 ms a call once it held 30,000 rows
//! (`auto_explain` during `sluice bench --setup kafka-wasm`).
//!
//! PostgreSQL text cannot contain NUL characters: strings with `'\0'` fail
//! to store, except for error messages of failed attempts, where NUL is
//! replaced by U+FFFD (a guest's error text must not stop the group commit).
//! `StoreOptions::synchronous` is SQLite's and is ignored here.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};

use super::shared::{
    self, EVENT_COLUMNS, LogWriter, StoreDb, decode_action, decode_dlq, decode_handler, decode_lag,
    decode_parked_key, decode_placed, decode_processed, decode_processed_key, decode_record,
    decode_state, decode_topic, decode_version, event_columns_of,
};
use super::{
    Appended, AttemptRecord, Batch, CommitReport, DlqAction, DlqEntry, DlqFilter, Error,
    HandlerRecord, LogRecord, ManagedBy, Notice, PendingAction, ProcessedRecord, Result, Store,
    StoreOptions, TopicInfo, VersionInfo, now_ms, to_json,
};
use crate::event::Event;
use crate::runtime::StateMap;

/// Rows per multi-row `INSERT`: PostgreSQL takes at most 65535 bound
/// parameters per statement, and a row has at most 14.
const ROW_CHUNK: usize = 1000;

/// Key of the advisory lock that serializes the writers of the log (see the
/// module documentation). Any constant works as long as nothing else in the
/// database uses it: this one spells "sluicelg".
const LOG_LOCK: i64 = 0x736c_7569_6365_6c67;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

/// Notified (by trigger) when outbox rows are inserted.
const OUTBOX_CHANNEL: &str = "sluice_outbox";
/// Notified (by trigger) with a handler's name when its registry row changes.
const REGISTRY_CHANNEL: &str = "sluice_registry";

impl StoreDb for Postgres {
    // The header, copied out on insert and indexed.
    const CAUSATION_COLUMN: bool = true;
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER@HOST/DB`) and
    /// migrates it; the database must exist.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url).map_err(|e| Error::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        // One plain connection first: an unreachable or misconfigured
        // server fails here at once with its own error, where the pool
        // would retry until its acquire timeout.
        {
            use sqlx::Connection as _;
            PgConnection::connect_with(&connect).await?.close().await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        // The migrator takes its own advisory lock: hosts starting together
        // migrate once.
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Listens on the channels of migration `0004_notify` and forwards
    /// what arrives until `notices` is dropped. A lost connection is
    /// opened again (every second until it works), then told as
    /// [`Notice::Reconnected`].
    async fn listen(
        pool: PgPool,
        mut listener: sqlx::postgres::PgListener,
        notices: tokio::sync::mpsc::Sender<Notice>,
    ) {
        loop {
            let notice = match listener.try_recv().await {
                Ok(Some(n)) if n.channel() == REGISTRY_CHANNEL => {
                    Notice::Registry(n.payload().to_owned())
                }
                Ok(Some(_)) => Notice::Outbox,
                Ok(None) | Err(_) => {
                    tracing::warn!("lost the connection that listens for notices; reconnecting");
                    listener = loop {
                        if notices.is_closed() {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        match Self::listener(&pool).await {
                            Ok(l) => break l,
                            Err(error) => tracing::warn!("cannot listen for notices yet: {error}"),
                        }
                    };
                    Notice::Reconnected
                }
            };
            if notices.send(notice).await.is_err() {
                return;
            }
        }
    }

    async fn listener(pool: &PgPool) -> Result<sqlx::postgres::PgListener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener
            .listen_all([OUTBOX_CHANNEL, REGISTRY_CHANNEL])
            .await?;
        Ok(listener)
    }

    /// The connection pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Log records matching `condition` (with one `$1`, bound to `value`),
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

/// Takes the log's lock for the rest of the transaction.
async fn lock_log(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOG_LOCK)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `text` without NUL characters, which PostgreSQL text cannot hold.
fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

async fn ensure_topic_in(conn: &mut PgConnection, topic: &str, partitions: u32) -> Result<u32> {
    const COUNT: &str = "SELECT partitions FROM topics WHERE name = $1";
    // Usually the topic exists: one statement.
    let known: Option<i64> = sqlx::query_scalar(COUNT)
        .bind(topic)
        .fetch_optional(&mut *conn)
        .await?;
    let n = match known {
        Some(n) => n,
        None => {
            // A concurrent creator of the same topic makes this wait for its
            // commit and then do nothing, so the count read next is the winner's.
            sqlx::query(
                "INSERT INTO topics (name, partitions, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            )
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

/// An append's statements, inside the caller's transaction, which must hold
/// the log's lock ([`lock_log`]).
impl LogWriter for PgConnection {
    const ROWS_PER_INSERT: usize = ROW_CHUNK;

    async fn ensure_topic(&mut self, topic: &str, partitions: u32) -> Result<u32> {
        ensure_topic_in(self, topic, partitions).await
    }

    async fn next_offsets(&mut self, topic: &str) -> Result<HashMap<u32, i64>> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT partition, next_offset FROM partition_heads WHERE topic = $1")
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
        let mut q = Postgres::insert_events(events, places, now)?;
        q.push(" RETURNING seq, topic, partition, \"offset\"");
        let rows = q.build().fetch_all(&mut *self).await?;
        rows.iter().map(decode_placed).collect()
    }

    async fn set_next_offsets(&mut self, heads: &[(&str, u32, i64)]) -> Result<()> {
        for chunk in heads.chunks(ROW_CHUNK) {
            Postgres::upsert_heads(chunk)
                .build()
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
}

/// A commit's rows go in as one array parameter per column
/// (`INSERT ... SELECT FROM UNNEST`), so that each statement has one text
/// whatever the number of rows, prepared once per connection.
/// Multi-row `VALUES` lists made a new statement for every row count, which
/// sqlx prepared (a round trip more) and evicted from its cache of 100.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// The processed records of a commit, RETURNING those that were new.
fn insert_processed(processed: &[super::Processed], now: i64) -> PgQuery<'_> {
    let column = |f: fn(&super::Processed) -> &str| processed.iter().map(f).collect::<Vec<_>>();
    let (handlers, ids, topics, versions) = (
        column(|p| &p.handler),
        column(|p| &p.event_id),
        column(|p| &p.topic),
        column(|p| &p.version),
    );
    let seqs: Vec<i64> = processed.iter().map(|p| p.seq).collect();
    let attempts: Vec<i64> = processed.iter().map(|p| i64::from(p.attempts)).collect();
    sqlx::query(
        "INSERT INTO processed (handler, event_id, topic, seq, outcome, version, attempts, processed_at) \
         SELECT handler, event_id, topic, seq, 'ok', version, attempts, $7 \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[]) \
           AS r(handler, event_id, topic, seq, version, attempts) \
         ON CONFLICT (handler, event_id) DO NOTHING RETURNING handler, event_id",
    )
    .bind(handlers)
    .bind(ids)
    .bind(topics)
    .bind(seqs)
    .bind(versions)
    .bind(attempts)
    .bind(now)
}

/// State fields written by a commit; each (handler, key, name) at most once.
fn upsert_state<'q>(fields: &'q [shared::StateWrite<'q>]) -> PgQuery<'q> {
    let column =
        |f: fn(&shared::StateWrite<'q>) -> &'q str| fields.iter().map(f).collect::<Vec<_>>();
    let values: Vec<&[u8]> = fields.iter().map(|f| f.3).collect();
    sqlx::query(
        "INSERT INTO state (handler, key, name, value) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[]) \
         ON CONFLICT (handler, key, name) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(column(|f| f.0))
    .bind(column(|f| f.1))
    .bind(column(|f| f.2))
    .bind(values)
}

/// Outbox rows, (emitting handler, event), numbered in the order given:
/// the relay publishes in that order, which keeps each key's order.
fn insert_outbox<'q>(rows: &'q [(&'q str, &'q Event)], now: i64) -> Result<PgQuery<'q>> {
    let column = |f: fn(&(&'q str, &'q Event)) -> &'q str| rows.iter().map(f).collect::<Vec<_>>();
    let keys: Vec<Option<&str>> = rows.iter().map(|(_, e)| e.key.as_deref()).collect();
    let events = rows
        .iter()
        .map(|(_, e)| to_json(*e))
        .collect::<Result<Vec<String>>>()?;
    Ok(sqlx::query(
        "INSERT INTO outbox (event_id, topic, key, event, handler, created_at) \
         SELECT event_id, topic, key, event, handler, $6 \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
           WITH ORDINALITY AS r(event_id, topic, key, event, handler, n) \
         ORDER BY n",
    )
    .bind(column(|(_, e)| &e.id))
    .bind(column(|(_, e)| &e.topic))
    .bind(keys)
    .bind(events)
    .bind(column(|(handler, _)| handler))
    .bind(now))
}

/// Deletes the attempts of `(handler, event id)` pairs.
async fn delete_attempts(conn: &mut PgConnection, pairs: &[(&str, &str)]) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let (handlers, ids): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
    sqlx::query(
        "DELETE FROM attempts WHERE (handler, event_id) IN \
         (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    )
    .bind(handlers)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn notices(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Notice>>> {
        let listener = Self::listener(&self.pool).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(Self::listen(self.pool.clone(), listener, sender));
        Ok(Some(receiver))
    }

    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<u32> {
        let mut tx = self.pool.begin().await?;
        let n = ensure_topic_in(&mut tx, topic, partitions).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let rows = sqlx::query(
            "SELECT t.name, t.partitions, \
               (SELECT COUNT(*) FROM events e WHERE e.topic = t.name) AS events, \
               (SELECT COALESCE(MAX(seq), 0) FROM events e WHERE e.topic = t.name) AS last_seq \
             FROM topics t ORDER BY t.name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_topic).collect()
    }

    async fn append(&self, events: &[Event], default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.pool.begin().await?;
        lock_log(&mut tx).await?;
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        )))
        .bind(topic)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_record).collect()
    }

    async fn read_seqs(&self, seqs: &[i64]) -> Result<Vec<LogRecord>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        // One array parameter, however many sequence numbers.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq = ANY($1) ORDER BY seq"
        )))
        .persistent(false)
        .bind(seqs)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_record).collect()
    }

    async fn position(&self, handler: &str, topic: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT position FROM positions WHERE handler = $1 AND topic = $2")
                .bind(handler)
                .bind(topic)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn processed_ids(&self, handler: &str, ids: &[String]) -> Result<HashSet<String>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        // One primary-key probe per id, whatever the statistics say: with
        // `event_id = ANY($2)` the planner, misled by statistics taken
        // when the table was small, used the key for `handler` alone and
        // filtered every row of the handler (see the module docs).
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT u.id FROM unnest($2::text[]) AS u(id) \
             CROSS JOIN LATERAL (SELECT 1 FROM processed p WHERE p.handler = $1 AND p.event_id = u.id LIMIT 1) hit",
        )
        .persistent(false)
        .bind(handler)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(found.into_iter().collect())
    }

    async fn load_state(&self, handler: &str, key: &str) -> Result<StateMap> {
        let rows = sqlx::query("SELECT name, value FROM state WHERE handler = $1 AND key = $2")
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
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        // Key probes, one per key (`OFFSET 0` keeps the planner from
        // flattening them into a scan; see `processed_ids`).
        let rows = sqlx::query(
            "SELECT s.key, s.name, s.value FROM unnest($2::text[]) AS u(key) \
             CROSS JOIN LATERAL (SELECT key, name, value FROM state WHERE handler = $1 AND key = u.key OFFSET 0) s",
        )
        .persistent(false)
        .bind(handler)
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        shared::decode_states(keys, &rows)
    }

    async fn attempts(&self, handler: &str, event_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT event_id, attempt, outcome, error, version, at FROM attempts \
             WHERE handler = $1 AND event_id = $2 ORDER BY attempt",
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
             WHERE handler = $1 ORDER BY event_id, attempt",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        shared::group_attempts(&rows)
    }

    async fn commit(&self, original: &Batch) -> Result<CommitReport> {
        let now = now_ms();
        let mut report = CommitReport::default();
        let mut tx = self.pool.begin().await?;
        if original.emit_to_log.is_some()
            && original.processed.iter().any(|p| !p.emitted.is_empty())
        {
            // Emitted events go into the log: its lock first, as every
            // log writer takes it, before any row lock.
            lock_log(&mut tx).await?;
        }
        // Outcomes of partitions claimed since they were read are left out.
        // FOR SHARE: a claim (which updates the row) waits for this commit,
        // or this commit sees the claim.
        // One statement for all of them (a round trip each made a commit
        // of eight partitions eight statements longer), locking in key
        // order as claims do.
        let mut stale = Vec::new();
        if !original.claims.is_empty() {
            let mut keys: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
            for claim in &original.claims {
                keys.0.push(&claim.handler);
                keys.1.push(&claim.topic);
                keys.2.push(i64::from(claim.partition));
            }
            let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "SELECT c.handler, c.topic, c.partition, c.epoch FROM partition_claims c \
                 JOIN UNNEST($1::text[], $2::text[], $3::bigint[]) AS k(handler, topic, partition) \
                 ON c.handler = k.handler AND c.topic = k.topic AND c.partition = k.partition \
                 ORDER BY c.handler, c.topic, c.partition FOR SHARE OF c",
            )
            .bind(keys.0)
            .bind(keys.1)
            .bind(keys.2)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?;
            let epochs: HashMap<(&str, &str, i64), i64> = rows
                .iter()
                .map(|(h, t, p, e)| ((h.as_str(), t.as_str(), *p), *e))
                .collect();
            for claim in &original.claims {
                let key = (
                    claim.handler.as_str(),
                    claim.topic.as_str(),
                    i64::from(claim.partition),
                );
                if epochs.get(&key) != Some(&claim.epoch) {
                    stale.push(claim);
                }
            }
        }
        let kept = shared::fence(original, &stale, &mut report);
        let batch = kept.as_ref().unwrap_or(original);
        // Processed records of the whole batch in a few multi-row
        // statements; RETURNING names the rows that were new. A row that
        // already existed (or is being inserted by a concurrent commit,
        // which this one then waits for) is a duplicate: its effects are
        // not applied again.
        let mut fresh: HashSet<(String, String)> = HashSet::new();
        if !batch.processed.is_empty() {
            for row in insert_processed(&batch.processed, now)
                .fetch_all(&mut *tx)
                .await?
            {
                fresh.insert(decode_processed_key(&row)?);
            }
        }
        let effects = shared::effects(&batch.processed, fresh, &mut report.duplicates);
        if !effects.state_deletes.is_empty() {
            let mut columns: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
            for (handler, key, name) in &effects.state_deletes {
                columns.0.push(handler);
                columns.1.push(key);
                columns.2.push(name);
            }
            sqlx::query(
                "DELETE FROM state WHERE (handler, key, name) IN \
                 (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))",
            )
            .bind(columns.0)
            .bind(columns.1)
            .bind(columns.2)
            .execute(&mut *tx)
            .await?;
        }
        if !effects.state_writes.is_empty() {
            upsert_state(&effects.state_writes)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(partitions) = batch.emit_to_log {
            report.appended_seq =
                shared::append_emitted(&mut *tx, &effects.outbox, partitions).await?;
        } else if !effects.outbox.is_empty() {
            insert_outbox(&effects.outbox, now)?
                .execute(&mut *tx)
                .await?;
            report.outbox_rows += effects.outbox.len() as u64;
        }
        delete_attempts(&mut tx, &effects.retried).await?;
        for (handler, event_id, a) in &batch.failures {
            sqlx::query(
                "INSERT INTO attempts (handler, event_id, attempt, outcome, error, version, at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (handler, event_id, attempt) DO UPDATE SET outcome = EXCLUDED.outcome, error = EXCLUDED.error, version = EXCLUDED.version, at = EXCLUDED.at",
            )
            .bind(handler)
            .bind(event_id)
            .bind(i64::from(a.attempt))
            .bind(&a.outcome)
            .bind(without_nul(&a.error).as_ref())
            .bind(&a.version)
            .bind(a.at)
            .execute(&mut *tx)
            .await?;
        }
        for d in &batch.dead_letters {
            let e = &d.record.event;
            let attempts = u32::try_from(d.attempts.len()).unwrap_or(u32::MAX);
            let done = sqlx::query(
                "INSERT INTO processed (handler, event_id, topic, seq, outcome, version, attempts, processed_at) \
                 VALUES ($1, $2, $3, $4, 'dead-lettered', $5, $6, $7) ON CONFLICT (handler, event_id) DO NOTHING",
            )
            .bind(&d.handler)
            .bind(&e.id)
            .bind(&e.topic)
            .bind(d.record.seq)
            .bind(&d.version)
            .bind(i64::from(attempts))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                report.duplicates.insert((d.handler.clone(), e.id.clone()));
                report.dlq_ids.push(0);
                continue;
            }
            let error = shared::dead_letter_error(d);
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO dlq (handler, version, topic, seq, event_id, key, event, attempts, error, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11) RETURNING id",
            )
            .bind(&d.handler)
            .bind(&d.version)
            .bind(&e.topic)
            .bind(d.record.seq)
            .bind(&e.id)
            .bind(&e.key)
            .bind(to_json(&d.record)?)
            .bind(to_json(&d.attempts)?)
            .bind(without_nul(&error).as_ref())
            .bind(now)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            report.dlq_ids.push(id);
            if let Some(event) = shared::dead_letter_outbox(d, id) {
                insert_outbox(&[(d.handler.as_str(), &event)], now)?
                    .execute(&mut *tx)
                    .await?;
                report.outbox_rows += 1;
            }
            delete_attempts(&mut tx, &[(&d.handler, &e.id)]).await?;
            if d.park
                && let Some(key) = &e.key
            {
                sqlx::query(
                    "INSERT INTO parked_keys (handler, key, dlq_id) VALUES ($1, $2, $3) ON CONFLICT (handler, key) DO NOTHING",
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
                "INSERT INTO parked_events (handler, key, seq, topic) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&pe.handler)
            .bind(&pe.key)
            .bind(pe.seq)
            .bind(&pe.topic)
            .execute(&mut *tx)
            .await?;
        }
        for (handler, key) in &batch.unparked {
            sqlx::query("DELETE FROM parked_keys WHERE handler = $1 AND key = $2")
                .bind(handler)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM parked_events WHERE handler = $1 AND key = $2")
                .bind(handler)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        if !batch.actions_done.is_empty() {
            sqlx::query("DELETE FROM dlq_actions WHERE id = ANY($1)")
                .persistent(false)
                .bind(&batch.actions_done)
                .execute(&mut *tx)
                .await?;
        }
        for (handler, topic, position) in &batch.positions {
            sqlx::query(
                "INSERT INTO positions (handler, topic, position) VALUES ($1, $2, $3) \
                 ON CONFLICT (handler, topic) DO UPDATE SET position = GREATEST(positions.position, EXCLUDED.position)",
            )
            .bind(handler)
            .bind(topic)
            .bind(position)
            .execute(&mut *tx)
            .await?;
        }
        if !batch.broker_positions.is_empty() {
            // One statement; a partition once (a row cannot be updated
            // twice by one statement), at its furthest position.
            let mut furthest: BTreeMap<(&str, &str, i64), i64> = BTreeMap::new();
            for (handler, topic, partition, position) in &batch.broker_positions {
                let at = furthest
                    .entry((handler.as_str(), topic.as_str(), i64::from(*partition)))
                    .or_insert(*position);
                *at = (*at).max(*position);
            }
            let mut columns: (Vec<&str>, Vec<&str>, Vec<i64>, Vec<i64>) = Default::default();
            for ((handler, topic, partition), position) in furthest {
                columns.0.push(handler);
                columns.1.push(topic);
                columns.2.push(partition);
                columns.3.push(position);
            }
            sqlx::query(
                "INSERT INTO broker_positions (handler, topic, partition, position) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT (handler, topic, partition) DO UPDATE SET position = GREATEST(broker_positions.position, EXCLUDED.position)",
            )
            .bind(columns.0)
            .bind(columns.1)
            .bind(columns.2)
            .bind(columns.3)
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        report.dlq_ids = shared::realign_dlq_ids(original, &report.fenced, report.dlq_ids);
        Ok(report)
    }

    async fn relay_outbox(&self, limit: u32, default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.pool.begin().await?;
        // The log's lock: the rows are appended to the log, and a second
        // relay (another host) waits here and then sees them delivered.
        lock_log(&mut tx).await?;
        let rows = sqlx::query(
            "SELECT seq, event FROM outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let (events, taken) = shared::decode_outbox(&rows)?;
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let appended = shared::append(
            &mut *tx,
            &events.iter().collect::<Vec<_>>(),
            default_partitions,
        )
        .await?;
        // Mark exactly the rows read, not "everything up to the last one":
        // outbox seqs are also drawn before commit, so a commit still in
        // flight may add a lower seq that this relay has not seen.
        sqlx::query("UPDATE outbox SET delivered_at = $1 WHERE seq = ANY($2)")
            .persistent(false)
            .bind(now_ms())
            .bind(taken)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(appended)
    }

    async fn outbox_pending(&self, limit: u32) -> Result<Vec<(i64, Event)>> {
        let rows = sqlx::query(
            "SELECT seq, event FROM outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let (events, seqs) = shared::decode_outbox(&rows)?;
        Ok(seqs.into_iter().zip(events).collect())
    }

    async fn outbox_delivered(&self, seqs: &[i64]) -> Result<()> {
        // Without waiting for the WAL flush: a mark lost in a crash only
        // makes the relay publish acknowledged events again, which
        // at-least-once delivery allows (consumers skip them by id), so the
        // relay's round spares an fsync. `set_config(.., true)` lasts for
        // this statement's own transaction, whose commit reads it.
        sqlx::query(
            "WITH async AS (SELECT set_config('synchronous_commit', 'off', true)) \
             UPDATE outbox SET delivered_at = $1 FROM async WHERE seq = ANY($2)",
        )
        .persistent(false)
        .bind(now_ms())
        .bind(seqs)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(current.as_deref() == Some(holder))
    }

    async fn broker_positions(&self, handler: &str, topic: &str) -> Result<HashMap<i32, i64>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT partition, position FROM broker_positions WHERE handler = $1 AND topic = $2",
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
        let mut tx = self.pool.begin().await?;
        let mut claimed = HashMap::with_capacity(partitions.len());
        for partition in partitions {
            let epoch: i64 = sqlx::query_scalar(
                "INSERT INTO partition_claims (handler, topic, partition, epoch, owner) VALUES ($1, $2, $3, 1, $4) ON CONFLICT (handler, topic, partition) DO UPDATE SET epoch = partition_claims.epoch + 1, owner = EXCLUDED.owner RETURNING epoch",
            )
            .bind(handler)
            .bind(topic)
            .bind(i64::from(*partition))
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?;
            // After the claim: every commit under an earlier epoch is in.
            let position: Option<i64> =
                sqlx::query_scalar("SELECT position FROM broker_positions WHERE handler = $1 AND topic = $2 AND partition = $3")
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
            "SELECT topic, partition, owner FROM partition_claims WHERE handler = $1",
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
        self.events_where("id = $1", id, 100).await
    }

    async fn events_caused_by(&self, id: &str) -> Result<Vec<LogRecord>> {
        // `causation_id` is the header, copied out on insert and indexed.
        self.events_where("causation_id = $1", id, 1000).await
    }

    async fn processed_records(&self, id: &str) -> Result<Vec<ProcessedRecord>> {
        let rows = sqlx::query(
            "SELECT handler, outcome, version, attempts, processed_at FROM processed \
             WHERE event_id = $1 ORDER BY handler COLLATE \"C\"",
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
        sqlx::query(
            "INSERT INTO handlers (name, config, created_at, updated_at, managed_by) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, updated_at = EXCLUDED.updated_at, \
             managed_by = EXCLUDED.managed_by",
        )
        .bind(name)
        .bind(to_json(config)?)
        .bind(now)
        .bind(now)
        .bind(managed_by.as_str())
        .execute(&self.pool)
        .await?;
        shared::existing_handler(self, name).await
    }

    async fn handler(&self, name: &str) -> Result<Option<HandlerRecord>> {
        let Some(row) = sqlx::query("SELECT * FROM handlers WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let versions = sqlx::query(
            "SELECT version, digest, size, uploaded_at FROM handler_versions WHERE handler = $1 ORDER BY version",
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
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM handlers ORDER BY name COLLATE \"C\"")
                .fetch_all(&self.pool)
                .await?;
        shared::handlers_named(self, names).await
    }

    async fn delete_handler(&self, name: &str, purge: bool) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The handler's row first: it is the lock `add_version` and
        // `activate` take, so they either finish before or find no handler.
        let gone = sqlx::query("DELETE FROM handlers WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for table in shared::handler_tables(purge) {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE handler = $1"
            )))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(gone == 1)
    }

    async fn add_version(
        &self,
        name: &str,
        digest: &str,
        component: &[u8],
    ) -> Result<(VersionInfo, bool)> {
        let mut tx = self.pool.begin().await?;
        // Locking the handler's row serializes uploads to one handler, so
        // that concurrent ones get distinct version numbers.
        let exists = sqlx::query("SELECT name FROM handlers WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::NotFound(format!("handler {name}")));
        }
        if let Some(r) = sqlx::query(
            "SELECT version, digest, size, uploaded_at FROM handler_versions WHERE handler = $1 AND digest = $2",
        )
        .bind(name)
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?
        {
            return Ok((decode_version(&r)?, false));
        }
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM handler_versions WHERE handler = $1",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let now = now_ms();
        let size = shared::component_size(component);
        sqlx::query(
            "INSERT INTO handler_versions (handler, version, digest, component, size, uploaded_at) VALUES ($1, $2, $3, $4, $5, $6)",
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
            "SELECT component FROM handler_versions WHERE handler = $1 AND version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn activate(&self, name: &str, version: i64) -> Result<HandlerRecord> {
        let mut tx = self.pool.begin().await?;
        // The handler's row, locked: a concurrent delete either finished
        // (no version left) or waits until the version is active.
        sqlx::query("SELECT name FROM handlers WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM handler_versions WHERE handler = $1 AND version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        if known.is_none() {
            return Err(Error::NotFound(format!(
                "version {version} of handler {name}"
            )));
        }
        sqlx::query("UPDATE handlers SET active_version = $1, updated_at = $2 WHERE name = $3")
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
             FROM positions p WHERE p.handler = $1 ORDER BY p.topic COLLATE \"C\"",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_lag).collect()
    }

    async fn parked_keys(&self, handler: &str) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query("SELECT key, dlq_id FROM parked_keys WHERE handler = $1")
            .bind(handler)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_parked_key).collect()
    }

    async fn dlq_list(&self, filter: &DlqFilter) -> Result<Vec<DlqEntry>> {
        Postgres::select_dlq(filter)
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode_dlq)
            .collect()
    }

    async fn dlq_get(&self, id: i64) -> Result<Option<DlqEntry>> {
        sqlx::query("SELECT * FROM dlq WHERE id = $1")
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
        let mut tx = self.pool.begin().await?;
        // Locked: of two operators acting at once, the second waits, then
        // reads the status the first set and gets a conflict.
        let row = sqlx::query("SELECT * FROM dlq WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::NotFound(format!("DLQ entry {id}")))?;
        let entry = decode_dlq(&row)?;
        let (status, action_name) = shared::dlq_transition(&entry, id, action)?;
        let now = now_ms();
        sqlx::query("UPDATE dlq SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if action == DlqAction::Redrive {
            sqlx::query("DELETE FROM processed WHERE handler = $1 AND event_id = $2")
                .bind(&entry.handler)
                .bind(&entry.record.event.id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO dlq_actions (handler, dlq_id, action, version, created_at) VALUES ($1, $2, $3, $4, $5)",
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
             JOIN dlq d ON d.id = a.dlq_id WHERE a.handler = $1 ORDER BY a.id",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_action).collect()
    }

    async fn parked_events(&self, handler: &str, key: &str) -> Result<Vec<LogRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM parked_events p JOIN events e ON e.seq = p.seq \
             WHERE p.handler = $1 AND p.key = $2 ORDER BY p.seq",
            event_columns_of("e")
        )))
        .bind(handler)
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_record).collect()
    }
}
