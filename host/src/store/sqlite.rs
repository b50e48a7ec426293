//! The embedded store: one SQLite database (through sqlx) in WAL mode.
//!
//! Durability defaults to `synchronous=FULL`: every commit is fsynced, so a
//! committed event survives a power loss. `NORMAL` only fsyncs at WAL
//! checkpoints: much faster, still safe against a process crash (`kill -9`),
//! but a power loss or kernel crash can lose the most recent commits.
//!
//! Write transactions start with `BEGIN IMMEDIATE`, taking SQLite's write
//! lock up front, so that concurrent writers queue on the busy timeout
//! instead of failing when a read transaction tries to upgrade.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use super::{
    Appended, AttemptRecord, Batch, CommitReport, DlqAction, DlqEntry, DlqFilter, DlqStatus, Error,
    HandlerRecord, LogRecord, ManagedBy, PendingAction, ProcessedRecord, Result, Store,
    StoreOptions, Synchronous, TopicInfo, VersionInfo, from_json, now_ms, to_json,
};
use crate::event::{Event, partition_for_key};
use crate::runtime::StateMap;

/// SQLite limits bound parameters per statement; chunk `IN (...)` lists.
const IN_CHUNK: usize = 500;
/// Rows per multi-row `INSERT` (at most 13 parameters a row).
const ROW_CHUNK: usize = 500;

/// The embedded SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const EVENT_COLUMNS: &str = "seq, topic, partition, \"offset\", id, source, type, time, content_type, data_schema, data, headers, key, appended_at";

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
        Ok(Self { pool })
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

