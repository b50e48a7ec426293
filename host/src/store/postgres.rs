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
//!   `events` ([`Log::append`], [`Outbox::relay_outbox`]) first takes one
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

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};

use super::shared::builders::StoreDb;
use super::shared::commit::{OutcomeWriter, StateWrite, commit_in};
use super::shared::log::{self, LogWriter, records};
use super::shared::rows::{decode_dlq, decode_placed, decode_processed_key, decode_record};
use super::shared::sql::{args, event_columns, impl_conn, sql};
use super::shared::{SqlStore, outbox, outcomes};
use super::{
    Appended, AttemptRecord, Batch, Claim, CommitReport, DlqEntry, DlqFilter, Error, Log,
    LogRecord, Notice, Notices, Outbox, Outcomes, Processed, ProcessedRecord, Result, StoreOptions,
    TopicInfo, now_ms, to_json,
};
use crate::event::Event;
use crate::event::StateMap;

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

impl_conn!(PgConnection, Postgres, postgres);

impl SqlStore for PostgresStore {
    type Conn = PgConnection;
    type Read = PoolConnection<Postgres>;
    type Write = sqlx::Transaction<'static, Postgres>;

    async fn read(&self) -> Result<PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    async fn write(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn commit_tx(tx: sqlx::Transaction<'static, Postgres>) -> Result<()> {
        tx.commit().await?;
        Ok(())
    }

    async fn list_dlq(conn: &mut PgConnection, filter: &DlqFilter) -> Result<Vec<DlqEntry>> {
        Postgres::select_dlq(filter)
            .build()
            .fetch_all(conn)
            .await?
            .iter()
            .map(decode_dlq)
            .collect()
    }
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

/// An append's statements, inside the caller's transaction, which must hold
/// the log's lock ([`lock_log`]).
impl LogWriter for PgConnection {
    const ROWS_PER_INSERT: usize = ROW_CHUNK;

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
fn insert_processed_rows(processed: &[Processed], now: i64) -> PgQuery<'_> {
    let column = |f: fn(&Processed) -> &str| processed.iter().map(f).collect::<Vec<_>>();
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
fn upsert_state_rows<'q>(fields: &'q [StateWrite<'q>]) -> PgQuery<'q> {
    let column = |f: fn(&StateWrite<'q>) -> &'q str| fields.iter().map(f).collect::<Vec<_>>();
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
fn insert_outbox_rows<'q>(rows: &'q [(&'q str, &'q Event)], now: i64) -> Result<PgQuery<'q>> {
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

/// A commit's statements, each one statement for all its rows (see
/// [`PgQuery`]).
impl OutcomeWriter for PgConnection {
    /// FOR SHARE: a claim (which updates the row) waits for this commit,
    /// or this commit sees the claim. One statement for all of them (a
    /// round trip each made a commit of eight partitions eight statements
    /// longer), locking in key order as claims do.
    async fn stale_claims<'c>(&mut self, claims: &'c [Claim]) -> Result<Vec<&'c Claim>> {
        let mut stale = Vec::new();
        if claims.is_empty() {
            return Ok(stale);
        }
        let mut keys: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
        for claim in claims {
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
        .fetch_all(&mut *self)
        .await?;
        let epochs: HashMap<(&str, &str, i64), i64> = rows
            .iter()
            .map(|(h, t, p, e)| ((h.as_str(), t.as_str(), *p), *e))
            .collect();
        for claim in claims {
            let key = (
                claim.handler.as_str(),
                claim.topic.as_str(),
                i64::from(claim.partition),
            );
            if epochs.get(&key) != Some(&claim.epoch) {
                stale.push(claim);
            }
        }
        Ok(stale)
    }

    /// RETURNING names the rows that were new, whatever `name_new` says.
    async fn insert_processed(
        &mut self,
        processed: &[Processed],
        now: i64,
        _name_new: bool,
    ) -> Result<Option<HashSet<(String, String)>>> {
        let mut fresh: HashSet<(String, String)> = HashSet::new();
        if !processed.is_empty() {
            for row in insert_processed_rows(processed, now)
                .fetch_all(&mut *self)
                .await?
            {
                fresh.insert(decode_processed_key(&row)?);
            }
        }
        Ok(Some(fresh))
    }

    async fn delete_state(&mut self, fields: &[(&str, &str, &str)]) -> Result<()> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut columns: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
        for (handler, key, name) in fields {
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
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn upsert_state(&mut self, fields: &[StateWrite<'_>]) -> Result<()> {
        if !fields.is_empty() {
            upsert_state_rows(fields).execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn insert_outbox(&mut self, rows: &[(&str, &Event)], now: i64) -> Result<()> {
        insert_outbox_rows(rows, now)?.execute(&mut *self).await?;
        Ok(())
    }

    async fn delete_attempts(&mut self, pairs: &[(&str, &str)]) -> Result<()> {
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
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn delete_actions(&mut self, ids: &[i64]) -> Result<()> {
        sqlx::query("DELETE FROM dlq_actions WHERE id = ANY($1)")
            .persistent(false)
            .bind(ids)
            .execute(&mut *self)
            .await?;
        Ok(())
    }

    /// One statement; a partition once (a row cannot be updated twice by
    /// one statement), at its furthest position.
    async fn upsert_broker_positions(
        &mut self,
        positions: &[(String, String, i32, i64)],
    ) -> Result<()> {
        let mut furthest: BTreeMap<(&str, &str, i64), i64> = BTreeMap::new();
        for (handler, topic, partition, position) in positions {
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
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    fn message(text: &str) -> Cow<'_, str> {
        without_nul(text)
    }
}

#[async_trait::async_trait]
impl Log for PostgresStore {
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
        lock_log(&mut tx).await?;
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
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        // One array parameter, however many sequence numbers.
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE seq = ANY($1) ORDER BY seq"
        ))
        .persistent(false)
        .bind(seqs)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_record).collect()
    }

    async fn events_by_id(&self, id: &str) -> Result<Vec<LogRecord>> {
        log::events_by_id(&mut *self.read().await?, id).await
    }

    async fn events_caused_by(&self, id: &str) -> Result<Vec<LogRecord>> {
        // `causation_id` is the header, copied out on insert and indexed.
        records(
            &mut *self.read().await?,
            sql!(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE causation_id = ? ORDER BY seq LIMIT 1000"
            )),
            args![id],
        )
        .await
    }
}

#[async_trait::async_trait]
impl Outcomes for PostgresStore {
    async fn position(&self, handler: &str, topic: &str) -> Result<Option<i64>> {
        outcomes::position(&mut *self.read().await?, handler, topic).await
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
        outcomes::load_state(&mut *self.read().await?, handler, key).await
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
        super::shared::rows::decode_states(keys, &rows)
    }

    async fn attempts(&self, handler: &str, event_id: &str) -> Result<Vec<AttemptRecord>> {
        outcomes::attempts(&mut *self.read().await?, handler, event_id).await
    }

    async fn pending_attempts(&self, handler: &str) -> Result<HashMap<String, Vec<AttemptRecord>>> {
        outcomes::pending_attempts(&mut *self.read().await?, handler).await
    }

    async fn commit(&self, original: &Batch) -> Result<CommitReport> {
        let now = now_ms();
        let mut tx = self.write().await?;
        if original.emit_to_log.is_some()
            && original.processed.iter().any(|p| !p.emitted.is_empty())
        {
            // Emitted events go into the log: its lock first, as every
            // log writer takes it, before any row lock.
            lock_log(&mut tx).await?;
        }
        let report = commit_in(&mut *tx, original, now, true)
            .await?
            .ok_or_else(|| {
                Error::Corrupt("a commit naming its new records did not apply".into())
            })?;
        Self::commit_tx(tx).await?;
        Ok(report)
    }

    async fn processed_records(&self, id: &str) -> Result<Vec<ProcessedRecord>> {
        outcomes::processed_records(&mut *self.read().await?, id).await
    }

    async fn lag(&self, handler: &str) -> Result<Vec<(String, i64)>> {
        outcomes::lag(&mut *self.read().await?, handler).await
    }
}

#[async_trait::async_trait]
impl Outbox for PostgresStore {
    async fn relay_outbox(&self, limit: u32, default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.write().await?;
        // The log's lock: the rows are appended to the log, and a second
        // relay (another host) waits here and then sees them delivered.
        lock_log(&mut tx).await?;
        let (appended, taken) = outbox::relay(&mut *tx, limit, default_partitions).await?;
        if taken.is_empty() {
            return Ok(appended);
        }
        // Mark exactly the rows read, not "everything up to the last one":
        // outbox seqs are also drawn before commit, so a commit still in
        // flight may add a lower seq that this relay has not seen.
        sqlx::query("UPDATE outbox SET delivered_at = $1 WHERE seq = ANY($2)")
            .persistent(false)
            .bind(now_ms())
            .bind(taken)
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
        let mut tx = self.write().await?;
        outbox::take_lease(&mut *tx, name, holder, ttl_ms).await?;
        Self::commit_tx(tx).await?;
        outbox::holds_lease(&mut *self.read().await?, name, holder).await
    }
}

#[async_trait::async_trait]
impl Notices for PostgresStore {
    async fn notices(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Notice>>> {
        let listener = Self::listener(&self.pool).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(Self::listen(self.pool.clone(), listener, sender));
        Ok(Some(receiver))
    }
}
