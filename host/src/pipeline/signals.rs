//! What the parts of a running pipeline tell each other and the admin API:
//! wake-ups (log appended, relay, DLQ actions, commits) and each handler's
//! counters and latency histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};

/// Signals shared by the parts of a running pipeline.
#[derive(Clone)]
pub struct Signals {
    /// The highest log sequence number appended; dispatchers wait on it.
    pub log: watch::Sender<i64>,
    /// Wakes the relay.
    pub relay: Arc<Notify>,
    /// Wakes dispatchers to look for DLQ actions (redrive, discard).
    pub actions: Arc<Notify>,
    /// Every group commit, once durable, for whoever subscribed (built
    /// only while someone listens). `sluice bench` times each event's
    /// latency to the end of its commit with it.
    pub commits: tokio::sync::broadcast::Sender<Arc<Committed>>,
}

/// A group commit that is durable: when it finished and whose outcomes it
/// held (events skipped as duplicates or fenced included).
#[derive(Debug)]
pub struct Committed {
    /// When the transaction had committed, ms since the epoch.
    pub at_ms: i64,
    /// (handler, event id) of each processed or dead-lettered event.
    pub events: Vec<(String, String)>,
}

impl Signals {
    /// New signals.
    pub fn new() -> Self {
        Self {
            log: watch::Sender::new(0),
            relay: Arc::new(Notify::new()),
            actions: Arc::new(Notify::new()),
            commits: tokio::sync::broadcast::Sender::new(4096),
        }
    }

    /// Announces that the log grew up to `seq`.
    pub fn appended(&self, seq: i64) {
        self.log.send_if_modified(|current| {
            if seq > *current {
                *current = seq;
                true
            } else {
                false
            }
        });
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram of durations, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS`]
    /// (not cumulative; the exposition sums them).
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// All observations.
    pub count: AtomicU64,
    /// Sum of all observations, in microseconds.
    pub sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Counters of one handler, readable while it runs.
#[derive(Debug, Default)]
pub struct HandlerStats {
    /// Failed attempts (retried or dead-lettered).
    pub failed: AtomicU64,
    /// Time of each invocation (instantiation plus `handle`).
    pub latency: Histogram,
    /// Events processed successfully.
    pub processed: AtomicU64,
    /// Events skipped as duplicates of processed ones.
    pub duplicates: AtomicU64,
    /// Events skipped by the type filter.
    pub filtered: AtomicU64,
    /// Failed attempts that were retried.
    pub retries: AtomicU64,
    /// Events sent to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Events held back behind a parked key.
    pub parked: AtomicU64,
    /// Events read but not yet committed.
    pub in_flight: AtomicU64,
    /// Highest log sequence number read.
    pub read_seq: AtomicI64,
    /// Kafka partitions this instance owns now.
    pub partitions: AtomicU64,
    /// Outcomes not applied because another instance claimed their
    /// partition meanwhile (it runs those events).
    pub fenced: AtomicU64,
}

/// A snapshot of [`HandlerStats`].
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Events processed successfully.
    pub processed: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Events skipped as duplicates.
    pub duplicates: u64,
    /// Kafka partitions this instance owns now.
    pub partitions: u64,
    /// Outcomes left to another instance that claimed their partition.
    pub fenced: u64,
    /// Events skipped by the type filter.
    pub filtered: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Events held back behind parked keys.
    pub parked: u64,
    /// Events in flight.
    pub in_flight: u64,
}

impl HandlerStats {
    /// Current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            processed: self.processed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            partitions: self.partitions.load(Ordering::Relaxed),
            fenced: self.fenced.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}
