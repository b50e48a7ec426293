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
//! PostgreSQL text cannot contain NUL characters: strings with `'\0'` fail
//! to store, except for error messages of failed attempts, where NUL is
//! replaced by U+FFFD (a guest's error text must not stop the group commit).
//! `StoreOptions::synchronous` is SQLite's and is ignored here.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{QueryBuilder, Row};

use super::{
    Appended, AttemptRecord, Batch, CommitReport, DlqAction, DlqEntry, DlqFilter, DlqStatus, Error,
    HandlerRecord, LogRecord, ManagedBy, PendingAction, ProcessedRecord, Result, Store,
    StoreOptions, TopicInfo, VersionInfo, from_json, now_ms, to_json,
};
use crate::event::{Event, partition_for_key};
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

const EVENT_COLUMNS: &str = "seq, topic, partition, \"offset\", id, source, type, time, content_type, data_schema, data, headers, key, appended_at";

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER@HOST/DB`) and
    /// migrates it; the database must exist.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url).map_err(|e| Error::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .connect_with(connect)
            .await?;
        // The migrator takes its own advisory lock: hosts starting together
        // migrate once.
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
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

fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Corrupt(format!("{what} {value}")))
}

fn decode_record(row: &PgRow) -> Result<LogRecord> {
    let headers: String = row.try_get("headers")?;
    let headers: BTreeMap<String, String> = from_json(&headers, "event headers")?;
    Ok(LogRecord {
        seq: row.try_get("seq")?,
        partition: to_u32(row.try_get("partition")?, "partition")?,
        offset: row.try_get("offset")?,
        appended_at: row.try_get("appended_at")?,
        event: Event {
            id: row.try_get("id")?,
            source: row.try_get("source")?,
            ty: row.try_get("type")?,
            time: row.try_get("time")?,
            content_type: row.try_get("content_type")?,
            data_schema: row.try_get("data_schema")?,
            data: row.try_get("data")?,
            headers,
            key: row.try_get("key")?,
            topic: row.try_get("topic")?,
        },
    })
}

async fn ensure_topic_in(conn: &mut PgConnection, topic: &str, partitions: u32) -> Result<u32> {
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
    let n: i64 = sqlx::query_scalar("SELECT partitions FROM topics WHERE name = $1")
        .bind(topic)
        .fetch_one(&mut *conn)
        .await?;
    u32::try_from(n).map_err(|_| Error::Corrupt(format!("topic {topic} has {n} partitions")))
}

/// Appends `events` inside the caller's transaction, which must hold the
/// log's lock ([`lock_log`]).
async fn append_in(
    conn: &mut PgConnection,
    events: &[Event],
    default_partitions: u32,
) -> Result<Vec<Appended>> {
    let now = now_ms();
    let mut partitions: HashMap<String, u32> = HashMap::new();
    let mut heads: HashMap<(String, u32), i64> = HashMap::new();
    // Place every event first (a few look-ups per topic and partition),
    // then insert them with multi-row statements.
    let mut placed: Vec<(u32, i64)> = Vec::with_capacity(events.len());
    for e in events {
        let n = match partitions.get(&e.topic) {
            Some(n) => *n,
            None => {
                let n = ensure_topic_in(conn, &e.topic, default_partitions).await?;
                partitions.insert(e.topic.clone(), n);
                n
            }
        };
        let partition = match &e.key {
            Some(key) => partition_for_key(key, n),
            None => rand::random::<u32>() % n,
        };
        let head_key = (e.topic.clone(), partition);
        let offset = match heads.get(&head_key) {
            Some(o) => *o,
            None => sqlx::query_scalar::<_, i64>(
                "SELECT next_offset FROM partition_heads WHERE topic = $1 AND partition = $2",
            )
            .bind(&e.topic)
            .bind(i64::from(partition))
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or(0),
        };
        heads.insert(head_key, offset + 1);
        placed.push((partition, offset));
    }
    let mut seqs: HashMap<(String, u32, i64), i64> = HashMap::with_capacity(events.len());
    for (chunk, places) in events.chunks(ROW_CHUNK).zip(placed.chunks(ROW_CHUNK)) {
        let mut q = QueryBuilder::new(
            "INSERT INTO events (topic, partition, \"offset\", id, source, type, time, content_type, data_schema, data, headers, key, appended_at, causation_id) ",
        );
        let mut headers = Vec::with_capacity(chunk.len());
        for e in chunk {
            headers.push(to_json(&e.headers)?);
        }
        q.push_values(
            chunk.iter().zip(places).zip(headers),
            |mut row, ((e, (partition, offset)), headers)| {
                row.push_bind(e.topic.as_str())
                    .push_bind(i64::from(*partition))
                    .push_bind(*offset)
                    .push_bind(e.id.as_str())
                    .push_bind(e.source.as_str())
                    .push_bind(e.ty.as_str())
                    .push_bind(e.time.as_deref())
                    .push_bind(e.content_type.as_deref())
                    .push_bind(e.data_schema.as_deref())
                    .push_bind(e.data.as_slice())
                    .push_bind(headers)
                    .push_bind(e.key.as_deref())
                    .push_bind(now)
                    .push_bind(e.causation_id());
            },
        );
        // Identity values are drawn row by row in VALUES order, so events
        // of one append get increasing sequence numbers in the given order.
        q.push(" RETURNING seq, topic, partition, \"offset\"");
        for row in q.build().fetch_all(&mut *conn).await? {
            seqs.insert(
                (
                    row.try_get("topic")?,
                    to_u32(row.try_get("partition")?, "partition")?,
                    row.try_get("offset")?,
                ),
                row.try_get("seq")?,
            );
        }
    }
    let mut out = Vec::with_capacity(events.len());
    for (e, (partition, offset)) in events.iter().zip(placed) {
        let seq = seqs
            .get(&(e.topic.clone(), partition, offset))
            .copied()
            .ok_or_else(|| Error::Corrupt(format!("no sequence number for event {}", e.id)))?;
        out.push(Appended {
            id: e.id.clone(),
            topic: e.topic.clone(),
            partition,
            offset,
            seq,
        });
    }
    for ((topic, partition), next) in heads {
        sqlx::query(
            "INSERT INTO partition_heads (topic, partition, next_offset) VALUES ($1, $2, $3) \
             ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .bind(next)
        .execute(&mut *conn)
        .await?;
    }
    Ok(out)
}

fn decode_version(r: &PgRow) -> Result<VersionInfo> {
    Ok(VersionInfo {
        version: r.try_get("version")?,
        digest: r.try_get("digest")?,
        size: r.try_get("size")?,
        uploaded_at: r.try_get("uploaded_at")?,
    })
}

fn decode_attempt(r: &PgRow) -> Result<(String, AttemptRecord)> {
    Ok((
        r.try_get("event_id")?,
        AttemptRecord {
            attempt: to_u32(r.try_get("attempt")?, "attempt")?,
            outcome: r.try_get("outcome")?,
            error: r.try_get("error")?,
            version: r.try_get("version")?,
            at: r.try_get("at")?,
        },
    ))
}

fn decode_dlq(row: &PgRow) -> Result<DlqEntry> {
    let record: String = row.try_get("event")?;
    let attempts: String = row.try_get("attempts")?;
    let status: String = row.try_get("status")?;
    Ok(DlqEntry {
        id: row.try_get("id")?,
        handler: row.try_get("handler")?,
        version: row.try_get("version")?,
        record: from_json(&record, "DLQ event")?,
        attempts: from_json(&attempts, "DLQ attempts")?,
        error: row.try_get("error")?,
        status: DlqStatus::parse(&status)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
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
        rows.iter()
            .map(|r| {
                Ok(TopicInfo {
                    name: r.try_get("name")?,
                    partitions: to_u32(r.try_get("partitions")?, "partitions")?,
                    events: r.try_get("events")?,
                    last_seq: r.try_get("last_seq")?,
                })
            })
            .collect()
    }

    async fn append(&self, events: &[Event], default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.pool.begin().await?;
        lock_log(&mut tx).await?;
        let out = append_in(&mut tx, events, default_partitions).await?;
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
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT event_id FROM processed WHERE handler = $1 AND event_id = ANY($2)",
        )
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
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("value")?)))
            .collect()
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
        rows.iter()
            .map(|r| decode_attempt(r).map(|(_, a)| a))
            .collect()
    }

    async fn pending_attempts(&self, handler: &str) -> Result<HashMap<String, Vec<AttemptRecord>>> {
        let rows = sqlx::query(
            "SELECT event_id, attempt, outcome, error, version, at FROM attempts \
             WHERE handler = $1 ORDER BY event_id, attempt",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
        for row in &rows {
            let (id, attempt) = decode_attempt(row)?;
            out.entry(id).or_default().push(attempt);
        }
        Ok(out)
    }

    async fn commit(&self, batch: &Batch) -> Result<CommitReport> {
        let now = now_ms();
        let mut report = CommitReport::default();
        let mut tx = self.pool.begin().await?;
        // Processed records of the whole batch in a few multi-row
        // statements; RETURNING names the rows that were new. A row that
        // already existed (or is being inserted by a concurrent commit,
        // which this one then waits for) is a duplicate: its effects are
        // not applied again.
        let mut fresh: HashSet<(String, String)> = HashSet::new();
        for chunk in batch.processed.chunks(ROW_CHUNK) {
            let mut q = QueryBuilder::new(
                "INSERT INTO processed (handler, event_id, topic, seq, outcome, version, attempts, processed_at) ",
            );
            q.push_values(chunk, |mut row, p| {
                row.push_bind(p.handler.as_str())
                    .push_bind(p.event_id.as_str())
                    .push_bind(p.topic.as_str())
                    .push_bind(p.seq)
                    .push_bind("ok")
                    .push_bind(p.version.as_str())
                    .push_bind(i64::from(p.attempts))
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (handler, event_id) DO NOTHING RETURNING handler, event_id");
            for row in q.build().fetch_all(&mut *tx).await? {
                fresh.insert((row.try_get(0)?, row.try_get(1)?));
            }
        }
        // The final state change of each (handler, key, name), the later
        // event's winning: one multi-row statement must not touch a row
        // twice, and a write followed by a delete in the same batch must
        // leave the value deleted.
        let mut state: BTreeMap<(&str, &str, &str), Option<&[u8]>> = BTreeMap::new();
        let mut outbox: Vec<(&str, &Event)> = Vec::new();
        let mut retried: Vec<(&str, &str)> = Vec::new();
        for p in &batch.processed {
            // `remove`: should one id appear twice, only the first applies.
            if !fresh.remove(&(p.handler.clone(), p.event_id.clone())) {
                report
                    .duplicates
                    .insert((p.handler.clone(), p.event_id.clone()));
                continue;
            }
            if let Some(key) = &p.key {
                for (name, value) in &p.state_changes {
                    state.insert((&p.handler, key, name), value.as_deref());
                }
            }
            outbox.extend(p.emitted.iter().map(|e| (p.handler.as_str(), e)));
            if p.attempts > 1 {
                retried.push((&p.handler, &p.event_id));
            }
        }
        let (mut deletes, mut upserts) = (Vec::new(), Vec::new());
        for ((handler, key, name), value) in state {
            match value {
                Some(value) => upserts.push((handler, key, name, value)),
                None => deletes.push((handler, key, name)),
            }
        }
        if !deletes.is_empty() {
            let mut columns: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
            for (handler, key, name) in deletes {
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
        for chunk in upserts.chunks(ROW_CHUNK) {
            let mut q = QueryBuilder::new("INSERT INTO state (handler, key, name, value) ");
            q.push_values(chunk, |mut row, (handler, key, name, value)| {
                row.push_bind(*handler)
                    .push_bind(*key)
                    .push_bind(*name)
                    .push_bind(*value);
            });
            q.push(" ON CONFLICT (handler, key, name) DO UPDATE SET value = EXCLUDED.value");
            q.build().execute(&mut *tx).await?;
        }
        for chunk in outbox.chunks(ROW_CHUNK) {
            let mut rows = Vec::with_capacity(chunk.len());
            for (handler, e) in chunk {
                rows.push((*handler, *e, to_json(*e)?));
            }
            let mut q = QueryBuilder::new(
                "INSERT INTO outbox (event_id, topic, key, event, handler, created_at) ",
            );
            q.push_values(rows, |mut row, (handler, e, json)| {
                row.push_bind(e.id.as_str())
                    .push_bind(e.topic.as_str())
                    .push_bind(e.key.as_deref())
                    .push_bind(json)
                    .push_bind(handler)
                    .push_bind(now);
            });
            q.build().execute(&mut *tx).await?;
            report.outbox_rows += chunk.len() as u64;
        }
        delete_attempts(&mut tx, &retried).await?;
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
            let error = d
                .attempts
                .last()
                .map(|a| format!("{}: {}", a.outcome, a.error))
                .unwrap_or_default();
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
        tx.commit().await?;
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
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut events = Vec::with_capacity(rows.len());
        let mut taken = Vec::with_capacity(rows.len());
        for row in &rows {
            let text: String = row.try_get("event")?;
            events.push(from_json::<Event>(&text, "outbox event")?);
            taken.push(row.try_get::<i64, _>("seq")?);
        }
        let appended = append_in(&mut tx, &events, default_partitions).await?;
        // Mark exactly the rows read, not "everything up to the last one":
        // outbox seqs are also drawn before commit, so a commit still in
        // flight may add a lower seq that this relay has not seen.
        sqlx::query("UPDATE outbox SET delivered_at = $1 WHERE seq = ANY($2)")
            .bind(now_ms())
            .bind(taken)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(appended)
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
        rows.iter()
            .map(|r| {
                Ok(ProcessedRecord {
                    handler: r.try_get("handler")?,
                    outcome: r.try_get("outcome")?,
                    version: r.try_get("version")?,
                    attempts: to_u32(r.try_get("attempts")?, "attempts")?,
                    processed_at: r.try_get("processed_at")?,
                })
            })
            .collect()
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
        self.handler(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("handler {name}")))
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
        let config: String = row.try_get("config")?;
        Ok(Some(HandlerRecord {
            name: row.try_get("name")?,
            config: from_json(&config, "handler config")?,
            active_version: row.try_get("active_version")?,
            versions,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            managed_by: ManagedBy::parse(row.try_get("managed_by")?)?,
        }))
    }

    async fn handlers(&self) -> Result<Vec<HandlerRecord>> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM handlers ORDER BY name COLLATE \"C\"")
                .fetch_all(&self.pool)
                .await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(h) = self.handler(&name).await? {
                out.push(h);
            }
        }
        Ok(out)
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
        let mut tables = vec!["handler_versions"];
        if purge {
            tables.extend([
                "positions",
                "processed",
                "state",
                "attempts",
                "parked_keys",
                "parked_events",
                "dlq_actions",
                "dlq",
            ]);
        }
        for table in tables {
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
        let size = i64::try_from(component.len()).unwrap_or(i64::MAX);
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
        Ok((
            VersionInfo {
                version,
                digest: digest.to_owned(),
                size,
                uploaded_at: now,
            },
            true,
        ))
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
        self.handler(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("handler {name}")))
    }

    async fn lag(&self, handler: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT p.topic, (SELECT COUNT(*) FROM events e WHERE e.topic = p.topic AND e.seq > p.position) AS lag \
             FROM positions p WHERE p.handler = $1 ORDER BY p.topic COLLATE \"C\"",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("topic")?, r.try_get("lag")?)))
            .collect()
    }

    async fn parked_keys(&self, handler: &str) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query("SELECT key, dlq_id FROM parked_keys WHERE handler = $1")
            .bind(handler)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("dlq_id")?)))
            .collect()
    }

    async fn dlq_list(&self, filter: &DlqFilter) -> Result<Vec<DlqEntry>> {
        let mut q = QueryBuilder::new("SELECT * FROM dlq WHERE id > ");
        q.push_bind(filter.after.unwrap_or(0));
        if let Some(handler) = &filter.handler {
            q.push(" AND handler = ").push_bind(handler.as_str());
        }
        if let Some(topic) = &filter.topic {
            q.push(" AND topic = ").push_bind(topic.as_str());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(filter.limit.unwrap_or(100).clamp(1, 1000)));
        q.build()
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
        let mut entry = decode_dlq(&row)?;
        if entry.status != DlqStatus::Pending {
            return Err(Error::Conflict(format!(
                "DLQ entry {id} is already {}",
                entry.status.as_str()
            )));
        }
        let now = now_ms();
        let (status, action_name) = match action {
            DlqAction::Redrive => (DlqStatus::Redriven, "redrive"),
            DlqAction::Discard => (DlqStatus::Discarded, "discard"),
        };
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
        entry.status = status;
        entry.updated_at = now;
        Ok(entry)
    }

    async fn pending_actions(&self, handler: &str) -> Result<Vec<PendingAction>> {
        let rows = sqlx::query(
            "SELECT a.id AS action_id, a.action, a.version AS action_version, d.* FROM dlq_actions a \
             JOIN dlq d ON d.id = a.dlq_id WHERE a.handler = $1 ORDER BY a.id",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let action: String = r.try_get("action")?;
                Ok(PendingAction {
                    id: r.try_get("action_id")?,
                    action: match action.as_str() {
                        "redrive" => DlqAction::Redrive,
                        "discard" => DlqAction::Discard,
                        other => return Err(Error::Corrupt(format!("DLQ action {other:?}"))),
                    },
                    version: r.try_get("action_version")?,
                    entry: decode_dlq(r)?,
                })
            })
            .collect()
    }

    async fn parked_events(&self, handler: &str, key: &str) -> Result<Vec<LogRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM parked_events p JOIN events e ON e.seq = p.seq \
             WHERE p.handler = $1 AND p.key = $2 ORDER BY p.seq",
            EVENT_COLUMNS
                .split(", ")
                .map(|c| format!("e.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(handler)
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_record).collect()
    }
}
