//! Keys: per-key order, speculation on committing state, the state cache
//! and invocations.

use super::*;

impl Dispatcher {
    pub(super) fn skip(&mut self, origin: Origin, seq: i64) {
        self.mark_committing(&origin, seq);
        self.batch_done.push(Done {
            state_after: None,
            origin,
            seq,
            event_id: None,
            key: None,
            kind: DoneKind::Skipped,
            released: false,
            rerun: None,
        });
    }

    pub(super) fn park(&mut self, origin: Origin, record: &LogRecord) {
        let Some(key) = &record.event.key else {
            return;
        };
        tracing::info!(handler = %self.cfg.name, event = %record.event.id, %key, "event held back: its key is parked");
        self.stats.parked.fetch_add(1, Ordering::Relaxed);
        self.batch.parked.push(ParkedEvent {
            handler: self.cfg.name.clone(),
            key: key.clone(),
            topic: record.event.topic.clone(),
            seq: record.seq,
        });
        self.skip(origin, record.seq);
    }

    pub(super) fn mark_committing(&mut self, origin: &Origin, seq: i64) {
        if let Origin::Log(t) = origin
            && let Some(phase) = self.topics[*t].inflight.get_mut(&seq)
        {
            *phase = Phase::Committing;
        }
    }

    /// Queues an item behind its key, or makes it ready.
    pub(super) fn submit(&mut self, item: Item) {
        match item.record.event.key.clone() {
            None => self.ready.push_back(item),
            Some(key) => match self.keys.get_mut(&key) {
                Some(queue) => queue.push_back(item),
                None => {
                    self.keys.insert(key, VecDeque::new());
                    self.ready.push_back(item);
                }
            },
        }
    }

    /// The key's current item is done: start its next one.
    pub(super) fn release(&mut self, key: &str) {
        if let Some(queue) = self.keys.get_mut(key) {
            match queue.pop_front() {
                Some(next) => self.ready.push_back(next),
                None => {
                    self.keys.remove(key);
                }
            }
        }
    }

    pub(super) fn generation(&self, key: &str) -> u64 {
        self.generations.get(key).copied().unwrap_or(0)
    }

    /// Whether `item` may run now; it runs speculatively when its key has
    /// an outcome committing. Actions wait for those commits instead (their
    /// clean-up rows are not undone).
    pub(super) fn gate(&mut self, mut item: Item) -> Option<Item> {
        let Some(key) = &item.record.event.key else {
            return Some(item);
        };
        if !self.committing_keys.contains_key(key) {
            item.speculative = false;
            return Some(item);
        }
        // Actions' clean-up rows are not undone. And speculation needs the
        // state the committing outcome wrote: once the cache lost it
        // (emptied on a rebalance, or full), the store's copy is
        // older, so the item waits for the commit instead.
        if matches!(item.origin, Origin::Action { .. }) || !self.state_cache.contains_key(key) {
            self.waiting.insert(key.clone(), item);
            return None;
        }
        item.speculative = true;
        item.generation = self.generation(key);
        Some(item)
    }

    /// Pipelines keys across commits: once the batch holding a key's
    /// outcome is on its way to the store, the key's next event runs
    /// against the state that outcome wrote, so that invocations overlap
    /// the commit instead of waiting for it. A key has at most one outcome
    /// per batch. Commits are sequential, so a crash loses the later
    /// outcomes with the earlier; should an outcome not apply (a duplicate
    /// by now), the work built on it is undone and runs again
    /// ([`Dispatcher::undo_speculation`]). On a shared partition an outcome may also be
    /// fenced (its partition claimed by another instance since): the
    /// key's later outcomes share its partition and claim, so they are
    /// fenced too, and undone the same way.
    pub(super) fn release_committing(&mut self, committing: &mut [Done]) {
        for d in committing.iter_mut() {
            if d.kind != DoneKind::Processed || !matches!(d.origin, Origin::Log(_)) {
                continue;
            }
            let Some(key) = d.key.clone() else { continue };
            *self.committing_keys.entry(key.clone()).or_default() += 1;
            if let Some(state) = d.state_after.take() {
                self.cache_state(key.clone(), state);
            }
            d.released = true;
            self.release(&key);
        }
    }

