//! Health probes and monitors against a real primary + replica: roles, lag
//! while replay is paused, a killed replica taken out and re-admitted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgrelay::backend::{ConnectOptions, ServerSecret, ServerTlsPolicy};
use pgrelay::cluster::health::{
    probe, spawn_monitor, HealthMonitor, HealthPolicy, HealthSnapshot, MonitorConfig, PgProber,
    ProbeResult, Role, ServerFacts,
};
use pgrelay::shutdown::Shutdown;
use pgrelay_testcontainers::{Cluster, Node};

const WAIT: Duration = Duration::from_secs(20);
const INTERVAL: Duration = Duration::from_millis(200);

fn connect_options(cluster: &Cluster, node: &Node) -> ConnectOptions {
    let (user, password) = cluster.app_user();
    ConnectOptions {
        host: node.host(),
        port: cluster.port(),
        tls_name: None,
        user: user.to_string(),
        database: cluster.database().to_string(),
        secret: ServerSecret::Password(password.to_string()),
        tls: ServerTlsPolicy::disabled(),
        connect_timeout: Duration::from_secs(2),
        max_message: 1 << 20,
    }
}

fn reachable(result: ProbeResult) -> ServerFacts {
    match result {
        ProbeResult::Reachable(facts) => facts,
        ProbeResult::Unreachable { error } => panic!("probe failed: {error}"),
    }
}

fn monitor(
    cluster: &Cluster,
    node: &Node,
    role: Role,
    policy: HealthPolicy,
    primary: Option<&HealthMonitor>,
    shutdown: &Shutdown,
) -> HealthMonitor {
    let config = MonitorConfig {
        label: node.socket_addr().to_string(),
        role,
        interval: INTERVAL,
        timeout: Duration::from_secs(3),
        policy,
    };
    let prober = PgProber::new(connect_options(cluster, node));
    spawn_monitor(
        config,
        prober,
        primary.map(|m| m.subscribe()),
        shutdown.signal(),
    )
}

/// Waits (bounded) until the monitor's snapshot satisfies `done`.
async fn wait_until(
    monitor: &HealthMonitor,
    what: &str,
    done: impl Fn(&HealthSnapshot) -> bool,
) -> Arc<HealthSnapshot> {
    let deadline = Instant::now() + WAIT;
    loop {
        let snap = monitor.current();
        if done(&snap) {
            return snap;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {WAIT:?}; last {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs blocking testcontainers calls without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_roles_lag_and_failures() {
    let cluster = blocking(|| Cluster::builder().replicas(1).start()).expect("cluster");
    let primary = cluster.primary();
    let replica = &cluster.replicas()[0];
    blocking(|| {
        primary.sql("CREATE TABLE health_t (n int)")?;
        cluster.wait_caught_up(WAIT)
    })
    .unwrap();

    // One-off probes: the primary is not in recovery, the replica is, lag ~0.
    let p = reachable(probe(&connect_options(&cluster, primary), None).await);
    assert!(!p.in_recovery);
    let primary_lsn = p.current_lsn.expect("primary reports its LSN");
    let r = reachable(probe(&connect_options(&cluster, replica), Some(primary_lsn)).await);
    assert!(r.in_recovery);
    assert_eq!(r.lag_bytes, Some(0), "caught up: {r:?}");
    assert_eq!(r.lag, Some(Duration::ZERO));
    println!(
        "probe latency primary {:?} replica {:?}",
        p.latency, r.latency
    );

    let shutdown = Shutdown::new();
    let policy = HealthPolicy {
        rise: 2,
        fall: 2,
        ban_base: Duration::from_secs(1),
        ban_max: Duration::from_secs(4),
        max_lag_bytes: Some(1024),
        max_lag: None,
    };
    let primary_mon = monitor(
        &cluster,
        primary,
        Role::Primary,
        policy.clone(),
        None,
        &shutdown,
    );
    let replica_mon = monitor(
        &cluster,
        replica,
        Role::Replica,
        policy.clone(),
        Some(&primary_mon),
        &shutdown,
    );
    // The replica monitored as a primary is flagged, not usable.
    let wrong = monitor(&cluster, replica, Role::Primary, policy, None, &shutdown);
    wait_until(&primary_mon, "primary healthy", |s| s.is_usable()).await;
    wait_until(&replica_mon, "replica healthy", |s| s.is_usable()).await;
    let flagged = wait_until(&wrong, "wrong role", |s| s.state.name() == "wrong_role").await;
    assert!(!flagged.is_usable());
    drop(wrong);

    // Pause replay and write: the replica falls behind in bytes.
    blocking(|| {
        replica.pause_replay()?;
        primary.sql("INSERT INTO health_t SELECT generate_series(1, 5000)")
    })
    .unwrap();
    let lagging = wait_until(&replica_mon, "replica lagging", |s| {
        s.state.name() == "lagging"
    })
    .await;
    let facts = lagging.facts().unwrap();
    println!(
        "lagging replica: {} bytes, delay {:?}",
        facts.lag_bytes.unwrap(),
        facts.lag
    );
    assert!(facts.lag_bytes.unwrap() > 1024);
    assert!(
        facts.receive_lsn > facts.replay_lsn,
        "WAL received but not replayed"
    );

    blocking(|| replica.resume_replay()).unwrap();
    wait_until(&replica_mon, "replica caught up", |s| s.is_usable()).await;

    // Killed: probes fail → unhealthy.
    let started = Instant::now();
    blocking(|| replica.kill());
    let down = wait_until(&replica_mon, "replica unhealthy", |s| {
        s.state.name() == "unhealthy"
    })
    .await;
    println!("killed replica unhealthy after {:?}", started.elapsed());
    assert!(down.failed_probes >= 2);

    // A failure on real traffic bans it; restarted, it comes back only
    // after the ban and `rise` good probes.
    replica_mon.report_connection_failure();
    wait_until(&replica_mon, "replica banned", |s| {
        s.state.name() == "banned"
    })
    .await;
    blocking(|| replica.start()).unwrap();
    let restarted = Instant::now();
    let before = replica_mon.current().probes;
    let back = wait_until(&replica_mon, "replica re-admitted", |s| s.is_usable()).await;
    println!(
        "restarted replica re-admitted after {:?}",
        restarted.elapsed()
    );
    assert!(
        back.probes >= before + 2,
        "at least rise probes after restart"
    );
    assert!(back.facts().unwrap().in_recovery);
    assert!(primary_mon.current().is_usable(), "primary unaffected");

    shutdown.trigger();
}
