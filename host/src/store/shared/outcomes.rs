//! Reads of what handlers did, whose SQL both dialects share.

use std::collections::HashMap;

use super::rows::{
    StoreRow, decode_attempts, decode_lag, decode_processed, decode_state, group_attempts,
};
use super::sql::{Conn, args, sql};
use crate::event::StateMap;
use crate::store::{AttemptRecord, ProcessedRecord, Result};

/// The committed position of `handler` on `topic`.
pub(crate) async fn position<C: Conn>(
    conn: &mut C,
    handler: &str,
    topic: &str,
) -> Result<Option<i64>> {
    conn.fetch_optional(
        sql!("SELECT position FROM positions WHERE handler = ? AND topic = ?"),
        args![handler, topic],
    )
    .await?
    .map(|row| row.int("position"))
    .transpose()
}

/// The state of `key` for `handler`.
pub(crate) async fn load_state<C: Conn>(
    conn: &mut C,
    handler: &str,
    key: &str,
) -> Result<StateMap> {
    let rows = conn
        .fetch_all(
            sql!("SELECT name, value FROM state WHERE handler = ? AND key = ?"),
            args![handler, key],
        )
        .await?;
    rows.iter().map(decode_state).collect()
}

/// The failed attempts recorded for an event being retried.
pub(crate) async fn attempts<C: Conn>(
    conn: &mut C,
    handler: &str,
    event_id: &str,
) -> Result<Vec<AttemptRecord>> {
    let rows = conn
        .fetch_all(
            sql!(
                "SELECT event_id, attempt, outcome, error, version, at FROM attempts \
                  WHERE handler = ? AND event_id = ? ORDER BY attempt"
            ),
            args![handler, event_id],
        )
        .await?;
    decode_attempts(&rows)
}

/// Every event of `handler` with recorded failed attempts, by event id.
pub(crate) async fn pending_attempts<C: Conn>(
    conn: &mut C,
    handler: &str,
) -> Result<HashMap<String, Vec<AttemptRecord>>> {
    let rows = conn
        .fetch_all(
            sql!(
                "SELECT event_id, attempt, outcome, error, version, at FROM attempts \
                  WHERE handler = ? ORDER BY event_id, attempt"
            ),
            args![handler],
        )
        .await?;
    group_attempts(&rows)
}

/// Processed records of event `id`, for every handler.
pub(crate) async fn processed_records<C: Conn>(
    conn: &mut C,
    id: &str,
) -> Result<Vec<ProcessedRecord>> {
    let rows = conn
        .fetch_all(
            sql!("SELECT handler, outcome, version, attempts, processed_at FROM processed \
                  WHERE event_id = ? ORDER BY handler"; postgres: " COLLATE \"C\""),
            args![id],
        )
        .await?;
    rows.iter().map(decode_processed).collect()
}

/// For each topic `handler` has a position on, the events after it.
pub(crate) async fn lag<C: Conn>(conn: &mut C, handler: &str) -> Result<Vec<(String, i64)>> {
    let rows = conn
        .fetch_all(
            sql!("SELECT p.topic, (SELECT COUNT(*) FROM events e WHERE e.topic = p.topic AND e.seq > p.position) AS lag \
                  FROM positions p WHERE p.handler = ? ORDER BY p.topic"; postgres: " COLLATE \"C\""),
            args![handler],
        )
        .await?;
    rows.iter().map(decode_lag).collect()
}
