//! Node control (stop/kill/start/promote), port handling, TLS and cleanup.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgrelay_testcontainers::{Cluster, Error};

const WAIT: Duration = Duration::from_secs(30);

/// Pids whose command line mentions `dir` (the postmasters of a cluster run
/// as `postgres -D <dir>/<node>/data`). Only this cluster's dir, so clusters
/// of tests running in parallel do not interfere.
fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

fn assert_gone(dir: &Path) {
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert_eq!(
        processes_mentioning(dir),
        Vec::<u32>::new(),
        "orphan processes"
    );
}

#[test]
fn drop_stops_servers_and_removes_the_directory() {
    let cluster = Cluster::builder().replicas(1).start().unwrap();
    let dir = cluster.base_dir().to_path_buf();
    let running = processes_mentioning(&dir);
    assert_eq!(running.len(), 2, "one postmaster per node: {running:?}");
    let pids: Vec<u32> = cluster.nodes().iter().map(|n| n.pid().unwrap()).collect();
    for pid in &pids {
        assert!(running.contains(pid));
    }
    // Open sessions must not keep anything alive either.
    let _session = cluster.primary().sql("SELECT 1").unwrap();
    drop(cluster);
    assert_gone(&dir);
}

#[test]
fn panicking_test_still_cleans_up() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let cluster = Cluster::builder().replicas(1).start().unwrap();
        tx.send(cluster.base_dir().to_path_buf()).unwrap();
        panic!("simulated test failure");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    assert_gone(&rx.recv().unwrap());
}

#[test]
fn parallel_clusters_get_their_own_ports_and_both_work() {
    let spawn = |tag: &'static str| {
        std::thread::spawn(move || {
            let cluster = Cluster::builder().replicas(1).start().unwrap();
            cluster
                .primary()
                .sql(&format!("CREATE TABLE tag AS SELECT '{tag}'::text AS v"))
                .unwrap();
            cluster.wait_caught_up(WAIT).unwrap();
            cluster
        })
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.base_dir(), b.base_dir());
    assert_eq!(a.replicas()[0].sql("SELECT v FROM tag").unwrap(), "a");
    assert_eq!(b.replicas()[0].sql("SELECT v FROM tag").unwrap(), "b");
}

#[test]
fn cluster_moves_off_a_port_taken_on_a_replica_address() {
    // Take a port on 127.0.0.2 only: the primary can start on it, the
    // replica cannot, so the whole cluster must move.
    let blocker = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).unwrap();
    let taken = blocker.local_addr().unwrap().port();
    let cluster = Cluster::builder().replicas(1).port(taken).start().unwrap();
    assert_ne!(cluster.port(), taken);
    assert!(cluster.nodes().iter().all(|n| n.port() == cluster.port()));
    cluster.wait_replicas_streaming(WAIT).unwrap();

    // A node that cannot get its port back reports exactly that.
    let replica = &cluster.replicas()[0];
    replica.stop();
    let squatter = TcpListener::bind(replica.socket_addr()).unwrap();
    match replica.start() {
        Err(Error::PortInUse { node, port }) => {
            assert_eq!((node.as_str(), port), ("replica-1", cluster.port()));
        }
        other => panic!("expected PortInUse, got {other:?}"),
    }
    drop(squatter);
    replica.start().unwrap();
    cluster.wait_replicas_streaming(WAIT).unwrap();
}

#[test]
fn stop_kill_restart_and_promote() {
    let cluster = Cluster::builder().replicas(2).start().unwrap();
    let primary = cluster.primary();
    let (r1, r2) = (&cluster.replicas()[0], &cluster.replicas()[1]);
    primary
        .sql("CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
        .unwrap();

    r1.kill();
    assert!(!r1.is_running());
    assert!(
        r1.sql("SELECT 1").is_err(),
        "killed node refuses connections"
    );
    r1.start().unwrap();
    primary.restart().unwrap();
    primary.sql("INSERT INTO t VALUES (2)").unwrap();
    cluster.wait_replicas_streaming(WAIT).unwrap();
    cluster.wait_caught_up(WAIT).unwrap();
    assert_eq!(r1.sql("SELECT sum(n) FROM t").unwrap(), "3");

    primary.stop();
    r2.promote().unwrap();
    assert!(!r2.is_in_recovery().unwrap());
    r2.sql("INSERT INTO t VALUES (4)").unwrap();
    assert_eq!(r2.sql("SELECT sum(n) FROM t").unwrap(), "7");
    assert!(
        r1.is_in_recovery().unwrap(),
        "the other replica is still a standby"
    );
}

#[test]
fn ssl_cluster_serves_tls_with_a_verifiable_certificate() {
    let cluster = Cluster::builder().replicas(1).ssl(true).start().unwrap();
    let ca_path = cluster.ca_cert_path().expect("ssl cluster has a CA");
    assert_eq!(
        std::fs::read_to_string(ca_path).unwrap(),
        cluster.ca_cert_pem().unwrap()
    );
    let psql = cluster.bin_dir().join("psql");
    for node in cluster.nodes() {
        for (sslmode, expected) in [("verify-full", "t"), ("disable", "f")] {
            let conn = format!(
                "{} sslmode={sslmode} sslrootcert={}",
                cluster.conn_string(node, "app"),
                ca_path.display()
            );
            let output = Command::new(&psql)
                .args(["-XAtq", "-d", &conn, "-c"])
                .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{}: {stderr}", node.name());
            assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), expected);
        }
    }
}

#[test]
fn plain_cluster_has_no_ca_and_app_connects_over_tcp() {
    let cluster = Cluster::builder().replicas(0).start().unwrap();
    assert!(cluster.ca_cert_path().is_none() && cluster.ca_cert_pem().is_none());
    assert!(cluster.dns().is_none());
    let conn = cluster.conn_string(cluster.primary(), "app");
    assert!(conn.contains("password=app_password") && conn.contains("dbname=app"));
    let output = Command::new(cluster.bin_dir().join("psql"))
        .args([
            "-XAtq",
            "-d",
            &conn,
            "-c",
            "SELECT current_user || '@' || host(inet_server_addr())",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "app@127.0.0.1"
    );
    // Wrong password is rejected: scram is enforced over TCP.
    let bad = conn.replace("app_password", "nope");
    let output = Command::new(cluster.bin_dir().join("psql"))
        .args(["-XAtq", "-d", &bad, "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("password authentication failed"));
}
