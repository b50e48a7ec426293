//! The Kafka + PostgreSQL setups.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;

use sluice::backbone::kafka::KafkaConfig;
use sluice::backbone::{BackboneConfig, Publisher, cloudevents, kafka};
use sluice::config::{Config, TopicConfig};
use sluice::event::Event;
use sluice::pipeline::Signals;
use sluice::store::{self, Batch, Store, StoreOptions, now_ms};

use crate::handler::{bench_handler, events, naive_one, start_pipeline};
use crate::measure::{CommitTimes, Cpu, finish, percentiles};
use crate::{Error, HANDLER, KAFKA_PARTITIONS, Measurement, Result, Servers, WARM_UP, Workload};

/// A fresh database and fresh topics for one setup.
struct Run {
    broker: KafkaConfig,
    topic: String,
    database: String,
    url: String,
    admin: String,
}

impl Run {
    async fn new(servers: &Servers, setup: &str) -> Result<Self> {
        use sqlx::Connection as _;
        let brokers = servers
            .brokers
            .clone()
            .ok_or_else(|| Error::Other(format!("{setup} needs a Kafka broker (--brokers)")))?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let database = format!("sluice_bench_{id}");
        let mut conn = sqlx::PgConnection::connect(&servers.postgres)
            .await
            .map_err(|e| Error::Other(format!("connecting to {}: {e}", servers.postgres)))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        )))
        .execute(&mut conn)
        .await
        .map_err(|e| Error::Other(format!("creating the database: {e}")))?;
        let url = match servers.postgres.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{database}"),
            None => return Err(Error::Other("the PostgreSQL URL names no database".into())),
        };
        let broker = KafkaConfig {
            brokers,
            group_prefix: format!("bench-{id}"),
            dead_letter_topic: String::new(),
            properties: servers.kafka_properties.clone(),
            ..KafkaConfig::default()
        };
        let topic = format!("bench-in-{id}");
        kafka::ensure_topics(&broker, &[(topic.clone(), KAFKA_PARTITIONS)])
            .await
            .map_err(|e| Error::Other(format!("creating the topic: {e}")))?;
        Ok(Self {
            broker,
            topic,
            database,
            url,
            admin: servers.postgres.clone(),
        })
    }

    /// Drops the database (the topics stay: the broker keeps them in
    /// memory or on its own disk).
    async fn finish(self) {
        use sqlx::Connection as _;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            )))
            .execute(&mut conn)
            .await;
        }
    }

    /// A consumer of the input topic outside any group's offsets: it
    /// reads every partition from the start.
    fn consumer(&self) -> Result<StreamConsumer> {
        let consumer: StreamConsumer = kafka::client_config(&self.broker)
            .set("group.id", format!("{}.raw", self.broker.group_prefix))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| Error::Other(e.to_string()))?;
        let mut list = rdkafka::TopicPartitionList::new();
        for p in 0..KAFKA_PARTITIONS {
            list.add_partition_offset(&self.topic, p, rdkafka::Offset::Beginning)
                .map_err(|e| Error::Other(e.to_string()))?;
        }
        consumer
            .assign(&list)
            .map_err(|e| Error::Other(e.to_string()))?;
        Ok(consumer)
    }
}

/// The consumer's next record, or an error after 60 s without one.
async fn next_record(consumer: &StreamConsumer) -> Result<BorrowedMessage<'_>> {
    tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .map_err(|_| Error::Other("no record for 60 s".into()))?
        .map_err(|e| Error::Other(e.to_string()))
}

/// Publishes events `0..workload.events` (paced by the workload) and
/// returns when each was published, ms since the epoch, by number.
///
/// Paced, a step's records are handed to the producer before the next
/// step, in order, but the acknowledgements are awaited at the end:
/// waiting for each step's (acks=all) kept the producer below the rate
/// asked (3.2–3.5 K/s for 4 K/s). In a burst each step of 1,000 is
/// acknowledged before the next, as the embedded setups append theirs.
async fn produce(
    topic: &str,
    publisher: &kafka::KafkaPublisher,
    workload: Workload,
) -> Result<Vec<i64>> {
    use std::future::Future;
    use std::pin::Pin;
    type Sending<'p> = Pin<Box<dyn Future<Output = sluice::backbone::Result<()>> + Send + 'p>>;
    let failed = |e: sluice::backbone::Error| Error::Other(format!("publishing: {e}"));
    let started = Instant::now();
    let mut published = Vec::with_capacity(workload.events as usize);
    let mut sending: Vec<Sending<'_>> = Vec::new();
    let mut from = 0;
    while from < workload.events {
        workload.pace(started, from).await;
        let to = (from + workload.step()).min(workload.events);
        let at = now_ms();
        let mut events: Vec<Event> = events(workload, from, to);
        for e in &mut events {
            e.topic = topic.to_owned();
        }
        let mut send: Sending<'_> = Box::pin(async move { publisher.publish(&events).await });
        if from == 0 || workload.rate <= 0.0 {
            // The first may create the topic before it sends anything.
            send.await.map_err(failed)?;
        } else if let std::task::Poll::Ready(sent) = futures::poll!(send.as_mut()) {
            sent.map_err(failed)?;
        } else {
            // Its records are queued in the producer; the rest is the
            // acknowledgement.
            sending.push(send);
        }
        published.extend(std::iter::repeat_n(at, (to - from) as usize));
        from = to;
    }
    for send in sending {
        send.await.map_err(failed)?;
    }
    Ok(published)
}

