//! The embedded log: appends (planned here, inserted by each backend's
//! [`LogWriter`]) and the reads whose SQL both dialects share.

use std::collections::HashMap;

use super::rows::{StoreRow, decode_heads, decode_record, decode_topic, to_u32};
use super::sql::{Conn, Sql, args, event_columns, sql};
use crate::event::{Event, partition_for_key};
use crate::store::{Appended, Error, LogRecord, Result, TopicInfo, now_ms};

/// The statements of an append; [`append`] runs them inside the caller's
/// transaction. Those that differ are written per backend.
pub(crate) trait LogWriter: Conn {
    /// Events per multi-row `INSERT` (the backend's limit on bound
    /// parameters, at most 14 a row).
    const ROWS_PER_INSERT: usize;

    /// Creates `topic` with `partitions` partitions unless it exists;
    /// returns its partition count.
    async fn ensure_topic(&mut self, topic: &str, partitions: u32) -> Result<u32> {
        const COUNT: Sql = sql!("SELECT partitions FROM topics WHERE name = ?");
        // Usually the topic exists: one statement.
        let row = match self.fetch_optional(COUNT, args![topic]).await? {
            Some(row) => row,
            None => {
                // A concurrent creator of the same topic (PostgreSQL) makes
                // this wait for its commit and then do nothing, so the
                // count read next is the winner's.
                self.execute(
                    sql!("INSERT INTO topics (name, partitions, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"),
                    args![topic, i64::from(partitions.max(1)), now_ms()],
                )
                .await?;
                self.fetch_one(COUNT, args![topic]).await?
            }
        };
        to_u32(
            row.int("partitions")?,
            &format!("partition count of topic {topic}:"),
        )
    }

    /// The next free offset of each partition of `topic` written so far
    /// (a partition missing is new: 0).
    async fn next_offsets(&mut self, topic: &str) -> Result<HashMap<u32, i64>> {
        let rows = self
            .fetch_all(
                sql!("SELECT partition, next_offset FROM partition_heads WHERE topic = ?"),
                args![topic],
            )
            .await?;
        let heads = rows
            .iter()
            .map(|r| Ok((r.int("partition")?, r.int("next_offset")?)))
            .collect::<Result<Vec<_>>>()?;
        decode_heads(topic, heads)
    }

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

/// Appends a commit's emitted events to the log (see
/// [`crate::store::Batch::emit_to_log`]), in the writer's transaction; the highest
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

/// Appends `events`, each to its topic (created with `default_partitions`
/// if new), with `writer`'s statements.
///
/// Every event is placed first (a few look-ups per topic and partition):
/// a partition from its key (at random without one), then the partition's
/// next offset. Then they are inserted with multi-row statements, and the
/// partitions' next offsets stored.
pub(crate) async fn append<W: LogWriter>(
    writer: &mut W,
    events: &[&Event],
    default_partitions: u32,
) -> Result<Vec<Appended>> {
    let now = now_ms();
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

/// The topics with their counts.
pub(crate) async fn topics<C: Conn>(conn: &mut C) -> Result<Vec<TopicInfo>> {
    let rows = conn
        .fetch_all(
            sql!("SELECT t.name, t.partitions, \
                    (SELECT COUNT(*) FROM events e WHERE e.topic = t.name) AS events, \
                    (SELECT COALESCE(MAX(seq), 0) FROM events e WHERE e.topic = t.name) AS last_seq \
                  FROM topics t ORDER BY t.name"; postgres: " COLLATE \"C\""),
            args![],
        )
        .await?;
    rows.iter().map(decode_topic).collect()
}

/// Log records `sql` selects (the columns of [`event_columns!`]).
pub(crate) async fn records<C: Conn>(
    conn: &mut C,
    sql: Sql,
    args: &[super::sql::Arg<'_>],
) -> Result<Vec<LogRecord>> {
    let rows = conn.fetch_all(sql, args).await?;
    rows.iter().map(decode_record).collect()
}

/// Up to `limit` events of `topic` with `seq > after`, in order.
pub(crate) async fn read_log<C: Conn>(
    conn: &mut C,
    topic: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<LogRecord>> {
    records(
        conn,
        sql!(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?"
        )),
        args![topic, after, i64::from(limit)],
    )
    .await
}

/// Every log record with event id `id`, oldest first (at most 100).
pub(crate) async fn events_by_id<C: Conn>(conn: &mut C, id: &str) -> Result<Vec<LogRecord>> {
    records(
        conn,
        sql!(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id = ? ORDER BY seq LIMIT 100"
        )),
        args![id],
    )
    .await
}
