//! The group commit: what a batch changes, worked out once, and the
//! transaction that writes it. The statements whose SQL differs (multi-row
//! `VALUES` on SQLite, `UNNEST` arrays on PostgreSQL) are each backend's
//! [`OutcomeWriter`]; [`commit_in`] runs them in order with the rest.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use super::log::{LogWriter, append_emitted};
use super::sql::{args, sql};
use crate::event::Event;
use crate::store::{Batch, Claim, CommitReport, DeadLetter, Processed, Result, to_json};

/// The statements of a commit that each backend writes its own way, inside
/// the caller's transaction.
pub(crate) trait OutcomeWriter: LogWriter {
    /// The claims of `claims` whose partition was claimed again since
    /// (another epoch, or no claim).
    async fn stale_claims<'c>(&mut self, claims: &'c [Claim]) -> Result<Vec<&'c Claim>>;

    /// Inserts `ok` processed records for `processed` unless they exist;
    /// the (handler, event id) of those that were new. `None`: a backend
    /// that counts instead of naming them (without `name_new`) found a
    /// duplicate, and the transaction must roll back.
    async fn insert_processed(
        &mut self,
        processed: &[Processed],
        now: i64,
        name_new: bool,
    ) -> Result<Option<HashSet<(String, String)>>>;

    /// Deletes state fields: (handler, key, name).
    async fn delete_state(&mut self, fields: &[(&str, &str, &str)]) -> Result<()>;

    /// Writes state fields, each (handler, key, name) at most once.
    async fn upsert_state(&mut self, fields: &[StateWrite<'_>]) -> Result<()>;

    /// Inserts outbox rows, (emitting handler, event), numbered in the
    /// order given: the relay publishes in that order, which keeps each
    /// key's order.
    async fn insert_outbox(&mut self, rows: &[(&str, &Event)], now: i64) -> Result<()>;

    /// Deletes the attempts of `(handler, event id)` pairs.
    async fn delete_attempts(&mut self, pairs: &[(&str, &str)]) -> Result<()>;

    /// Deletes the DLQ actions `ids` (carried out).
    async fn delete_actions(&mut self, ids: &[i64]) -> Result<()>;

    /// Moves positions on external brokers' partitions forward: (handler,
    /// topic, partition, offset done); a position never goes back.
    async fn upsert_broker_positions(
        &mut self,
        positions: &[(String, String, i32, i64)],
    ) -> Result<()>;

    /// An error message as it can be stored (a guest's text must not stop
    /// the group commit).
    fn message(text: &str) -> Cow<'_, str> {
        Cow::Borrowed(text)
    }
}

/// Commits `original` at `now` with `w`'s statements, in the caller's
/// transaction, which the caller commits; `None` when `w` asks for a
/// rollback (see [`OutcomeWriter::insert_processed`]).
pub(crate) async fn commit_in<W: OutcomeWriter>(
    w: &mut W,
    original: &Batch,
    now: i64,
    name_new: bool,
) -> Result<Option<CommitReport>> {
    let mut report = CommitReport::default();
    // Outcomes of partitions claimed since they were read are left out.
    let stale = w.stale_claims(&original.claims).await?;
    let kept = fence(original, &stale, &mut report);
    let batch = kept.as_ref().unwrap_or(original);
    // Processed records of the whole batch in a few multi-row statements.
    // A row that already existed (or, on PostgreSQL, is being inserted by a
    // concurrent commit, which this one then waits for) is a duplicate:
    // its effects are not applied again.
    let Some(fresh) = w.insert_processed(&batch.processed, now, name_new).await? else {
        return Ok(None);
    };
    let effects = effects(&batch.processed, fresh, &mut report.duplicates);
    // In (handler, key, name) order, each field once: its last change.
    w.delete_state(&effects.state_deletes).await?;
    w.upsert_state(&effects.state_writes).await?;
    if let Some(partitions) = batch.emit_to_log {
        report.appended_seq = append_emitted(w, &effects.outbox, partitions).await?;
    } else if !effects.outbox.is_empty() {
        w.insert_outbox(&effects.outbox, now).await?;
        report.outbox_rows += effects.outbox.len() as u64;
    }
    w.delete_attempts(&effects.retried).await?;
    for (handler, event_id, a) in &batch.failures {
        w.execute(
            sql!("INSERT INTO attempts (handler, event_id, attempt, outcome, error, version, at) VALUES (?, ?, ?, ?, ?, ?, ?) \
                  ON CONFLICT (handler, event_id, attempt) DO UPDATE SET outcome = EXCLUDED.outcome, error = EXCLUDED.error, version = EXCLUDED.version, at = EXCLUDED.at"),
            args![
                handler,
                event_id,
                i64::from(a.attempt),
                &a.outcome,
                W::message(&a.error).as_ref(),
                &a.version,
                a.at,
            ],
        )
        .await?;
    }
    for d in &batch.dead_letters {
        dead_letter(w, d, now, &mut report).await?;
    }
    for pe in &batch.parked {
        w.execute(
            sql!("INSERT INTO parked_events (handler, key, seq, topic) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"),
            args![&pe.handler, &pe.key, pe.seq, &pe.topic],
        )
        .await?;
    }
    for (handler, key) in &batch.unparked {
        w.execute(
            sql!("DELETE FROM parked_keys WHERE handler = ? AND key = ?"),
            args![handler, key],
        )
        .await?;
        w.execute(
            sql!("DELETE FROM parked_events WHERE handler = ? AND key = ?"),
            args![handler, key],
        )
        .await?;
    }
    if !batch.actions_done.is_empty() {
        w.delete_actions(&batch.actions_done).await?;
    }
    for (handler, topic, position) in &batch.positions {
        // Never back: the row keeps the greater of the two.
        w.execute(
            sql!(
                "INSERT INTO positions (handler, topic, position) VALUES (?, ?, ?) \
                  ON CONFLICT (handler, topic) DO UPDATE SET position = EXCLUDED.position \
                  WHERE positions.position < EXCLUDED.position"
            ),
            args![handler, topic, *position],
        )
        .await?;
    }
    if !batch.broker_positions.is_empty() {
        w.upsert_broker_positions(&batch.broker_positions).await?;
    }
    report.dlq_ids = realign_dlq_ids(original, &report.fenced, report.dlq_ids);
    Ok(Some(report))
}

