//! The store's unit tests, written once against [`Store`] and run for every
//! backend: each test below becomes `conformance::sqlite::<name>` and
//! `conformance::postgres::<name>`. PostgreSQL tests skip (and pass) when no
//! server is reachable, unless `SLUICE_REQUIRE_SERVERS=1`; see
//! [`sluice_testkit::postgres_test_database`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    AttemptRecord, Batch, Claim, DeadLetter, DlqAction, DlqFilter, DlqStatus, Error, LogRecord,
    ManagedBy, ParkedEvent, Processed, Store, StoreOptions, now_ms, open,
};
use crate::event::{CAUSATION_ID, Event};

/// A store under test, with what it takes to open a second instance on the
/// same database (another host).
struct TestStore {
    store: Arc<dyn Store>,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl TestStore {
    fn options() -> StoreOptions {
        StoreOptions {
            max_connections: 8,
            ..StoreOptions::default()
        }
    }

    /// A second, independent instance on the same database.
    async fn reopen(&self) -> Arc<dyn Store> {
        open(&self.url, &Self::options()).await.unwrap()
    }
}

async fn sqlite_store() -> Option<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: opening creates it.
    let url = format!("sqlite://{}", dir.path().join("db/sluice.db").display());
    let store = open(&url, &TestStore::options()).await.unwrap();
    Some(TestStore {
        store,
        url,
        _dir: Some(dir),
    })
}

async fn postgres_store() -> Option<TestStore> {
    let url = sluice_testkit::postgres_test_database().await?;
    let store = open(&url, &TestStore::options()).await.unwrap();
    Some(TestStore {
        store,
        url,
        _dir: None,
    })
}

/// Expands each test function into one test per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let s = super::sqlite_store().await.unwrap();
                    super::$name(&s).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(s) = super::postgres_store().await else {
                        return;
                    };
                    super::$name(&s).await;
                }
            )*
        }
    };
}

conformance! {
    append_assigns_partitions_offsets_and_sequence,
    commit_is_atomic_and_idempotent,
    handler_registry_versions_and_activation,
    dead_letters_park_and_redrive,
    commit_reports_duplicates_and_dlq_ids_in_order,
    parked_events_unpark_and_actions_done,
    dlq_list_filters_and_pages,
    lookups_by_id_causation_and_lag,
    large_batches_are_chunked,
    nul_in_error_messages_does_not_block_commit,
    concurrent_appends_become_visible_in_seq_order,
    concurrent_relays_publish_each_row_once,
    concurrent_version_uploads_get_distinct_numbers,
    concurrent_dlq_actions_conflict,
    state_changes_apply_in_batch_order,
    states_load_for_many_keys_at_once,
    emitted_events_can_go_straight_into_the_log,
    outbox_rows_wait_until_marked_delivered,
    a_lease_has_one_holder_until_it_expires,
    broker_positions_only_move_forward,
    outcomes_of_a_partition_claimed_since_are_fenced,
    appended_seqs_are_the_stored_ones_and_reads_mark_processed,
}

fn event(id: &str, topic: &str, key: Option<&str>) -> Event {
    Event {
        id: id.into(),
        source: "/test".into(),
        ty: "t".into(),
        time: None,
        content_type: Some("application/json".into()),
        data_schema: None,
        data: b"{}".to_vec(),
        headers: BTreeMap::from([("x".to_string(), "y".to_string())]),
        key: key.map(Into::into),
        topic: topic.into(),
    }
}

fn processed(handler: &str, topic: &str, seq: i64, id: &str, key: Option<&str>) -> Processed {
    Processed {
        handler: handler.into(),
        version: "v1".into(),
        topic: topic.into(),
        seq,
        event_id: id.into(),
        attempts: 1,
        key: key.map(Into::into),
        state_changes: BTreeMap::new(),
        emitted: Vec::new(),
    }
}

fn attempt(n: u32, error: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        outcome: "retryable".into(),
        error: error.into(),
        version: "v1".into(),
        at: now_ms(),
    }
}

async fn append_assigns_partitions_offsets_and_sequence(s: &TestStore) {
    assert_eq!(s.ensure_topic("orders", 4).await.unwrap(), 4);
    // An existing topic keeps its partition count.
    assert_eq!(s.ensure_topic("orders", 9).await.unwrap(), 4);
    let a = s
        .append(
            &[
                event("1", "orders", Some("k")),
                event("2", "orders", Some("k")),
                event("3", "other", None),
            ],
            2,
        )
        .await
        .unwrap();
    assert_eq!(a[0].partition, a[1].partition);
    assert_eq!((a[0].offset, a[1].offset), (0, 1));
    assert!(a[0].seq < a[1].seq && a[1].seq < a[2].seq);
    let more = s
        .append(&[event("4", "orders", Some("k"))], 2)
        .await
        .unwrap();
    assert_eq!(more[0].offset, 2);
    let log = s.read_log("orders", 0, 10).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].event, event("1", "orders", Some("k")));
    assert_eq!(s.read_log("orders", log[1].seq, 10).await.unwrap().len(), 1);
    assert_eq!(s.read_log("orders", 0, 2).await.unwrap().len(), 2);
    let topics = s.topics().await.unwrap();
    assert_eq!(topics.len(), 2);
    assert_eq!(
        (topics[1].name.as_str(), topics[1].partitions),
        ("other", 2)
    );
    assert_eq!((topics[0].events, topics[0].last_seq), (3, more[0].seq));
    // Events round-trip whole, optional attributes and odd bytes included.
    let mut full = event("5", "orders", None);
    full.time = Some("2024-01-01T00:00:00Z".into());
    full.content_type = None;
    full.data_schema = Some("s1".into());
    full.data = vec![0, 255, 1, 128];
    full.headers.insert("ü".into(), "\u{1F980} \"q\"".into());
    let a = s.append(std::slice::from_ref(&full), 2).await.unwrap();
    let back = s.read_seqs(&[a[0].seq, 999_999]).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].event, full);
    assert_eq!((back[0].seq, back[0].offset), (a[0].seq, a[0].offset));
    assert!(back[0].partition < 4);
    assert!(s.read_seqs(&[]).await.unwrap().is_empty());
}

