//! pgrelay as its own process (the release binary cargo built for this
//! bench), so its memory is measured alone.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{BenchError, Result};
use crate::pooler::{temp_dir, PoolerSettings, RunningPooler, Upstream};
use crate::process::{free_port, ChildGuard};

/// The `pgrelay` binary of this package, built by `cargo bench`.
pub const BINARY: &str = env!("CARGO_BIN_EXE_pgrelay");

pub fn start(upstream: &Upstream, settings: PoolerSettings) -> Result<RunningPooler> {
    start_with(upstream, settings, PRIMARY, "")
}

/// pgrelay on the primary, serving every client from one thread.
pub fn start_one_thread(upstream: &Upstream, settings: PoolerSettings) -> Result<RunningPooler> {
    start_configured(upstream, settings, PRIMARY, "worker_threads: 1\n", "")
}

/// pgrelay on the primary under tokio's work-stealing scheduler.
pub fn start_work_stealing(upstream: &Upstream, settings: PoolerSettings) -> Result<RunningPooler> {
    start_configured(
        upstream,
        settings,
        PRIMARY,
        "scheduler: work_stealing\n",
        "",
    )
}

/// pgrelay on the primary, its threads sleeping as soon as they run out of work.
pub fn start_no_idle_poll(upstream: &Upstream, settings: PoolerSettings) -> Result<RunningPooler> {
    start_configured(upstream, settings, PRIMARY, "idle_poll_time: 0\n", "")
}

/// pgrelay without routing, its database on the harness's first replica.
pub fn start_on_replica(upstream: &Upstream, settings: PoolerSettings) -> Result<RunningPooler> {
    start_with(upstream, settings, FIRST_REPLICA, "")
}

const PRIMARY: [u8; 4] = [127, 0, 0, 1];
const FIRST_REPLICA: [u8; 4] = [127, 0, 0, 2];
const SECOND_REPLICA: [u8; 4] = [127, 0, 0, 3];

/// pgrelay routing reads to the harness's two replicas (127.0.0.2 and
/// 127.0.0.3 on the primary's port), with the default balancer.
pub fn start_routing(upstream: &Upstream, settings: PoolerSettings) -> Result<RunningPooler> {
    let replicas = [
        SocketAddr::from((FIRST_REPLICA, upstream.port)),
        SocketAddr::from((SECOND_REPLICA, upstream.port)),
    ];
    start_with_replicas(upstream, settings, &replicas, DEFAULT_BALANCE)
}

/// pgrelay routing every read to the harness's first replica (127.0.0.2).
pub fn start_routing_one_replica(
    upstream: &Upstream,
    settings: PoolerSettings,
) -> Result<RunningPooler> {
    let replica = SocketAddr::from((FIRST_REPLICA, upstream.port));
    start_with_replicas(upstream, settings, &[replica], DEFAULT_BALANCE)
}

/// pgrelay's default read balancing strategy.
pub const DEFAULT_BALANCE: &str = "p2c_ewma";

/// How often pgrelay probes each replica in these benches.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// pgrelay routing reads to `replicas` with the `balance` strategy.
pub fn start_with_replicas(
    upstream: &Upstream,
    settings: PoolerSettings,
    replicas: &[SocketAddr],
    balance: &str,
) -> Result<RunningPooler> {
    let hosts: Vec<String> = replicas.iter().map(|a| format!("\"{a}\"")).collect();
    let yaml = format!(
        "    replicas:\n      hosts: [{hosts}]\n      balance: {balance}\n      \
         health_check_interval: {interval}ms\n",
        hosts = hosts.join(", "),
        interval = HEALTH_CHECK_INTERVAL.as_millis(),
    );
    start_with(upstream, settings, PRIMARY, &yaml)
}

fn start_with(
    upstream: &Upstream,
    settings: PoolerSettings,
    host: [u8; 4],
    db_extra: &str,
) -> Result<RunningPooler> {
    start_configured(upstream, settings, host, "", db_extra)
}

/// pgrelay with `top_extra` among the top-level settings and `db_extra`
/// appended to its one database's.
fn start_configured(
    upstream: &Upstream,
    settings: PoolerSettings,
    host: [u8; 4],
    top_extra: &str,
    db_extra: &str,
) -> Result<RunningPooler> {
    let dir = temp_dir("pgrelay-bench-")?;
    let userlist = upstream.write_userlist(dir.path())?;
    let port = free_port()?;
    let host = std::net::Ipv4Addr::from(host);
    let yaml = format!(
        "{top_extra}{}{db_extra}",
        config_yaml(upstream, settings, port, &userlist, host)
    );
    let config = dir.path().join("pgrelay.yaml");
    std::fs::write(&config, yaml).map_err(|e| BenchError::io("writing pgrelay.yaml", e))?;
    let mut cmd = Command::new(BINARY);
    cmd.arg("run").arg("-c").arg(&config);
    // A clean environment: stray PGBOUNCER_* variables would change the config.
    cmd.env_clear().env("PGRELAY_LOG", "warn");
    let log = dir.path().join("pgrelay.log");
    let process = ChildGuard::spawn_listening("pgrelay", cmd, &log, port)?;
    Ok(RunningPooler::new(port, process, dir))
}

fn config_yaml(
    upstream: &Upstream,
    s: PoolerSettings,
    port: u16,
    userlist: &Path,
    host: std::net::Ipv4Addr,
) -> String {
    format!(
        "listen_addr: 127.0.0.1\n\
         listen_port: {port}\n\
         metrics_addr: off\n\
         auth_type: {auth}\n\
         auth_file: {userlist}\n\
         server_tls_sslmode: disable\n\
         pool_mode: transaction\n\
         default_pool_size: {pool}\n\
         max_client_conn: {max_clients}\n\
         log_connections: 0\n\
         log_disconnections: 0\n\
         databases:\n  {db}:\n    host: {host}\n    port: {upstream_port}\n",
        auth = s.auth.setting(),
        userlist = userlist.display(),
        pool = s.pool_size,
        max_clients = s.max_client_conn,
        db = upstream.database,
        upstream_port = upstream.port,
    )
}

pub fn version() -> String {
    let rev = crate::process::first_line_of("git", &["rev-parse", "--short", "HEAD"]);
    // The report itself (and stray untracked files) do not make the build dirty.
    let dirty = crate::process::first_line_of(
        "git",
        &[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)BENCHMARKS.md",
        ],
    )
    .is_some();
    match rev {
        Some(rev) if dirty => format!("{rev} (with uncommitted changes)"),
        Some(rev) => rev,
        None => "unknown".to_string(),
    }
}
