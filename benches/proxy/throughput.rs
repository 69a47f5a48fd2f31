//! The pgbench part: start every target, then for each scenario and round
//! run the targets back to back so machine drift hits them alike.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::pgbench::{Endpoint, Load, Outcome, Pgbench, QueryMode, Workload};
use crate::plan::{Scenario, TargetKind, TargetSpec};
use crate::pooler::{ClientAuth, PoolerSettings, RunningPooler, Upstream};
use crate::process::{
    cpu_seconds, machine_busy_seconds, postgres_cpu, postgres_cpu_after,
    reaped_children_cpu_seconds,
};
use crate::{pgbouncer, plan, relay};

const WARM_UP_SECONDS: u64 = 2;

/// A target that is measured, or the note saying why not.
pub enum TargetState {
    Live {
        endpoint: Endpoint,
        pooler: Option<RunningPooler>,
    },
    Skipped(String),
}

pub struct Target {
    pub spec: &'static TargetSpec,
    pub state: TargetState,
}

/// Mean over rounds, or why there is no number.
#[derive(Debug, Clone)]
pub enum Cell {
    Measured {
        mean: Outcome,
        /// (max − min) / mean of the rounds' TPS, in percent.
        tps_spread_pct: f64,
        /// Each round's run, in round order (`None`: that round failed), so
        /// a target can be judged round by round against its rivals' runs.
        rounds: Vec<Option<Outcome>>,
    },
    NotRun(String),
}

pub struct ScenarioResult {
    pub scenario: Scenario,
    /// One cell per target, in `plan::TARGETS` order.
    pub cells: Vec<Cell>,
}

/// How each scenario is run.
pub struct Runs<'a> {
    pub rounds: u32,
    /// Length of one pgbench run.
    pub seconds: u64,
    /// Cleans up after a scenario that writes (see [`run_all`]).
    pub settle: &'a dyn Fn() -> Result<()>,
}

/// The pgbench runs' settings: what both poolers are given.
fn bench_settings(auth: ClientAuth) -> PoolerSettings {
    PoolerSettings {
        pool_size: plan::POOL_SIZE,
        max_client_conn: 1_000,
        auth,
    }
}

/// Runs the scenarios grouped by client auth: each group gets freshly
/// started poolers configured for it. Results keep the scenarios' order
/// within a group.
pub fn measure_all(
    pgbench: &Pgbench,
    upstream: &Upstream,
    direct_port: u16,
    pgbouncer_bin: &Result<PathBuf, String>,
    scenarios: &[Scenario],
    runs: &Runs,
) -> Result<Vec<ScenarioResult>> {
    let mut results = Vec::new();
    for auth in [ClientAuth::Md5, ClientAuth::ScramSha256] {
        let group: Vec<Scenario> = scenarios
            .iter()
            .filter(|s| s.auth == auth)
            .copied()
            .collect();
        if group.is_empty() {
            continue;
        }
        eprintln!("bench: starting poolers with auth_type {}", auth.setting());
        let targets = start_targets(upstream, direct_port, pgbouncer_bin, bench_settings(auth))?;
        warm_up(pgbench, &targets);
        results.extend(run_all(pgbench, &targets, &group, runs)?);
    }
    Ok(results)
}

