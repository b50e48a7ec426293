//! `GET /metrics`: the Prometheus text exposition.

use super::*;

/// A counter of the exposition: name suffix, help text, and how to read it.
pub(super) type Counter = (&'static str, &'static str, fn(&HandlerStats) -> u64);

/// Prometheus text exposition of per-handler counters, latency histograms,
/// lag, and the outbox backlog.
pub(super) async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;

    use crate::pipeline::LATENCY_BUCKETS;

    let stats = handler_stats(&state);
    let mut out = String::new();
    let counters: [Counter; 7] = [
        ("processed_total", "Events processed successfully.", |s| {
            s.processed.load(Relaxed)
        }),
        (
            "failed_total",
            "Failed attempts (retried or dead-lettered).",
            |s| s.failed.load(Relaxed),
        ),
        ("retried_total", "Failed attempts that were retried.", |s| {
            s.retries.load(Relaxed)
        }),
        (
            "dead_lettered_total",
            "Events sent to the dead-letter queue.",
            |s| s.dead_lettered.load(Relaxed),
        ),
        (
            "duplicates_total",
            "Redelivered events skipped by the idempotency check.",
            |s| s.duplicates.load(Relaxed),
        ),
        (
            "filtered_total",
            "Events skipped by the type filter.",
            |s| s.filtered.load(Relaxed),
        ),
        (
            "parked_total",
            "Events held back behind a parked key.",
            |s| s.parked.load(Relaxed),
        ),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(
            out,
            "# HELP sluice_handler_{name} {help}\n# TYPE sluice_handler_{name} counter"
        );
        for (handler, stats) in &stats {
            let _ = writeln!(
                out,
                "sluice_handler_{name}{{handler=\"{handler}\"}} {}",
                read(stats)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sluice_handler_in_flight Events read and not yet committed.\n# TYPE sluice_handler_in_flight gauge"
    );
    for (handler, stats) in &stats {
        let _ = writeln!(
            out,
            "sluice_handler_in_flight{{handler=\"{handler}\"}} {}",
            stats.in_flight.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_handler_lag Events of a topic after the handler's committed position.\n# TYPE sluice_handler_lag gauge"
    );
    for (handler, _) in &stats {
        for (topic, lag) in lag(&state, handler).await? {
            let _ = writeln!(
                out,
                "sluice_handler_lag{{handler=\"{handler}\",topic=\"{topic}\"}} {lag}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sluice_handler_duration_seconds Time of one invocation (instantiation and handle).\n# TYPE sluice_handler_duration_seconds histogram"
    );
    for (handler, stats) in &stats {
        let h = &stats.latency;
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "sluice_handler_duration_seconds_bucket{{handler=\"{handler}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Relaxed);
        let _ = writeln!(
            out,
            "sluice_handler_duration_seconds_bucket{{handler=\"{handler}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "sluice_handler_duration_seconds_sum{{handler=\"{handler}\"}} {}",
            h.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "sluice_handler_duration_seconds_count{{handler=\"{handler}\"}} {count}"
        );
    }
    let backlog = state.store.outbox_backlog().await?;
    let _ = writeln!(
        out,
        "# HELP sluice_outbox_backlog Outbox rows not yet published.\n# TYPE sluice_outbox_backlog gauge\nsluice_outbox_backlog {backlog}"
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}
