//! Reading: what the source delivers becomes cursors and queued items.

use super::*;

impl Dispatcher {
    /// Loads into the state cache, in one query, the state of every key of
    /// `records` that will run and that nothing here holds: no item of the
    /// key is queued, running or committing, so what the store has is its
    /// latest state. Saves a query per event for keys not seen lately.
    pub(super) async fn prefetch_states<'r>(
        &mut self,
        records: impl Iterator<Item = &'r LogRecord>,
        processed: &HashSet<String>,
    ) {
        let mut keys: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for record in records {
            let event = &record.event;
            let Some(key) = event.key.as_deref() else {
                continue;
            };
            if self.cfg.accepts(&event.ty)
                && !processed.contains(&event.id)
                && !self.keys.contains_key(key)
                && !self.committing_keys.contains_key(key)
                && !self.parked.contains_key(key)
                && !self.state_cache.contains_key(key)
                && seen.insert(key)
            {
                keys.push(key.to_owned());
            }
        }
        if keys.len() < 2 {
            // One key: the invocation's own read costs the same.
            return;
        }
        match self.store.load_states(&self.cfg.name, &keys).await {
            Ok(states) => {
                for (key, state) in states {
                    self.cache_state(key, state);
                }
            }
            // The invocations read their state themselves.
            Err(error) => {
                tracing::warn!(handler = %self.cfg.name, "reading states ahead failed: {error}")
            }
        }
    }

    /// Takes one record read from cursor `t`: skips it (filtered, a
    /// duplicate), holds it back (parked key) or queues it behind its key.
    pub(super) fn accept(&mut self, t: usize, record: LogRecord, processed: bool) {
        let seq = record.seq;
        let cursor = &mut self.topics[t];
        cursor.fetched = seq;
        cursor.inflight.insert(seq, Phase::Running);
        if cursor.partition.is_none() {
            self.stats.read_seq.fetch_max(seq, Ordering::Relaxed);
        }
        let event = &record.event;
        if !self.cfg.accepts(&event.ty) {
            self.stats.filtered.fetch_add(1, Ordering::Relaxed);
            self.skip(Origin::Log(t), seq);
            return;
        }
        // A copy of an event in flight here is skipped on a whole topic,
        // where the original's cursor holds the position back. A partition
        // read again after a rebalance has a new cursor that knows nothing
        // of the original: the copy queues behind it (same key) and commits
        // as a duplicate, so the position cannot pass an event whose
        // outcome is not durable yet.
        let whole_topic = self.topics[t].partition.is_none();
        if processed || (whole_topic && self.inflight_ids.contains(&event.id)) {
            tracing::debug!(handler = %self.cfg.name, event = %event.id, "duplicate skipped");
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            self.skip(Origin::Log(t), seq);
            return;
        }
        if let Some(key) = &event.key
            && self.parked.contains_key(key)
        {
            self.park(Origin::Log(t), &record);
            return;
        }
        self.inflight_ids.insert(event.id.clone());
        let failures = self.restored.remove(&event.id).unwrap_or_default();
        let attempt = failures.len() as u32 + 1;
        self.submit(Item::new(record, attempt, failures, Origin::Log(t)));
    }

    /// Takes what the source delivered, in order: the records of runs of
    /// [`Input::Records`] together (one look-up of the processed ids that
    /// the source did not tell), then each change of the streams owned.
    pub(super) async fn take_inputs(&mut self, inputs: Vec<Input>) {
        let mut taken = Taken::default();
        for input in inputs {
            match input {
                Input::Records { stream, records } => self.collect(&mut taken, &stream, records),
                Input::Assigned(list) => {
                    self.accept_records(std::mem::take(&mut taken)).await;
                    self.assigned(list);
                }
                Input::Revoked(list) => {
                    self.accept_records(std::mem::take(&mut taken)).await;
                    self.revoked(&list);
                }
            }
        }
        self.accept_records(taken).await;
    }

    /// Adds the records of `stream` to `taken`: those of a stream owned
    /// here, past the cursor's position. A stream assigned without a
    /// position starts at its first record.
    fn collect(
        &mut self,
        taken: &mut Taken,
        stream: &StreamId,
        records: Vec<(LogRecord, Option<bool>)>,
    ) {
        let Some(&t) = self.streams.get(stream) else {
            tracing::debug!(handler = %self.cfg.name, topic = %stream.topic, partition = ?stream.partition, "records of a stream not owned here dropped");
            return;
        };
        let cursor = &mut self.topics[t];
        for (record, processed) in records {
            if cursor.fetched == UNSTARTED {
                // Nothing done on this stream yet: it starts here.
                cursor.fetched = record.seq - 1;
                cursor.committed = record.seq - 1;
            }
            let last = taken.last.entry(t).or_insert(cursor.fetched);
            if record.seq <= *last {
                continue;
            }
            // A partition's positions are offsets, one after the other.
            if cursor.partition.is_some() && record.seq > *last + 1 {
                tracing::warn!(handler = %self.cfg.name, topic = %stream.topic, partition = ?stream.partition, offset = record.seq, after = *last, epoch = cursor.epoch, "gap in offsets");
            }
            *last = record.seq;
            taken.records.push((t, record, processed));
        }
    }

    /// Accepts records collected by [`Dispatcher::collect`], with one
    /// look-up of the processed ids the source did not know and one read
    /// ahead of their keys' states.
    async fn accept_records(&mut self, taken: Taken) {
        if taken.records.is_empty() {
            return;
        }
        let ids: Vec<String> = taken
            .records
            .iter()
            .filter(|(_, r, processed)| processed.is_none() && self.cfg.accepts(&r.event.ty))
            .map(|(_, r, _)| r.event.id.clone())
            .collect();
        let mut processed = if ids.is_empty() {
            HashSet::new()
        } else {
            match self.store.processed_ids(&self.cfg.name, &ids).await {
                Ok(p) => p,
                Err(error) => {
                    // Run them: the commit finds duplicates by their ids anyway.
                    tracing::warn!(handler = %self.cfg.name, "reading processed ids failed: {error}");
                    HashSet::new()
                }
            }
        };
        processed.extend(
            taken
                .records
                .iter()
                .filter(|(_, _, p)| *p == Some(true))
                .map(|(_, r, _)| r.event.id.clone()),
        );
        self.prefetch_states(taken.records.iter().map(|(_, r, _)| r), &processed)
            .await;
        for (t, record, _) in taken.records {
            let duplicate = processed.contains(&record.event.id);
            self.accept(t, record, duplicate);
        }
    }

    /// Streams are now ours: a cursor each, starting after the position
    /// the store held (the source starts there too). A retired cursor with
    /// nothing in flight is reused.
    pub(super) fn assigned(&mut self, list: Vec<Assignment>) {
        self.forget_states();
        for Assignment {
            stream,
            position,
            epoch,
        } in list
        {
            let position = position.unwrap_or(UNSTARTED);
            let cursor = TopicCursor {
                name: stream.topic.clone(),
                partition: stream.partition,
                fetched: position,
                committed: position,
                inflight: BTreeMap::new(),
                retired: false,
                epoch,
            };
            let reuse = self
                .topics
                .iter()
                .position(|c| c.retired && c.inflight.is_empty());
            let t = match reuse {
                Some(t) => {
                    self.topics[t] = cursor;
                    t
                }
                None => {
                    self.topics.push(cursor);
                    self.topics.len() - 1
                }
            };
            if let Some(old) = self.streams.insert(stream, t) {
                self.topics[old].retired = true;
            }
        }
        self.count_partitions();
    }

    /// Streams are no longer ours: their cursors retire, and their queued
    /// work is abandoned to the new owner. Running invocations finish and
    /// commit; one the new owner runs too commits once (the processed
    /// record decides).
    pub(super) fn revoked(&mut self, list: &[StreamId]) {
        self.forget_states();
        let retired: HashSet<usize> = list
            .iter()
            .filter_map(|stream| self.streams.remove(stream))
            .collect();
        for t in &retired {
            self.topics[*t].retired = true;
        }
        self.count_partitions();
        self.abandon(&retired);
    }

    /// Publishes how many partitions (shared streams) this instance owns.
    pub(super) fn count_partitions(&self) {
        let owned = self
            .streams
            .keys()
            .filter(|s| s.partition.is_some())
            .count();
        self.stats.partitions.store(owned as u64, Ordering::Relaxed);
    }

    /// Drops the items of cursors `retired` (partitions given up) that have
    /// not started: the partition's new owner runs them, in order, after
    /// what is running here now (at most one per key, which commits once
    /// whoever finishes first).
    pub(super) fn abandon(&mut self, retired: &HashSet<usize>) {
        if retired.is_empty() {
            return;
        }
        let dropped = |item: &Item| matches!(item.origin, Origin::Log(t) if retired.contains(&t));
        let mut released = Vec::new();
        for queue in self.keys.values_mut() {
            queue.retain(|item| {
                let keep = !dropped(item);
                if !keep {
                    self.inflight_ids.remove(&item.record.event.id);
                    if let Origin::Log(t) = item.origin {
                        self.topics[t].inflight.remove(&item.record.seq);
                    }
                }
                keep
            });
        }
        let mut ready = VecDeque::with_capacity(self.ready.len());
        for item in std::mem::take(&mut self.ready) {
            if dropped(&item) {
                released.push(item);
            } else {
                ready.push_back(item);
            }
        }
        self.ready = ready;
        let waiting: Vec<u64> = self
            .timer_items
            .iter()
            .filter(|(_, item)| dropped(item))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if let Some(item) = self.timer_items.remove(&id) {
                released.push(item);
            }
        }
        // Each of these held its key: pass the key on.
        for item in released {
            self.inflight_ids.remove(&item.record.event.id);
            if let Origin::Log(t) = item.origin {
                self.topics[t].inflight.remove(&item.record.seq);
            }
            if let Some(key) = &item.record.event.key {
                self.release(key);
            }
        }
        tracing::info!(handler = %self.cfg.name, "work of revoked partitions abandoned to their new owner");
    }
}

/// Records taken from the source and not accepted yet.
#[derive(Default)]
struct Taken {
    /// Cursor, record and processed mark, in order.
    records: Vec<(usize, LogRecord, Option<bool>)>,
    /// The highest position taken so far, per cursor.
    last: HashMap<usize, i64>,
}