/// Starts every target in `plan::TARGETS`. pgrelay failing to start is an
/// error; PgBouncer missing or failing is a note in the report.
fn start_targets(
    upstream: &Upstream,
    direct_port: u16,
    pgbouncer_bin: &Result<PathBuf, String>,
    settings: PoolerSettings,
) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for spec in plan::TARGETS {
        let state = match (spec.left_out, spec.kind) {
            (Some(note), _) => TargetState::Skipped(note.to_string()),
            (None, TargetKind::Direct) => live(upstream.endpoint_via(direct_port), None),
            (None, TargetKind::Pgrelay) => {
                let pooler = relay::start(upstream, settings)?;
                live(upstream.endpoint_via(pooler.port), Some(pooler))
            }
            (None, TargetKind::PgBouncer) => {
                match start_pgbouncer(pgbouncer_bin, upstream, settings) {
                    Ok(pooler) => live(upstream.endpoint_via(pooler.port), Some(pooler)),
                    Err(note) => {
                        eprintln!("bench: PgBouncer skipped: {note}");
                        TargetState::Skipped(note)
                    }
                }
            }
            (None, TargetKind::PgrelayOneThread) => {
                let pooler = relay::start_one_thread(upstream, settings)?;
                live(upstream.endpoint_via(pooler.port), Some(pooler))
            }
            (None, TargetKind::PgrelayWorkStealing) => {
                let pooler = relay::start_work_stealing(upstream, settings)?;
                live(upstream.endpoint_via(pooler.port), Some(pooler))
            }
            (None, TargetKind::PgrelayNoIdlePoll) => {
                let pooler = relay::start_no_idle_poll(upstream, settings)?;
                live(upstream.endpoint_via(pooler.port), Some(pooler))
            }
            (None, TargetKind::PgrelayRouting) => {
                let pooler = relay::start_routing(upstream, settings)?;
                live(upstream.endpoint_via(pooler.port), Some(pooler))
            }
            (None, TargetKind::PgrelayRoutingOneReplica) => {
                let pooler = relay::start_routing_one_replica(upstream, settings)?;
                live(upstream.endpoint_via(pooler.port), Some(pooler))
            }
            (None, TargetKind::PgrelayOnReplica) => {
                let pooler = relay::start_on_replica(upstream, settings)?;
                live(upstream.endpoint_via(pooler.port), Some(pooler))
            }
        };
        targets.push(Target { spec, state });
    }
    Ok(targets)
}

pub fn start_pgbouncer(
    bin: &Result<PathBuf, String>,
    upstream: &Upstream,
    settings: PoolerSettings,
) -> Result<RunningPooler, String> {
    let bin: &Path = bin.as_ref().map_err(Clone::clone)?;
    pgbouncer::start(bin, upstream, settings).map_err(|e| e.to_string())
}

fn live(endpoint: Endpoint, pooler: Option<RunningPooler>) -> TargetState {
    TargetState::Live { endpoint, pooler }
}

/// Fills every pooler's pool before anything is measured, so no scenario
/// pays for the poolers' server logins (pgbench only excludes its own).
fn warm_up(pgbench: &Pgbench, targets: &[Target]) {
    let load = Load {
        workload: Workload::SelectOnly,
        mode: QueryMode::Simple,
        clients: plan::POOL_SIZE,
        reconnect: false,
    };
    for target in targets {
        if let TargetState::Live {
            endpoint,
            pooler: Some(_),
        } = &target.state
        {
            if let Err(e) = pgbench.run(endpoint, load, WARM_UP_SECONDS) {
                eprintln!("bench: warm-up of {} failed: {e}", target.spec.label);
            }
        }
    }
}

/// Every scenario × round × target, interleaved; returns per-target means.
/// Even rounds run the targets in reverse order, so a drift of the machine
/// within a scenario (a warming cache, a background job winding down) falls
/// on every target alike rather than always on the later ones. After a
/// scenario that writes, `settle` cleans up before the next one is measured.
fn run_all(
    pgbench: &Pgbench,
    targets: &[Target],
    scenarios: &[Scenario],
    runs: &Runs,
) -> Result<Vec<ScenarioResult>> {
    let Runs {
        rounds,
        seconds,
        settle,
    } = *runs;
    let mut results = Vec::new();
    for scenario in scenarios {
        let name = scenario.name();
        let mut runs: Vec<Vec<Option<Outcome>>> = vec![Vec::new(); targets.len()];
        let mut failures: Vec<Option<String>> = vec![None; targets.len()];
        for round in 1..=rounds {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let target = &targets[i];
                let TargetState::Live { endpoint, pooler } = &target.state else {
                    continue;
                };
                if scenario.not_runnable_on(target.spec.kind).is_some() {
                    continue;
                }
                let pid = pooler.as_ref().map(RunningPooler::pid);
                match measure_run(pgbench, endpoint, pid, scenario, seconds) {
                    Ok(o) => {
                        let us =
                            |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
                        eprintln!(
                            "bench: {name} round {round} {}: {:.0} tps, {:.3} ms, {} errors; \
                             CPU µs/tx pooler {} postgres {} pgbench {} machine {}",
                            target.spec.label,
                            o.tps,
                            o.latency_ms,
                            o.errors,
                            us(o.pooler_cpu_us_per_tx),
                            us(o.postgres_cpu_us_per_tx),
                            us(o.pgbench_cpu_us_per_tx),
                            us(o.machine_cpu_us_per_tx),
                        );
                        runs[i].push(Some(o));
                    }
                    Err(e) => {
                        eprintln!("bench: {name} round {round} {}: {e}", target.spec.label);
                        runs[i].push(None);
                        failures[i] = Some(e.to_string());
                    }
                }
            }
        }
        let cells = targets
            .iter()
            .zip(runs.iter().zip(failures))
            .map(|(target, (runs, failure))| cell(scenario, target, runs, failure))
            .collect();
        results.push(ScenarioResult {
            scenario: *scenario,
            cells,
        });
        if scenario.writes() {
            settle()?;
        }
    }
    Ok(results)
}

