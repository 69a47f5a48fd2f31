//! Several pgrelay processes behind one address (a Kubernetes Service, a
//! load balancer): a client's cancel arrives on a new connection that may
//! reach a process other than the one running its query. With
//! `cancel_peers` that process passes it on; without, it is lost.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// pgrelay on `port` in front of the primary, passing unknown cancels to `peers`.
async fn relay_on(cluster: &pgrelay_testcontainers::Cluster, port: u16, peers: &[u16]) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let userlist = write_userlist(cluster, dir.path());
    let peers: Vec<String> = peers.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let yaml = format!(
        "listen_addr: 127.0.0.1\nlisten_port: {port}\nauth_file: {}\n\
         server_tls_sslmode: disable\nmetrics_addr: off\npool_mode: transaction\n\
         cancel_peers: [{}]\n\
         databases:\n  {db}:\n    host: 127.0.0.1\n    port: {pg}\n",
        userlist.display(),
        peers.join(", "),
        db = cluster.database(),
        pg = cluster.port(),
    );
    start_yaml(dir, &yaml, &BTreeMap::new()).await
}

/// Waits until `n` `pg_sleep(2)` queries run on the primary: a cancel that
/// reaches a backend before it started its query is dropped by PostgreSQL.
async fn until_sleeping(cluster: &pgrelay_testcontainers::Cluster, n: i64) {
    let direct = superuser_direct(cluster).await;
    for _ in 0..200 {
        let running: i64 = direct
            .query_one(
                "select count(*) from pg_stat_activity \
                 where state = 'active' and query = 'select pg_sleep(2)'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{n} queries did not start");
}

/// Runs a long query on `client` and cancels it through `other_port`, a
/// different pgrelay than the one the client is connected to.
async fn cancel_through(
    cluster: &pgrelay_testcontainers::Cluster,
    client: tokio_postgres::Client,
    other_port: u16,
) -> (Result<(), tokio_postgres::Error>, Duration) {
    let token = client.cancel_token();
    let started = Instant::now();
    let query =
        tokio::spawn(async move { client.simple_query("select pg_sleep(2)").await.map(|_| ()) });
    until_sleeping(cluster, 1).await;
    let other = TcpStream::connect(("127.0.0.1", other_port)).await.unwrap();
    token
        .cancel_query_raw(other, tokio_postgres::NoTls)
        .await
        .expect("the cancel connection is accepted");
    let outcome = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the query ends")
        .unwrap();
    (outcome, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaching_another_pgrelay_is_passed_on_to_the_one_running_the_query() {
    let cluster = cluster(0, false).await;
    let (a_port, b_port, lone_port) = (free_port(), free_port(), free_port());
    // Each lists both, itself included, as one headless Service name would.
    let a = relay_on(&cluster, a_port, &[a_port, b_port]).await;
    let b = relay_on(&cluster, b_port, &[a_port, b_port]).await;
    let lone = relay_on(&cluster, lone_port, &[]).await;

    let (outcome, took) = cancel_through(&cluster, b.connect(&cluster).await, a_port).await;
    let err = outcome.expect_err("the query on b is cancelled through a");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(
        took < Duration::from_millis(1900),
        "cancelled after {took:?}"
    );

    // Keys no peer holds end after one pass: a forwarded cancel is never
    // passed on again, so a and b listing each other (and themselves) cannot
    // loop.
    let started = Instant::now();
    let mut bogus = TcpStream::connect(("127.0.0.1", a_port)).await.unwrap();
    let mut packet = Vec::new();
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&7i32.to_be_bytes());
    packet.extend_from_slice(&9i32.to_be_bytes());
    tokio::io::AsyncWriteExt::write_all(&mut bogus, &packet)
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut bogus, &mut rest),
    )
    .await
    .expect("a closes the cancel connection once its peers have")
    .unwrap();
    assert!(rest.is_empty(), "a cancel gets no answer: {rest:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Sent to a pgrelay without cancel_peers, the same cancel is lost: the
    // query runs out.
    let (outcome, took) = cancel_through(&cluster, b.connect(&cluster).await, lone_port).await;
    outcome.expect("lone passes nothing on, so b's query is not cancelled");
    assert!(took >= Duration::from_secs(2), "ended after {took:?}");

    // Both peers still serve.
    assert_eq!(scalar(&a.connect(&cluster).await, "select 1").await, "1");
    assert_eq!(scalar(&b.connect(&cluster).await, "select 1").await, "1");
    for relay in [a, b, lone] {
        relay.stop().await;
    }
}

/// pgrelay sharing `port` on 127.0.0.1 through `so_reuseport`, plus its own
/// address `own` on the same port, which its peers reach it on.
fn reuseport_yaml(
    cluster: &pgrelay_testcontainers::Cluster,
    dir: &tempfile::TempDir,
    port: u16,
    own: &str,
    peers: &[&str],
) -> String {
    let userlist = write_userlist(cluster, dir.path());
    let peers: Vec<String> = peers.iter().map(|p| format!("{p}:{port}")).collect();
    format!(
        "listen_addr: 127.0.0.1,{own}\nlisten_port: {port}\nso_reuseport: true\n\
         auth_file: {}\nserver_tls_sslmode: disable\nmetrics_addr: off\n\
         pool_mode: transaction\ncancel_peers: [{}]\nadmin_users: {su}\n\
         databases:\n  {db}:\n    host: 127.0.0.1\n    port: {pg}\n",
        userlist.display(),
        peers.join(", "),
        su = cluster.superuser().0,
        db = cluster.database(),
        pg = cluster.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_port_serve_its_clients_and_cancel_their_queries() {
    let cluster = cluster(0, false).await;
    let port = free_port();
    let peers = ["127.0.0.2", "127.0.0.3"];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let yaml_a = reuseport_yaml(&cluster, &dir_a, port, peers[0], &peers);
    let yaml_b = reuseport_yaml(&cluster, &dir_b, port, peers[1], &peers);
    let a = start_yaml(dir_a, &yaml_a, &BTreeMap::new()).await;
    let b = start_yaml(dir_b, &yaml_b, &BTreeMap::new()).await;

    // Without so_reuseport the shared address is taken.
    let dir_c = tempfile::tempdir().unwrap();
    let yaml_c = reuseport_yaml(&cluster, &dir_c, port, "127.0.0.4", &[])
        .replace("so_reuseport: true", "so_reuseport: false");
    let path = dir_c.path().join("pgrelay.yaml");
    let config = pgrelay::config::Config::load_from_str(&path, &yaml_c, &BTreeMap::new()).unwrap();
    assert!(
        pgrelay::app::start_from(config, None).await.is_err(),
        "a third process binds the shared port only with so_reuseport"
    );

    // The kernel spreads clients over both (all 16 on one: p ≈ 3e-5).
    let shared = a.conn_string(&cluster);
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(connect(&shared).await);
    }
    let (su, su_pw) = cluster.superuser();
    let mut served = Vec::new();
    for own in peers {
        let console = connect(&format!(
            "host={own} port={port} user={su} password={su_pw} dbname=pgbouncer"
        ))
        .await;
        let rows = console_rows(&console, "SHOW POOLS").await;
        let row = rows
            .iter()
            .find(|r| r["database"] == cluster.database())
            .expect("the pool's row");
        served.push(row["cl_active"].parse::<u32>().unwrap());
    }
    assert_eq!(served.iter().sum::<u32>(), 16, "{served:?}");
    assert!(served.iter().all(|&n| n > 0), "{served:?}");

    // Every client's cancel reaches its query, whichever process the
    // kernel hands the cancel connection to.
    let started = Instant::now();
    let mut queries = Vec::new();
    for client in clients {
        let token = client.cancel_token();
        let query =
            tokio::spawn(
                async move { client.simple_query("select pg_sleep(2)").await.map(|_| ()) },
            );
        queries.push((token, query));
    }
    until_sleeping(&cluster, 16).await;
    for (token, _) in &queries {
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("cancel sent");
    }
    for (_, query) in queries {
        let err = tokio::time::timeout(Duration::from_secs(10), query)
            .await
            .expect("the query ends")
            .unwrap()
            .expect_err("cancelled");
        assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    a.stop().await;
    b.stop().await;
}
