//! Replica pools: DNS discovery (A and SRV), joining and draining replicas,
//! failures under load, and lag.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{scalar, start_relay_with_db, try_scalar};
use pgrelay_testcontainers::Cluster;

async fn dns_cluster(replicas: usize) -> Cluster {
    tokio::task::spawn_blocking(move || {
        Cluster::builder()
            .replicas(replicas)
            .dns(true)
            .start()
            .expect("start cluster with DNS")
    })
    .await
    .unwrap()
}

/// Reads until `want` has served one, or panics after `limit`.
async fn wait_until_read_on(client: &tokio_postgres::Client, want: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if scalar(client, "SELECT inet_server_addr()").await == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{want} never served a read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until `gone` has served none of `n` reads in a row, or panics after `limit`.
async fn wait_until_not_read_on(
    client: &tokio_postgres::Client,
    gone: &str,
    n: usize,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut streak = 0;
    while streak < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{gone} kept serving reads"
        );
        if scalar(client, "SELECT inet_server_addr()").await == gone {
            streak = 0;
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else {
            streak += 1;
        }
    }
}

async fn read_spread(client: &tokio_postgres::Client, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts
            .entry(scalar(client, "SELECT inet_server_addr()").await)
            .or_default() += 1;
    }
    counts
}

