//! # Sluice host
//!
//! Sluice runs event handlers as sandboxed WebAssembly components. This crate
//! is the host: it owns the component runtime, broker consumption,
//! idempotency, ordering, retries and the dead-letter queue.
//!
//! * [`runtime`]: the wasmtime component runtime. It loads and validates
//!   components against the `sluice:handler` WIT world, caches compiled code
//!   by digest, and runs one event per fresh instance under per-handler
//!   limits, returning a classified [`runtime::Outcome`] with the emitted
//!   events and state changes.
//! * [`event`]: the event model (CloudEvents attributes, ordering key,
//!   topic) and the rules for emitted events: deterministic ids, causation,
//!   correlation and trace propagation.
//! * [`harness`]: the local test harness behind `sluice test`, usable from
//!   `#[test]` functions in any crate.
//! * [`store`]: durable state behind one trait, on SQLite or PostgreSQL:
//!   the embedded log, positions, idempotency records, state, the outbox,
//!   the DLQ and the handler registry.
//! * [`pipeline`]: dispatchers, the group committer and the outbox relay;
//!   [`admin`]: the HTTP API; [`config`]: `sluice.toml`.
//! * [`backbone`]: where events are consumed from and published to, behind
//!   the `Backbone`/`Source` seam: the store's own log (embedded), or Kafka
//!   through rdkafka (cargo feature `kafka`, on by default) with events in
//!   the CloudEvents Kafka binding. ARCHITECTURE.md has the map.
//! * [`openapi`]: the admin API's OpenAPI document.
//!
//! The crate holds only what a host needs. Around it, in the workspace:
//! `sluice-cli`, the `sluice` command (`sluice run` starts a host from this
//! crate; the other commands are a client of the admin API, `sluice test`
//! drives [`harness`]); `sluice-bench`, the benchmarks behind `sluice bench`;
//! and `sluice-testkit`, the test servers (PostgreSQL, Kafka) of the tests.
//!
//! ```no_run
//! use sluice::harness::{Harness, TestEvent};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let harness = Harness::new()?;
//! let report = harness
//!     .run_file(
//!         "target/wasm32-wasip2/release/inventory.wasm".as_ref(),
//!         &TestEvent::json("order.placed", serde_json::json!({"sku": "A", "qty": 1})).key("A"),
//!         &Default::default(),
//!     )
//!     .await?;
//! assert_eq!(report.outcome.kind(), "ok");
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod admin;
pub mod backbone;
pub mod config;
pub mod event;
pub mod harness;
pub mod openapi;
pub mod pipeline;
pub mod runtime;
pub mod store;
