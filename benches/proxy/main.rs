//! Macro benchmark: pgbench through pgrelay vs straight to PostgreSQL vs
//! through PgBouncer, interleaved in one run, plus idle-client memory.
//! Writes BENCHMARKS.md. See the Method section it writes for the knobs.

mod error;
mod idle;
mod pgbench;
mod pgbouncer;
mod plan;
mod pooler;
mod process;
mod relay;
mod report;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use pgrelay_testcontainers::Cluster;

use crate::error::{BenchError, Result};
use crate::pgbench::Pgbench;
use crate::plan::{TargetKind, TARGETS};
use crate::pooler::{ClientAuth, PoolerSettings, RunningPooler, Upstream};
use crate::report::{Environment, MemoryRow, Report};

/// Open files wanted: 10,000 idle clients plus pgbench's and the pools' sockets.
const FD_LIMIT: u64 = 65_536;

/// Run length and repetitions, from the environment.
struct Knobs {
    quick: bool,
    seconds: u64,
    rounds: u32,
    idle_counts: Vec<usize>,
    /// Only scenarios whose name contains one of these (all when empty).
    only: Vec<String>,
    out: PathBuf,
}

impl Knobs {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let quick = var("PGRELAY_BENCH_QUICK").is_some_and(|v| v != "0");
        let seconds = var("PGRELAY_BENCH_SECONDS")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(if quick { 2 } else { 8 })
            .max(1);
        let rounds = var("PGRELAY_BENCH_ROUNDS")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(if quick { 1 } else { 3 })
            .max(1);
        let mut idle_counts: Vec<usize> = var("PGRELAY_BENCH_IDLE")
            .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1_000, 10_000]);
        idle_counts.sort_unstable();
        idle_counts.retain(|&c| c > 1);
        let out = var("PGRELAY_BENCH_OUT").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md"),
            PathBuf::from,
        );
        let only = var("PGRELAY_BENCH_ONLY")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        Knobs {
            quick,
            only,
            seconds,
            rounds,
            idle_counts,
            out,
        }
    }
}

impl Knobs {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| scenario.contains(o.as_str()))
    }
}

/// Where the hand-kept micro-benchmark section of BENCHMARKS.md starts.
const KEPT_MARKER: &str = "<!-- kept across runs: micro-benchmarks -->";

