//! Primary failover by DNS: the database's host is a name (served by the
//! harness DNS server); when it moves to a promoted replica, new work goes to
//! the new address and pooled servers on the old one are closed.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{metric_sum, scalar, scrape, try_scalar};
use pgrelay_testcontainers::{Cluster, Node};

const OLD: &str = "127.0.0.1";
const NEW: &str = "127.0.0.2";
const CLIENTS: usize = 4;
const WRITE: &str = "INSERT INTO t VALUES (1) RETURNING host(inet_server_addr())";

/// The probe query's prefix: a kept probe connection shows it as its last query.
const PROBE: &str = "query LIKE 'SELECT pg_is_in_recovery(), CASE%'";

fn count(node: &Node, condition: &str) -> usize {
    node.sql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE {condition}"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// pgrelay's pooled server connections on `node` (the app user connects only
/// through it; its health probes log in as app too).
fn app_servers(node: &Node) -> usize {
    count(node, &format!("usename = 'app' AND NOT {PROBE}"))
}

fn probes(node: &Node) -> usize {
    count(node, PROBE)
}

async fn start(cluster: &Cluster) -> common::Relay {
    let dns = cluster.dns().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let userlist = common::write_userlist(cluster, dir.path());
    let yaml = format!(
        "listen_addr: 127.0.0.1\nlisten_port: 0\nauth_file: {}\nserver_tls_sslmode: disable\n\
         metrics_addr: 127.0.0.1:0\npool_mode: transaction\ndefault_pool_size: {CLIENTS}\n\
         databases:\n  {db}:\n    host: {host}\n    port: {port}\n    nameserver: {ns}\n    \
         replicas:\n      hosts: [127.0.0.3]\n      health_check_interval: 200ms\n",
        userlist.display(),
        db = cluster.database(),
        host = dns.fqdn("primary").unwrap(),
        port = cluster.port(),
        ns = dns.addr(),
    );
    common::start_yaml(dir, &yaml, &Default::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_primary_name_and_old_servers_close() {
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::builder()
            .replicas(2)
            .dns(true)
            .start()
            .expect("start cluster with DNS")
    })
    .await
    .unwrap();
    let dns = cluster.dns().unwrap();
    dns.set_a("primary", &[Ipv4Addr::LOCALHOST], 1).unwrap();
    cluster
        .prepare_schema("create table t (v int); grant insert, select on t to app")
        .unwrap();
    let relay = start(&cluster).await;

    // Writers in parallel so the pool holds several servers on the old primary.
    let stop = Arc::new(AtomicBool::new(false));
    let switched_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let late_errors = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..CLIENTS {
        let client = relay.connect(&cluster).await;
        assert_eq!(scalar(&client, WRITE).await, OLD);
        let (stop, switched_at, late_errors) =
            (stop.clone(), switched_at.clone(), late_errors.clone());
        writers.push(tokio::spawn(async move {
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                if let Err(e) = try_scalar(&client, WRITE).await {
                    // Only statements started after the switch and one TTL (plus
                    // a lookup's slack) must succeed.
                    let settled = switched_at
                        .lock()
                        .unwrap()
                        .is_some_and(|t| started > t + Duration::from_secs(2));
                    if settled {
                        late_errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("write failed after the switch: {e}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
        }));
    }
    // A transaction open across the switch: its server goes back at COMMIT.
    let holder = relay.connect(&cluster).await;
    holder.simple_query("BEGIN").await.unwrap();
    assert_eq!(scalar(&holder, WRITE).await, OLD);
    let old_primary = cluster.primary();
    // The primary's WAL-position probe (for the replica's lag) runs there too.
    assert!(common::eventually(Duration::from_secs(5), || probes(old_primary) == 1).await);
    assert!(
        common::eventually(Duration::from_secs(5), || app_servers(old_primary) >= 2).await,
        "pooled servers on the old primary"
    );

    let promoted = &cluster.replicas()[0];
    tokio::task::block_in_place(|| promoted.promote()).unwrap();
    dns.set_a("primary", &[promoted.addr()], 1).unwrap();
    *switched_at.lock().unwrap() = Some(Instant::now());
    let switch = Instant::now();

    let probe = relay.connect(&cluster).await;
    let deadline = switch + Duration::from_secs(10);
    while scalar(&probe, WRITE).await != NEW {
        assert!(Instant::now() < deadline, "writes never reached {NEW}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "writes reached the new primary {:?} after the DNS change",
        switch.elapsed()
    );
    // Writers keep going for a while on the new primary.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut clients = Vec::new();
    for w in writers {
        clients.push(w.await.unwrap());
    }
    // Each client's next transactions land on the new primary.
    for client in &clients {
        for _ in 0..3 {
            assert_eq!(scalar(client, WRITE).await, NEW);
        }
    }
    // Only the holder's server is left there; it closes at release instead
    // of returning to the pool.
    assert!(
        common::eventually(Duration::from_secs(5), || app_servers(old_primary) == 1).await,
        "servers left on the old primary besides the open transaction: {}",
        app_servers(old_primary)
    );
    holder.simple_query("COMMIT").await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || app_servers(old_primary) == 0).await,
        "servers left on the old primary: {}",
        app_servers(old_primary)
    );
    assert!(app_servers(promoted) >= 1);
    // The primary probe followed the name.
    assert!(
        common::eventually(Duration::from_secs(5), || probes(old_primary) == 0
            && probes(promoted) == 1)
        .await,
        "probes: old {} new {}",
        probes(old_primary),
        probes(promoted)
    );
    assert_eq!(
        late_errors.load(Ordering::Relaxed),
        0,
        "errors after the switch"
    );
    assert!(switch.elapsed() < Duration::from_secs(20));

    let text = scrape(relay.running.as_ref().unwrap().metrics_addr.unwrap()).await;
    let moved = metric_sum(
        &text,
        "pgrelay_topology_events_total",
        &["event=\"primary_moved\""],
    );
    assert_eq!(moved, 1.0, "{text}");
    relay.stop().await;
}
