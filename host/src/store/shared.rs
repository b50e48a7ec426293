//! What the two backends have in common, written once: decoding rows
//! (generic over [`sqlx::Row`]), the queries whose SQL is the same in both
//! dialects (built with [`QueryBuilder`], which writes each database's
//! placeholders), and the driver-independent planning of appends and
//! commits. The SQL that differs, and its execution, stays in `sqlite.rs`
//! and `postgres.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::{
    Appended, AttemptRecord, Batch, Claim, CommitReport, DeadLetter, DlqAction, DlqEntry,
    DlqFilter, DlqStatus, Error, HandlerRecord, LogRecord, ManagedBy, PendingAction, Processed,
    ProcessedRecord, Result, Store, TopicInfo, VersionInfo, from_json, to_json,
};
use crate::event::{Event, partition_for_key};
use crate::runtime::StateMap;

/// The columns of a log record, in the order of the `events` table.
pub(crate) const EVENT_COLUMNS: &str = "seq, topic, partition, \"offset\", id, source, type, time, content_type, data_schema, data, headers, key, appended_at";

/// [`EVENT_COLUMNS`], each qualified with `table` (for joins).
pub(crate) fn event_columns_of(table: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A stored count or number that must fit a `u32`; `what` names it in the
/// error.
pub(crate) fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Corrupt(format!("{what} {value}")))
}

/// A topic's partition heads, from `partition, next_offset` rows.
pub(crate) fn decode_heads(topic: &str, rows: Vec<(i64, i64)>) -> Result<HashMap<u32, i64>> {
    rows.into_iter()
        .map(|(partition, next)| Ok((to_u32(partition, &format!("partition of {topic}"))?, next)))
        .collect()
}

// ---------------------------------------------------------------------------
// Rows

/// Typed access to the columns of a row, by name. Both backends store
/// integers as 64-bit (`INTEGER`, `BIGINT`), text as text and bytes as
/// `BLOB`/`BYTEA`, so one Rust type serves each column on both.
pub(crate) trait StoreRow {
    /// An integer column.
    fn int(&self, column: &str) -> Result<i64>;
    /// A nullable integer column.
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    /// A text column.
    fn text(&self, column: &str) -> Result<String>;
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    /// A byte column.
    fn bytes(&self, column: &str) -> Result<Vec<u8>>;
}

impl<R> StoreRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>> {
        Ok(self.try_get(column)?)
    }
}

/// A log record (the columns of [`EVENT_COLUMNS`]).
pub(crate) fn decode_record(row: &impl StoreRow) -> Result<LogRecord> {
    let headers: BTreeMap<String, String> = from_json(&row.text("headers")?, "event headers")?;
    Ok(LogRecord {
        seq: row.int("seq")?,
        partition: to_u32(row.int("partition")?, "partition")?,
        offset: row.int("offset")?,
        appended_at: row.int("appended_at")?,
        event: Event {
            id: row.text("id")?,
            source: row.text("source")?,
            ty: row.text("type")?,
            time: row.opt_text("time")?,
            content_type: row.opt_text("content_type")?,
            data_schema: row.opt_text("data_schema")?,
            data: row.bytes("data")?,
            headers,
            key: row.opt_text("key")?,
            topic: row.text("topic")?,
        },
    })
}

/// Where an inserted event landed, from `RETURNING seq, topic, partition,
/// "offset"`: ((topic, partition, offset), seq).
pub(crate) fn decode_placed(row: &impl StoreRow) -> Result<((String, u32, i64), i64)> {
    Ok((
        (
            row.text("topic")?,
            to_u32(row.int("partition")?, "partition")?,
            row.int("offset")?,
        ),
        row.int("seq")?,
    ))
}

/// A topic with its counts (`name, partitions, events, last_seq`).
pub(crate) fn decode_topic(row: &impl StoreRow) -> Result<TopicInfo> {
    Ok(TopicInfo {
        name: row.text("name")?,
        partitions: to_u32(row.int("partitions")?, "partitions")?,
        events: row.int("events")?,
        last_seq: row.int("last_seq")?,
    })
}

/// One state field (`name, value`).
pub(crate) fn decode_state(row: &impl StoreRow) -> Result<(String, Vec<u8>)> {
    Ok((row.text("name")?, row.bytes("value")?))
}

