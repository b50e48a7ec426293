//! The outbox and the relay's lease: the statements both dialects share.

use super::log::{LogWriter, append};
use super::rows::{StoreRow, decode_outbox};
use super::sql::{Conn, args, sql};
use crate::event::Event;
use crate::store::{Appended, Result, now_ms};

/// Up to `limit` undelivered outbox rows, oldest first: their events and
/// their outbox sequence numbers.
pub(crate) async fn pending<C: Conn>(conn: &mut C, limit: u32) -> Result<(Vec<Event>, Vec<i64>)> {
    let rows = conn
        .fetch_all(
            sql!("SELECT seq, event FROM outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT ?"),
            args![i64::from(limit)],
        )
        .await?;
    decode_outbox(&rows)
}

/// Appends up to `limit` undelivered outbox rows to the log, in the
/// caller's transaction, which marks them delivered; what was appended and
/// the outbox sequence numbers taken (none: nothing to relay).
pub(crate) async fn relay<W: LogWriter>(
    w: &mut W,
    limit: u32,
    default_partitions: u32,
) -> Result<(Vec<Appended>, Vec<i64>)> {
    let (events, taken) = pending(w, limit).await?;
    if taken.is_empty() {
        return Ok((Vec::new(), taken));
    }
    let appended = append(w, &events.iter().collect::<Vec<_>>(), default_partitions).await?;
    Ok((appended, taken))
}

/// Number of outbox rows not yet delivered.
pub(crate) async fn backlog<C: Conn>(conn: &mut C) -> Result<i64> {
    conn.fetch_one(
        sql!("SELECT COUNT(*) AS backlog FROM outbox WHERE delivered_at IS NULL"),
        args![],
    )
    .await?
    .int("backlog")
}

/// Takes or renews the lease `name` for `holder` until `ttl_ms` from now,
/// unless another holder's has not expired.
pub(crate) async fn take_lease<C: Conn>(
    conn: &mut C,
    name: &str,
    holder: &str,
    ttl_ms: i64,
) -> Result<()> {
    let now = now_ms();
    conn.execute(
        sql!("INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
              ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
              WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < ?"),
        args![name, holder, now + ttl_ms, now],
    )
    .await?;
    Ok(())
}

/// Does `holder` hold the lease `name`?
pub(crate) async fn holds_lease<C: Conn>(conn: &mut C, name: &str, holder: &str) -> Result<bool> {
    let current = conn
        .fetch_optional(
            sql!("SELECT holder FROM leases WHERE name = ?"),
            args![name],
        )
        .await?
        .map(|row| row.text("holder"))
        .transpose()?;
    Ok(current.as_deref() == Some(holder))
}
