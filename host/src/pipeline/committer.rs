//! The group committer: one task owns all writes of outcomes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::signals::{Committed, Signals};
use crate::store::{self, Batch, CommitReport, Store};

struct CommitRequest {
    batch: Batch,
    done: oneshot::Sender<CommitReport>,
}

/// Group commit: one task owns all writes of outcomes; requests that arrive
/// while a transaction runs are merged into the next one, so N handlers and
/// M events cost one fsync instead of N×M.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<CommitRequest>,
}

impl Committer {
    /// Starts the committer task. Emitted events go as `emit_to_log` says
    /// (see [`Batch::emit_to_log`]); the relay is woken after commits that
    /// wrote outbox rows, the dispatchers after those that appended to the
    /// log. Failed transactions are retried (with backoff) until they
    /// commit: the pipeline stalls while the database is unreachable but
    /// loses nothing.
    pub fn start(
        store: Arc<dyn Store>,
        max_batch: usize,
        signals: Signals,
        emit_to_log: Option<u32>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<CommitRequest>(1024);
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut requests = vec![first];
                let mut size = size_of(&requests[0].batch);
                while size < max_batch {
                    match rx.try_recv() {
                        Ok(r) => {
                            size += size_of(&r.batch);
                            requests.push(r);
                        }
                        Err(_) => break,
                    }
                }
                let mut merged = Batch {
                    emit_to_log,
                    ..Batch::default()
                };
                // The requests' batches are moved, not copied: every
                // emitted event and state value would be cloned otherwise.
                let mut waiting = Vec::with_capacity(requests.len());
                for r in requests {
                    waiting.push((r.done, r.batch.dead_letters.len()));
                    merge(&mut merged, r.batch);
                }
                let report = commit_until_done(&*store, &merged).await;
                if signals.commits.receiver_count() > 0 {
                    let events = merged
                        .processed
                        .iter()
                        .map(|p| (p.handler.clone(), p.event_id.clone()))
                        .chain(
                            merged
                                .dead_letters
                                .iter()
                                .map(|d| (d.handler.clone(), d.record.event.id.clone())),
                        )
                        .collect();
                    let at_ms = store::now_ms();
                    let _ = signals.commits.send(Arc::new(Committed { at_ms, events }));
                }
                if report.outbox_rows > 0 {
                    signals.relay.notify_one();
                }
                if let Some(seq) = report.appended_seq {
                    signals.appended(seq);
                }
                let mut dlq_ids = report.dlq_ids.into_iter();
                for (done, n) in waiting {
                    let part = CommitReport {
                        duplicates: report.duplicates.clone(),
                        outbox_rows: report.outbox_rows,
                        appended_seq: report.appended_seq,
                        dlq_ids: dlq_ids.by_ref().take(n).collect(),
                        fenced: report.fenced.clone(),
                        fenced_partitions: report.fenced_partitions.clone(),
                    };
                    let _ = done.send(part);
                }
            }
        });
        (Self { tx }, task)
    }

    /// Commits `batch` (with whatever else is pending) and returns when it
    /// is durable. `None` when the committer has stopped.
    pub async fn commit(&self, batch: Batch) -> Option<CommitReport> {
        let (done, wait) = oneshot::channel();
        self.tx.send(CommitRequest { batch, done }).await.ok()?;
        wait.await.ok()
    }
}

fn size_of(b: &Batch) -> usize {
    b.processed.len() + b.dead_letters.len() + b.failures.len() + b.parked.len() + 1
}

fn merge(into: &mut Batch, from: Batch) {
    let Batch {
        processed,
        failures,
        dead_letters,
        parked,
        actions_done,
        unparked,
        positions,
        broker_positions,
        claims,
        emit_to_log: _,
    } = from;
    into.processed.extend(processed);
    into.failures.extend(failures);
    into.dead_letters.extend(dead_letters);
    into.parked.extend(parked);
    into.actions_done.extend(actions_done);
    into.unparked.extend(unparked);
    into.positions.extend(positions);
    into.broker_positions.extend(broker_positions);
    into.claims.extend(claims);
}

async fn commit_until_done(store: &dyn Store, batch: &Batch) -> CommitReport {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.commit(batch).await {
            Ok(report) => return report,
            Err(error) => {
                tracing::error!(
                    "group commit failed, retrying in {delay:?} (nothing is lost): {error}"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