fn main() -> ExitCode {
    // cargo passes `--bench`; this harness has no options of its own.
    let started = Instant::now();
    match run(&Knobs::from_env()) {
        Ok(()) => {
            eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(knobs: &Knobs) -> Result<()> {
    // Read now, when cargo has just built the binary: edits made while the
    // run goes on do not change what is measured.
    let pgrelay_version = relay::version();
    let fd_limit = process::raise_fd_limit(FD_LIMIT);
    eprintln!("bench: open file limit {fd_limit}");
    let pgbouncer_bin = pgbouncer::ensure_installed();
    let replicas = TARGETS
        .iter()
        .filter(|t| t.left_out.is_none())
        .map(|t| t.kind.replicas_needed())
        .max()
        .unwrap_or(0);
    eprintln!("bench: starting PostgreSQL with {replicas} replica(s)");
    let cluster = Cluster::builder().replicas(replicas).start()?;
    let (su, su_pw) = cluster.superuser();
    let (app, app_pw) = cluster.app_user();
    let upstream = Upstream {
        port: cluster.port(),
        database: cluster.database().to_string(),
        users: vec![
            (app.to_string(), app_pw.to_string()),
            (su.to_string(), su_pw.to_string()),
        ],
    };
    let pgbench = Pgbench::new(cluster.bin_dir());
    eprintln!("bench: pgbench -i -s {}", plan::SCALE);
    pgbench.initialize(&upstream.endpoint_via(cluster.port()), plan::SCALE)?;
    // Cleans up after writes so the next runs meet neither dead rows nor a
    // checkpoint, and the routed reads find the data on the replicas.
    let settle = || -> Result<()> {
        eprintln!("bench: settling (VACUUM, CHECKPOINT, replicas caught up)");
        cluster.primary().sql("VACUUM ANALYZE")?;
        cluster.primary().sql("CHECKPOINT")?;
        if replicas > 0 {
            cluster.wait_caught_up(std::time::Duration::from_secs(120))?;
        }
        Ok(())
    };
    settle()?;

    let scenarios: Vec<_> = plan::scenarios()
        .into_iter()
        .filter(|s| knobs.wants(&s.name()))
        .collect();
    let results = throughput::measure_all(
        &pgbench,
        &upstream,
        cluster.port(),
        &pgbouncer_bin,
        &scenarios,
        &throughput::Runs {
            rounds: knobs.rounds,
            seconds: knobs.seconds,
            settle: &settle,
        },
    )?;
    let memory = measure_memory(&upstream, &pgbouncer_bin, &knobs.idle_counts)?;

    let env = environment(knobs, pgrelay_version, &cluster, &pgbench, &pgbouncer_bin);
    let md = report::render(&Report {
        env,
        results: &results,
        memory,
        idle_counts: &knobs.idle_counts,
    });
    // The micro-benchmark section below the marker is kept across runs.
    let kept = std::fs::read_to_string(&knobs.out)
        .ok()
        .and_then(|old| old.find(KEPT_MARKER).map(|at| old[at..].to_string()))
        .unwrap_or_default();
    let md = if kept.is_empty() {
        md
    } else {
        format!("{md}\n{kept}")
    };
    std::fs::write(&knobs.out, &md)
        .map_err(|e| BenchError::io(format!("writing {}", knobs.out.display()), e))?;
    println!("{md}");
    eprintln!("bench: wrote {}", knobs.out.display());
    Ok(())
}

/// Idle-client RSS of each measured pooler, one at a time.
fn measure_memory(
    upstream: &Upstream,
    pgbouncer_bin: &Result<PathBuf, String>,
    counts: &[usize],
) -> Result<Vec<MemoryRow>> {
    if counts.is_empty() {
        return Ok(Vec::new());
    }
    let settings = PoolerSettings {
        pool_size: plan::POOL_SIZE,
        max_client_conn: counts.last().copied().unwrap_or(0) as u32 + 100,
        auth: ClientAuth::Md5,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("building a tokio runtime", e))?;
    let mut rows = Vec::new();
    for spec in TARGETS
        .iter()
        .filter(|t| t.left_out.is_none() && t.kind.is_pooler())
    {
        let pooler: Result<RunningPooler, String> = match spec.kind {
            TargetKind::Pgrelay => relay::start(upstream, settings).map_err(|e| e.to_string()),
            TargetKind::PgBouncer => throughput::start_pgbouncer(pgbouncer_bin, upstream, settings),
            _ => continue,
        };
        let profile = pooler.and_then(|pooler| {
            let endpoint = upstream.endpoint_via(pooler.port);
            rt.block_on(idle::measure(spec.label, &pooler, &endpoint, counts))
                .map_err(|e| e.to_string())
        });
        if let Err(e) = &profile {
            eprintln!("bench: idle memory of {}: {e}", spec.label);
        }
        rows.push(MemoryRow {
            label: spec.label,
            kind: spec.kind,
            profile,
        });
    }
    Ok(rows)
}

fn environment(
    knobs: &Knobs,
    pgrelay_version: String,
    cluster: &Cluster,
    pgbench: &Pgbench,
    pgbouncer_bin: &Result<PathBuf, String>,
) -> Environment {
    let unknown = || "unknown".to_string();
    let cpu_model = process::cpu_model().unwrap_or_else(unknown);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(unknown, |kib| format!("{:.1} GiB", kib as f64 / 1048576.0));
    Environment {
        date: process::utc_now().unwrap_or_else(unknown),
        cores: process::cores(),
        cpu_model,
        memory,
        pgrelay: pgrelay_version,
        postgres: process::first_line_of(cluster.bin_dir().join("postgres"), &["--version"])
            .unwrap_or_else(unknown),
        pgbouncer: match pgbouncer_bin {
            Ok(bin) => pgbouncer::version(bin).unwrap_or_else(unknown),
            Err(note) => format!("not measured: {note}"),
        },
        pgbench: pgbench.version().unwrap_or_else(unknown),
        quick: knobs.quick,
        seconds: knobs.seconds,
        rounds: knobs.rounds,
    }
}