    /// A released outcome of `key` did not apply: the state the key's
    /// later work ran against is wrong. Running items of the key find out
    /// by the generation; an outcome not yet sent runs again now.
    pub(super) fn undo_speculation(&mut self, key: &str) {
        tracing::info!(handler = %self.cfg.name, %key, "an outcome did not apply; the key's later events run again");
        *self.generations.entry(key.to_owned()).or_default() += 1;
        drop(self.take_cached_state(key));
        let (again, kept): (Vec<Done>, Vec<Done>) = std::mem::take(&mut self.batch_done)
            .into_iter()
            .partition(|d| d.key.as_deref() == Some(key) && d.rerun.is_some());
        self.batch_done = kept;
        for d in again {
            let Some(item) = d.rerun else { continue };
            let name = &self.cfg.name;
            self.batch
                .processed
                .retain(|p| !(&p.handler == name && p.event_id == item.record.event.id));
            if let Origin::Log(t) = item.origin
                && let Some(phase) = self.topics[t].inflight.get_mut(&item.record.seq)
            {
                *phase = Phase::Running;
            }
            self.ready.push_front(item);
        }
    }

    /// One of `key`'s released outcomes committed (or did not apply).
    pub(super) fn key_committed(&mut self, key: &str) {
        let Some(n) = self.committing_keys.get_mut(key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.committing_keys.remove(key);
            if let Some(item) = self.waiting.remove(key) {
                self.ready.push_front(item);
            }
        }
    }

    pub(super) fn invoke(&mut self, item: Item) -> tokio::task::JoinHandle<Ran> {
        let store = self.store.clone();
        let handler = match &item.pinned {
            Some(pinned) => pinned.clone(),
            None => self.handler.borrow().clone(),
        };
        let version: Arc<str> = Arc::from(handler.component().digest());
        let cached = item
            .record
            .event
            .key
            .as_ref()
            .and_then(|k| self.take_cached_state(k));
        tokio::spawn(async move {
            let state = match (&item.record.event.key, cached) {
                (None, _) => StateMap::new(),
                (Some(_), Some(state)) => state,
                (Some(key), None) => match store.load_state(handler.name(), key).await {
                    Ok(state) => state,
                    Err(error) => return (item, Err(error)),
                },
            };
            let invocation = handler
                .invoke(&item.record.event, item.attempt, state.clone())
                .await;
            (item, Ok((invocation, state, version)))
        })
    }

    /// On shared partitions, another instance may have owned a key's partition and
    /// written its state: the cache holds only what was written while this
    /// instance owned the partitions it has now, so any change of them
    /// empties it. (Outcomes of an instance that has not yet learned it
    /// lost a partition are fenced at commit.)
    pub(super) fn forget_states(&mut self) {
        self.state_cache.clear();
        self.state_cache_bytes = 0;
    }

    pub(super) fn take_cached_state(&mut self, key: &str) -> Option<StateMap> {
        let state = self.state_cache.remove(key)?;
        self.state_cache_bytes = self
            .state_cache_bytes
            .saturating_sub(state_bytes(key, &state));
        Some(state)
    }

    pub(super) fn cache_state(&mut self, key: String, state: StateMap) {
        let bytes = state_bytes(&key, &state);
        if self.state_cache_bytes + bytes > STATE_CACHE_BYTES {
            // Crude but bounded: start over rather than track recency.
            self.state_cache.clear();
            self.state_cache_bytes = 0;
        }
        self.state_cache_bytes += bytes;
        if let Some(old) = self.state_cache.insert(key.clone(), state) {
            self.state_cache_bytes = self
                .state_cache_bytes
                .saturating_sub(state_bytes(&key, &old));
        }
    }
}

pub(super) fn state_bytes(key: &str, state: &StateMap) -> u64 {
    key.len() as u64
        + state
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>()
}
