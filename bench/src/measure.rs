//! What a setup measures: rate, CPU time, peak RSS, latencies.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sluice::pipeline::Signals;

use crate::{Error, HANDLER, Result};

/// What one setup measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// The setup.
    pub setup: String,
    /// Events consumed.
    pub events: u64,
    /// Wall-clock seconds from the first event to the last effect.
    pub seconds: f64,
    /// CPU-seconds (user + system) of the measured phase.
    pub cpu_seconds: f64,
    /// CPU-seconds of the whole machine in the measured phase: every
    /// process, so the broker's and the database's too.
    #[serde(default)]
    pub machine_cpu_seconds: f64,
    /// The machine's cores (`/proc/stat`).
    #[serde(default)]
    pub cores: u32,
    /// Peak resident set size of the process, in MiB.
    pub peak_rss_mib: f64,
    /// Latency from append to effect committed, in ms: p50 and p99.
    pub latency_ms: Option<(f64, f64)>,
    /// Hot swaps (the `swap` setup): ms from the activation call to the
    /// first event committed by the new version, one per swap.
    #[serde(default)]
    pub swaps_ms: Vec<f64>,
}

impl Measurement {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    /// CPU-seconds per million events.
    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds * 1e6 / (self.events.max(1) as f64)
    }

    /// The machine's CPU-seconds per million events.
    pub fn machine_cpu_per_million(&self) -> f64 {
        self.machine_cpu_seconds * 1e6 / (self.events.max(1) as f64)
    }

    /// How busy the machine's cores were in the measured phase, 0 to 1: at
    /// 1 the run was bound by CPU, below it by waits (a serial stage, I/O).
    pub fn machine_busy(&self) -> f64 {
        self.machine_cpu_seconds / (self.seconds.max(1e-9) * f64::from(self.cores.max(1)))
    }
}

/// p50 and p99 of `ms`, sorted in place.
pub(crate) fn percentiles(ms: &mut [i64]) -> Option<(f64, f64)> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize] as f64;
    Some((at(0.50), at(0.99)))
}

pub(crate) fn finish(
    setup: &str,
    events: u64,
    started: Instant,
    before: Cpu,
) -> Result<Measurement> {
    let now = Cpu::now();
    Ok(Measurement {
        setup: setup.to_owned(),
        events,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: now.process - before.process,
        machine_cpu_seconds: now.machine - before.machine,
        cores: now.cores,
        peak_rss_mib: peak_rss_mib(),
        latency_ms: None,
        swaps_ms: Vec::new(),
    })
}

/// When each event's outcome had committed, by event id: the pipeline's
/// commit notices ([`Signals::commits`]), gathered while a setup runs.
/// (`processed_at` is written inside the transaction, so it is when the
/// commit began, up to a commit's duration early.)
pub(crate) struct CommitTimes {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<HashMap<String, i64>>>,
}

impl CommitTimes {
    /// Starts listening; call before the pipeline starts.
    pub(crate) fn collect(signals: &Signals) -> Self {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let mut notices = signals.commits.subscribe();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut at = HashMap::new();
            let mut note = |c: &sluice::pipeline::Committed| {
                for (handler, id) in &c.events {
                    if handler == HANDLER {
                        // A later commit of the same event is a duplicate.
                        at.entry(id.clone()).or_insert(c.at_ms);
                    }
                }
            };
            let lagged = |n| Error::Other(format!("{n} commit notices were missed"));
            loop {
                tokio::select! {
                    notice = notices.recv() => match notice {
                        Ok(c) => note(&c),
                        Err(RecvError::Lagged(n)) => return Err(lagged(n)),
                        Err(RecvError::Closed) => break,
                    },
                    _ = &mut stopped => {
                        // What was sent before the stop is still queued.
                        loop {
                            match notices.try_recv() {
                                Ok(c) => note(&c),
                                Err(TryRecvError::Lagged(n)) => return Err(lagged(n)),
                                Err(_) => break,
                            }
                        }
                        break;
                    }
                }
            }
            Ok(at)
        });
        Self { stop, task }
    }

    /// The commit times gathered; call once the pipeline has shut down.
    pub(crate) async fn finish(self) -> Result<HashMap<String, i64>> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| Error::Other(format!("gathering commit times: {e}")))?
    }
}

/// User + system CPU time of this process so far, from `/proc/self/stat`.
/// CPU time used so far, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu {
    /// By this process.
    process: f64,
    /// By the whole machine (every core's busy time in `/proc/stat`).
    machine: f64,
    /// The machine's cores.
    cores: u32,
}

impl Cpu {
    pub(crate) fn now() -> Self {
        let (machine, cores) = machine_cpu_seconds();
        Self {
            process: cpu_seconds(),
            machine,
            cores,
        }
    }
}

/// Busy seconds of all cores together (user, nice, system, irq, softirq
/// and steal time of `/proc/stat`'s `cpu` line), and the number of cores.
fn machine_cpu_seconds() -> (f64, u32) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0);
    };
    let mut lines = stat.lines();
    let ticks: Vec<f64> = lines
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let cores = lines.filter(|l| l.starts_with("cpu")).count() as u32;
    // user nice system idle iowait irq softirq steal: idle and iowait
    // (indexes 3 and 4) are not busy. Guest time is inside user time.
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    (busy / 100.0, cores)
}

fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from field 3.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 here. The
    // kernel reports them in USER_HZ, 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_of_the_sorted_values() {
        assert_eq!(percentiles(&mut []), None);
        let mut ms: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut ms), Some((51.0, 99.0)));
    }
}
