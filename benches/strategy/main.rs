//! Strategy lab: the same bounded read load through pgrelay once per read
//! balancing strategy, with one replica made slow by a delaying relay, plus
//! a baseline with both replicas fast. Updates its own section of
//! BENCHMARKS.md. One command: `cargo bench --bench strategy`; the knobs
//! are listed in the section it writes.

// Shared with the proxy bench (pgbench runner, child process guard, pgrelay
// config); each bench uses a subset of them.
#[allow(dead_code)]
#[path = "../proxy/error.rs"]
mod error;
#[allow(dead_code)]
#[path = "../proxy/pgbench.rs"]
mod pgbench;
#[allow(dead_code)]
#[path = "../proxy/pooler.rs"]
mod pooler;
#[allow(dead_code)]
#[path = "../proxy/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "../proxy/relay.rs"]
mod relay;

mod lab;
mod latency;
mod reads;
mod report;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pgrelay_testcontainers::{Cluster, DelayRelay};

use crate::error::{BenchError, Result};
use crate::lab::{Lab, CASES};
use crate::pgbench::{Load, Pgbench, QueryMode, Workload};
use crate::pooler::{ClientAuth, PoolerSettings, Upstream};
use crate::report::{Row, Setup};

/// Where the slowed replica is reached (loopback, apart from the nodes).
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// Reads only: a small table is enough, and initializing it is quick.
const SCALE: u32 = 1;
/// More than the clients, so no client waits for a server.
const POOL_SIZE: u32 = 20;

struct Knobs {
    quick: bool,
    seconds: u64,
    delay: Duration,
    clients: u32,
    out: PathBuf,
}

impl Knobs {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
        let quick = var("PGRELAY_STRATEGY_QUICK").is_some_and(|v| v != "0");
        Knobs {
            quick,
            seconds: number("PGRELAY_STRATEGY_SECONDS")
                .unwrap_or(if quick { 2 } else { 8 })
                .clamp(1, 600),
            delay: Duration::from_millis(number("PGRELAY_STRATEGY_DELAY_MS").unwrap_or(2)),
            clients: number("PGRELAY_STRATEGY_CLIENTS")
                .unwrap_or(16)
                .clamp(1, 100) as u32,
            out: var("PGRELAY_BENCH_OUT").map_or_else(
                || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md"),
                PathBuf::from,
            ),
        }
    }
}

fn main() -> ExitCode {
    // cargo passes `--bench`; this harness has no options of its own.
    let started = Instant::now();
    match run(&Knobs::from_env()) {
        Ok(()) => {
            eprintln!("strategy: done in {:.0} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("strategy: failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(knobs: &Knobs) -> Result<()> {
    eprintln!("strategy: starting PostgreSQL with 2 replicas");
    let cluster = Cluster::builder().replicas(2).start()?;
    let (app, app_pw) = cluster.app_user();
    let upstream = Upstream {
        port: cluster.port(),
        database: cluster.database().to_string(),
        users: vec![(app.to_string(), app_pw.to_string())],
    };
    let pgbench = Pgbench::new(cluster.bin_dir());
    eprintln!("strategy: pgbench -i -s {SCALE}");
    pgbench.initialize(&upstream.endpoint_via(cluster.port()), SCALE)?;
    cluster.wait_caught_up(Duration::from_secs(120))?;

    let [fast, slow] = cluster.replicas() else {
        unreachable!("the cluster was started with two replicas");
    };
    let slow_relay = DelayRelay::start(IpAddr::V4(RELAY_IP), slow.socket_addr(), knobs.delay)?;
    let load = Load {
        workload: Workload::SelectOnly,
        mode: QueryMode::Extended,
        clients: knobs.clients,
        reconnect: false,
    };
    let settings = PoolerSettings {
        pool_size: POOL_SIZE,
        max_client_conn: 200,
        auth: ClientAuth::Md5,
    };
    let lab = Lab {
        pgbench: &pgbench,
        upstream: &upstream,
        settings,
        load,
        seconds: knobs.seconds,
        nodes: [cluster.primary(), fast, slow],
        slow_addr: slow_relay.addr(),
        psql: cluster.bin_dir().join("psql"),
    };
    let mut rows = Vec::new();
    for case in CASES {
        let label = case.label();
        eprintln!("strategy: {label}");
        let result = lab.measure(case).map_err(|e| e.to_string());
        match &result {
            Ok(m) => eprintln!(
                "strategy: {label}: {:.0} tps, p50 {:.2} ms, p99 {:.2} ms, reads {:?} \
                 (primary, fast, slow), {} failed",
                m.outcome.tps, m.latency.p50_ms, m.latency.p99_ms, m.reads.0, m.outcome.errors
            ),
            Err(e) => eprintln!("strategy: {label}: {e}"),
        }
        rows.push(Row {
            case: *case,
            result,
        });
    }

    let unknown = || "unknown".to_string();
    let setup = Setup {
        date: process::utc_now().unwrap_or_else(unknown),
        cores: process::cores(),
        cpu_model: process::cpu_model().unwrap_or_else(unknown),
        pgrelay: relay::version(),
        postgres: process::first_line_of(cluster.bin_dir().join("postgres"), &["--version"])
            .unwrap_or_else(unknown),
        delay: knobs.delay,
        load,
        seconds: knobs.seconds,
        scale: SCALE,
        pool_size: POOL_SIZE,
        quick: knobs.quick,
    };
    let section = report::render(&setup, &rows);
    let existing = std::fs::read_to_string(&knobs.out).unwrap_or_default();
    std::fs::write(&knobs.out, report::splice(&existing, &section))
        .map_err(|e| BenchError::io(format!("writing {}", knobs.out.display()), e))?;
    println!("{section}");
    eprintln!("strategy: updated {}", knobs.out.display());
    Ok(())
}