pub(crate) async fn run(
    kind: &str,
    setup: &str,
    workload: Workload,
    component: &std::path::Path,
    servers: &Servers,
) -> Result<Measurement> {
    let run = Run::new(servers, setup).await?;
    let publisher = kafka::KafkaPublisher::new(&run.broker, KAFKA_PARTITIONS as u32)
        .map_err(|e| Error::Other(e.to_string()))?;
    let measured = match kind {
        "raw" => raw(&run, &publisher, workload, setup).await,
        "native" => pipeline(&run, publisher, workload, component, setup, true).await,
        "wasm" => pipeline(&run, publisher, workload, component, setup, false).await,
        "naive" => naive(&run, publisher, workload, setup).await,
        other => Err(Error::Other(format!("unknown setup kafka-{other}"))),
    };
    run.finish().await;
    measured
}

/// The ceiling: an rdkafka consumer reading the records, nothing else.
/// Paced (`--rate`), it reads while they are published and reports the
/// broker's own latency, publish call to record received.
async fn raw(
    run: &Run,
    publisher: &kafka::KafkaPublisher,
    workload: Workload,
    setup: &str,
) -> Result<Measurement> {
    if workload.rate > 0.0 {
        return raw_paced(run, publisher, workload, setup).await;
    }
    let producing = Instant::now();
    let burst = Workload {
        rate: 0.0,
        ..workload
    };
    produce(&run.topic, publisher, burst).await?;
    // What the broker takes: a bound on every Kafka setup, which all
    // publish their input, and the pipelines their output too.
    let took = producing.elapsed().as_secs_f64();
    eprintln!(
        "{setup}: {} events published (acks=all) in {took:.2} s: {:.0} events/s",
        workload.events,
        workload.events as f64 / took.max(1e-9)
    );
    let consumer = run.consumer()?;
    let (started, cpu) = (Instant::now(), Cpu::now());
    let mut read = 0;
    while read < workload.events {
        let m = next_record(&consumer).await?;
        // Decoded as the pipeline decodes it.
        let (record, at) = kafka::record_of(&m);
        std::hint::black_box(cloudevents::decode(record, at));
        read += 1;
    }
    finish(setup, read, started, cpu)
}

/// [`raw`] at the workload's rate: the consumer reads while the
/// producer publishes, and each record's latency is from its publish
/// call to its arrival here.
async fn raw_paced(
    run: &Run,
    publisher: &kafka::KafkaPublisher,
    workload: Workload,
    setup: &str,
) -> Result<Measurement> {
    let consumer = run.consumer()?;
    let (started, cpu) = (Instant::now(), Cpu::now());
    let reading = async {
        let mut received: Vec<(usize, i64)> = Vec::with_capacity(workload.events as usize);
        while received.len() < workload.events as usize {
            let m = next_record(&consumer).await?;
            let at = now_ms();
            let (record, position) = kafka::record_of(&m);
            let event = cloudevents::decode(record, position);
            if let Some(n) = number(&event.id) {
                received.push((n, at));
            }
        }
        Ok::<_, Error>(received)
    };
    let (published, received) = tokio::join!(produce(&run.topic, publisher, workload), reading);
    let (published, received) = (published?, received?);
    let mut measured = finish(setup, received.len() as u64, started, cpu)?;
    let mut ms: Vec<i64> = received
        .iter()
        .filter_map(|(n, at)| Some(at - published.get(*n)?))
        .collect();
    measured.latency_ms = percentiles(&mut ms);
    Ok(measured)
}

