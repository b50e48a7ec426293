//! The measurements as a table.

use crate::Measurement;

/// The results as a table, then the ratios of the WASM pipeline to the
/// other setups' rates.
pub fn table(results: &[Measurement]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:>10} {:>12} {:>14} {:>10} {:>9} {:>9} {:>15} {:>10}",
        "setup",
        "events",
        "events/s",
        "cpu-s/M ev",
        "peak MiB",
        "p50 ms",
        "p99 ms",
        "machine cpu-s/M",
        "cores busy"
    );
    for m in results {
        let (p50, p99) = m
            .latency_ms
            .map_or(("-".to_owned(), "-".to_owned()), |(a, b)| {
                (format!("{a:.0}"), format!("{b:.0}"))
            });
        let _ = writeln!(
            out,
            "{:<13} {:>10} {:>12.0} {:>14.1} {:>10.1} {:>9} {:>9} {:>15.1} {:>9.0}%",
            m.setup,
            m.events,
            m.rate(),
            m.cpu_per_million(),
            m.peak_rss_mib,
            p50,
            p99,
            m.machine_cpu_per_million(),
            m.machine_busy() * 100.0
        );
    }
    for m in results.iter().filter(|m| !m.swaps_ms.is_empty()) {
        let mut ms = m.swaps_ms.clone();
        ms.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "hot swap, activate -> first event committed on the new version: median {:.1} ms, max {:.1} ms ({} swaps)",
            ms[ms.len() / 2],
            ms[ms.len() - 1],
            ms.len()
        );
    }
    let rate = |s: &str| results.iter().find(|m| m.setup == s).map(Measurement::rate);
    for prefix in ["", "kafka-"] {
        let Some(wasm) = rate(&format!("{prefix}wasm")) else {
            continue;
        };
        for (other, label) in [
            ("native", "(c)/(b) wasm/native"),
            ("raw", "(c)/(a) wasm/raw"),
            ("naive", "(c)/(d) wasm/naive"),
        ] {
            if let Some(r) = rate(&format!("{prefix}{other}")) {
                let _ = writeln!(out, "{prefix}{label}: {:.2}", wasm / r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(setup: &str, seconds: f64) -> Measurement {
        Measurement {
            setup: setup.into(),
            events: 1000,
            seconds,
            cpu_seconds: 0.5,
            machine_cpu_seconds: 1.0,
            cores: 2,
            peak_rss_mib: 10.0,
            latency_ms: Some((1.0, 3.0)),
            swaps_ms: Vec::new(),
        }
    }

    #[test]
    fn the_table_has_a_row_per_setup_and_the_ratios_to_wasm() {
        let text = table(&[measured("raw", 0.5), measured("wasm", 1.0)]);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[1][..3], ["raw", "1000", "2000"], "{text}");
        assert_eq!(rows[2][..3], ["wasm", "1000", "1000"], "{text}");
        assert!(text.contains("(c)/(a) wasm/raw: 0.50"), "{text}");
        assert!(!text.contains("wasm/native"), "{text}");
    }
}
