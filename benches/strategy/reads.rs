//! Which server answered the reads, counted by the servers themselves.
//!
//! Every pgbench `-S` transaction is one primary-key lookup in
//! `pgbench_accounts`, so the table's `idx_scan` counter on a server grows by
//! one per read it served; pgrelay's logins and health probes never touch the
//! table. A backend publishes its counts when it exits (otherwise up to 10 s
//! late), so the counters are read after pgrelay has closed its servers.

use std::time::{Duration, Instant};

use pgrelay_testcontainers::Node;

use crate::error::{BenchError, Result};

/// Other client sessions on this server (pgrelay's), then the reads so far.
const COUNTERS_SQL: &str = "SELECT \
     (SELECT count(*) FROM pg_stat_activity \
       WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()), \
     (SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_tables \
       WHERE relname = 'pgbench_accounts')";
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
const SETTLE_POLL: Duration = Duration::from_millis(200);

/// Reads served per server, in the order of the nodes asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reads(pub Vec<u64>);

impl Reads {
    pub fn since(&self, before: &Reads) -> Reads {
        Reads(
            self.0
                .iter()
                .zip(&before.0)
                .map(|(after, before)| after.saturating_sub(*before))
                .collect(),
        )
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Share of the total served by the `i`th server, 0 when nothing was served.
    pub fn share(&self, i: usize) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        self.0.get(i).copied().unwrap_or(0) as f64 / total as f64
    }
}

/// The counters once every other session has left each server and its
/// count has stopped moving (the last backends publish as they exit).
pub fn settled(nodes: &[&Node]) -> Result<Reads> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last: Option<Vec<u64>> = None;
    loop {
        let now: Vec<(u64, u64)> = nodes.iter().map(|n| counters(n)).collect::<Result<_>>()?;
        let idle = now.iter().all(|(sessions, _)| *sessions == 0);
        let reads: Vec<u64> = now.iter().map(|(_, reads)| *reads).collect();
        if idle && last.as_ref() == Some(&reads) {
            return Ok(Reads(reads));
        }
        if Instant::now() >= deadline {
            return Err(BenchError::io(
                "reading the servers' read counters",
                std::io::Error::other(format!(
                    "still moving or still connected after {SETTLE_TIMEOUT:?}: {now:?}"
                )),
            ));
        }
        last = idle.then_some(reads);
        std::thread::sleep(SETTLE_POLL);
    }
}

/// (other client sessions, reads served) on one server.
fn counters(node: &Node) -> Result<(u64, u64)> {
    let out = node.sql(COUNTERS_SQL)?;
    let parsed = out
        .split_once('|')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    parsed.ok_or_else(|| {
        BenchError::io(
            format!("counters of {}", node.name()),
            std::io::Error::other(format!("unexpected psql output {out:?}")),
        )
    })
}
