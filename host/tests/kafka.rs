//! The Kafka publisher and the CloudEvents binding against a real
//! Kafka-protocol broker (tansu in CI): what we publish comes back equal,
//! in per-key order, and a record from a producer that knows nothing of
//! CloudEvents is still consumed. Skips without a broker unless
//! `SLUICE_REQUIRE_SERVERS=1`.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice::backbone::Publisher;
use sluice::backbone::cloudevents::{self, Position, Record};
use sluice::backbone::kafka::{KafkaConfig, KafkaPublisher, client_config, record_of};
use sluice::event::Event;

fn event(i: usize) -> Event {
    Event {
        id: format!("k-{i}"),
        source: "/test".into(),
        ty: "order.placed".into(),
        time: Some("2026-11-29T10:00:00.000Z".into()),
        content_type: Some("application/json".into()),
        data_schema: None,
        data: format!(r#"{{"n":{i}}}"#).into_bytes(),
        headers: BTreeMap::from([("correlationid".to_string(), format!("c{i}"))]),
        key: Some(format!("key{}", i % 5)),
        topic: String::new(),
    }
}

async fn create_topic(config: &KafkaConfig, topic: &str, partitions: i32) {
    let admin: AdminClient<_> = client_config(config).create().unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// Reads `count` records of `topic` from the beginning.
async fn consume(config: &KafkaConfig, topic: &str, count: usize) -> Vec<(Record, Position)> {
    let consumer: StreamConsumer = client_config(config)
        .set("group.id", format!("test-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < count {
        assert!(Instant::now() < deadline, "read {} of {count}", out.len());
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await else {
            continue;
        };
        out.push(record_of(&m));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_come_back_equal_and_in_key_order() {
    let Some(brokers) = sluice_testkit::kafka_test_brokers().await else {
        return;
    };
    let config = KafkaConfig {
        brokers,
        ..KafkaConfig::default()
    };
    let topic = format!("sluice-test-{}", uuid::Uuid::now_v7());
    create_topic(&config, &topic, 3).await;
    let events: Vec<Event> = (0..50)
        .map(|i| Event {
            topic: topic.clone(),
            ..event(i)
        })
        .collect();
    let publisher = KafkaPublisher::new(&config, 3).unwrap();
    publisher.publish(&events[..25]).await.unwrap();
    publisher.publish(&events[25..]).await.unwrap();

    let read = consume(&config, &topic, 50).await;
    let mut partition_of_key: BTreeMap<String, i32> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_id: BTreeMap<String, Event> = BTreeMap::new();
    for (record, at) in read {
        let decoded = cloudevents::decode(record, at);
        let key = decoded.key.clone().unwrap();
        // One key, one partition.
        assert_eq!(
            *partition_of_key.entry(key.clone()).or_insert(at.partition),
            at.partition
        );
        per_key.entry(key).or_default().push(decoded.id.clone());
        by_id.insert(decoded.id.clone(), decoded);
    }
    for e in &events {
        assert_eq!(by_id.get(&e.id), Some(e), "{} comes back equal", e.id);
    }
    for (key, ids) in per_key {
        let sent: Vec<String> = events
            .iter()
            .filter(|e| e.key.as_deref() == Some(key.as_str()))
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(ids, sent, "{key} keeps its order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_cloudevents_headers_is_consumed_with_fallbacks() {
    let Some(brokers) = sluice_testkit::kafka_test_brokers().await else {
        return;
    };
    let config = KafkaConfig {
        brokers,
        ..KafkaConfig::default()
    };
    let topic = format!("sluice-test-{}", uuid::Uuid::now_v7());
    create_topic(&config, &topic, 1).await;
    let producer: FutureProducer = client_config(&config).create().unwrap();
    producer
        .send(
            FutureRecord::to(&topic).payload("plain text").key("k1"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let (record, at) = consume(&config, &topic, 1).await.remove(0);
    let e = cloudevents::decode(record, at);
    assert_eq!(e.id, format!("kafka:{topic}:0:{}", at.offset));
    assert_eq!(
        (e.ty.as_str(), e.key.as_deref()),
        ("kafka.record", Some("k1"))
    );
    assert_eq!(e.data, b"plain text");
    assert!(
        e.time.is_some(),
        "the record timestamp stands in for ce_time"
    );
}

/// Outbox rows committed with a handler's outcome reach Kafka once each,
/// in per-key order, with two relays (two host instances) on one store:
/// the lease lets one publish at a time. Rows are marked delivered after
/// the broker acknowledged them.
async fn relay_publishes_each_outbox_row_once(store_url: String, brokers: String) {
    use sluice::pipeline::{Signals, relay};
    use sluice::store::{Batch, Processed, StoreOptions};

    let store = sluice::store::open(&store_url, &StoreOptions::default())
        .await
        .unwrap();
    let config = KafkaConfig {
        brokers,
        ..KafkaConfig::default()
    };
    let topic = format!("sluice-test-{}", uuid::Uuid::now_v7());
    create_topic(&config, &topic, 2).await;
    let input = store
        .append(
            &[Event {
                topic: "in".into(),
                ..event(0)
            }],
            1,
        )
        .await
        .unwrap();
    let emitted: Vec<Event> = (0..30)
        .map(|i| Event {
            topic: topic.clone(),
            ..event(i)
        })
        .collect();
    store
        .commit(&Batch {
            processed: vec![Processed {
                handler: "h".into(),
                version: "v1".into(),
                topic: "in".into(),
                seq: input[0].seq,
                event_id: "k-0".into(),
                attempts: 1,
                key: Some("key0".into()),
                state_changes: BTreeMap::new(),
                emitted: emitted.clone(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signals = Signals::new();
    let relays: Vec<_> = ["instance-a", "instance-b"]
        .into_iter()
        .map(|holder| {
            tokio::spawn(relay::run(
                store.clone(),
                relay::Target::Broker {
                    publisher: std::sync::Arc::new(KafkaPublisher::new(&config, 3).unwrap()),
                    holder: holder.into(),
                },
                signals.clone(),
                7,
                Duration::from_millis(50),
                stopped.clone(),
            ))
        })
        .collect();
    signals.relay.notify_waiters();
    // Everything arrives; a moment more shows nothing arrives twice.
    let read = consume(&config, &topic, 30).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.outbox_backlog().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "rows not marked delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    for r in relays {
        r.await.unwrap();
    }
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (record, at) in read {
        let e = cloudevents::decode(record, at);
        per_key
            .entry(e.key.clone().unwrap())
            .or_default()
            .push(e.id);
    }
    for (key, ids) in &per_key {
        let sent: Vec<String> = emitted
            .iter()
            .filter(|e| e.key.as_deref() == Some(key.as_str()))
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(ids, &sent, "{key}: once each, in order");
    }
    // Exactly 30 records in the topic: read it all with a fresh group.
    let all = consume_all(&config, &topic).await;
    assert_eq!(all, 30, "no row was published twice");
}

/// Counts the records of `topic` (reads until 2 s pass without one).
async fn consume_all(config: &KafkaConfig, topic: &str) -> usize {
    let consumer: StreamConsumer = client_config(config)
        .set("group.id", format!("count-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut n = 0;
    loop {
        match tokio::time::timeout(
            Duration::from_secs(if n == 0 { 20 } else { 2 }),
            consumer.recv(),
        )
        .await
        {
            Ok(Ok(_)) => n += 1,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => return n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_kafka_on_sqlite() {
    let Some(brokers) = sluice_testkit::kafka_test_brokers().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    relay_publishes_each_outbox_row_once(url, brokers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_kafka_on_postgres() {
    let Some(brokers) = sluice_testkit::kafka_test_brokers().await else {
        return;
    };
    let Some(url) = sluice_testkit::postgres_test_database().await else {
        return;
    };
    relay_publishes_each_outbox_row_once(url, brokers).await;
}

/// A row an application inserts into the outbox (the `sluice-outbox`
/// contract) wakes the relay through PostgreSQL's notice: with a poll of a
/// minute, the event still reaches Kafka at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_outbox_row_wakes_the_relay() {
    use sqlx::Connection as _;
    use std::sync::Arc;

    let Some(brokers) = sluice_testkit::kafka_test_brokers().await else {
        return;
    };
    let Some(url) = sluice_testkit::postgres_test_database().await else {
        return;
    };
    let mut config = sluice::config::Config::default();
    config.store.url = url.clone();
    let kafka = KafkaConfig {
        brokers,
        ..KafkaConfig::default()
    };
    config.broker = sluice::backbone::BackboneConfig::Kafka(kafka.clone());
    config.pipeline.poll_interval_ms = 60_000;
    let topic = format!("app-{}", uuid::Uuid::now_v7().simple());
    create_topic(&kafka, &topic, 1).await;
    let store = sluice::store::open(&url, &Default::default())
        .await
        .unwrap();
    let runtime = Arc::new(sluice::runtime::Runtime::new(Default::default()).unwrap());
    let pipeline = Arc::new(
        sluice::pipeline::Pipeline::start(
            &config,
            store,
            runtime,
            sluice::pipeline::Signals::new(),
        )
        .await
        .unwrap(),
    );
    pipeline.follow_store().await.unwrap();
    // Past the relay's first round at start.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let event = Event {
        topic: topic.clone(),
        ..event(7)
    };
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let inserted = Instant::now();
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, key, event, handler, created_at) VALUES ($1, $2, $3, $4, 'app:test', 0)",
    )
    .bind(&event.id)
    .bind(&event.topic)
    .bind(&event.key)
    .bind(serde_json::to_string(&event).unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
    let got = consume(&kafka, &topic, 1).await;
    let took = inserted.elapsed();
    eprintln!("application outbox row on Kafka after {took:?}");
    assert_eq!(cloudevents::decode(got[0].0.clone(), got[0].1).id, event.id);
    // The poll would have taken a minute.
    assert!(took < Duration::from_secs(30), "{took:?}");
    pipeline.shutdown().await;
}
