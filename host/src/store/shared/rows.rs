//! Decoding rows, generic over [`sqlx::Row`]: both backends store
//! integers as 64-bit, text as text and bytes as `BLOB`/`BYTEA`.

use std::collections::{BTreeMap, HashMap};

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::event::Event;
use crate::event::StateMap;
use crate::store::{
    AttemptRecord, DlqAction, DlqEntry, DlqStatus, Error, HandlerRecord, LogRecord, ManagedBy,
    PendingAction, ProcessedRecord, Result, TopicInfo, VersionInfo, from_json,
};

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