/// One pgbench run, with the CPU time each part of the machine used over it.
fn measure_run(
    pgbench: &Pgbench,
    endpoint: &Endpoint,
    pooler_pid: Option<u32>,
    scenario: &Scenario,
    seconds: u64,
) -> Result<Outcome> {
    let pooler_before = pooler_pid.map(cpu_seconds).transpose()?;
    let postgres_before = postgres_cpu();
    let pgbench_before = reaped_children_cpu_seconds()?;
    let machine_before = machine_busy_seconds()?;
    let mut outcome = pgbench.run(endpoint, scenario.load, seconds)?;
    let machine_used = machine_busy_seconds()? - machine_before;
    let pgbench_used = reaped_children_cpu_seconds()? - pgbench_before;
    let postgres_used = postgres_cpu_after(postgres_before).seconds - postgres_before.seconds;
    let pooler_used = match (pooler_pid, pooler_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    let per_tx = |seconds: f64| {
        (outcome.transactions > 0).then(|| seconds * 1e6 / outcome.transactions as f64)
    };
    outcome.machine_cpu_us_per_tx = per_tx(machine_used);
    outcome.pgbench_cpu_us_per_tx = per_tx(pgbench_used);
    outcome.postgres_cpu_us_per_tx = per_tx(postgres_used);
    outcome.pooler_cpu_us_per_tx = pooler_used.and_then(per_tx);
    Ok(outcome)
}

fn cell(
    scenario: &Scenario,
    target: &Target,
    rounds: &[Option<Outcome>],
    failure: Option<String>,
) -> Cell {
    if let TargetState::Skipped(note) = &target.state {
        return Cell::NotRun(note.clone());
    }
    if let Some(why) = scenario.not_runnable_on(target.spec.kind) {
        return Cell::NotRun(why.to_string());
    }
    let runs: Vec<Outcome> = rounds.iter().flatten().copied().collect();
    if runs.is_empty() {
        return Cell::NotRun(failure.unwrap_or_else(|| "no runs".to_string()));
    }
    let n = runs.len() as f64;
    // A failed round counts as errors, so a flaky target cannot look clean.
    let failed_rounds = u64::from(failure.is_some());
    let tps = runs.iter().map(|o| o.tps).sum::<f64>() / n;
    let (lo, hi) = runs.iter().fold((f64::INFINITY, 0f64), |(lo, hi), o| {
        (lo.min(o.tps), hi.max(o.tps))
    });
    let mean = Outcome {
        tps,
        latency_ms: runs.iter().map(|o| o.latency_ms).sum::<f64>() / n,
        errors: runs.iter().map(|o| o.errors).sum::<u64>() + failed_rounds,
        transactions: runs.iter().map(|o| o.transactions).sum(),
        pooler_cpu_us_per_tx: mean_of_all(runs.iter().map(|o| o.pooler_cpu_us_per_tx)),
        postgres_cpu_us_per_tx: mean_of_all(runs.iter().map(|o| o.postgres_cpu_us_per_tx)),
        pgbench_cpu_us_per_tx: mean_of_all(runs.iter().map(|o| o.pgbench_cpu_us_per_tx)),
        machine_cpu_us_per_tx: mean_of_all(runs.iter().map(|o| o.machine_cpu_us_per_tx)),
    };
    Cell::Measured {
        mean,
        tps_spread_pct: if tps > 0.0 {
            (hi - lo) * 100.0 / tps
        } else {
            0.0
        },
        rounds: rounds.to_vec(),
    }
}

/// Mean of the values if every run has one.
fn mean_of_all(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Option<Vec<f64>> = values.collect();
    let values = values.filter(|v| !v.is_empty())?;
    Some(values.iter().sum::<f64>() / values.len() as f64)
}