async fn commit_is_atomic_and_idempotent(s: &TestStore) {
    let a = s.append(&[event("e1", "in", Some("k"))], 1).await.unwrap();
    let outcome = Processed {
        state_changes: BTreeMap::from([("n".to_string(), Some(b"1".to_vec()))]),
        emitted: vec![event("out-1", "out", Some("k"))],
        ..processed("h", "in", a[0].seq, "e1", Some("k"))
    };
    let batch = Batch {
        processed: vec![outcome],
        positions: vec![("h".into(), "in".into(), a[0].seq)],
        ..Default::default()
    };
    let r = s.commit(&batch).await.unwrap();
    assert!(r.duplicates.is_empty());
    assert_eq!(r.outbox_rows, 1);
    assert_eq!(s.position("h", "in").await.unwrap(), Some(a[0].seq));
    assert_eq!(s.load_state("h", "k").await.unwrap()["n"], b"1");
    assert_eq!(
        s.processed_ids("h", &["e1".into(), "e2".into()])
            .await
            .unwrap(),
        HashSet::from(["e1".to_string()])
    );
    assert!(s.processed_ids("h", &[]).await.unwrap().is_empty());
    // The same outcome again: detected, nothing applied twice.
    let r = s.commit(&batch).await.unwrap();
    assert!(r.duplicates.contains(&("h".to_string(), "e1".to_string())));
    assert_eq!(r.outbox_rows, 0);
    assert_eq!(s.outbox_backlog().await.unwrap(), 1);
    // Positions never move backwards.
    s.commit(&Batch {
        positions: vec![("h".into(), "in".into(), 0)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.position("h", "in").await.unwrap(), Some(a[0].seq));

    // The relay moves the outbox row into the log, once.
    let relayed = s.relay_outbox(100, 3).await.unwrap();
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].topic, "out");
    assert!(s.relay_outbox(100, 3).await.unwrap().is_empty());
    assert_eq!(s.outbox_backlog().await.unwrap(), 0);
    let out = s.read_log("out", 0, 10).await.unwrap();
    assert_eq!(out[0].event.id, "out-1");
    assert_eq!(s.topics().await.unwrap()[1].partitions, 3);

    // A later event's state change of the same key: a delete removes.
    let b = s.append(&[event("e2", "in", Some("k"))], 1).await.unwrap();
    s.commit(&Batch {
        processed: vec![Processed {
            state_changes: BTreeMap::from([
                ("n".to_string(), None),
                ("m".to_string(), Some(b"2".to_vec())),
            ]),
            ..processed("h", "in", b[0].seq, "e2", Some("k"))
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let state = s.load_state("h", "k").await.unwrap();
    assert_eq!(state, BTreeMap::from([("m".to_string(), b"2".to_vec())]));
    // State is per handler and key.
    assert!(s.load_state("h", "other").await.unwrap().is_empty());
    assert!(s.load_state("g", "k").await.unwrap().is_empty());
}

async fn handler_registry_versions_and_activation(s: &TestStore) {
    assert!(matches!(
        s.add_version("h", "d1", b"x").await,
        Err(Error::NotFound(_))
    ));
    let cfg = serde_json::json!({"topics": ["orders"]});
    let h = s.put_handler("h", &cfg, ManagedBy::Api).await.unwrap();
    assert_eq!((h.config.clone(), h.active_version), (cfg.clone(), None));
    assert_eq!(h.managed_by, ManagedBy::Api);
    let (v1, new) = s.add_version("h", "d1", b"one").await.unwrap();
    assert!(new && v1.version == 1 && v1.size == 3);
    let (v2, _) = s.add_version("h", "d2", b"two!").await.unwrap();
    assert_eq!(v2.version, 2);
    // Identical bytes: the existing version.
    let (again, new) = s.add_version("h", "d1", b"one").await.unwrap();
    assert!(!new);
    assert_eq!(again, v1);
    assert_eq!(s.component("h", 2).await.unwrap().unwrap(), b"two!");
    assert!(s.component("h", 3).await.unwrap().is_none());
    let h = s.activate("h", 2).await.unwrap();
    assert_eq!(h.active_version, Some(2));
    assert_eq!(h.versions.len(), 2);
    assert!(matches!(s.activate("h", 9).await, Err(Error::NotFound(_))));
    assert!(matches!(
        s.activate("nobody", 1).await,
        Err(Error::NotFound(_))
    ));
    // Updating the config keeps versions and the active one.
    let h = s
        .put_handler(
            "h",
            &serde_json::json!({"topics": ["other"]}),
            ManagedBy::Config,
        )
        .await
        .unwrap();
    assert_eq!((h.active_version, h.versions.len()), (Some(2), 2));
    assert_eq!(h.managed_by, ManagedBy::Config);
    assert_eq!(s.handlers().await.unwrap().len(), 1);
    // The configuration comes back as given, key order included.
    let ordered = serde_json::json!({"zeta": 1, "alpha": {"b": 2, "a": 1}});
    let g = s.put_handler("g", &ordered, ManagedBy::Api).await.unwrap();
    assert_eq!(g.config.to_string(), ordered.to_string());
    let names: Vec<String> = s
        .handlers()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["g", "h"]);
    // What the handler recorded while consuming outlives a plain delete
    // (a re-created handler resumes) and goes with a purge.
    let consumed = Batch {
        positions: vec![("h".into(), "orders".into(), 7)],
        ..Default::default()
    };
    s.commit(&consumed).await.unwrap();
    assert!(s.delete_handler("h", false).await.unwrap());
    assert!(!s.delete_handler("h", false).await.unwrap());
    assert!(s.handler("h").await.unwrap().is_none());
    assert!(s.component("h", 2).await.unwrap().is_none());
    assert_eq!(s.position("h", "orders").await.unwrap(), Some(7));
    let h = s.put_handler("h", &cfg, ManagedBy::Api).await.unwrap();
    assert!(h.versions.is_empty() && h.active_version.is_none());
    // Numbering restarts with the versions gone.
    assert_eq!(s.add_version("h", "d9", b"9").await.unwrap().0.version, 1);
    assert!(s.delete_handler("h", true).await.unwrap());
    assert_eq!(s.position("h", "orders").await.unwrap(), None);
    assert!(s.handler("g").await.unwrap().is_some());
}

async fn dead_letters_park_and_redrive(s: &TestStore) {
    let a = s.append(&[event("e1", "in", Some("k"))], 1).await.unwrap();
    let record = s.read_seqs(&[a[0].seq]).await.unwrap().remove(0);
    let at = now_ms();
    let attempt = |n| AttemptRecord {
        attempt: n,
        outcome: "retryable".into(),
        error: format!("boom {n}"),
        version: "v1".into(),
        at,
    };
    s.commit(&Batch {
        failures: vec![("h".into(), "e1".into(), attempt(1))],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.attempts("h", "e1").await.unwrap(), vec![attempt(1)]);
    assert_eq!(
        s.pending_attempts("h").await.unwrap(),
        HashMap::from([("e1".to_string(), vec![attempt(1)])])
    );
    let r = s
        .commit(&Batch {
            dead_letters: vec![DeadLetter {
                handler: "h".into(),
                version: "v1".into(),
                record: record.clone(),
                attempts: vec![attempt(1), attempt(2)],
                park: true,
                publish_to: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let id = r.dlq_ids[0];
    assert!(s.attempts("h", "e1").await.unwrap().is_empty());
    assert_eq!(
        s.parked_keys("h").await.unwrap(),
        HashMap::from([("k".to_string(), id)])
    );
    assert!(s.pending_attempts("h").await.unwrap().is_empty());
    let entry = s.dlq_get(id).await.unwrap().unwrap();
    assert_eq!(entry.record, record);
    assert_eq!(entry.attempts.len(), 2);
    assert_eq!(entry.error, "retryable: boom 2");
    assert_eq!(entry.status, DlqStatus::Pending);
    assert_eq!(
        s.dlq_list(&DlqFilter {
            handler: Some("h".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
    let records = s.processed_records("e1").await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].outcome.as_str(), records[0].attempts),
        ("dead-lettered", 2)
    );
    // Redrive: the processed record goes, the action is queued.
    assert!(
        s.processed_ids("h", &["e1".into()])
            .await
            .unwrap()
            .contains("e1")
    );
    let entry = s.dlq_act_on(id, DlqAction::Redrive, Some(3)).await.unwrap();
    assert_eq!(entry.status, DlqStatus::Redriven);
    assert_eq!(
        s.dlq_get(id).await.unwrap().unwrap().status,
        DlqStatus::Redriven
    );
    assert!(
        s.processed_ids("h", &["e1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let actions = s.pending_actions("h").await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].action, DlqAction::Redrive);
    assert_eq!(actions[0].version, Some(3));
    assert_eq!(actions[0].entry.id, id);
    assert_eq!(actions[0].entry.record, record);
    assert!(matches!(
        s.dlq_act(id, DlqAction::Discard).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.dlq_act(999, DlqAction::Discard).await,
        Err(Error::NotFound(_))
    ));
    assert!(s.dlq_get(999).await.unwrap().is_none());
}

async fn appended_seqs_are_the_stored_ones_and_reads_mark_processed(s: &TestStore) {
    // Two topics interleaved in one append, over several partitions: each
    // answer names the sequence number the row was stored under.
    let events: Vec<Event> = (0..40)
        .map(|i| {
            let topic = if i % 3 == 0 { "b" } else { "a" };
            event(&format!("e{i}"), topic, Some(&format!("k{}", i % 7)))
        })
        .collect();
    s.append(&[event("first", "a", None)], 4).await.unwrap();
    let appended = s.append(&events, 4).await.unwrap();
    let mut stored = s.read_log("a", 0, 100).await.unwrap();
    stored.extend(s.read_log("b", 0, 100).await.unwrap());
    for a in &appended {
        let record = stored.iter().find(|r| r.event.id == a.id).unwrap();
        assert_eq!(
            (
                record.seq,
                record.partition,
                record.offset,
                record.event.topic.as_str()
            ),
            (a.seq, a.partition, a.offset, a.topic.as_str()),
            "{}",
            a.id
        );
    }
    // Reads for a handler tell which events it has processed.
    let done = |id: &str| {
        let a = appended.iter().find(|a| a.id == id).unwrap();
        processed("h", &a.topic, a.seq, id, None)
    };
    s.commit(&Batch {
        processed: vec![done("e1"), done("e4")],
        ..Default::default()
    })
    .await
    .unwrap();
    let read = s.read_log_for("h", "a", 0, 100).await.unwrap();
    assert_eq!(read.len(), 27);
    for (record, processed) in &read {
        let id = record.event.id.as_str();
        assert_eq!(*processed, id == "e1" || id == "e4", "{id}");
    }
    let later = s
        .read_log_for("other", "a", read[2].0.seq, 5)
        .await
        .unwrap();
    assert_eq!(later.len(), 5);
    assert_eq!(later[0].0.seq, read[3].0.seq);
    assert!(later.iter().all(|(_, processed)| !processed));
}

async fn commit_reports_duplicates_and_dlq_ids_in_order(s: &TestStore) {
    let a = s
        .append(
            &[
                event("e1", "in", Some("a")),
                event("e2", "in", Some("b")),
                event("e3", "in", Some("c")),
                event("e4", "in", Some("d")),
            ],
            1,
        )
        .await
        .unwrap();
    let records = s
        .read_seqs(&a.iter().map(|a| a.seq).collect::<Vec<_>>())
        .await
        .unwrap();
    let dead = |i: usize| DeadLetter {
        handler: "h".into(),
        version: "v2".into(),
        record: records[i].clone(),
        attempts: vec![attempt(1, "x")],
        park: false,
        publish_to: None,
    };
    // One id twice in a batch: the first applies, the second is a duplicate.
    let first = Processed {
        state_changes: BTreeMap::from([("n".to_string(), Some(b"first".to_vec()))]),
        emitted: vec![event("o1", "out", None)],
        ..processed("h", "in", a[0].seq, "e1", Some("a"))
    };
    let second = Processed {
        state_changes: BTreeMap::from([("n".to_string(), Some(b"second".to_vec()))]),
        emitted: vec![event("o2", "out", None)],
        ..processed("h", "in", a[0].seq, "e1", Some("a"))
    };
    let r = s
        .commit(&Batch {
            processed: vec![first, second, processed("g", "in", a[0].seq, "e1", None)],
            dead_letters: vec![dead(1), dead(2)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        r.duplicates,
        HashSet::from([("h".to_string(), "e1".to_string())])
    );
    assert_eq!(r.outbox_rows, 1);
    assert_eq!(s.load_state("h", "a").await.unwrap()["n"], b"first");
    assert_eq!(r.dlq_ids.len(), 2);
    assert!(0 < r.dlq_ids[0] && r.dlq_ids[0] < r.dlq_ids[1]);
    assert_eq!(
        s.dlq_get(r.dlq_ids[1]).await.unwrap().unwrap().record,
        records[2]
    );
    // A dead letter for an event with a final outcome: id 0, a duplicate,
    // and no entry; the others in the batch still get theirs, in order.
    let r = s
        .commit(&Batch {
            dead_letters: vec![dead(3), dead(1), dead(0)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.dlq_ids.len(), 3);
    assert!(r.dlq_ids[0] > 0);
    assert_eq!(&r.dlq_ids[1..], &[0, 0]);
    assert_eq!(
        r.duplicates,
        HashSet::from([
            ("h".to_string(), "e2".to_string()),
            ("h".to_string(), "e1".to_string())
        ])
    );
    assert_eq!(s.dlq_list(&DlqFilter::default()).await.unwrap().len(), 3);
    let records = s.processed_records("e1").await.unwrap();
    let handlers: Vec<&str> = records.iter().map(|r| r.handler.as_str()).collect();
    assert_eq!(handlers, ["g", "h"]);
    assert_eq!(records[1].outcome, "ok");
    // An empty batch commits.
    let r = s.commit(&Batch::default()).await.unwrap();
    assert!(r.duplicates.is_empty() && r.dlq_ids.is_empty() && r.outbox_rows == 0);
}

async fn parked_events_unpark_and_actions_done(s: &TestStore) {
    let a = s
        .append(
            &[
                event("e1", "in", Some("k")),
                event("e2", "in", Some("k")),
                event("e3", "in", Some("k")),
                event("e4", "in", Some("j")),
            ],
            1,
        )
        .await
        .unwrap();
    let record = s.read_seqs(&[a[0].seq]).await.unwrap().remove(0);
    let r = s
        .commit(&Batch {
            dead_letters: vec![DeadLetter {
                handler: "h".into(),
                version: "v1".into(),
                record,
                attempts: vec![attempt(1, "x")],
                park: true,
                publish_to: None,
            }],
            // Held back out of order, and one twice: stored once, read in
            // log order.
            parked: [2, 1, 2]
                .iter()
                .map(|&i| ParkedEvent {
                    handler: "h".into(),
                    key: "k".into(),
                    topic: "in".into(),
                    seq: a[i].seq,
                })
                .collect(),
            positions: vec![("h".into(), "in".into(), a[3].seq)],
            ..Default::default()
        })
        .await
        .unwrap();
    let id = r.dlq_ids[0];
    let held: Vec<String> = s
        .parked_events("h", "k")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.id)
        .collect();
    assert_eq!(held, ["e2", "e3"]);
    assert!(s.parked_events("h", "j").await.unwrap().is_empty());
    assert!(s.parked_events("g", "k").await.unwrap().is_empty());
    // A discard is queued like a redrive and keeps the processed record.
    s.dlq_act(id, DlqAction::Discard).await.unwrap();
    assert!(s.processed_ids("h", &["e1".into()]).await.unwrap().len() == 1);
    let actions = s.pending_actions("h").await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0].action, actions[0].version),
        (DlqAction::Discard, None)
    );
    assert_eq!(actions[0].entry.status, DlqStatus::Discarded);
    assert!(s.pending_actions("g").await.unwrap().is_empty());
    // The dispatcher carries the action out: the key is released.
    s.commit(&Batch {
        actions_done: vec![actions[0].id],
        unparked: vec![("h".into(), "k".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(s.pending_actions("h").await.unwrap().is_empty());
    assert!(s.parked_keys("h").await.unwrap().is_empty());
    assert!(s.parked_events("h", "k").await.unwrap().is_empty());
    // Parking without a key parks nothing.
    let b = s.append(&[event("n1", "in", None)], 1).await.unwrap();
    let record = s.read_seqs(&[b[0].seq]).await.unwrap().remove(0);
    s.commit(&Batch {
        dead_letters: vec![DeadLetter {
            handler: "h".into(),
            version: "v1".into(),
            record,
            attempts: vec![attempt(1, "x")],
            park: true,
            publish_to: None,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(s.parked_keys("h").await.unwrap().is_empty());
}

async fn dlq_list_filters_and_pages(s: &TestStore) {
    let events: Vec<Event> = (0..6)
        .map(|i| event(&format!("e{i}"), if i % 2 == 0 { "a" } else { "b" }, None))
        .collect();
    let appended = s.append(&events, 1).await.unwrap();
    let records = s
        .read_seqs(&appended.iter().map(|a| a.seq).collect::<Vec<_>>())
        .await
        .unwrap();
    let r = s
        .commit(&Batch {
            dead_letters: records
                .iter()
                .enumerate()
                .map(|(i, record)| DeadLetter {
                    handler: if i < 4 { "h" } else { "g" }.into(),
                    version: "v1".into(),
                    record: record.clone(),
                    attempts: vec![attempt(1, "x")],
                    park: false,
                    publish_to: None,
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids = r.dlq_ids;
    let list = |filter: DlqFilter| async move {
        s.dlq_list(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(list(DlqFilter::default()).await, ids);
    let h = list(DlqFilter {
        handler: Some("h".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(h, &ids[..4]);
    let ha = list(DlqFilter {
        handler: Some("h".into()),
        topic: Some("a".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(ha, [ids[0], ids[2]]);
    let page = list(DlqFilter {
        after: Some(ids[1]),
        limit: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(page, &ids[2..4]);
    // A limit of 0 means at least one.
    assert_eq!(
        list(DlqFilter {
            limit: Some(0),
            ..Default::default()
        })
        .await,
        &ids[..1]
    );
    s.dlq_act(ids[0], DlqAction::Discard).await.unwrap();
    s.dlq_act(ids[5], DlqAction::Redrive).await.unwrap();
    let status = |status| DlqFilter {
        status: Some(status),
        ..Default::default()
    };
    assert_eq!(list(status(DlqStatus::Discarded)).await, [ids[0]]);
    assert_eq!(list(status(DlqStatus::Redriven)).await, [ids[5]]);
    assert_eq!(list(status(DlqStatus::Pending)).await, &ids[1..5]);
    // A purge takes the handler's entries and actions along.
    assert!(!s.delete_handler("g", true).await.unwrap());
    assert!(s.dlq_get(ids[5]).await.unwrap().is_none());
    assert!(s.pending_actions("g").await.unwrap().is_empty());
    assert_eq!(list(DlqFilter::default()).await, &ids[..4]);
}

async fn lookups_by_id_causation_and_lag(s: &TestStore) {
    let mut child = event("c1", "out", None);
    child.headers.insert(CAUSATION_ID.into(), "p1".into());
    let mut grandchild = event("g1", "out", None);
    grandchild.headers.insert(CAUSATION_ID.into(), "c1".into());
    let a = s
        .append(
            &[
                event("p1", "in", Some("k")),
                child.clone(),
                event("p1", "in", Some("k")),
                grandchild,
                event("other", "in", None),
            ],
            2,
        )
        .await
        .unwrap();
    // An id can be republished: every copy, oldest first.
    let copies = s.events_by_id("p1").await.unwrap();
    assert_eq!(
        copies.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [a[0].seq, a[2].seq]
    );
    assert!(s.events_by_id("nope").await.unwrap().is_empty());
    let caused = s.events_caused_by("p1").await.unwrap();
    assert_eq!(caused.len(), 1);
    assert_eq!(caused[0].event, child);
    assert_eq!(s.events_caused_by("c1").await.unwrap()[0].event.id, "g1");
    assert!(s.events_caused_by("g1").await.unwrap().is_empty());
    // Lag per topic the handler has a position on, by topic name.
    s.commit(&Batch {
        positions: vec![
            ("h".into(), "out".into(), 0),
            ("h".into(), "in".into(), a[0].seq),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.lag("h").await.unwrap(),
        [("in".to_string(), 2), ("out".to_string(), 2)]
    );
    assert!(s.lag("g").await.unwrap().is_empty());
    assert!(s.processed_records("p1").await.unwrap().is_empty());
    assert_eq!(s.position("g", "in").await.unwrap(), None);
}

async fn large_batches_are_chunked(s: &TestStore) {
    // More rows than one statement takes on either backend.
    const N: usize = 2500;
    let events: Vec<Event> = (0..N)
        .map(|i| event(&format!("e{i}"), "in", Some(&format!("k{}", i % 50))))
        .collect();
    let a = s.append(&events, 4).await.unwrap();
    assert_eq!(a.len(), N);
    assert!(a.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(a.iter().zip(&events).all(|(a, e)| a.id == e.id));
    let seqs: Vec<i64> = a.iter().map(|a| a.seq).collect();
    assert_eq!(s.read_seqs(&seqs).await.unwrap().len(), N);
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let batch = Batch {
        processed: a
            .iter()
            .map(|a| Processed {
                state_changes: BTreeMap::from([(
                    format!("n{}", a.seq),
                    Some(a.seq.to_string().into_bytes()),
                )]),
                emitted: vec![event(&format!("o-{}", a.id), "out", None)],
                ..processed("h", "in", a.seq, &a.id, Some(&format!("k{}", a.seq % 7)))
            })
            .collect(),
        positions: vec![("h".into(), "in".into(), seqs[N - 1])],
        ..Default::default()
    };
    let r = s.commit(&batch).await.unwrap();
    assert!(r.duplicates.is_empty());
    assert_eq!(r.outbox_rows, N as u64);
    assert_eq!(s.processed_ids("h", &ids).await.unwrap().len(), N);
    let r = s.commit(&batch).await.unwrap();
    assert_eq!(r.duplicates.len(), N);
    assert_eq!(s.relay_outbox(N as u32, 1).await.unwrap().len(), N);
    assert_eq!(s.outbox_backlog().await.unwrap(), 0);
}

async fn nul_in_error_messages_does_not_block_commit(s: &TestStore) {
    // Error texts come from guests. PostgreSQL text cannot hold NUL (it is
    // replaced there); the commit must go through either way.
    let a = s.append(&[event("e1", "in", Some("k"))], 1).await.unwrap();
    let record = s.read_seqs(&[a[0].seq]).await.unwrap().remove(0);
    let bad = attempt(1, "bad\0byte");
    s.commit(&Batch {
        failures: vec![("h".into(), "e1".into(), bad.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    let stored = s.attempts("h", "e1").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(["bad\0byte", "bad\u{FFFD}byte"].contains(&stored[0].error.as_str()));
    let r = s
        .commit(&Batch {
            dead_letters: vec![DeadLetter {
                handler: "h".into(),
                version: "v1".into(),
                record,
                attempts: vec![bad.clone()],
                park: false,
                publish_to: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let entry = s.dlq_get(r.dlq_ids[0]).await.unwrap().unwrap();
    // The attempts themselves are kept exactly.
    assert_eq!(entry.attempts, [bad]);
    assert!(entry.error.starts_with("retryable: bad"));
}

/// Dispatchers follow a topic with `seq > position`: with writers on
/// several connections and two instances, a follower must still see every
/// event, once, in order. It would miss one whose lower `seq` became
/// visible after a higher one.
async fn concurrent_appends_become_visible_in_seq_order(s: &TestStore) {
    const WRITERS: usize = 6;
    const APPENDS: usize = 40;
    let other = s.reopen().await;
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let store = s.store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut position = 0;
            loop {
                // Read the flag first: a read that starts after the writers
                // finished and finds nothing means the follower is done.
                let finished = done.load(Ordering::SeqCst);
                let batch = store.read_log("t", position, 1000).await.unwrap();
                if batch.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    continue;
                }
                for r in batch {
                    assert!(r.seq > position);
                    position = r.seq;
                    seen.push(r.event.id);
                }
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 {
            s.store.clone()
        } else {
            other.clone()
        };
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..APPENDS {
                let events: Vec<Event> = (0..(1 + i % 3))
                    .map(|j| event(&format!("w{w}-{i}-{j}"), "t", Some(&format!("k{j}"))))
                    .collect();
                s_append(&*store, &events).await;
                ids.extend(events.into_iter().map(|e| e.id));
            }
            ids
        }));
    }
    let mut expected = HashSet::new();
    for w in writers {
        expected.extend(w.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let seen = follower.await.unwrap();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an event was read twice");
    let mut missed: Vec<&String> = expected.difference(&unique).collect();
    missed.sort();
    assert!(missed.is_empty(), "the follower missed {missed:?}");
    assert_eq!(unique.len(), expected.len());
    // Offsets are dense per partition despite the concurrency.
    let log = s.read_log("t", 0, 10_000).await.unwrap();
    let mut offsets: HashMap<u32, Vec<i64>> = HashMap::new();
    for r in log {
        offsets.entry(r.partition).or_default().push(r.offset);
    }
    for o in offsets.values() {
        assert!(o.iter().enumerate().all(|(i, o)| *o == i as i64));
    }
}

async fn s_append(store: &dyn Store, events: &[Event]) {
    store.append(events, 3).await.unwrap();
}

/// Two hosts relaying while handlers commit: every emitted event reaches
/// the log exactly once.
async fn concurrent_relays_publish_each_row_once(s: &TestStore) {
    const COMMITTERS: usize = 4;
    const COMMITS: usize = 25;
    let other = s.reopen().await;
    let done = Arc::new(AtomicBool::new(false));
    let mut relays = Vec::new();
    for r in 0..2 {
        let store = if r == 0 {
            s.store.clone()
        } else {
            other.clone()
        };
        let done = done.clone();
        relays.push(tokio::spawn(async move {
            let mut published = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let out = store.relay_outbox(7, 2).await.unwrap();
                if out.is_empty() {
                    if finished {
                        return published;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                published.extend(out.into_iter().map(|a| a.id));
            }
        }));
    }
    let mut committers = Vec::new();
    for c in 0..COMMITTERS {
        let store = if c % 2 == 0 {
            s.store.clone()
        } else {
            other.clone()
        };
        committers.push(tokio::spawn(async move {
            for i in 0..COMMITS {
                let id = format!("c{c}-{i}");
                let p = Processed {
                    emitted: vec![
                        event(&format!("{id}-a"), "out", Some("k")),
                        event(&format!("{id}-b"), "out", None),
                    ],
                    ..processed("h", "in", 1, &id, None)
                };
                let r = store
                    .commit(&Batch {
                        processed: vec![p],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(r.outbox_rows, 2);
            }
        }));
    }
    for c in committers {
        c.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let mut published = Vec::new();
    for r in relays {
        published.extend(r.await.unwrap());
    }
    let total = COMMITTERS * COMMITS * 2;
    let unique: HashSet<&String> = published.iter().collect();
    assert_eq!(published.len(), total, "published count");
    assert_eq!(unique.len(), total, "an outbox row was published twice");
    assert_eq!(s.outbox_backlog().await.unwrap(), 0);
    let log = s.read_log("out", 0, 10_000).await.unwrap();
    assert_eq!(log.len(), total);
    // Events of one commit keep their order in the log.
    let position: HashMap<&str, i64> = log.iter().map(|r| (r.event.id.as_str(), r.seq)).collect();
    for c in 0..COMMITTERS {
        for i in 0..COMMITS {
            assert!(
                position[format!("c{c}-{i}-a").as_str()] < position[format!("c{c}-{i}-b").as_str()]
            );
        }
    }
}

async fn concurrent_version_uploads_get_distinct_numbers(s: &TestStore) {
    let cfg = serde_json::json!({});
    s.put_handler("h", &cfg, ManagedBy::Api).await.unwrap();
    let other = s.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 {
            s.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            // Each digest twice, to race duplicates as well.
            let digest = format!("d{}", i / 2);
            store
                .add_version("h", &digest, digest.as_bytes())
                .await
                .unwrap()
        }));
    }
    let mut new = 0;
    let mut by_digest: HashMap<String, i64> = HashMap::new();
    for t in tasks {
        let (v, fresh) = t.await.unwrap();
        new += usize::from(fresh);
        if let Some(version) = by_digest.insert(v.digest.clone(), v.version) {
            assert_eq!(version, v.version, "one digest, one version");
        }
    }
    assert_eq!(new, 5);
    let mut versions: Vec<i64> = by_digest.into_values().collect();
    versions.sort();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    let h = s.handler("h").await.unwrap().unwrap();
    assert_eq!(
        h.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}

async fn concurrent_dlq_actions_conflict(s: &TestStore) {
    let a = s.append(&[event("e1", "in", Some("k"))], 1).await.unwrap();
    let record = s.read_seqs(&[a[0].seq]).await.unwrap().remove(0);
    let r = s
        .commit(&Batch {
            dead_letters: vec![DeadLetter {
                handler: "h".into(),
                version: "v1".into(),
                record,
                attempts: vec![attempt(1, "x")],
                park: true,
                publish_to: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let id = r.dlq_ids[0];
    let other = s.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 {
            s.store.clone()
        } else {
            other.clone()
        };
        let action = if i % 3 == 0 {
            DlqAction::Redrive
        } else {
            DlqAction::Discard
        };
        tasks.push(tokio::spawn(async move { store.dlq_act(id, action).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one operator action wins");
    assert_eq!(s.pending_actions("h").await.unwrap().len(), 1);
}

#[tokio::test]
async fn open_chooses_the_backend_by_scheme() {
    for url in ["mysql://localhost/db", "/var/lib/sluice.db", "postgre://x"] {
        match open(url, &StoreOptions::default()).await {
            Err(Error::Url { reason, .. }) => assert!(reason.contains("postgres://")),
            other => panic!("{url}: {:?}", other.map(|_| ())),
        }
    }
    let Some(url) = sluice_testkit::postgres_test_database().await else {
        return;
    };
    let alternative = url.replacen("postgres://", "postgresql://", 1);
    let store = open(&alternative, &StoreOptions::default()).await.unwrap();
    assert!(store.topics().await.unwrap().is_empty());
}

/// State changes of one batch apply in batch order: a later event's delete
/// wins over an earlier event's write of the same name.
async fn emitted_events_can_go_straight_into_the_log(s: &TestStore) {
    let a = s
        .append(
            &[event("e1", "in", Some("k")), event("e2", "in", Some("k"))],
            1,
        )
        .await
        .unwrap();
    let outcome = |seq: i64, id: &str, out: &[&str]| Processed {
        emitted: out.iter().map(|o| event(o, "out", Some("k"))).collect(),
        ..processed("h", "in", seq, id, Some("k"))
    };
    let batch = Batch {
        processed: vec![
            outcome(a[0].seq, "e1", &["o1", "o2"]),
            outcome(a[1].seq, "e2", &["o3"]),
        ],
        emit_to_log: Some(3),
        ..Default::default()
    };
    let r = s.commit(&batch).await.unwrap();
    // In the log, in emission order, in a topic created with 3 partitions;
    // nothing in the outbox.
    assert_eq!(r.outbox_rows, 0);
    assert_eq!(s.outbox_backlog().await.unwrap(), 0);
    let out = s.read_log("out", 0, 10).await.unwrap();
    let ids: Vec<&str> = out.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(ids, ["o1", "o2", "o3"]);
    assert_eq!(r.appended_seq, Some(out[2].seq));
    assert!(out[0].seq > a[1].seq);
    let out_topic = s
        .topics()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "out");
    assert_eq!(out_topic.map(|t| t.partitions), Some(3));
    // One key, one partition, consecutive offsets.
    assert!(out.iter().all(|r| r.partition == out[0].partition));
    assert_eq!(out[2].offset, out[0].offset + 2);

    // A duplicate appends nothing; a fresh outcome beside it does.
    let c = s.append(&[event("e3", "in", Some("k"))], 1).await.unwrap();
    let r = s
        .commit(&Batch {
            processed: vec![
                outcome(a[0].seq, "e1", &["o1-again"]),
                outcome(c[0].seq, "e3", &["o4"]),
            ],
            emit_to_log: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.duplicates.contains(&("h".to_string(), "e1".to_string())));
    let out = s.read_log("out", 0, 10).await.unwrap();
    let ids: Vec<&str> = out.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(ids, ["o1", "o2", "o3", "o4"]);
    assert_eq!(r.appended_seq, Some(out[3].seq));
    // Nothing emitted, nothing appended.
    let r = s
        .commit(&Batch {
            emit_to_log: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.appended_seq, None);
}

async fn states_load_for_many_keys_at_once(s: &TestStore) {
    // More keys than one SQLite statement binds; two fields each, and the
    // same keys under another handler.
    let keys: Vec<String> = (0..700).map(|i| format!("k{i}")).collect();
    let mut outcomes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut p = processed("h", "in", i as i64 + 1, &format!("e{i}"), Some(key));
        p.state_changes = BTreeMap::from([
            ("n".to_string(), Some(i.to_string().into_bytes())),
            ("m".to_string(), Some(b"x".to_vec())),
        ]);
        outcomes.push(p);
    }
    let mut other = processed("g", "in", 1, "e0", Some("k0"));
    other.state_changes = BTreeMap::from([("n".to_string(), Some(b"g".to_vec()))]);
    outcomes.push(other);
    s.commit(&Batch {
        processed: outcomes,
        ..Default::default()
    })
    .await
    .unwrap();

    let mut asked = keys.clone();
    asked.push("none".into());
    let states = s.load_states("h", &asked).await.unwrap();
    assert_eq!(states.len(), 701);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            states[key],
            BTreeMap::from([
                ("m".to_string(), b"x".to_vec()),
                ("n".to_string(), i.to_string().into_bytes()),
            ]),
            "{key}"
        );
        assert_eq!(states[key], s.load_state("h", key).await.unwrap());
    }
    assert!(states["none"].is_empty());
    let g = s
        .load_states("g", &["k0".to_string(), "k1".to_string()])
        .await
        .unwrap();
    assert_eq!(g["k0"], BTreeMap::from([("n".to_string(), b"g".to_vec())]));
    assert!(g["k1"].is_empty());
    assert!(s.load_states("h", &[]).await.unwrap().is_empty());
}

async fn state_changes_apply_in_batch_order(s: &TestStore) {
    let a = s
        .append(
            &[event("e1", "in", Some("k")), event("e2", "in", Some("k"))],
            1,
        )
        .await
        .unwrap();
    let first = Processed {
        state_changes: BTreeMap::from([
            ("n".to_string(), Some(b"1".to_vec())),
            ("m".to_string(), Some(b"1".to_vec())),
        ]),
        ..processed("h", "in", a[0].seq, "e1", Some("k"))
    };
    let second = Processed {
        state_changes: BTreeMap::from([
            ("n".to_string(), None),
            ("m".to_string(), Some(b"2".to_vec())),
        ]),
        ..processed("h", "in", a[1].seq, "e2", Some("k"))
    };
    s.commit(&Batch {
        processed: vec![first, second],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.load_state("h", "k").await.unwrap(),
        BTreeMap::from([("m".to_string(), b"2".to_vec())])
    );
}

async fn outbox_rows_wait_until_marked_delivered(s: &TestStore) {
    let a = s
        .append(&[event("in-1", "in", Some("k"))], 1)
        .await
        .unwrap();
    let emitted: Vec<Event> = (0..3)
        .map(|i| event(&format!("out-{i}"), "out", Some("k")))
        .collect();
    s.commit(&Batch {
        processed: vec![Processed {
            emitted: emitted.clone(),
            ..processed("h", "in", a[0].seq, "in-1", Some("k"))
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let pending = s.outbox_pending(2).await.unwrap();
    let events: Vec<Event> = pending.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(events, emitted[..2], "oldest first, up to the limit");
    // Reading is not delivering: the same rows until they are marked.
    assert_eq!(s.outbox_pending(2).await.unwrap(), pending);
    assert_eq!(s.outbox_backlog().await.unwrap(), 3);
    let seqs: Vec<i64> = pending.iter().map(|(seq, _)| *seq).collect();
    s.outbox_delivered(&seqs).await.unwrap();
    let rest = s.outbox_pending(10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1, emitted[2]);
    assert_eq!(s.outbox_backlog().await.unwrap(), 1);
}

async fn a_lease_has_one_holder_until_it_expires(s: &TestStore) {
    let other = s.reopen().await;
    assert!(s.lease("relay", "a", 60_000).await.unwrap());
    assert!(
        !other.lease("relay", "b", 60_000).await.unwrap(),
        "held by a"
    );
    assert!(s.lease("relay", "a", 60_000).await.unwrap(), "a renews");
    assert!(
        other.lease("other-work", "b", 60_000).await.unwrap(),
        "names are separate"
    );
    // Not renewed: it expires and b takes over; a has lost it.
    assert!(s.lease("relay", "a", -1).await.unwrap());
    assert!(other.lease("relay", "b", 60_000).await.unwrap());
    assert!(!s.lease("relay", "a", 60_000).await.unwrap());
}

async fn broker_positions_only_move_forward(s: &TestStore) {
    let at = |partition, offset| ("h".to_string(), "t".to_string(), partition, offset);
    s.commit(&Batch {
        broker_positions: vec![at(0, 5), at(1, 3)],
        ..Default::default()
    })
    .await
    .unwrap();
    // A late commit from an instance that lost the partition: no regression.
    s.commit(&Batch {
        broker_positions: vec![at(0, 4), at(1, 9)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.broker_positions("h", "t").await.unwrap(),
        HashMap::from([(0, 5), (1, 9)])
    );
    assert!(s.broker_positions("h", "other").await.unwrap().is_empty());
}

async fn outcomes_of_a_partition_claimed_since_are_fenced(s: &TestStore) {
    let claim = |epoch, ids: &[&str]| Claim {
        handler: "h".into(),
        topic: "t".into(),
        partition: 0,
        epoch,
        event_ids: ids.iter().map(|id| id.to_string()).collect(),
    };
    let with_state = |id: &str, value: &[u8]| Processed {
        state_changes: BTreeMap::from([("n".to_string(), Some(value.to_vec()))]),
        ..processed("h", "t", 0, id, Some("k"))
    };
    // Nothing stored yet: the first claim has no position.
    let first = s.claim_partitions("h", "t", &[0, 1], "one").await.unwrap();
    assert_eq!(first, HashMap::from([(0, (None, 1)), (1, (None, 1))]));
    let report = s
        .commit(&Batch {
            processed: vec![with_state("e1", b"1")],
            broker_positions: vec![("h".into(), "t".into(), 0, 10)],
            claims: vec![claim(1, &["e1"])],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(report.fenced.is_empty());
    // Another consumer claims the partition and reads where it stands.
    let second = s.claim_partitions("h", "t", &[0], "two").await.unwrap();
    assert_eq!(second, HashMap::from([(0, (Some(10), 2))]));
    // The latest claimant of each partition.
    let mut owners = s.partition_owners("h").await.unwrap();
    owners.sort();
    assert_eq!(
        owners,
        vec![
            ("t".to_string(), 0, "two".to_string()),
            ("t".to_string(), 1, "one".to_string())
        ]
    );
    assert!(s.partition_owners("other").await.unwrap().is_empty());
    // The first owner's late outcome (and position) no longer apply; its
    // other claims' outcomes in the same batch do.
    let late = Claim {
        partition: 1,
        ..claim(1, &["e3"])
    };
    let report = s
        .commit(&Batch {
            processed: vec![with_state("e2", b"2"), processed("h", "t", 0, "e3", None)],
            dead_letters: vec![DeadLetter {
                handler: "h".into(),
                version: "v1".into(),
                record: LogRecord {
                    seq: 12,
                    partition: 0,
                    offset: 12,
                    appended_at: now_ms(),
                    event: event("e4", "t", Some("k")),
                },
                attempts: vec![attempt(1, "boom")],
                park: false,
                publish_to: None,
            }],
            broker_positions: vec![
                ("h".into(), "t".into(), 0, 12),
                ("h".into(), "t".into(), 1, 7),
            ],
            claims: vec![claim(1, &["e2", "e4"]), late],
            ..Default::default()
        })
        .await
        .unwrap();
    let fenced = |id: &str| ("h".to_string(), id.to_string());
    assert_eq!(report.fenced, HashSet::from([fenced("e2"), fenced("e4")]));
    assert_eq!(
        report.fenced_partitions,
        HashSet::from([("h".to_string(), "t".to_string(), 0)])
    );
    assert_eq!(report.dlq_ids, vec![0]);
    let done = s
        .processed_ids("h", &["e1".into(), "e2".into(), "e3".into(), "e4".into()])
        .await
        .unwrap();
    assert_eq!(done, HashSet::from(["e1".to_string(), "e3".to_string()]));
    assert_eq!(
        s.load_state("h", "k")
            .await
            .unwrap()
            .get("n")
            .map(Vec::as_slice),
        Some(&b"1"[..])
    );
    assert_eq!(
        s.broker_positions("h", "t").await.unwrap(),
        HashMap::from([(0, 10), (1, 7)])
    );
    // The new owner's outcomes under epoch 2 apply.
    let report = s
        .commit(&Batch {
            processed: vec![with_state("e2", b"2")],
            broker_positions: vec![("h".into(), "t".into(), 0, 11)],
            claims: vec![claim(2, &["e2"])],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(report.fenced.is_empty());
    assert_eq!(
        s.load_state("h", "k")
            .await
            .unwrap()
            .get("n")
            .map(Vec::as_slice),
        Some(&b"2"[..])
    );
}
