//! SCRAM pass-through: a userlist holding the server's SCRAM secret (as
//! copied from `pg_authid`) and no password anywhere in pgrelay's
//! configuration. A client's SCRAM login gives pgrelay what it needs to log
//! in to the server, as with PgBouncer.

mod common;

use common::{connect, scalar, sqlstate, try_connect};
use pgrelay_testcontainers::Cluster;

/// The app user's SCRAM secret as PostgreSQL stores it.
async fn stored_secret(cluster: &Cluster) -> String {
    let (su, _) = cluster.superuser();
    let admin = connect(&cluster.conn_string(cluster.primary(), su)).await;
    let (app, _) = cluster.app_user();
    let secret = scalar(
        &admin,
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{app}'"),
    )
    .await;
    assert!(secret.starts_with("SCRAM-SHA-256$"), "{secret}");
    secret
}

/// pgrelay with `userlist` as its auth_file, transaction pooling, no
/// password for the database.
async fn relay(cluster: &Cluster, auth_type: &str, userlist: &str) -> common::Relay {
    let dir = tempfile::tempdir().unwrap();
    let userlist_path = dir.path().join("userlist.txt");
    std::fs::write(&userlist_path, userlist).unwrap();
    let yaml = format!(
        "listen_addr: 127.0.0.1\nlisten_port: 0\nmetrics_addr: off\nauth_type: {auth_type}\n\
         auth_file: {}\nserver_tls_sslmode: disable\npool_mode: transaction\n\
         databases:\n  {db}:\n    host: 127.0.0.1\n    port: {port}\n",
        userlist_path.display(),
        db = cluster.database(),
        port = cluster.port(),
    );
    common::start_yaml(dir, &yaml, &Default::default()).await
}

fn conn(relay: &common::Relay, cluster: &Cluster, password: &str) -> String {
    let (app, _) = cluster.app_user();
    format!(
        "host=127.0.0.1 port={} user={app} password={password} dbname={}",
        relay.port,
        cluster.database()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scram_secret_in_the_userlist_logs_in_to_the_server_with_the_clients_keys() {
    let cluster = common::cluster(0, false).await;
    let (app, password) = cluster.app_user();
    let secret = stored_secret(&cluster).await;
    let relay = relay(
        &cluster,
        "scram-sha-256",
        &format!("\"{app}\" \"{secret}\"\n"),
    )
    .await;

    let first = connect(&conn(&relay, &cluster, password)).await;
    assert_eq!(scalar(&first, "SELECT current_user").await, app);
    // A second server connection, opened while the first is held in a
    // transaction, logs in with the same kept ClientKey.
    first.batch_execute("BEGIN").await.unwrap();
    let first_pid = scalar(&first, "SELECT pg_backend_pid()").await;
    let second = connect(&conn(&relay, &cluster, password)).await;
    let second_pid = scalar(&second, "SELECT pg_backend_pid()").await;
    assert_ne!(first_pid, second_pid, "two server connections");
    first.batch_execute("COMMIT").await.unwrap();

    let wrong = try_connect(&conn(&relay, &cluster, "not-the-password"))
        .await
        .expect_err("wrong password refused");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "{wrong}");
    relay.stop().await;
}

/// The error of the first server login a client causes: at its own login
/// (which fetches the server's parameters) or at its first query.
async fn server_login_error(conn: &str) -> tokio_postgres::Error {
    match try_connect(conn).await {
        Err(e) => e,
        Ok(client) => client
            .simple_query("SELECT 1")
            .await
            .expect_err("the server login fails"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_scram_login_or_with_a_stale_secret_the_client_gets_a_clear_error() {
    let cluster = common::cluster(0, false).await;
    let (app, password) = cluster.app_user();
    let secret = stored_secret(&cluster).await;
    let userlist = format!("\"{app}\" \"{secret}\"\n");

    // trust: no client ever proves the password, so there is no ClientKey.
    let trusting = relay(&cluster, "trust", &userlist).await;
    let refused = server_login_error(&conn(&trusting, &cluster, "anything")).await;
    assert_eq!(sqlstate(&refused).as_deref(), Some("08004"), "{refused}");
    let message = refused.as_db_error().unwrap().message().to_string();
    assert!(message.contains("SCRAM secret"), "{message}");
    assert!(!message.contains(&secret), "the secret stays out of errors");
    trusting.stop().await;

    // The server's secret changes (same password, new salt): the userlist's
    // no longer matches it, and the server refuses the pass-through proof.
    let (su, _) = cluster.superuser();
    let admin = connect(&cluster.conn_string(cluster.primary(), su)).await;
    admin
        .batch_execute(&format!("ALTER ROLE {app} PASSWORD '{password}'"))
        .await
        .unwrap();
    let stale = relay(&cluster, "scram-sha-256", &userlist).await;
    let refused = server_login_error(&conn(&stale, &cluster, password)).await;
    assert_eq!(sqlstate(&refused).as_deref(), Some("08004"), "{refused}");
    stale.stop().await;
}
