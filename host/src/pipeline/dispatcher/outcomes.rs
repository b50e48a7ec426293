//! Outcomes: classifying what an invocation did, retries, and the
//! batches that go to the committer.

use super::*;

impl Dispatcher {
    pub(super) fn complete(
        &mut self,
        mut item: Item,
        result: Result<(Invocation, StateMap, Arc<str>), store::Error>,
        stopping: bool,
    ) {
        let key_generation = item
            .record
            .event
            .key
            .as_ref()
            .map_or(0, |k| self.generation(k));
        if item.speculative && item.generation != key_generation {
            // The outcome it built on did not commit: run it again (its
            // key is still held by it).
            item.speculative = false;
            self.ready.push_front(item);
            return;
        }
        let (invocation, state_before, version) = match result {
            Ok(ran) => ran,
            Err(error) => {
                // Not the handler's fault: try again without counting it.
                tracing::error!(handler = %self.cfg.name, event = %item.record.event.id, "loading state failed: {error}");
                if !stopping {
                    self.schedule(item, Duration::from_secs(1));
                }
                return;
            }
        };
        if invocation.outcome != Outcome::Ok
            && item.speculative
            && let Some(key) = &item.record.event.key
            && self.committing_keys.contains_key(key)
        {
            // It may have failed for the state it was given: it runs again,
            // without counting this attempt, on committed state.
            self.waiting.insert(key.clone(), item);
            return;
        }
        let event = &item.record.event;
        let key = event.key.clone();
        self.stats.latency.observe(invocation.elapsed);
        if invocation.outcome != Outcome::Ok {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        match &invocation.outcome {
            Outcome::Ok => {
                tracing::debug!(
                    handler = %self.cfg.name,
                    event = %event.id,
                    key = key.as_deref().unwrap_or("-"),
                    attempt = item.attempt,
                    emitted = invocation.emitted.len(),
                    elapsed_us = invocation.elapsed.as_micros() as u64,
                    "processed"
                );
                let state_after = key.as_ref().map(|_| {
                    let mut state = state_before;
                    for (name, value) in &invocation.state_changes {
                        match value {
                            Some(v) => state.insert(name.clone(), v.clone()),
                            None => state.remove(name),
                        };
                    }
                    state
                });
                self.batch.processed.push(Processed {
                    handler: self.cfg.name.clone(),
                    version: version.to_string(),
                    topic: event.topic.clone(),
                    seq: item.record.seq,
                    event_id: event.id.clone(),
                    attempts: item.attempt,
                    key: key.clone(),
                    state_changes: invocation.state_changes,
                    emitted: invocation.emitted,
                });
                self.finish(item, DoneKind::Processed, state_after);
            }
            failed => {
                // The state did not change: keep it for the next attempt.
                if let Some(k) = &key {
                    self.cache_state(k.clone(), state_before);
                }
                let message = match failed {
                    Outcome::Retryable { message }
                    | Outcome::Fatal { message }
                    | Outcome::Trap { message }
                    | Outcome::Timeout { message }
                    | Outcome::Limit { message, .. } => message.clone(),
                    Outcome::Ok => String::new(),
                };
                let record = AttemptRecord {
                    attempt: item.attempt,
                    outcome: failed.kind().to_owned(),
                    error: message,
                    version: version.to_string(),
                    at: now_ms(),
                };
                let retry = failed.is_retryable() && item.attempt < self.cfg.retry.max_attempts;
                if retry && !stopping {
                    let delay = self.cfg.retry.backoff(item.attempt + 1);
                    tracing::warn!(
                        handler = %self.cfg.name,
                        event = %event.id,
                        attempt = item.attempt,
                        outcome = failed.kind(),
                        retry_in_ms = delay.as_millis() as u64,
                        "attempt failed: {}",
                        record.error
                    );
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.batch.failures.push((
                        self.cfg.name.clone(),
                        event.id.clone(),
                        record.clone(),
                    ));
                    item.failures.push(record);
                    item.attempt += 1;
                    self.schedule(item, delay);
                } else if retry {
                    // Stopping: record the attempt; the next start retries.
                    self.batch
                        .failures
                        .push((self.cfg.name.clone(), event.id.clone(), record));
                } else {
                    let park = self.cfg.on_dead_letter == DeadLetterMode::Park && key.is_some();
                    tracing::warn!(
                        handler = %self.cfg.name,
                        event = %event.id,
                        attempt = item.attempt,
                        outcome = failed.kind(),
                        park,
                        "dead-lettered: {}",
                        record.error
                    );
                    item.failures.push(record);
                    self.batch.dead_letters.push(DeadLetter {
                        handler: self.cfg.name.clone(),
                        version: version.to_string(),
                        record: item.record.clone(),
                        attempts: std::mem::take(&mut item.failures),
                        park,
                        publish_to: self.dead_letter_topic.clone(),
                    });
                    self.finish(item, DoneKind::DeadLettered { park }, None);
                }
            }
        }
    }

    /// The item has a final outcome in the current batch.
    pub(super) fn finish(&mut self, item: Item, kind: DoneKind, state_after: Option<StateMap>) {
        self.mark_committing(&item.origin, item.record.seq);
        if let Origin::Action {
            finish: Some(finish),
        } = &item.origin
        {
            self.add_finish(finish.clone());
        }
        let rerun = (item.speculative && kind == DoneKind::Processed).then(|| item.copy());
        self.batch_done.push(Done {
            state_after,
            seq: item.record.seq,
            event_id: Some(item.record.event.id),
            key: item.record.event.key,
            origin: item.origin,
            kind,
            released: false,
            rerun,
        });
    }

    pub(super) fn add_finish(&mut self, finish: Finish) {
        self.batch.actions_done.push(finish.action_id);
        if let Some(key) = finish.unpark {
            self.batch.unparked.push((self.cfg.name.clone(), key));
        }
    }

    pub(super) fn schedule(&mut self, item: Item, delay: Duration) {
        self.timer_seq += 1;
        self.timers
            .push(Reverse((Instant::now() + delay, self.timer_seq)));
        self.timer_items.insert(self.timer_seq, item);
    }

    pub(super) fn start_due_retries(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(item) = self.timer_items.remove(&id) {
                // The key is still held by this item: run it directly.
                self.ready.push_back(item);
            }
        }
    }

