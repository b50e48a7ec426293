//! `sluice-outbox` against a real PostgreSQL and Sluice's own relay: each
//! test gets a fresh database (`sluice_testkit::postgres_test_database`),
//! migrated by `sluice::store::open`, plus a business table of its own.
//! Skipped with a printed reason when no server is reachable, unless
//! `SLUICE_REQUIRE_SERVERS=1`.

// Test helpers panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice::event::Event;
use sluice::store::{LogRecord, Store, StoreOptions};
use sluice_outbox::{Error, Outbox, OutboxEvent, Problem};
use sqlx::{PgPool, Row};

/// Partitions of topics the relay creates.
const PARTITIONS: u32 = 4;

struct Db {
    store: Arc<dyn Store>,
    pool: PgPool,
}

/// A fresh, migrated database with an `orders` table, or `None` (skip).
async fn db() -> Option<Db> {
    let url = sluice_testkit::postgres_test_database().await?;
    let store = sluice::store::open(&url, &StoreOptions::default())
        .await
        .expect("open the Sluice store (migrations)");
    let pool = PgPool::connect(&url).await.expect("connect");
    sqlx::query("CREATE TABLE orders (id BIGINT PRIMARY KEY, status TEXT NOT NULL, n BIGINT NOT NULL DEFAULT 0)")
        .execute(&pool)
        .await
        .unwrap();
    Some(Db { store, pool })
}

impl Db {
    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Runs the relay until the outbox is empty; returns how many it moved.
    async fn relay_all(&self, batch: u32) -> usize {
        let mut moved = 0;
        loop {
            let appended = self.store.relay_outbox(batch, PARTITIONS).await.unwrap();
            if appended.is_empty() {
                return moved;
            }
            moved += appended.len();
        }
    }

    async fn log(&self, topic: &str) -> Vec<LogRecord> {
        self.store.read_log(topic, 0, 1000).await.unwrap()
    }
}

