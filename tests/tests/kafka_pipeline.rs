//! The pipeline on Kafka (tansu in CI), in-process with real components:
//! Kafka -> handler -> outbox -> Kafka -> handler -> outbox -> Kafka, on
//! SQLite and on PostgreSQL, with a restart in the middle. Ledger: every
//! key's state lists hold each number once, in publish order, and every
//! output event reaches the output topic. Skips without a broker unless
//! `SLUICE_REQUIRE_SERVERS=1`.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use serde_json::json;
use sluice::backbone::BackboneConfig;
use sluice::backbone::kafka::{KafkaConfig, client_config};
use sluice::config::{Config, HandlerConfig, RetryPolicy};
use sluice::event::Event;
use sluice::pipeline::{Pipeline, Signals};
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice::store::{self, Store, StoreOptions};
use sluice_tests::guest;

fn handler(name: &str, topics: &[&str], types: &[&str]) -> HandlerConfig {
    HandlerConfig {
        name: name.into(),
        component: Some(guest("chain")),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        types: types.iter().map(|t| t.to_string()).collect(),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 20,
            max_backoff_ms: 100,
            multiplier: 2.0,
        },
        limits: Default::default(),
        concurrency: 8,
        on_dead_letter: Default::default(),
        start_from: Default::default(),
    }
}

async fn ensure_topics(broker: &KafkaConfig, topics: &[&str]) {
    let admin: AdminClient<_> = client_config(broker).create().unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1)))
        .collect();
    // "Already exists" is fine: `mid` and `out` are shared by the tests.
    let _ = admin.create_topics(&new, &AdminOptions::new()).await;
}

/// The first `count` records of `topic` that `keep` keeps, read from the
/// beginning.
async fn read_topic(
    broker: &KafkaConfig,
    topic: &str,
    count: usize,
    keep: impl Fn(&OwnedMessage) -> bool,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = client_config(broker)
        .set("group.id", format!("reader-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut kept = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while kept.len() < count {
        assert!(
            Instant::now() < deadline,
            "{} of {count} records of {topic}",
            kept.len()
        );
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await else {
            continue;
        };
        let m = m.detach();
        if keep(&m) {
            kept.push(m);
        }
    }
    kept
}

fn key_of(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
}

/// Output events of this run (keys with `prefix`), as key -> numbers, read
/// from the beginning of `out` until `count` arrived.
async fn read_out(broker: &KafkaConfig, prefix: &str, count: usize) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in read_topic(broker, "out", count, |m| key_of(m).starts_with(prefix)).await {
        let n = serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default())
            .unwrap()["n"]
            .as_u64()
            .unwrap();
        out.entry(key_of(&m)).or_default().push(n);
    }
    out
}

async fn state_list(store: &Arc<dyn Store>, handler: &str, key: &str, list: &str) -> Vec<u64> {
    store
        .load_state(handler, key)
        .await
        .unwrap()
        .get(list)
        .map(|v| serde_json::from_slice(v).unwrap())
        .unwrap_or_default()
}

async fn chain_through_kafka(store_url: String, brokers: String) {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let input = format!("in-{run}");
    let broker = KafkaConfig {
        brokers,
        group_prefix: format!("test-{run}"),
        dead_letter_topic: format!("dlq-{run}"),
        ..KafkaConfig::default()
    };
    ensure_topics(&broker, &[&input, "mid", "out"]).await;
    let mut config = Config::default();
    config.store.url = store_url;
    config.broker = BackboneConfig::Kafka(broker.clone());
    config.pipeline.poll_interval_ms = 100;
    config.handlers = vec![
        handler("first", &[&input], &["step.a", "poison"]),
        handler("second", &["mid"], &["step.b"]),
    ];
    let store = store::open(&config.store.url, &StoreOptions::default())
        .await
        .unwrap();
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let start = || async {
        Pipeline::start(&config, store.clone(), runtime.clone(), Signals::new())
            .await
            .unwrap()
    };

    let (keys, count) = (10u64, 200u64);
    let events: Vec<Event> = (0..count)
        .map(|i| Event {
            id: format!("{run}-{i}"),
            source: "/test".into(),
            ty: "step.a".into(),
            time: None,
            content_type: Some("application/json".into()),
            data_schema: None,
            data: serde_json::to_vec(&json!({"n": i / keys})).unwrap(),
            headers: BTreeMap::new(),
            key: Some(format!("{run}-k{}", i % keys)),
            topic: input.clone(),
        })
        .collect();

    // First half, then a restart while it may still be running, then the
    // rest: positions come back from the store on assignment.
    let pipeline = start().await;
    let publisher = pipeline.publisher().unwrap();
    publisher.publish(&events[..100]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pipeline.shutdown().await;
    let pipeline = start().await;
    publisher.publish(&events[100..]).await.unwrap();
    // Redelivery: some of the first half again (same ids).
    publisher.publish(&events[40..60]).await.unwrap();
    // Poison: dead-lettered, and produced to the dead-letter topic.
    let poison: Vec<Event> = (0..3)
        .map(|i| Event {
            id: format!("{run}-poison-{i}"),
            ty: "poison".into(),
            key: Some(format!("{run}-p")),
            ..events[0].clone()
        })
        .collect();
    publisher.publish(&poison).await.unwrap();

    let out = read_out(&broker, &run, count as usize).await;
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..count {
        expected
            .entry(format!("{run}-k{}", i % keys))
            .or_default()
            .push(i / keys);
    }
    assert_eq!(out, expected, "each output once, in per-key order");
    for (key, list) in &expected {
        assert_eq!(&state_list(&store, "first", key, "a").await, list, "{key}");
        // `second` also sees other runs' `mid` events; its state for this
        // run's keys is exact.
        let deadline = Instant::now() + Duration::from_secs(30);
        while &state_list(&store, "second", key, "b").await != list {
            assert!(Instant::now() < deadline, "second: {key}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let dead = read_topic(&broker, &format!("dlq-{run}"), poison.len(), |_| true).await;
    let mut ids: Vec<String> = dead
        .iter()
        .map(|m| header(m, "ce_dlqeventid").unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, poison.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    for m in &dead {
        assert_eq!(key_of(m), format!("{run}-p"));
        assert_eq!(header(m, "ce_type").as_deref(), Some("poison"));
        assert_eq!(header(m, "ce_dlqhandler").as_deref(), Some("first"));
        assert_eq!(header(m, "ce_dlqtopic").as_deref(), Some(input.as_str()));
        assert_eq!(header(m, "ce_dlqattempts").as_deref(), Some("1"));
        let error = header(m, "ce_dlqerror").unwrap();
        assert!(error.contains("poison event 0"), "{error}");
        let entry = header(m, "ce_dlqid").unwrap();
        assert_eq!(header(m, "ce_id"), Some(format!("dlq-first-{entry}")));
    }
    // Positions are in the store, per partition of the input topic.
    let positions = store.broker_positions("first", &input).await.unwrap();
    assert!(!positions.is_empty(), "{positions:?}");
    pipeline.shutdown().await;
}

/// Both stores, one after the other: the chain fixture's `mid` and `out`
/// topics are shared, and two pipelines running at once would both answer
/// each other's `mid` events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_through_kafka_on_sqlite_then_postgres() {
    let Some(brokers) = sluice_testkit::kafka_test_brokers().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    chain_through_kafka(
        format!("sqlite://{}", dir.path().join("s.db").display()),
        brokers.clone(),
    )
    .await;
    if let Some(url) = sluice_testkit::postgres_test_database().await {
        chain_through_kafka(url, brokers).await;
    }
}
