//! Multi-row `VALUES` statements built with [`QueryBuilder`], which writes
//! each database's placeholders: for the statements whose row count
//! varies. PostgreSQL's commit uses `UNNEST` arrays instead (one statement
//! text whatever the row count), so some of these serve SQLite alone.

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::commit::StateWrite;
use crate::event::Event;
use crate::store::{DlqFilter, Processed, Result, to_json};

/// Ends [`StoreDb::insert_processed`] to return `handler, event_id` of the
/// rows that were new.
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