/// Rows of `key, name, value` into a state per key, with an empty state
/// for each of `keys` that has no row.
pub(crate) fn decode_states<R: StoreRow>(
    keys: &[String],
    rows: &[R],
) -> Result<HashMap<String, StateMap>> {
    let mut states: HashMap<String, StateMap> =
        keys.iter().map(|k| (k.clone(), StateMap::new())).collect();
    for row in rows {
        let (name, value) = decode_state(row)?;
        states
            .entry(row.text("key")?)
            .or_default()
            .insert(name, value);
    }
    Ok(states)
}

/// A (handler, event id) pair, from `RETURNING handler, event_id`.
pub(crate) fn decode_processed_key(row: &impl StoreRow) -> Result<(String, String)> {
    Ok((row.text("handler")?, row.text("event_id")?))
}

/// A handler's lag on one topic (`topic, lag`).
pub(crate) fn decode_lag(row: &impl StoreRow) -> Result<(String, i64)> {
    Ok((row.text("topic")?, row.int("lag")?))
}

/// A parked key and the DLQ entry that parked it (`key, dlq_id`).
pub(crate) fn decode_parked_key(row: &impl StoreRow) -> Result<(String, i64)> {
    Ok((row.text("key")?, row.int("dlq_id")?))
}

/// A failed attempt with its event id (`event_id, attempt, outcome, error,
/// version, at`).
pub(crate) fn decode_attempt(row: &impl StoreRow) -> Result<(String, AttemptRecord)> {
    Ok((
        row.text("event_id")?,
        AttemptRecord {
            attempt: to_u32(row.int("attempt")?, "attempt")?,
            outcome: row.text("outcome")?,
            error: row.text("error")?,
            version: row.text("version")?,
            at: row.int("at")?,
        },
    ))
}

/// The attempts of one event, in row order.
pub(crate) fn decode_attempts<R: StoreRow>(rows: &[R]) -> Result<Vec<AttemptRecord>> {
    rows.iter()
        .map(|r| decode_attempt(r).map(|(_, a)| a))
        .collect()
}

/// Attempts grouped by event id, each group in row order.
pub(crate) fn group_attempts<R: StoreRow>(
    rows: &[R],
) -> Result<HashMap<String, Vec<AttemptRecord>>> {
    let mut out: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
    for row in rows {
        let (id, attempt) = decode_attempt(row)?;
        out.entry(id).or_default().push(attempt);
    }
    Ok(out)
}

/// A processed record (`handler, outcome, version, attempts, processed_at`).
pub(crate) fn decode_processed(row: &impl StoreRow) -> Result<ProcessedRecord> {
    Ok(ProcessedRecord {
        handler: row.text("handler")?,
        outcome: row.text("outcome")?,
        version: row.text("version")?,
        attempts: to_u32(row.int("attempts")?, "attempts")?,
        processed_at: row.int("processed_at")?,
    })
}

/// A version of a handler (`version, digest, size, uploaded_at`).
pub(crate) fn decode_version(row: &impl StoreRow) -> Result<VersionInfo> {
    Ok(VersionInfo {
        version: row.int("version")?,
        digest: row.text("digest")?,
        size: row.int("size")?,
        uploaded_at: row.int("uploaded_at")?,
    })
}

/// A row of `handlers`, with its `versions`.
pub(crate) fn decode_handler(
    row: &impl StoreRow,
    versions: Vec<VersionInfo>,
) -> Result<HandlerRecord> {
    Ok(HandlerRecord {
        name: row.text("name")?,
        config: from_json(&row.text("config")?, "handler config")?,
        active_version: row.opt_int("active_version")?,
        versions,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        managed_by: ManagedBy::parse(&row.text("managed_by")?)?,
    })
}