/// The log event that `event`, enqueued through `outbox`, must become.
fn expected(outbox: &Outbox, event: &OutboxEvent) -> Event {
    Event {
        id: event.id.clone(),
        source: event
            .source
            .clone()
            .unwrap_or_else(|| outbox.source().to_owned()),
        ty: event.ty.clone(),
        time: event.time.clone(),
        content_type: event.content_type.clone(),
        data_schema: event.data_schema.clone(),
        data: event.data.clone(),
        headers: event.headers.clone(),
        key: event.key.clone(),
        topic: event.topic.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_are_published_as_enqueued() {
    let Some(db) = db().await else { return };
    let outbox = Outbox::new("orders").unwrap();
    assert_eq!(outbox.handler(), "app:orders");

    // Every byte value, NUL included: the payload is base64 in the row.
    let bytes: Vec<u8> = (0..=255).collect();
    let paid = OutboxEvent::new("orders", "order.paid")
        .with_key("order-42")
        .with_data(bytes, "application/octet-stream")
        .with_data_schema("urn:schema:order-paid:1")
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .with_header("x-tenant.id_2", "acme");
    let created = OutboxEvent::new("orders.audit", "order.created")
        .with_id("order-42/created")
        .with_source("https://shop.example/orders")
        .with_json(&serde_json::json!({ "order": 42, "note": "naïve ✓" }))
        .unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id, status) VALUES (42, 'paid')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let id = outbox.enqueue(&mut *tx, &paid).await.unwrap();
    assert_eq!(id, paid.id);
    assert!(uuid::Uuid::parse_str(&id).is_ok_and(|u| u.get_version_num() == 7));
    let ids = outbox
        .enqueue_all(&mut *tx, std::slice::from_ref(&created))
        .await
        .unwrap();
    assert_eq!(ids, vec!["order-42/created".to_owned()]);

    // Not committed yet: invisible to the relay.
    assert!(
        db.store
            .relay_outbox(100, PARTITIONS)
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();

    // The rows follow the table contract.
    let rows = sqlx::query(
        "SELECT event_id, topic, key, handler, created_at, delivered_at FROM outbox ORDER BY seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let now = chrono::Utc::now().timestamp_millis();
    for (row, event) in rows.iter().zip([&paid, &created]) {
        assert_eq!(row.get::<String, _>("event_id"), event.id);
        assert_eq!(row.get::<String, _>("topic"), event.topic);
        assert_eq!(row.get::<Option<String>, _>("key"), event.key);
        assert_eq!(row.get::<String, _>("handler"), "app:orders");
        let created_at: i64 = row.get("created_at");
        assert!((now - 60_000..=now).contains(&created_at), "{created_at}");
        assert_eq!(row.get::<Option<i64>, _>("delivered_at"), None);
    }

    let appended = db.store.relay_outbox(100, PARTITIONS).await.unwrap();
    let appended_ids: Vec<_> = appended.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(appended_ids, [paid.id.as_str(), "order-42/created"]);

    let log = db.log("orders").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event, expected(&outbox, &paid));
    assert_eq!(log[0].event.source, "sluice://app/orders");
    assert_eq!(log[0].event.data, (0..=255).collect::<Vec<u8>>());
    let audit = db.log("orders.audit").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].event, expected(&outbox, &created));
    let payload: serde_json::Value = serde_json::from_slice(&audit[0].event.data).unwrap();
    assert_eq!(payload["note"], "naïve ✓");
    assert_eq!(
        audit[0].event.content_type.as_deref(),
        Some("application/json")
    );

    // Delivered once: marked, and nothing left for the next pass.
    assert_eq!(
        db.count("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
            .await,
        0
    );
    assert_eq!(db.store.outbox_backlog().await.unwrap(), 0);
    assert!(
        db.store
            .relay_outbox(100, PARTITIONS)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_events_are_never_published() {
    let Some(db) = db().await else { return };
    let outbox = Outbox::new("orders").unwrap();

    // Explicit rollback.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id, status) VALUES (1, 'new')")
        .execute(&mut *tx)
        .await
        .unwrap();
    outbox
        .enqueue(
            &mut *tx,
            &OutboxEvent::new("orders", "order.created").with_key("order-1"),
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // A business write that fails after the enqueue aborts the transaction;
    // dropping it uncommitted rolls back.
    let mut tx = db.pool.begin().await.unwrap();
    outbox
        .enqueue(
            &mut *tx,
            &OutboxEvent::new("orders", "order.created").with_key("order-2"),
        )
        .await
        .unwrap();
    sqlx::query("INSERT INTO orders (id, status) VALUES (2, NULL)")
        .execute(&mut *tx)
        .await
        .expect_err("status is NOT NULL");
    drop(tx);

    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM outbox").await, 0);
    assert_eq!(db.relay_all(100).await, 0);
    assert!(db.log("orders").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_key_are_published_in_outbox_order() {
    let Some(db) = db().await else { return };
    let outbox = Outbox::new("orders").unwrap();
    sqlx::query("INSERT INTO orders (id, status) VALUES (7, 'new'), (8, 'new')")
        .execute(&db.pool)
        .await
        .unwrap();

    // One transaction per status change, two keys interleaved.
    let mut sent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for step in ["placed", "paid", "packed", "shipped", "delivered"] {
        for (order, key) in [(7_i64, "order-7"), (8, "order-8")] {
            let mut tx = db.pool.begin().await.unwrap();
            sqlx::query("UPDATE orders SET status = $1 WHERE id = $2")
                .bind(step)
                .bind(order)
                .execute(&mut *tx)
                .await
                .unwrap();
            let event = OutboxEvent::new("orders", format!("order.{step}")).with_key(key);
            let id = outbox.enqueue(&mut *tx, &event).await.unwrap();
            tx.commit().await.unwrap();
            sent.entry(key).or_default().push(id);
        }
    }
    // Several events in one transaction keep the slice order.
    let batch: Vec<_> = (0..5)
        .map(|i| OutboxEvent::new("orders", format!("order.note.{i}")).with_key("order-9"))
        .collect();
    let mut tx = db.pool.begin().await.unwrap();
    let ids = outbox.enqueue_all(&mut *tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids, batch.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    sent.insert("order-9", ids);

    // Small relay batches: order must hold across batch boundaries.
    assert_eq!(db.relay_all(3).await, 15);
    let log = db.log("orders").await;
    assert_eq!(log.len(), 15);
    for (key, ids) in &sent {
        let of_key: Vec<&LogRecord> = log
            .iter()
            .filter(|r| r.event.key.as_deref() == Some(*key))
            .collect();
        let published: Vec<&str> = of_key.iter().map(|r| r.event.id.as_str()).collect();
        assert_eq!(
            published,
            ids.iter().map(String::as_str).collect::<Vec<_>>(),
            "{key}"
        );
        assert!(of_key.iter().all(|r| r.partition == of_key[0].partition));
        assert!(of_key.windows(2).all(|w| w[0].offset < w[1].offset));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_a_key_keep_the_business_order() {
    let Some(db) = db().await else { return };
    let outbox = Outbox::new("orders").unwrap();
    sqlx::query("INSERT INTO orders (id, status) VALUES (7, 'new')")
        .execute(&db.pool)
        .await
        .unwrap();

    // Writers race on one order; each locks the row with its update, then
    // enqueues (the documented pattern). The relay runs meanwhile.
    const WRITERS: i64 = 4;
    const CHANGES: i64 = 10;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let pool = db.pool.clone();
        let outbox = outbox.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..CHANGES {
                let mut tx = pool.begin().await.unwrap();
                let n: i64 =
                    sqlx::query_scalar("UPDATE orders SET n = n + 1 WHERE id = 7 RETURNING n")
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                let event = OutboxEvent::new("orders", "order.changed")
                    .with_key("order-7")
                    .with_json(&n)
                    .unwrap();
                outbox.enqueue(&mut *tx, &event).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    let relay = {
        let store = db.store.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                store.relay_outbox(2, PARTITIONS).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    relay.await.unwrap();
    db.relay_all(100).await;

    let published: Vec<i64> = db
        .log("orders")
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.event.data).unwrap())
        .collect();
    assert_eq!(published, (1..=WRITERS * CHANGES).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_refused_and_nothing_is_written() {
    let Some(db) = db().await else { return };
    let outbox = Outbox::new("orders").unwrap();
    let ok = || OutboxEvent::new("orders", "order.paid").with_key("order-1");
    let cases: Vec<(OutboxEvent, Problem, &str)> = vec![
        (
            OutboxEvent::new("orders", " "),
            Problem::EmptyType,
            "type is empty",
        ),
        (
            OutboxEvent::new("", "t"),
            Problem::InvalidTopic(String::new()),
            "topic \"\" is not valid",
        ),
        (
            OutboxEvent::new("orders/eu", "t"),
            Problem::InvalidTopic("orders/eu".into()),
            "letters, digits, '.', '_' or '-'",
        ),
        (
            OutboxEvent::new("x".repeat(201), "t"),
            Problem::InvalidTopic("x".repeat(201)),
            "1 to 200",
        ),
        (ok().with_id(""), Problem::EmptyId, "id is empty"),
        (
            ok().with_source(""),
            Problem::EmptySource,
            "source is empty",
        ),
        (
            ok().with_key("order\0-1"),
            Problem::Nul("key".into()),
            "key contains a NUL character",
        ),
        (
            OutboxEvent::new("orders", "order\0paid"),
            Problem::Nul("type".into()),
            "type contains a NUL",
        ),
        (
            ok().with_id("id\0"),
            Problem::Nul("id".into()),
            "id contains a NUL",
        ),
        (
            ok().with_data(vec![1], "text/plain\0"),
            Problem::Nul("content type".into()),
            "content type contains a NUL",
        ),
        (
            ok().with_data_schema("\0"),
            Problem::Nul("data schema".into()),
            "data schema contains",
        ),
        (
            ok().with_source("urn:\0"),
            Problem::Nul("source".into()),
            "source contains",
        ),
        (
            ok().with_header("tenant", "a\0b"),
            Problem::Nul("header \"tenant\"".into()),
            "header \"tenant\" contains a NUL",
        ),
        (
            ok().with_header("Tenant", "acme"),
            Problem::InvalidHeaderName("Tenant".into()),
            "header name \"Tenant\" is not valid: use 1 to 64 lowercase",
        ),
        (
            ok().with_header("te nant", "acme"),
            Problem::InvalidHeaderName("te nant".into()),
            "header name",
        ),
        (
            ok().with_header("a".repeat(65), "acme"),
            Problem::InvalidHeaderName("a".repeat(65)),
            "header name",
        ),
        (
            ok().with_time("yesterday"),
            Problem::InvalidTime("yesterday".into()),
            "time \"yesterday\" is not an RFC 3339 timestamp",
        ),
    ];

    let mut tx = db.pool.begin().await.unwrap();
    for (event, problem, message) in &cases {
        let error = outbox.enqueue(&mut *tx, event).await.unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("invalid outbox event {:?}: ", event.id)),
            "{text}"
        );
        assert!(text.contains(message), "{text:?} lacks {message:?}");
        match error {
            Error::InvalidEvent { id, problem: p } => {
                assert_eq!(id, event.id);
                assert_eq!(&p, problem, "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(event.validate().is_err());
    }
    // One bad event in a batch: none of the batch is written.
    let batch = [ok(), ok().with_header("X", "1"), ok()];
    let error = outbox.enqueue_all(&mut *tx, &batch).await.unwrap_err();
    assert!(matches!(
        error,
        Error::InvalidEvent { ref id, problem: Problem::InvalidHeaderName(_) } if *id == batch[1].id
    ));
    // Nothing reached the database: the transaction is still usable.
    sqlx::query("INSERT INTO orders (id, status) VALUES (1, 'new')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(db.count("SELECT COUNT(*) FROM outbox").await, 0);
    assert_eq!(db.relay_all(100).await, 0);
    assert!(db.log("orders").await.is_empty());

    // Valid edge cases pass: 200-character topic, time with an offset,
    // reserved-looking headers an application may propagate, no time.
    let mut edge = OutboxEvent::new("a.B_c-9".repeat(28) + "abcd", "t")
        .with_time("2025-06-01T12:00:00+02:00")
        .with_header("correlationid", "c-1")
        .with_header("a".repeat(64), "x");
    assert_eq!(edge.topic.len(), 200);
    edge.validate().unwrap();
    edge.time = None;
    outbox.enqueue(&db.pool, &edge).await.unwrap();
    assert_eq!(db.relay_all(100).await, 1);
    assert_eq!(db.log(&edge.topic).await[0].event, expected(&outbox, &edge));

    // Service names.
    for bad in [
        "",
        "Orders",
        "1orders",
        "app:orders",
        "or ders",
        &"a".repeat(65),
    ] {
        let error = Outbox::new(bad).unwrap_err();
        assert!(matches!(error, Error::InvalidService(ref s) if s == bad));
        assert!(error.to_string().contains("invalid service name"));
    }
    for good in ["orders", "a", "billing-v2", "x_1", &"a".repeat(64)] {
        assert_eq!(Outbox::new(good).unwrap().handler(), format!("app:{good}"));
    }
}
