//! The PgBouncer-image deployment (PGBOUNCER_* variables + userlist) against
//! a cluster with ssl=on, and the server sslmode checks.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{cluster, psql, start_with_config, write_userlist};
use pgrelay::config::Config;
use tokio::net::{TcpListener, TcpStream};

/// The deployment's variables, with what a test must change: the userlist lives
/// in a temp dir, ports are ephemeral (6432 and 9127 may be in use on a test
/// machine), and the database comes from POSTGRESQL_HOST/PORT.
fn deployment_env(userlist: &std::path::Path, db_port: u16) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = common::deployment::DEPLOYMENT_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("PGBOUNCER_AUTH_FILE".into(), userlist.display().to_string());
    env.insert("PGBOUNCER_LISTEN_PORT".into(), "0".into());
    env.insert("PGBOUNCER_LISTEN_ADDR".into(), "127.0.0.1".into());
    env.insert("PGBOUNCER_METRICS_ADDR".into(), "off".into());
    env.insert("POSTGRESQL_HOST".into(), "127.0.0.1".into());
    env.insert("POSTGRESQL_PORT".into(), db_port.to_string());
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_env_serves_psql_with_encrypted_server_connections() {
    let cluster = cluster(0, true).await;
    let dir = tempfile::tempdir().unwrap();
    let userlist = write_userlist(&cluster, dir.path());
    let config = Config::load(None, &deployment_env(&userlist, cluster.port()))
        .expect("the deployment's variables load");
    let relay = start_with_config(config, dir).await;
    let (user, password) = cluster.app_user();
    let (ok, out) = psql(
        &cluster,
        relay.port,
        user,
        password,
        "select 'through pgrelay'",
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "through pgrelay");

    // min_pool_size keeps 5 servers warm; every one of them is encrypted.
    let count = |ssl: bool| {
        cluster
            .primary()
            .sql(&format!(
                "select count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) \
                 where a.usename = 'app' and s.ssl = {ssl}"
            ))
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    let warmed = common::eventually(Duration::from_secs(10), || count(true) >= 5).await;
    assert!(
        warmed,
        "expected 5 encrypted server connections, saw {}",
        count(true)
    );
    assert_eq!(count(false), 0, "no plaintext server connection");
    relay.stop().await;
}

/// Forwards a loopback address the server's certificate does not name to the primary.
async fn relay_address(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.9:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_server_whose_certificate_does_not_match() {
    let cluster = cluster(0, true).await;
    let ca = cluster
        .ca_cert_path()
        .expect("ssl cluster has a CA")
        .to_path_buf();
    let (alias, forwarder) = relay_address(cluster.primary().socket_addr()).await;
    let (user, password) = cluster.app_user();
    for (mode, host, expect_ok) in [
        ("verify-full", "127.0.0.1".to_string(), true),
        ("verify-full", alias.ip().to_string(), false),
        ("verify-ca", alias.ip().to_string(), true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let userlist = write_userlist(&cluster, dir.path());
        let port = if host == "127.0.0.1" {
            cluster.port()
        } else {
            alias.port()
        };
        let yaml = format!(
            "listen_addr: 127.0.0.1\nlisten_port: 0\nmetrics_addr: off\nauth_type: plain\n\
             auth_file: {}\nserver_tls_sslmode: {mode}\nserver_tls_ca_file: {}\n\
             server_login_retry: 0\ndatabases:\n  app:\n    host: {host}\n    port: {port}\n",
            userlist.display(),
            ca.display()
        );
        let config = Config::load_from_str(&dir.path().join("c.yaml"), &yaml, &BTreeMap::new())
            .expect("valid config");
        let relay = start_with_config(config, dir).await;
        let (ok, out) = psql(&cluster, relay.port, user, password, "select 1").await;
        assert_eq!(ok, expect_ok, "{mode} to {host}: {out}");
        if !expect_ok {
            assert!(
                out.contains("08006") || out.to_lowercase().contains("certificate"),
                "{out}"
            );
        }
        relay.stop().await;
    }
    forwarder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_over_tls_and_plaintext_is_refused_when_required() {
    let cluster = cluster(0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
    let cert_path = dir.path().join("pgrelay.crt");
    let key_path = dir.path().join("pgrelay.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let relay = common::start_relay(
        &cluster,
        &format!(
            "auth_type: scram-sha-256\nclient_tls_sslmode: require\nclient_tls_cert_file: {}\n\
             client_tls_key_file: {}",
            cert_path.display(),
            key_path.display()
        ),
    )
    .await;
    let (user, password) = cluster.app_user();
    let run = |sslmode: &str| {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={user} dbname={} sslmode={sslmode}",
            relay.port,
            cluster.database()
        );
        let cluster = &cluster;
        async move { common::psql_conninfo(cluster, &conninfo, password, "select 'over tls'").await }
    };
    let (ok, out) = run("require").await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "over tls");
    let (ok, out) = run("disable").await;
    assert!(!ok, "plaintext accepted: {out}");
    assert!(out.contains("SSL required"), "{out}");
    relay.stop().await;
}
