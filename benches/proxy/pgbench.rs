//! Running pgbench against one endpoint and reading its summary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::error::{BenchError, Result};

/// Extra seconds pgbench gets beyond `-T` (connecting 500 clients, a slow
/// last transaction) before `timeout(1)` stops it.
const OVERRUN_SECONDS: u64 = 60;
/// Extra run time for initial logins: one second per this many clients.
pub const LOGINS_PER_EXTRA_SECOND: u32 = 100;
/// pgbench's own threads; the machine has 2 cores, shared with the servers.
pub const PGBENCH_THREADS: u32 = 2;

/// Where pgbench connects, as whom.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `-S`: one primary-key SELECT per transaction.
    SelectOnly,
    /// The default TPC-B-like read/write transaction.
    TpcB,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMode {
    Simple,
    Extended,
}

impl QueryMode {
    pub fn flag(self) -> &'static str {
        match self {
            QueryMode::Simple => "simple",
            QueryMode::Extended => "extended",
        }
    }
}

/// One pgbench invocation's shape.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub workload: Workload,
    pub mode: QueryMode,
    pub clients: u32,
    /// `-C`: a new connection per transaction.
    pub reconnect: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub tps: f64,
    pub latency_ms: f64,
    /// Failed transactions plus aborted clients.
    pub errors: u64,
    /// Transactions pgbench completed.
    pub transactions: u64,
    /// CPU time the pooler process used per transaction (none for direct).
    pub pooler_cpu_us_per_tx: Option<f64>,
    /// CPU time every PostgreSQL process used per transaction.
    pub postgres_cpu_us_per_tx: Option<f64>,
    /// CPU time pgbench used per transaction.
    pub pgbench_cpu_us_per_tx: Option<f64>,
    /// CPU time the whole machine used per transaction (pgbench, PostgreSQL,
    /// the pooler and the kernel): what a transaction costs in all.
    pub machine_cpu_us_per_tx: Option<f64>,
}

pub struct Pgbench {
    program: PathBuf,
}

impl Pgbench {
    pub fn new(bin_dir: &Path) -> Self {
        Pgbench {
            program: bin_dir.join("pgbench"),
        }
    }

    pub fn version(&self) -> Option<String> {
        crate::process::first_line_of(&self.program, &["--version"])
    }

    /// `pgbench -i` at `scale` (its default steps end with VACUUM, so the
    /// runs can skip theirs with `-n`).
    pub fn initialize(&self, endpoint: &Endpoint, scale: u32) -> Result<()> {
        let mut cmd = self.command(endpoint);
        cmd.args(["-i", "-q", "-s", &scale.to_string()]);
        cmd.arg(&endpoint.database);
        let out = run(cmd, "init")?;
        if !out.status.success() {
            return Err(BenchError::Pgbench {
                scenario: "init".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// Runs `load` for `seconds`; an error only if pgbench produced no summary.
    pub fn run(&self, endpoint: &Endpoint, load: Load, seconds: u64) -> Result<Outcome> {
        self.run_with(endpoint, load, seconds, None)
    }

    /// Like [`Pgbench::run`], also writing pgbench's per-transaction log
    /// (`--log`) to files named `<log_prefix>.<pid>[.<thread>]`.
    #[allow(dead_code)] // for the strategy bench, which includes this file too
    pub fn run_logged(
        &self,
        endpoint: &Endpoint,
        load: Load,
        seconds: u64,
        log_prefix: &Path,
    ) -> Result<Outcome> {
        self.run_with(endpoint, load, seconds, Some(log_prefix))
    }

    fn run_with(
        &self,
        endpoint: &Endpoint,
        load: Load,
        seconds: u64,
        log_prefix: Option<&Path>,
    ) -> Result<Outcome> {
        let threads = PGBENCH_THREADS.min(load.clients);
        // pgbench's -T clock includes its initial logins (SCRAM, ~ms each);
        // its tps excludes them, but 500 logins can eat a short run whole.
        let seconds = seconds + u64::from(load.clients / LOGINS_PER_EXTRA_SECOND);
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", &(seconds + OVERRUN_SECONDS).to_string()]);
        cmd.arg(&self.program);
        set_env(&mut cmd, endpoint);
        cmd.args(["-n", "-T", &seconds.to_string()]);
        cmd.args(["-c", &load.clients.to_string(), "-j", &threads.to_string()]);
        cmd.args(["-M", load.mode.flag()]);
        if load.workload == Workload::SelectOnly {
            cmd.arg("-S");
        }
        if load.reconnect {
            cmd.arg("-C");
        }
        if let Some(prefix) = log_prefix {
            cmd.arg("--log").arg("--log-prefix").arg(prefix);
        }
        cmd.arg(&endpoint.database);
        let out = run(cmd, "run")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        parse_summary(&stdout, &stderr).ok_or_else(|| {
            let tail = |text: &str| {
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                lines[lines.len().saturating_sub(4)..].join(" | ")
            };
            BenchError::Pgbench {
                scenario: format!("{} clients", load.clients),
                detail: format!(
                    "no summary ({}); stderr: {}; stdout: {}",
                    out.status,
                    tail(&stderr),
                    tail(&stdout)
                ),
            }
        })
    }

    fn command(&self, endpoint: &Endpoint) -> Command {
        let mut cmd = Command::new(&self.program);
        set_env(&mut cmd, endpoint);
        cmd
    }
}

/// libpq's environment for `endpoint`, and nothing else from ours.
pub fn set_env(cmd: &mut Command, endpoint: &Endpoint) {
    cmd.env_clear()
        .env("LC_ALL", "C")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", endpoint.port.to_string())
        .env("PGUSER", &endpoint.user)
        .env("PGPASSWORD", &endpoint.password)
        .env("PGSSLMODE", "disable");
}

fn run(mut cmd: Command, what: &str) -> Result<Output> {
    cmd.output()
        .map_err(|e| BenchError::io(format!("running pgbench {what}"), e))
}

/// Reads `tps = `, `latency average = ` and the failure counts from
/// pgbench's output; `None` if the run produced no throughput line.
fn parse_summary(stdout: &str, stderr: &str) -> Option<Outcome> {
    let number_after = |prefix: &str| -> Option<f64> {
        stdout.lines().find_map(|l| {
            let rest = l.trim().strip_prefix(prefix)?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    let tps = number_after("tps = ")?;
    let latency_ms = number_after("latency average = ").unwrap_or(f64::NAN);
    let failed = number_after("number of failed transactions: ").unwrap_or(0.0) as u64;
    let transactions =
        number_after("number of transactions actually processed: ").unwrap_or(0.0) as u64;
    let aborted = stderr
        .lines()
        .filter(|l| l.contains("client ") && l.contains(" aborted"))
        .count() as u64;
    Some(Outcome {
        tps,
        latency_ms,
        errors: failed + aborted,
        transactions,
        pooler_cpu_us_per_tx: None,
        postgres_cpu_us_per_tx: None,
        pgbench_cpu_us_per_tx: None,
        machine_cpu_us_per_tx: None,
    })
}