fn decode_record(row: &SqliteRow) -> Result<LogRecord> {
    let headers: String = row.try_get("headers")?;
    let headers: BTreeMap<String, String> = serde_json::from_str(&headers)
        .map_err(|e| Error::Corrupt(format!("event headers: {e}")))?;
    let partition: i64 = row.try_get("partition")?;
    Ok(LogRecord {
        seq: row.try_get("seq")?,
        partition: u32::try_from(partition)
            .map_err(|_| Error::Corrupt(format!("partition {partition}")))?,
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

async fn ensure_topic_in(conn: &mut SqliteConnection, topic: &str, partitions: u32) -> Result<u32> {
    sqlx::query("INSERT INTO topics (name, partitions, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
        .bind(topic)
        .bind(i64::from(partitions.max(1)))
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    let n: i64 = sqlx::query_scalar("SELECT partitions FROM topics WHERE name = ?")
        .bind(topic)
        .fetch_one(&mut *conn)
        .await?;
    u32::try_from(n).map_err(|_| Error::Corrupt(format!("topic {topic} has {n} partitions")))
}

/// Appends `events` inside the caller's transaction.
async fn append_in(
    conn: &mut SqliteConnection,
    events: &[Event],
    default_partitions: u32,
) -> Result<Vec<Appended>> {
    let now = now_ms();
    let mut partitions: HashMap<String, u32> = HashMap::new();
    let mut heads: HashMap<(String, u32), i64> = HashMap::new();
    // Place every event first (a few look-ups per topic and partition),
    // then insert them with multi-row statements: one round trip to the
    // SQLite worker per chunk instead of one per event.
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
                "SELECT next_offset FROM partition_heads WHERE topic = ? AND partition = ?",
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
            "INSERT INTO events (topic, partition, \"offset\", id, source, type, time, content_type, data_schema, data, headers, key, appended_at) ",
        );
        let mut headers = Vec::with_capacity(chunk.len());
        for e in chunk {
            headers.push(to_json(&e.headers)?);
        }
        q.push_values(
            chunk.iter().zip(places).zip(headers),
            |mut row, ((e, (partition, offset)), headers)| {
                row.push_bind(e.topic.clone())
                    .push_bind(i64::from(*partition))
                    .push_bind(*offset)
                    .push_bind(e.id.clone())
                    .push_bind(e.source.clone())
                    .push_bind(e.ty.clone())
                    .push_bind(e.time.clone())
                    .push_bind(e.content_type.clone())
                    .push_bind(e.data_schema.clone())
                    .push_bind(e.data.clone())
                    .push_bind(headers)
                    .push_bind(e.key.clone())
                    .push_bind(now);
            },
        );
        q.push(" RETURNING seq, topic, partition, \"offset\"");
        for row in q.build().fetch_all(&mut *conn).await? {
            let partition: i64 = row.try_get("partition")?;
            seqs.insert(
                (
                    row.try_get("topic")?,
                    u32::try_from(partition).unwrap_or(0),
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
            "INSERT INTO partition_heads (topic, partition, next_offset) VALUES (?, ?, ?) \
             ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .bind(next)
        .execute(&mut *conn)
        .await?;
    }
    Ok(out)
}

fn decode_version(r: &SqliteRow) -> Result<VersionInfo> {
    Ok(VersionInfo {
        version: r.try_get("version")?,
        digest: r.try_get("digest")?,
        size: r.try_get("size")?,
        uploaded_at: r.try_get("uploaded_at")?,
    })
}

fn decode_attempt(r: &SqliteRow) -> Result<(String, AttemptRecord)> {
    let attempt: i64 = r.try_get("attempt")?;
    Ok((
        r.try_get("event_id")?,
        AttemptRecord {
            attempt: u32::try_from(attempt).unwrap_or(0),
            outcome: r.try_get("outcome")?,
            error: r.try_get("error")?,
            version: r.try_get("version")?,
            at: r.try_get("at")?,
        },
    ))
}

fn decode_dlq(row: &SqliteRow) -> Result<DlqEntry> {
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        rows.iter()
            .map(|r| {
                let partitions: i64 = r.try_get("partitions")?;
                Ok(TopicInfo {
                    name: r.try_get("name")?,
                    partitions: u32::try_from(partitions).unwrap_or(0),
                    events: r.try_get("events")?,
                    last_seq: r.try_get("last_seq")?,
                })
            })
            .collect()
    }

    async fn append(&self, events: &[Event], default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let out = append_in(&mut tx, events, default_partitions).await?;
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
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("value")?)))
            .collect()
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
        rows.iter()
            .map(|r| decode_attempt(r).map(|(_, a)| a))
            .collect()
    }

    async fn pending_attempts(&self, handler: &str) -> Result<HashMap<String, Vec<AttemptRecord>>> {
        let rows = sqlx::query(
            "SELECT event_id, attempt, outcome, error, version, at FROM attempts \
             WHERE handler = ? ORDER BY event_id, attempt",
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Processed records of the whole batch in a few multi-row
        // statements; RETURNING names the rows that were new. A row that
        // already existed is a duplicate: its effects are not applied again.
        let mut fresh: HashSet<(String, String)> = HashSet::new();
        for chunk in batch.processed.chunks(ROW_CHUNK) {
            let mut q = QueryBuilder::new(
                "INSERT INTO processed (handler, event_id, topic, seq, outcome, version, attempts, processed_at) ",
            );
            q.push_values(chunk, |mut row, p| {
                row.push_bind(p.handler.clone())
                    .push_bind(p.event_id.clone())
                    .push_bind(p.topic.clone())
                    .push_bind(p.seq)
                    .push_bind("ok")
                    .push_bind(p.version.clone())
                    .push_bind(i64::from(p.attempts))
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (handler, event_id) DO NOTHING RETURNING handler, event_id");
            for row in q.build().fetch_all(&mut *tx).await? {
                fresh.insert((row.try_get(0)?, row.try_get(1)?));
            }
        }
        // The last change of each state field wins: two events of one key
        // can meet in a batch (a redrive beside the key's next event), and
        // a write followed by a delete must end deleted.
        let mut changes: BTreeMap<(&str, &str, &str), Option<&[u8]>> = BTreeMap::new();
        let mut outbox: Vec<(&str, &Event)> = Vec::new();
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
                    changes.insert((&p.handler, key, name), value.as_deref());
                }
            }
            outbox.extend(p.emitted.iter().map(|e| (p.handler.as_str(), e)));
            if p.attempts > 1 {
                sqlx::query("DELETE FROM attempts WHERE handler = ? AND event_id = ?")
                    .bind(&p.handler)
                    .bind(&p.event_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let mut upserts: Vec<(&str, &str, &str, &[u8])> = Vec::new();
        for ((handler, key, name), value) in changes {
            match value {
                Some(value) => upserts.push((handler, key, name, value)),
                None => {
                    sqlx::query("DELETE FROM state WHERE handler = ? AND key = ? AND name = ?")
                        .bind(handler)
                        .bind(key)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for chunk in upserts.chunks(ROW_CHUNK) {
            let mut q = QueryBuilder::new("INSERT INTO state (handler, key, name, value) ");
            q.push_values(chunk, |mut row, (handler, key, name, value)| {
                row.push_bind(handler.to_string())
                    .push_bind(key.to_string())
                    .push_bind(name.to_string())
                    .push_bind(value.to_vec());
            });
            q.push(" ON CONFLICT (handler, key, name) DO UPDATE SET value = excluded.value");
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
                row.push_bind(e.id.clone())
                    .push_bind(e.topic.clone())
                    .push_bind(e.key.clone())
                    .push_bind(json)
                    .push_bind(handler.to_owned())
                    .push_bind(now);
            });
            q.build().execute(&mut *tx).await?;
            report.outbox_rows += chunk.len() as u64;
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
            let error = d
                .attempts
                .last()
                .map(|a| format!("{}: {}", a.outcome, a.error))
                .unwrap_or_default();
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
        tx.commit().await?;
        Ok(report)
    }

    async fn relay_outbox(&self, limit: u32, default_partitions: u32) -> Result<Vec<Appended>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT seq, event FROM outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut events = Vec::with_capacity(rows.len());
        let mut last = 0i64;
        for row in &rows {
            let text: String = row.try_get("event")?;
            events.push(from_json::<Event>(&text, "outbox event")?);
            last = row.try_get("seq")?;
        }
        let appended = append_in(&mut tx, &events, default_partitions).await?;
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
        rows.iter()
            .map(|r| {
                let attempts: i64 = r.try_get("attempts")?;
                Ok(ProcessedRecord {
                    handler: r.try_get("handler")?,
                    outcome: r.try_get("outcome")?,
                    version: r.try_get("version")?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
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
            "INSERT INTO handlers (name, config, created_at, updated_at, managed_by) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at, \
             managed_by = excluded.managed_by",
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
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM handlers ORDER BY name")
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        let size = i64::try_from(component.len()).unwrap_or(i64::MAX);
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
        sqlx::query("UPDATE handlers SET active_version = ?, updated_at = ? WHERE name = ?")
            .bind(version)
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await?;
        self.handler(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("handler {name}")))
    }

    async fn lag(&self, handler: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT p.topic, (SELECT COUNT(*) FROM events e WHERE e.topic = p.topic AND e.seq > p.position) AS lag \
             FROM positions p WHERE p.handler = ? ORDER BY p.topic",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("topic")?, r.try_get("lag")?)))
            .collect()
    }

    async fn parked_keys(&self, handler: &str) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query("SELECT key, dlq_id FROM parked_keys WHERE handler = ?")
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
            q.push(" AND handler = ").push_bind(handler.clone());
        }
        if let Some(topic) = &filter.topic {
            q.push(" AND topic = ").push_bind(topic.clone());
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT * FROM dlq WHERE id = ?")
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
        entry.status = status;
        entry.updated_at = now;
        Ok(entry)
    }

    async fn pending_actions(&self, handler: &str) -> Result<Vec<PendingAction>> {
        let rows = sqlx::query(
            "SELECT a.id AS action_id, a.action, a.version AS action_version, d.* FROM dlq_actions a \
             JOIN dlq d ON d.id = a.dlq_id WHERE a.handler = ? ORDER BY a.id",
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
             WHERE p.handler = ? AND p.key = ? ORDER BY p.seq",
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
