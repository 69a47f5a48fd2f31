//! `server_tls_sslmode: verify-full` against servers found through DNS: the
//! certificates name the servers only by their DNS names (as a Kubernetes
//! Service's would), so pgrelay must check the name it looked up, not the
//! address the lookup gave.

mod common;

use std::time::Duration;

use common::scalar;
use pgrelay_testcontainers::Cluster;

const WRITE: &str = "INSERT INTO t VALUES (1) RETURNING host(inet_server_addr())";
const READ: &str = "SELECT host(inet_server_addr())";
const PRIMARY: &str = "127.0.0.1";
const REPLICA: &str = "127.0.0.2";

async fn named_cert_cluster() -> Cluster {
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::builder()
            .replicas(1)
            .ssl(true)
            .ssl_names_only(true)
            .dns(true)
            .start()
            .expect("start cluster with DNS and name-only certificates")
    })
    .await
    .unwrap();
    cluster
        .prepare_schema("create table t (v int); grant insert, select on t to app")
        .unwrap();
    cluster
}

/// pgrelay with verify-full towards the DNS-named primary and `replicas`
/// (YAML for the default replica group's source).
async fn start(cluster: &Cluster, replicas: &str) -> common::Relay {
    let dns = cluster.dns().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let userlist = common::write_userlist(cluster, dir.path());
    let yaml = format!(
        "listen_addr: 127.0.0.1\nlisten_port: 0\nauth_file: {}\nmetrics_addr: off\n\
         server_tls_sslmode: verify-full\nserver_tls_ca_file: {ca}\nserver_login_retry: 0\n\
         pool_mode: transaction\n\
         databases:\n  {db}:\n    host: {host}\n    port: {port}\n    nameserver: {ns}\n    \
         replicas:\n      {replicas}\n      health_check_interval: 200ms\n",
        userlist.display(),
        ca = cluster.ca_cert_path().unwrap().display(),
        db = cluster.database(),
        host = dns.fqdn("primary").unwrap(),
        port = cluster.port(),
        ns = dns.addr(),
    );
    common::start_yaml(dir, &yaml, &Default::default()).await
}

/// Reads until one is served by `want`, or gives up after `limit`.
async fn read_reaches(client: &tokio_postgres::Client, want: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if scalar(client, READ).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_names_servers_were_found_under() {
    let cluster = named_cert_cluster().await;
    let dns = cluster.dns().unwrap();
    let zone = dns.zone();
    let zone = zone.trim_end_matches('.');

    for source in [
        format!("dns: replicas.{zone}"),
        format!("srv: _postgresql._tcp.replicas.{zone}"),
    ] {
        let relay = start(&cluster, &source).await;
        let client = relay.connect(&cluster).await;
        assert_eq!(
            scalar(&client, WRITE).await,
            PRIMARY,
            "{source}: a write on the primary, verified as primary.{zone}"
        );
        assert!(
            read_reaches(&client, REPLICA, Duration::from_secs(15)).await,
            "{source}: the replica, verified under its DNS name, never served a read"
        );
        relay.stop().await;
    }

    // A name the replica's certificate does not carry, pointing at it: its
    // probes and connections fail verification, so reads stay on the primary.
    dns.set_a("impostor", &[std::net::Ipv4Addr::new(127, 0, 0, 2)], 1)
        .unwrap();
    let relay = start(&cluster, &format!("dns: impostor.{zone}")).await;
    let client = relay.connect(&cluster).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..50 {
        assert_eq!(
            scalar(&client, READ).await,
            PRIMARY,
            "a read reached a server whose certificate lacks the name it was found under"
        );
    }
    relay.stop().await;
}
