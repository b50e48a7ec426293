//! Operator actions (redrive, discard) and parked keys.

use super::*;

impl Dispatcher {
    /// After a dead letter in park mode: hold back the key's queued events.
    pub(super) fn park_key(&mut self, key: &str, dlq_id: i64) {
        self.parked.insert(key.to_owned(), dlq_id);
        if let Some(queue) = self.keys.remove(key) {
            for item in queue {
                self.inflight_ids.remove(&item.record.event.id);
                self.park(item.origin, &item.record);
            }
        }
    }

    /// Carries out operator actions on this handler's DLQ entries.
    pub(super) async fn take_actions(&mut self) {
        let actions = match self.store.pending_actions(&self.cfg.name).await {
            Ok(actions) => actions,
            Err(error) => {
                tracing::error!(handler = %self.cfg.name, "reading DLQ actions failed: {error}");
                return;
            }
        };
        for action in actions {
            if !self.taken_actions.insert(action.id) {
                continue;
            }
            let entry = action.entry;
            let unpark = entry
                .record
                .event
                .key
                .clone()
                .filter(|k| self.parked.get(k) == Some(&entry.id));
            let pinned = match action.version {
                None => None,
                Some(version) => match self.load_version(version).await {
                    Ok(handler) => Some(handler),
                    Err(error) => {
                        tracing::error!(handler = %self.cfg.name, version, "cannot load the version to redrive on: {error}");
                        self.taken_actions.remove(&action.id);
                        return;
                    }
                },
            };
            let mut records = Vec::new();
            if action.action == DlqAction::Redrive {
                tracing::info!(handler = %self.cfg.name, dlq = entry.id, event = %entry.record.event.id, "redriving");
                records.push(entry.record.clone());
            }
            if let Some(key) = &unpark {
                match self.store.parked_events(&self.cfg.name, key).await {
                    Ok(held) => records.extend(held),
                    Err(error) => {
                        tracing::error!(handler = %self.cfg.name, "reading parked events failed: {error}");
                        self.taken_actions.remove(&action.id);
                        return;
                    }
                }
                self.parked.remove(key);
                tracing::info!(handler = %self.cfg.name, %key, held = records.len(), "key released");
            }
            // Skip what was already processed (a restart in the middle).
            let ids: Vec<String> = records.iter().map(|r| r.event.id.clone()).collect();
            let processed = match self.store.processed_ids(&self.cfg.name, &ids).await {
                Ok(p) => p,
                Err(error) => {
                    tracing::error!(handler = %self.cfg.name, "reading processed ids failed: {error}");
                    self.taken_actions.remove(&action.id);
                    return;
                }
            };
            records.retain(|r| !processed.contains(&r.event.id));
            let finish = Finish {
                action_id: action.id,
                unpark,
            };
            let count = records.len();
            if count == 0 {
                self.add_finish(finish);
                continue;
            }
            let redriven_id = entry.record.event.id.clone();
            for (i, record) in records.into_iter().enumerate() {
                // Only the redriven event runs on the chosen version; the
                // events held behind its key run on the active one.
                let pinned = (record.event.id == redriven_id)
                    .then(|| pinned.clone())
                    .flatten();
                let origin = Origin::Action {
                    finish: (i + 1 == count).then(|| finish.clone()),
                };
                self.submit(Item {
                    pinned,
                    ..Item::new(record, 1, Vec::new(), origin)
                });
            }
        }
    }

    /// A handler running stored version `version` of this handler.
    pub(super) async fn load_version(&self, version: i64) -> Result<Handler, String> {
        let bytes = self
            .store
            .component(&self.cfg.name, version)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("version {version} is not stored"))?;
        let current = self.handler.borrow().clone();
        let runtime = current.runtime().clone();
        let component = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(current.with_component(component))
    }
}
