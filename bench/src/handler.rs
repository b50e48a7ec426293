//! The workload and its handler, shared by every setup: the events, the
//! bench handler (as a component, natively, or hand-written for the naive
//! consumers) and the pipeline that runs it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sluice::config::{Config, HandlerConfig};
use sluice::event::Event;
use sluice::pipeline::{Pipeline, Signals};
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice::store::{Batch, Processed, Store};

use crate::{HANDLER, Result, TOPIC, Workload};

/// Events `from..to` of the workload, on the embedded input topic.
pub(crate) fn events(workload: Workload, from: u64, to: u64) -> Vec<Event> {
    (from..to)
        .map(|i| Event {
            id: format!("b{i}"),
            source: "/bench".into(),
            ty: "step".into(),
            time: None,
            content_type: Some("application/json".into()),
            data_schema: None,
            data: format!(r#"{{"n":{i}}}"#).into_bytes(),
            headers: BTreeMap::new(),
            key: Some(format!("k{}", i % workload.keys.max(1))),
            topic: TOPIC.into(),
        })
        .collect()
}

/// `bench-guest`'s `step` compiled into the host: reads the key's `seen`
/// counter (JSON), writes it plus one, and emits one event with the old
/// value, keyed like its cause.
#[derive(Debug)]
pub struct BenchStep;

impl sluice::runtime::NativeHandler for BenchStep {
    fn handle(
        &self,
        event: &Event,
        state: &sluice::runtime::StateMap,
        out: &mut sluice::runtime::NativeOutput,
    ) -> std::result::Result<(), String> {
        let seen: u64 = match state.get("seen") {
            Some(v) => serde_json::from_slice(v).map_err(|e| e.to_string())?,
            None => 0,
        };
        let next = serde_json::to_vec(&(seen + 1)).map_err(|e| e.to_string())?;
        out.state_changes.insert("seen".into(), Some(next));
        out.emitted.push((
            "bench-out".into(),
            "bench.stepped".into(),
            seen.to_string().into_bytes(),
            event.key.clone(),
        ));
        Ok(())
    }
}

/// The benchmark handler on `topic`.
pub(crate) fn bench_handler(component: &Path, topic: &str) -> HandlerConfig {
    HandlerConfig {
        name: HANDLER.into(),
        component: Some(component.to_owned()),
        topics: vec![topic.into()],
        types: vec!["step".into()],
        retry: Default::default(),
        limits: Default::default(),
        concurrency: 32,
        on_dead_letter: Default::default(),
        start_from: Default::default(),
    }
}

/// Starts the pipeline of `config`, with the benchmark handler compiled
/// into the host when `native`.
pub(crate) async fn start_pipeline(
    config: &Config,
    store: Arc<dyn Store>,
    signals: Signals,
    native: bool,
) -> Result<Pipeline> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let mut natives: BTreeMap<String, Arc<dyn sluice::runtime::NativeHandler>> = BTreeMap::new();
    if native {
        natives.insert(HANDLER.into(), Arc::new(BenchStep));
    }
    Ok(Pipeline::start_with_natives(config, store, runtime, signals, natives).await?)
}

/// The state after `event` for the naive consumers: `seen` plus one, and
/// the event it emits.
fn naive_step(event: &Event, state: &sluice::runtime::StateMap) -> (u64, Event) {
    let seen: u64 = state
        .get("seen")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    let out = Event {
        id: format!("{}-out", event.id),
        ty: "bench.stepped".into(),
        topic: "bench-out".into(),
        data: seen.to_string().into_bytes(),
        ..event.clone()
    };
    (seen, out)
}

/// One event through a naive consumer: nothing when it was processed
/// already; else its state read, then one transaction with the processed
/// record, the state, the outbox row and `position`'s position.
pub(crate) async fn naive_one(
    store: &dyn Store,
    e: &Event,
    seq: i64,
    position: Batch,
) -> Result<()> {
    if !store
        .processed_ids(HANDLER, std::slice::from_ref(&e.id))
        .await?
        .is_empty()
    {
        return Ok(());
    }
    let key = e.key.clone().unwrap_or_default();
    let state = store.load_state(HANDLER, &key).await?;
    let (seen, out) = naive_step(e, &state);
    store
        .commit(&Batch {
            processed: vec![naive_outcome(e, seq, seen, out)],
            ..position
        })
        .await?;
    Ok(())
}

/// One processed outcome of the naive consumers.
fn naive_outcome(event: &Event, seq: i64, seen: u64, out: Event) -> Processed {
    Processed {
        handler: HANDLER.into(),
        version: "native".into(),
        topic: event.topic.clone(),
        seq,
        event_id: event.id.clone(),
        attempts: 1,
        key: event.key.clone(),
        state_changes: BTreeMap::from([(
            "seen".to_string(),
            Some((seen + 1).to_string().into_bytes()),
        )]),
        emitted: vec![out],
    }
}
