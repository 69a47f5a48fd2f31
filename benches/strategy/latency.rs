//! Per-transaction latencies from pgbench's `--log` files.

use std::path::Path;

use crate::error::{BenchError, Result};

/// Percentiles over every transaction pgbench logged in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Transactions with a latency in the logs.
    pub samples: usize,
}

/// Reads every file in `dir` whose name starts with `prefix` (pgbench
/// writes one per thread) and takes the percentiles of the latency column.
pub fn from_logs(dir: &Path, prefix: &str) -> Result<Latency> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| BenchError::io(format!("listing {}", dir.display()), e))?;
    let mut micros = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BenchError::io("listing pgbench logs", e))?;
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| BenchError::io(format!("reading {}", path.display()), e))?;
        micros.extend(text.lines().filter_map(latency_micros));
    }
    if micros.is_empty() {
        return Err(BenchError::io(
            format!("pgbench logs in {}", dir.display()),
            std::io::Error::other("no transaction logged"),
        ));
    }
    micros.sort_unstable();
    Ok(Latency {
        p50_ms: percentile(&micros, 50.0) as f64 / 1000.0,
        p99_ms: percentile(&micros, 99.0) as f64 / 1000.0,
        samples: micros.len(),
    })
}

/// The third column of a log line (`client_id transaction_no time ...`),
/// in µs; `None` for failed or skipped transactions, whose time is a word.
fn latency_micros(line: &str) -> Option<u64> {
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Nearest-rank percentile of sorted, non-empty `values`.
fn percentile(values: &[u64], pct: f64) -> u64 {
    let rank = (pct / 100.0 * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}