/// The pipeline on Kafka and PostgreSQL, relay included: done when
/// every event is processed and every emitted event is published.
async fn pipeline(
    run: &Run,
    publisher: kafka::KafkaPublisher,
    workload: Workload,
    component: &std::path::Path,
    setup: &str,
    native: bool,
) -> Result<Measurement> {
    let store = store::open(&run.url, &StoreOptions::default()).await?;
    let mut config = Config::default();
    config.store.url = run.url.clone();
    config.broker = BackboneConfig::Kafka(run.broker.clone());
    config.topics = vec![TopicConfig {
        name: run.topic.clone(),
        partitions: KAFKA_PARTITIONS as u32,
    }];
    config.handlers = vec![bench_handler(component, &run.topic)];
    let signals = Signals::new();
    let commits = CommitTimes::collect(&signals);
    let pipeline = start_pipeline(&config, store.clone(), signals, native).await?;
    let stats = pipeline
        .stats(HANDLER)
        .ok_or_else(|| Error::Other("the bench handler did not start".into()))?;
    // Measured from when the group is formed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.snapshot().partitions < KAFKA_PARTITIONS as u64 {
        if Instant::now() > deadline {
            return Err(Error::Other(
                "the consumer got no partitions in 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm-up, not measured: the first events after the group formed
    // waited up to 130 ms (consumers' first fetches, the output topic
    // created by the relay's first publish, first plans), which was
    // the p99 of a paced run of 20,000 events.
    let mut warm_up: Vec<Event> = events(workload, 0, WARM_UP.min(workload.events));
    for e in &mut warm_up {
        e.id = format!("warm-up-{}", e.id);
        e.topic = run.topic.clone();
    }
    let warmed = warm_up.len() as u64;
    publisher
        .publish(&warm_up)
        .await
        .map_err(|e| Error::Other(format!("publishing: {e}")))?;
    wait_done(&store, &stats, warmed).await?;
    let (started, cpu) = (Instant::now(), Cpu::now());
    let published = produce(&run.topic, &publisher, workload).await?;
    wait_done(&store, &stats, warmed + workload.events).await?;
    let measured = finish(setup, workload.events, started, cpu);
    pipeline.shutdown().await;
    let mut measured = measured?;
    let committed = commits.finish().await?;
    let mut ms: Vec<i64> = committed
        .iter()
        .filter_map(|(id, at)| Some(at - published.get(number(id)?)?))
        .collect();
    measured.latency_ms = percentiles(&mut ms);
    Ok(measured)
}

/// Waits until `events` are processed and every emitted event is
/// published.
async fn wait_done(
    store: &Arc<dyn Store>,
    stats: &sluice::pipeline::HandlerStats,
    events: u64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = stats.processed.load(std::sync::atomic::Ordering::Relaxed) >= events
            && store.outbox_backlog().await? == 0;
        if done {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Other("the pipeline did not finish in 600 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// The typical hand-written idempotent consumer on Kafka: for each
/// record, one transaction (processed check, state read, then processed
/// record, state, outbox row and position).
async fn naive(
    run: &Run,
    publisher: kafka::KafkaPublisher,
    workload: Workload,
    setup: &str,
) -> Result<Measurement> {
    let store: Arc<dyn Store> = store::open(&run.url, &StoreOptions::default()).await?;
    let consumer = run.consumer()?;
    let (started, cpu) = (Instant::now(), Cpu::now());
    let topic = run.topic.clone();
    let producing = tokio::spawn(async move { produce(&topic, &publisher, workload).await });
    let mut read = 0;
    while read < workload.events {
        let m = next_record(&consumer).await?;
        let (record, at) = kafka::record_of(&m);
        let partition = m.partition();
        drop(m);
        let offset = at.offset;
        let e = cloudevents::decode(record, at);
        read += 1;
        let position = Batch {
            broker_positions: vec![(HANDLER.into(), run.topic.clone(), partition, offset)],
            ..Batch::default()
        };
        naive_one(&*store, &e, offset, position).await?;
    }
    let measured = finish(setup, read, started, cpu);
    let published = producing.await.map_err(|e| Error::Other(e.to_string()))??;
    let mut measured = measured?;
    measured.latency_ms = naive_latencies(&run.url, &published).await?;
    Ok(measured)
}

/// The number of the bench event `id` (`b{n}`); warm-up events have none.
fn number(id: &str) -> Option<usize> {
    id.strip_prefix('b')?.parse().ok()
}

/// p50 and p99 of (processed_at - published), from the database: the
/// naive consumer commits each record alone, at once.
async fn naive_latencies(url: &str, published: &[i64]) -> Result<Option<(f64, f64)>> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| Error::Other(format!("reading latencies: {e}")))?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, processed_at FROM processed WHERE handler = $1")
            .bind(HANDLER)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| Error::Other(format!("reading latencies: {e}")))?;
    let mut ms: Vec<i64> = rows
        .into_iter()
        .filter_map(|(id, at)| Some(at - published.get(number(&id)?)?))
        .collect();
    Ok(percentiles(&mut ms))
}