    /// Moves the batch out, with the positions it makes durable and the
    /// claims its partitions' outcomes (`done`) and positions were read under.
    pub(super) fn take_batch(&mut self, done: &[Done]) -> Batch {
        let mut batch = std::mem::take(&mut self.batch);
        let mut claims: BTreeMap<usize, store::Claim> = BTreeMap::new();
        let name = &self.cfg.name;
        let mut claim_of = |t: usize, cursor: &TopicCursor| -> Option<usize> {
            let partition = cursor.partition?;
            claims.entry(t).or_insert_with(|| store::Claim {
                handler: name.clone(),
                topic: cursor.name.clone(),
                partition,
                epoch: cursor.epoch,
                event_ids: Vec::new(),
            });
            Some(t)
        };
        let mut ids: Vec<(usize, String)> = Vec::new();
        for d in done {
            if let (Origin::Log(t), Some(id)) = (&d.origin, &d.event_id)
                && claim_of(*t, &self.topics[*t]).is_some()
            {
                ids.push((*t, id.clone()));
            }
        }
        for (t, cursor) in self.topics.iter().enumerate() {
            if !cursor.retired && cursor.fetched != UNSTARTED {
                claim_of(t, cursor);
            }
        }
        for (t, id) in ids {
            if let Some(claim) = claims.get_mut(&t) {
                claim.event_ids.push(id);
            }
        }
        batch.claims = claims.into_values().collect();
        for t in &mut self.topics {
            if t.retired || t.fetched == UNSTARTED {
                continue;
            }
            let position = t
                .inflight
                .iter()
                .find(|(_, phase)| **phase == Phase::Running)
                .map(|(seq, _)| seq - 1)
                .unwrap_or(t.fetched);
            if position > t.committed {
                match t.partition {
                    None => batch
                        .positions
                        .push((self.cfg.name.clone(), t.name.clone(), position)),
                    Some(partition) => batch.broker_positions.push((
                        self.cfg.name.clone(),
                        t.name.clone(),
                        partition,
                        position,
                    )),
                }
                t.committed = position;
            }
        }
        batch
    }

    /// A batch is durable: account for it and release its keys.
    pub(super) fn committed(&mut self, done: Vec<Done>, report: CommitReport) {
        // Dead letters were added to the batch in the order of their `Done`s.
        let mut dlq_ids = report.dlq_ids.iter().copied();
        for d in done {
            if let Origin::Log(t) = d.origin {
                self.topics[t].inflight.remove(&d.seq);
            }
            if let Some(id) = &d.event_id {
                self.inflight_ids.remove(id);
            }
            let fenced = d
                .event_id
                .as_ref()
                .is_some_and(|id| report.fenced.contains(&(self.cfg.name.clone(), id.clone())));
            if d.released
                && let Some(key) = &d.key
            {
                let duplicate = d.event_id.as_ref().is_some_and(|id| {
                    report
                        .duplicates
                        .contains(&(self.cfg.name.clone(), id.clone()))
                });
                if fenced || duplicate {
                    self.undo_speculation(key);
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.processed.fetch_add(1, Ordering::Relaxed);
                }
                self.key_committed(key);
                continue;
            }
            if fenced {
                // The partition's new owner runs it.
                self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                if let DoneKind::DeadLettered { .. } = d.kind {
                    dlq_ids.next();
                }
                if let Some(key) = &d.key {
                    self.release(key);
                }
                continue;
            }
            match d.kind {
                DoneKind::Processed => {
                    let duplicate = d.event_id.as_ref().is_some_and(|id| {
                        report
                            .duplicates
                            .contains(&(self.cfg.name.clone(), id.clone()))
                    });
                    if duplicate {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.stats.processed.fetch_add(1, Ordering::Relaxed);
                        if let (Some(key), Some(state)) = (&d.key, d.state_after) {
                            self.cache_state(key.clone(), state);
                        }
                    }
                }
                DoneKind::DeadLettered { park } => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    let dlq_id = dlq_ids.next().unwrap_or(0);
                    if park
                        && dlq_id > 0
                        && let Some(key) = &d.key
                    {
                        self.park_key(key, dlq_id);
                        continue;
                    }
                }
                DoneKind::Skipped => {}
            }
            if let Some(key) = &d.key {
                self.release(key);
            }
        }
    }
}