fn replicas_yaml(source: &str, cluster: &Cluster, extra: &str) -> String {
    format!(
        "    replicas:\n      {source}\n      nameserver: {}\n      min_ttl: 200ms\n      \
         health_check_interval: 200ms\n      balance: round_robin\n{extra}",
        cluster.dns().expect("dns").addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_discovered_a_new_replica_joins_and_a_removed_one_drains() {
    let cluster = dns_cluster(3).await;
    let dns = cluster.dns().unwrap();
    let two: Vec<Ipv4Addr> = cluster.replicas()[..2].iter().map(|r| r.addr()).collect();
    dns.set_a("replicas", &two, 1).unwrap();
    let yaml = replicas_yaml("dns: replicas.pgrelay.test.", &cluster, "");
    let relay = start_relay_with_db(&cluster, "pool_mode: transaction", &yaml).await;
    let client = relay.connect(&cluster).await;
    for addr in ["127.0.0.2", "127.0.0.3"] {
        wait_until_read_on(&client, addr, Duration::from_secs(15)).await;
    }
    let spread = read_spread(&client, 100).await;
    assert!(
        !spread.contains_key("127.0.0.4"),
        "not yet in DNS: {spread:?}"
    );

    // A third record: in rotation within about one TTL (1 s) plus two health checks.
    let all: Vec<Ipv4Addr> = cluster.replicas().iter().map(|r| r.addr()).collect();
    dns.set_a("replicas", &all, 1).unwrap();
    let joined = std::time::Instant::now();
    wait_until_read_on(&client, "127.0.0.4", Duration::from_secs(10)).await;
    println!(
        "third replica took reads {:?} after the DNS change",
        joined.elapsed()
    );

    // Remove 127.0.0.2 while clients keep reading: no query fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let c = relay.connect(&cluster).await;
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match try_scalar(&c, "SELECT inet_server_addr()").await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    dns.set_a("replicas", &all[1..], 1).unwrap();
    wait_until_not_read_on(&client, "127.0.0.2", 50, Duration::from_secs(15)).await;
    let spread = read_spread(&client, 100).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "queries failed during the drain"
    );
    assert!(done.load(Ordering::Relaxed) > 100);
    assert!(
        !spread.contains_key("127.0.0.2"),
        "drained replica still read: {spread:?}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_are_discovered() {
    let cluster = dns_cluster(2).await;
    let yaml = replicas_yaml("srv: _postgresql._tcp.replicas.pgrelay.test.", &cluster, "");
    let relay = start_relay_with_db(&cluster, "pool_mode: transaction", &yaml).await;
    let client = relay.connect(&cluster).await;
    for addr in ["127.0.0.2", "127.0.0.3"] {
        wait_until_read_on(&client, addr, Duration::from_secs(15)).await;
    }
    let spread = read_spread(&client, 200).await;
    assert!(!spread.contains_key("127.0.0.1"), "{spread:?}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_takes_no_reads_until_it_catches_up() {
    let cluster = dns_cluster(2).await;
    cluster
        .primary()
        .sql_in(
            cluster.database(),
            "create table lag (x int); grant all on lag to app",
        )
        .unwrap();
    let yaml = replicas_yaml(
        "hosts: [127.0.0.2, 127.0.0.3]",
        &cluster,
        "      max_lag_bytes: 100000\n",
    );
    let relay = start_relay_with_db(&cluster, "pool_mode: transaction", &yaml).await;
    let client = relay.connect(&cluster).await;
    for addr in ["127.0.0.2", "127.0.0.3"] {
        wait_until_read_on(&client, addr, Duration::from_secs(15)).await;
    }
    let lagging = &cluster.replicas()[0];
    lagging.pause_replay().unwrap();
    cluster
        .primary()
        .sql_in(
            cluster.database(),
            "insert into lag select generate_series(1, 20000)",
        )
        .unwrap();
    // A few health checks later the paused replica is out of rotation.
    wait_until_not_read_on(&client, "127.0.0.2", 50, Duration::from_secs(15)).await;
    let spread = read_spread(&client, 200).await;
    assert!(
        !spread.contains_key("127.0.0.2"),
        "lagging replica was read: {spread:?}"
    );
    assert!(spread.contains_key("127.0.0.3"), "{spread:?}");
    lagging.resume_replay().unwrap();
    wait_until_read_on(&client, "127.0.0.2", Duration::from_secs(15)).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_under_load_moves_reads_and_it_is_readmitted() {
    let cluster = dns_cluster(2).await;
    let yaml = replicas_yaml("hosts: [127.0.0.2, 127.0.0.3]", &cluster, "");
    let relay = start_relay_with_db(
        &cluster,
        "pool_mode: transaction\ndefault_pool_size: 8",
        &yaml,
    )
    .await;
    let client = relay.connect(&cluster).await;
    for addr in ["127.0.0.2", "127.0.0.3"] {
        wait_until_read_on(&client, addr, Duration::from_secs(15)).await;
    }
    let (user, password) = cluster.app_user();
    // A bounded read load: 4 clients for 6 seconds.
    let load = tokio::process::Command::new(cluster.bin_dir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &relay.port.to_string(), "-U", user])
        .args(["-n", "-c", "4", "-j", "4", "-T", "6", "-f", "-"])
        .arg(cluster.database())
        .env("PGPASSWORD", password)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut load = load;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = load.stdin.take().unwrap();
        stdin
            .write_all(b"SELECT inet_server_addr();\n")
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = &cluster.replicas()[0];
    tokio::task::block_in_place(|| victim.kill());
    let out = tokio::time::timeout(Duration::from_secs(60), load.wait_with_output())
        .await
        .expect("pgbench ends")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let aborted = text
        .lines()
        .filter(|l| l.contains("client ") && l.contains(" aborted in command"))
        .count();
    println!("clients aborted by the kill: {aborted}\n{text}");
    // Only queries in flight on the victim may fail: about half the clients at
    // any moment with two replicas; a client that was not there must survive.
    assert!(
        aborted < 4,
        "every client failed, not just those in flight: {text}"
    );
    assert!(
        text.contains("number of transactions actually processed"),
        "{text}"
    );
    // Reads carry on on the survivor.
    let spread = read_spread(&client, 50).await;
    assert!(!spread.contains_key("127.0.0.2"), "{spread:?}");
    // Restarted, the replica is probed healthy and re-admitted.
    tokio::task::block_in_place(|| victim.start()).unwrap();
    wait_until_read_on(&client, "127.0.0.2", Duration::from_secs(30)).await;
    relay.stop().await;
}
