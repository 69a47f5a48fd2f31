//! The cases (one pgrelay per strategy, plus a baseline with no slow
//! replica) and how one case is measured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pgrelay_testcontainers::Node;

use crate::error::{BenchError, Result};
use crate::latency::{self, Latency};
use crate::pgbench::{self, Endpoint, Load, Outcome, Pgbench};
use crate::pooler::{temp_dir, PoolerSettings, Upstream};
use crate::reads::{self, Reads};
use crate::relay;

/// One pgrelay configuration to put the load through.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The `balance:` value.
    pub balance: &'static str,
    /// Whether the second replica is reached through the delaying relay.
    pub slowed: bool,
}

impl Case {
    pub fn label(&self) -> String {
        if self.slowed {
            self.balance.to_string()
        } else {
            format!("baseline: {}, no replica slowed", self.balance)
        }
    }
}

/// The baseline first, so the slow replica's cost is visible below it.
pub const CASES: &[Case] = &[
    Case {
        balance: relay::DEFAULT_BALANCE,
        slowed: false,
    },
    Case {
        balance: "round_robin",
        slowed: true,
    },
    Case {
        balance: "random",
        slowed: true,
    },
    Case {
        balance: "least_outstanding",
        slowed: true,
    },
    Case {
        balance: "p2c_ewma",
        slowed: true,
    },
];

/// pgrelay sets up a database's replicas at the first login to it and needs
/// `rise` (2) good probes before a replica takes reads; after that login,
/// wait a few probe intervals so the run does not start on the primary.
const HEALTH_SETTLE: Duration = relay::HEALTH_CHECK_INTERVAL.saturating_mul(4);
const LOG_PREFIX: &str = "pgbench_log";

/// Everything the cases share.
pub struct Lab<'a> {
    pub pgbench: &'a Pgbench,
    pub upstream: &'a Upstream,
    pub settings: PoolerSettings,
    pub load: Load,
    pub seconds: u64,
    /// Primary, fast replica, slowed replica: the order of [`Reads`].
    pub nodes: [&'a Node; 3],
    /// Where pgrelay reaches the slowed replica through the relay.
    pub slow_addr: SocketAddr,
    pub psql: PathBuf,
}

/// What one case measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub outcome: Outcome,
    pub latency: Latency,
    /// Reads served by primary, fast replica, slowed replica.
    pub reads: Reads,
}

impl Lab<'_> {
    /// Starts pgrelay for `case`, runs the load once, stops pgrelay and
    /// counts which server served the reads.
    pub fn measure(&self, case: &Case) -> Result<Measured> {
        let [_, fast, slow] = self.nodes;
        let second = if case.slowed {
            self.slow_addr
        } else {
            slow.socket_addr()
        };
        let before = reads::settled(&self.nodes)?;
        let pooler = relay::start_with_replicas(
            self.upstream,
            self.settings,
            &[fast.socket_addr(), second],
            case.balance,
        )?;
        let endpoint = self.upstream.endpoint_via(pooler.port);
        self.first_login(&endpoint)?;
        std::thread::sleep(HEALTH_SETTLE);
        let logs = temp_dir("pgrelay-strategy-")?;
        let outcome = self.pgbench.run_logged(
            &endpoint,
            self.load,
            self.seconds,
            &logs.path().join(LOG_PREFIX),
        )?;
        // Stopping pgrelay closes its server connections: the backends
        // publish their counters as they exit.
        drop(pooler);
        let reads = reads::settled(&self.nodes)?.since(&before);
        let latency = latency::from_logs(logs.path(), LOG_PREFIX)?;
        Ok(Measured {
            outcome,
            latency,
            reads,
        })
    }

    /// One `SELECT 1` through pgrelay (it reads no table, so no counter moves).
    fn first_login(&self, endpoint: &Endpoint) -> Result<()> {
        let mut cmd = Command::new(&self.psql);
        pgbench::set_env(&mut cmd, endpoint);
        cmd.args(["-X", "-q", "-d", &endpoint.database, "-c", "SELECT 1"]);
        let out = cmd
            .output()
            .map_err(|e| BenchError::io("running psql through pgrelay", e))?;
        if out.status.success() {
            return Ok(());
        }
        Err(BenchError::Start {
            name: "pgrelay".into(),
            detail: format!(
                "first login failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}