/// A row of `dlq`.
pub(crate) fn decode_dlq(row: &impl StoreRow) -> Result<DlqEntry> {
    Ok(DlqEntry {
        id: row.int("id")?,
        handler: row.text("handler")?,
        version: row.text("version")?,
        record: from_json(&row.text("event")?, "DLQ event")?,
        attempts: from_json(&row.text("attempts")?, "DLQ attempts")?,
        error: row.text("error")?,
        status: DlqStatus::parse(&row.text("status")?)?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

/// A pending action (`action_id, action, action_version`) with its DLQ
/// entry (the columns of `dlq`).
pub(crate) fn decode_action(row: &impl StoreRow) -> Result<PendingAction> {
    let action = row.text("action")?;
    Ok(PendingAction {
        id: row.int("action_id")?,
        action: match action.as_str() {
            "redrive" => DlqAction::Redrive,
            "discard" => DlqAction::Discard,
            other => return Err(Error::Corrupt(format!("DLQ action {other:?}"))),
        },
        version: row.opt_int("action_version")?,
        entry: decode_dlq(row)?,
    })
}

/// Outbox rows (`seq, event`): their events and their sequence numbers, in
/// row order.
pub(crate) fn decode_outbox<R: StoreRow>(rows: &[R]) -> Result<(Vec<Event>, Vec<i64>)> {
    let mut events = Vec::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    for row in rows {
        events.push(from_json::<Event>(&row.text("event")?, "outbox event")?);
        seqs.push(row.int("seq")?);
    }
    Ok((events, seqs))
}

// ---------------------------------------------------------------------------
// Queries written the same way for both databases

/// Ends [`StoreDb::insert_processed`] to return `handler, event_id` of the
/// rows that were new (PostgreSQL).
pub(crate) const NEW_PROCESSED: &str = " RETURNING handler, event_id";

/// A database the store runs on. Its provided functions build the
/// statements whose SQL is the same in both dialects; [`QueryBuilder`]
/// writes the placeholders (`?` or `$n`).
pub(crate) trait StoreDb: Database
where
    for<'q> i64: Encode<'q, Self> + Type<Self>,
    for<'q> &'q str: Encode<'q, Self> + Type<Self>,
    for<'q> Option<&'q str>: Encode<'q, Self> + Type<Self>,
    for<'q> &'q [u8]: Encode<'q, Self> + Type<Self>,
    for<'q> String: Encode<'q, Self> + Type<Self>,
    Self::Arguments: Default,
{
    /// Does `events` have a `causation_id` column (the header, copied out
    /// for an index)? SQLite indexes the JSON expression instead.
    const CAUSATION_COLUMN: bool;

    /// Inserts `events` at their `places` (partition, offset), appended at
    /// `now`; the caller learns their sequence numbers its own way.
    fn insert_events(
        events: &[&Event],
        places: &[(u32, i64)],
        now: i64,
    ) -> Result<QueryBuilder<Self>> {
        let mut q = QueryBuilder::new(
            "INSERT INTO events (topic, partition, \"offset\", id, source, type, time, content_type, data_schema, data, headers, key, appended_at",
        );
        q.push(if Self::CAUSATION_COLUMN {
            ", causation_id) "
        } else {
            ") "
        });
        let mut headers = Vec::with_capacity(events.len());
        for e in events {
            headers.push(to_json(&e.headers)?);
        }
        q.push_values(
            events.iter().zip(places).zip(headers),
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
                    .push_bind(now);
                if Self::CAUSATION_COLUMN {
                    row.push_bind(e.causation_id());
                }
            },
        );
        // Sequence numbers are drawn row by row in VALUES order, so events
        // of one append get increasing sequence numbers in the given order.
        Ok(q)
    }

    /// Inserts `ok` processed records for `processed`, unless they exist;
    /// [`NEW_PROCESSED`] pushed after it names the new ones.
    fn insert_processed(processed: &[Processed], now: i64) -> QueryBuilder<Self> {
        let mut q = QueryBuilder::new(
            "INSERT INTO processed (handler, event_id, topic, seq, outcome, version, attempts, processed_at) ",
        );
        q.push_values(processed, |mut row, p| {
            row.push_bind(p.handler.as_str())
                .push_bind(p.event_id.as_str())
                .push_bind(p.topic.as_str())
                .push_bind(p.seq)
                .push_bind("ok")
                .push_bind(p.version.as_str())
                .push_bind(i64::from(p.attempts))
                .push_bind(now);
        });
        q.push(" ON CONFLICT (handler, event_id) DO NOTHING");
        q
    }

    /// Writes state fields: (handler, key, name, value).
    fn upsert_state(fields: &[StateWrite<'_>]) -> QueryBuilder<Self> {
        let mut q = QueryBuilder::new("INSERT INTO state (handler, key, name, value) ");
        q.push_values(fields, |mut row, (handler, key, name, value)| {
            row.push_bind(*handler)
                .push_bind(*key)
                .push_bind(*name)
                .push_bind(*value);
        });
        q.push(" ON CONFLICT (handler, key, name) DO UPDATE SET value = EXCLUDED.value");
        q
    }

    /// Stores partitions' next free offsets: (topic, partition, next).
    fn upsert_heads(heads: &[(&str, u32, i64)]) -> QueryBuilder<Self> {
        let mut q =
            QueryBuilder::new("INSERT INTO partition_heads (topic, partition, next_offset) ");
        q.push_values(heads, |mut row, (topic, partition, next)| {
            row.push_bind(*topic)
                .push_bind(i64::from(*partition))
                .push_bind(*next);
        });
        q.push(" ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset");
        q
    }

    /// Inserts outbox rows: (emitting handler, event).
    fn insert_outbox(rows: &[(&str, &Event)], now: i64) -> Result<QueryBuilder<Self>> {
        let mut values = Vec::with_capacity(rows.len());
        for (handler, e) in rows {
            values.push((*handler, *e, to_json(*e)?));
        }
        let mut q = QueryBuilder::new(
            "INSERT INTO outbox (event_id, topic, key, event, handler, created_at) ",
        );
        q.push_values(values, |mut row, (handler, e, json)| {
            row.push_bind(e.id.as_str())
                .push_bind(e.topic.as_str())
                .push_bind(e.key.as_deref())
                .push_bind(json)
                .push_bind(handler)
                .push_bind(now);
        });
        Ok(q)
    }

    /// Selects the DLQ entries `filter` asks for, oldest first.
    fn select_dlq(filter: &DlqFilter) -> QueryBuilder<Self> {
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
        q
    }
}

// ---------------------------------------------------------------------------
// Appends

/// The statements of an append, written per backend; [`append`] runs them
/// inside the caller's transaction.
pub(crate) trait LogWriter {
    /// Events per multi-row `INSERT` (the backend's limit on bound
    /// parameters, at most 14 a row).
    const ROWS_PER_INSERT: usize;

    /// Creates `topic` with `partitions` partitions unless it exists;
    /// returns its partition count.
    async fn ensure_topic(&mut self, topic: &str, partitions: u32) -> Result<u32>;

    /// The next free offset of each partition of `topic` written so far
    /// (a partition missing is new: 0).
    async fn next_offsets(&mut self, topic: &str) -> Result<HashMap<u32, i64>>;

    /// Inserts `events` at their `places` (partition, offset), appended at
    /// `now`; returns ((topic, partition, offset), seq) of each.
    async fn insert_events(
        &mut self,
        events: &[&Event],
        places: &[(u32, i64)],
        now: i64,
    ) -> Result<Vec<((String, u32, i64), i64)>>;

    /// Stores the next free offsets of partitions: (topic, partition, next).
    async fn set_next_offsets(&mut self, heads: &[(&str, u32, i64)]) -> Result<()>;
}

/// Appends `events`, each to its topic (created with `default_partitions`
/// if new), with `writer`'s statements.
///
/// Every event is placed first (a few look-ups per topic and partition):
/// a partition from its key (at random without one), then the partition's
/// next offset. Then they are inserted with multi-row statements, and the
/// partitions' next offsets stored.
/// Appends a commit's emitted events to the log (see
/// [`Batch::emit_to_log`]), in the writer's transaction; the highest
/// sequence number appended.
pub(crate) async fn append_emitted<W: LogWriter>(
    writer: &mut W,
    emitted: &[(&str, &Event)],
    default_partitions: u32,
) -> Result<Option<i64>> {
    if emitted.is_empty() {
        return Ok(None);
    }
    let events: Vec<&Event> = emitted.iter().map(|(_, e)| *e).collect();
    let appended = append(writer, &events, default_partitions).await?;
    Ok(appended.iter().map(|a| a.seq).max())
}

pub(crate) async fn append<W: LogWriter>(
    writer: &mut W,
    events: &[&Event],
    default_partitions: u32,
) -> Result<Vec<Appended>> {
    let now = super::now_ms();
    // Per topic: its partition count and the heads of its partitions, read
    // once (the statements of an append are round trips on the writer).
    let mut topics: HashMap<&str, (u32, HashMap<u32, i64>)> = HashMap::new();
    // Partitions written, in order of first appearance.
    let mut heads: Vec<(&str, u32)> = Vec::new();
    let mut places: Vec<(u32, i64)> = Vec::with_capacity(events.len());
    for e in events {
        let topic = e.topic.as_str();
        let (n, next) = match topics.entry(topic) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(new) => {
                let n = writer.ensure_topic(topic, default_partitions).await?;
                new.insert((n, writer.next_offsets(topic).await?))
            }
        };
        let partition = match &e.key {
            Some(key) => partition_for_key(key, *n),
            None => rand::random::<u32>() % *n,
        };
        let offset = next.entry(partition).or_insert(0);
        if !heads.contains(&(topic, partition)) {
            heads.push((topic, partition));
        }
        places.push((partition, *offset));
        *offset += 1;
    }
    let mut seqs: HashMap<(String, u32, i64), i64> = HashMap::with_capacity(events.len());
    for (chunk, chunk_places) in events
        .chunks(W::ROWS_PER_INSERT)
        .zip(places.chunks(W::ROWS_PER_INSERT))
    {
        seqs.extend(writer.insert_events(chunk, chunk_places, now).await?);
    }
    let mut out = Vec::with_capacity(events.len());
    for (e, (partition, offset)) in events.iter().zip(places) {
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
    let heads: Vec<(&str, u32, i64)> = heads
        .into_iter()
        .map(|(topic, partition)| {
            let next = topics
                .get(topic)
                .and_then(|(_, next)| next.get(&partition))
                .copied()
                .unwrap_or(0);
            (topic, partition, next)
        })
        .collect();
    writer.set_next_offsets(&heads).await?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Commits

/// A state write: (handler, key, name, value).
pub(crate) type StateWrite<'b> = (&'b str, &'b str, &'b str, &'b [u8]);

/// What the processed events of a batch change, once the duplicates are
/// set aside.
pub(crate) struct Effects<'b> {
    /// State fields to delete: (handler, key, name).
    pub(crate) state_deletes: Vec<(&'b str, &'b str, &'b str)>,
    /// State fields to write.
    pub(crate) state_writes: Vec<StateWrite<'b>>,
    /// Outbox rows: (emitting handler, event).
    pub(crate) outbox: Vec<(&'b str, &'b Event)>,
    /// (handler, event id) of events that took more than one attempt: their
    /// recorded attempts are deleted.
    pub(crate) retried: Vec<(&'b str, &'b str)>,
}

/// The effects of `processed`, of which `fresh` (handler, event id) got a
/// new processed record; the others go to `duplicates`, their effects not
/// applied again.
///
/// The last change of each state field wins: two events of one key can meet
/// in a batch (a redrive beside the key's next event), one multi-row
/// statement must not touch a row twice, and a write followed by a delete
/// must end deleted. Changes come out in (handler, key, name) order.
pub(crate) fn effects<'b>(
    processed: &'b [Processed],
    mut fresh: HashSet<(String, String)>,
    duplicates: &mut HashSet<(String, String)>,
) -> Effects<'b> {
    let mut changes: BTreeMap<(&str, &str, &str), Option<&[u8]>> = BTreeMap::new();
    let mut outbox = Vec::new();
    let mut retried = Vec::new();
    for p in processed {
        // `remove`: should one id appear twice, only the first applies.
        if !fresh.remove(&(p.handler.clone(), p.event_id.clone())) {
            duplicates.insert((p.handler.clone(), p.event_id.clone()));
            continue;
        }
        if let Some(key) = &p.key {
            for (name, value) in &p.state_changes {
                changes.insert((&p.handler, key, name), value.as_deref());
            }
        }
        outbox.extend(p.emitted.iter().map(|e| (p.handler.as_str(), e)));
        if p.attempts > 1 {
            retried.push((p.handler.as_str(), p.event_id.as_str()));
        }
    }
    let (mut state_deletes, mut state_writes) = (Vec::new(), Vec::new());
    for ((handler, key, name), value) in changes {
        match value {
            Some(value) => state_writes.push((handler, key, name, value)),
            None => state_deletes.push((handler, key, name)),
        }
    }
    Effects {
        state_deletes,
        state_writes,
        outbox,
        retried,
    }
}

/// The error a DLQ entry shows: that of the last attempt.
pub(crate) fn dead_letter_error(d: &DeadLetter) -> String {
    d.attempts
        .last()
        .map(|a| format!("{}: {}", a.outcome, a.error))
        .unwrap_or_default()
}

/// Leaves out of `original` what `stale` claims cover (their partitions
/// were claimed again since the batch's events were read), telling the
/// outcomes and positions left out in `report`; `None` when nothing is
/// stale.
pub(crate) fn fence(
    original: &Batch,
    stale: &[&Claim],
    report: &mut CommitReport,
) -> Option<Batch> {
    if stale.is_empty() {
        return None;
    }
    let ids: HashSet<(String, String)> = stale
        .iter()
        .flat_map(|c| c.event_ids.iter().map(|id| (c.handler.clone(), id.clone())))
        .collect();
    // A position is left out only when no valid claim of the batch (the
    // partition claimed again by this same consumer) covers it.
    let valid: HashSet<(&str, &str, i32)> = original
        .claims
        .iter()
        .filter(|c| !stale.contains(c))
        .map(|c| (c.handler.as_str(), c.topic.as_str(), c.partition))
        .collect();
    let partitions: HashSet<(&str, &str, i32)> = stale
        .iter()
        .map(|c| (c.handler.as_str(), c.topic.as_str(), c.partition))
        .filter(|p| !valid.contains(p))
        .collect();
    let fenced = |handler: &str, id: &str| ids.contains(&(handler.to_owned(), id.to_owned()));
    let mut kept = original.clone();
    kept.processed.retain(|p| !fenced(&p.handler, &p.event_id));
    kept.dead_letters
        .retain(|d| !fenced(&d.handler, &d.record.event.id));
    kept.broker_positions
        .retain(|(h, t, p, _)| !partitions.contains(&(h.as_str(), t.as_str(), *p)));
    kept.claims.clear();
    report.fenced_partitions = partitions
        .into_iter()
        .map(|(h, t, p)| (h.to_owned(), t.to_owned(), p))
        .collect();
    report.fenced = ids;
    Some(kept)
}

/// The DLQ entry ids of every dead letter of `original`, given those of
/// the ones applied (a fenced one gets 0).
pub(crate) fn realign_dlq_ids(
    original: &Batch,
    fenced: &HashSet<(String, String)>,
    applied: Vec<i64>,
) -> Vec<i64> {
    if fenced.is_empty() {
        return applied;
    }
    let mut applied = applied.into_iter();
    original
        .dead_letters
        .iter()
        .map(|d| {
            if fenced.contains(&(d.handler.clone(), d.record.event.id.clone())) {
                0
            } else {
                applied.next().unwrap_or(0)
            }
        })
        .collect()
}

/// The outbox row that produces dead-letter entry `dlq_id` to its topic,
/// if it has one.
pub(crate) fn dead_letter_outbox(d: &DeadLetter, dlq_id: i64) -> Option<Event> {
    d.publish_to
        .as_deref()
        .map(|topic| super::dead_letter_event(d, dlq_id, topic))
}

// ---------------------------------------------------------------------------
// Registry and DLQ

/// The tables [`Store::delete_handler`] deletes a handler's rows from,
/// besides `handlers`.
pub(crate) fn handler_tables(purge: bool) -> Vec<&'static str> {
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
    tables
}

/// The size recorded for a component.
pub(crate) fn component_size(component: &[u8]) -> i64 {
    i64::try_from(component.len()).unwrap_or(i64::MAX)
}

/// A version just stored.
pub(crate) fn version_info(version: i64, digest: &str, size: i64, uploaded_at: i64) -> VersionInfo {
    VersionInfo {
        version,
        digest: digest.to_owned(),
        size,
        uploaded_at,
    }
}

/// The handler `name`, which must exist.
pub(crate) async fn existing_handler(store: &impl Store, name: &str) -> Result<HandlerRecord> {
    store
        .handler(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("handler {name}")))
}

/// The handlers `names` (those that still exist), in that order.
pub(crate) async fn handlers_named(
    store: &impl Store,
    names: Vec<String>,
) -> Result<Vec<HandlerRecord>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let Some(h) = store.handler(&name).await? {
            out.push(h);
        }
    }
    Ok(out)
}

/// Checks that an operator can act on `entry` (entry `id`): it must be
/// pending. Returns its new status and the stored name of the action.
pub(crate) fn dlq_transition(
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

/// `entry` after an operator's action moved it to `status` at `now`.
pub(crate) fn dlq_acted(mut entry: DlqEntry, status: DlqStatus, now: i64) -> DlqEntry {
    entry.status = status;
    entry.updated_at = now;
    entry
}