/// Records dead letter `d`: its processed record, DLQ entry, outbox row
/// (when it is also published) and parked key, its attempts deleted; a
/// duplicate goes to `report` instead.
async fn dead_letter<W: OutcomeWriter>(
    w: &mut W,
    d: &DeadLetter,
    now: i64,
    report: &mut CommitReport,
) -> Result<()> {
    let e = &d.record.event;
    let attempts = u32::try_from(d.attempts.len()).unwrap_or(u32::MAX);
    let done = w
        .execute(
            sql!("INSERT INTO processed (handler, event_id, topic, seq, outcome, version, attempts, processed_at) \
                  VALUES (?, ?, ?, ?, 'dead-lettered', ?, ?, ?) ON CONFLICT (handler, event_id) DO NOTHING"),
            args![&d.handler, &e.id, &e.topic, d.record.seq, &d.version, i64::from(attempts), now],
        )
        .await?;
    if done != 1 {
        report.duplicates.insert((d.handler.clone(), e.id.clone()));
        report.dlq_ids.push(0);
        return Ok(());
    }
    let error = dead_letter_error(d);
    let (record, attempts) = (to_json(&d.record)?, to_json(&d.attempts)?);
    let row = w
        .fetch_one(
            sql!("INSERT INTO dlq (handler, version, topic, seq, event_id, key, event, attempts, error, status, created_at, updated_at) \
                  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) RETURNING id"),
            args![
                &d.handler,
                &d.version,
                &e.topic,
                d.record.seq,
                &e.id,
                &e.key,
                record.as_str(),
                attempts.as_str(),
                W::message(&error).as_ref(),
                now,
                now,
            ],
        )
        .await?;
    let id = super::rows::StoreRow::int(&row, "id")?;
    report.dlq_ids.push(id);
    if let Some(event) = dead_letter_outbox(d, id) {
        w.insert_outbox(&[(d.handler.as_str(), &event)], now)
            .await?;
        report.outbox_rows += 1;
    }
    w.delete_attempts(&[(&d.handler, &e.id)]).await?;
    if d.park
        && let Some(key) = &e.key
    {
        w.execute(
            sql!("INSERT INTO parked_keys (handler, key, dlq_id) VALUES (?, ?, ?) ON CONFLICT (handler, key) DO NOTHING"),
            args![&d.handler, key, id],
        )
        .await?;
    }
    Ok(())
}

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
        .map(|topic| dead_letter_event(d, dlq_id, topic))
}

/// The event a dead-letter entry is produced as: the failed event's
/// attributes, data and key, a new id (`dlq-{handler}-{entry id}`, since the
/// same event can fail again after a redrive), and extension attributes
/// (`ce_*` headers on Kafka) saying what failed: `dlqid`, `dlqhandler`,
/// `dlqversion`, `dlqeventid`, `dlqtopic`, `dlqattempts` and `dlqerror`
/// (the last attempt's outcome and message).
pub fn dead_letter_event(d: &DeadLetter, dlq_id: i64, topic: &str) -> Event {
    let mut event = d.record.event.clone();
    let error = dead_letter_error(d);
    for (name, value) in [
        ("dlqid", dlq_id.to_string()),
        ("dlqhandler", d.handler.clone()),
        ("dlqversion", d.version.clone()),
        ("dlqeventid", event.id.clone()),
        ("dlqtopic", event.topic.clone()),
        ("dlqattempts", d.attempts.len().to_string()),
        ("dlqerror", error),
    ] {
        event.headers.insert(name.to_owned(), value);
    }
    event.id = format!("dlq-{}-{dlq_id}", d.handler);
    event.topic = topic.to_owned();
    event
}
