//! Timeouts, reload and drain against a real PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, connect, scalar, sqlstate, start_relay, try_connect, try_scalar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_and_wait_timeouts_end_cleanly() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(
        &cluster,
        "pool_mode: transaction\ndefault_pool_size: 1\nidle_transaction_timeout: 1500ms\n\
         query_wait_timeout: 500ms",
    )
    .await;
    let holder = relay.connect(&cluster).await;
    holder.batch_execute("BEGIN").await.unwrap();
    // The only server is held: another client's query waits, then fails.
    let waiter = relay.connect(&cluster).await;
    let started = Instant::now();
    let err = try_scalar(&waiter, "SELECT 1")
        .await
        .expect_err("no server free");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sqlstate(&err).as_deref(), Some("08P01"), "{err}");
    // The holder sits idle in its transaction past the timeout: disconnected,
    // and its server is free again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(holder.is_closed() || try_scalar(&holder, "SELECT 1").await.is_err());
    let fresh = relay.connect(&cluster).await;
    assert_eq!(scalar(&fresh, "SELECT 'free'").await, "free");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_new_userlist_without_dropping_clients() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "pool_mode: transaction\nauth_type: plain").await;
    let (user, password) = cluster.app_user();
    let existing = relay.connect(&cluster).await;
    // A userlist entry for a user the server also knows, under a new password.
    let userlist = relay.dir.path().join("userlist.txt");
    let running = relay.running.as_ref().unwrap();
    let mut config = running.app.config();
    std::fs::write(&userlist, format!("\"{user}\" \"rotated\"\n")).unwrap();
    // The server still has the old password: keep it as the database's password.
    let db = config.databases.get_mut(cluster.database()).unwrap();
    db.password = Some(pgrelay::config::Secret::new(password));
    running.app.reload(config, &running.pools).expect("reload");
    let conn = |pw: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} password={pw} dbname={}",
            relay.port,
            cluster.database()
        )
    };
    let Err(refused) = try_connect(&conn(password)).await else {
        panic!("old password accepted after the reload");
    };
    assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"));
    let rotated = connect(&conn("rotated")).await;
    assert_eq!(scalar(&rotated, "SELECT 'new'").await, "new");
    assert_eq!(scalar(&existing, "SELECT 'still here'").await, "still here");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_open_transaction_commit_then_closes() {
    let cluster = cluster(0, false).await;
    cluster
        .primary()
        .sql_in(
            cluster.database(),
            "create table drained (x int); grant all on drained to app",
        )
        .unwrap();
    let mut relay = start_relay(&cluster, "pool_mode: transaction\nshutdown_timeout: 10s").await;
    let client = relay.connect(&cluster).await;
    let idle_client = relay.connect(&cluster).await;
    client
        .batch_execute("BEGIN; INSERT INTO drained VALUES (1)")
        .await
        .unwrap();
    let running = relay.running.take().unwrap();
    let port = relay.port;
    let drain = tokio::spawn(running.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stopped accepting; the open transaction still commits.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "new connections are refused while draining"
    );
    client
        .batch_execute("INSERT INTO drained VALUES (2); COMMIT")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("drain finishes once the transaction ended")
        .unwrap();
    assert!(
        idle_client.simple_query("SELECT 1").await.is_err(),
        "idle client closed"
    );
    let rows = cluster
        .primary()
        .sql_in(cluster.database(), "select count(*) from drained")
        .unwrap();
    assert_eq!(rows.trim(), "2", "nothing committed was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ended_while_pooled_is_replaced_before_a_client_gets_it() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "pool_mode: transaction\ndefault_pool_size: 1").await;
    let client = relay.connect(&cluster).await;
    let first = scalar(&client, "SELECT pg_backend_pid()").await;
    // Ended from outside while idle in the pool: PostgreSQL sends a FATAL and closes.
    let ended = cluster
        .primary()
        .sql(&format!("select pg_terminate_backend({first})"))
        .unwrap();
    assert_eq!(ended.trim(), "t");
    let gone_by = Instant::now() + Duration::from_secs(5);
    while cluster
        .primary()
        .sql(&format!(
            "select count(*) from pg_stat_activity where pid = {first}"
        ))
        .unwrap()
        .trim()
        != "0"
    {
        assert!(Instant::now() < gone_by, "backend {first} did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = try_scalar(&client, "SELECT pg_backend_pid()")
        .await
        .expect("a fresh server, not the ended one");
    assert_ne!(first, second);
    relay.stop().await;
}

/// PgBouncer's `client_login_timeout` bounds the whole login: a client that
/// sends its startup packet late gets only what is left of the limit to
/// answer the password request, not a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_login_timeout_bounds_the_whole_login() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "client_login_timeout: 2s").await;
    let (user, _) = cluster.app_user();
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
        .await
        .unwrap();
    let connected = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    socket
        .write_all(&common::startup_packet(user, cluster.database()))
        .await
        .unwrap();
    // The password request comes; the answer never does.
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let elapsed = connected.elapsed();
    assert!(closed.is_ok(), "the connection was never closed");
    assert_eq!(seen.first(), Some(&b'R'), "an authentication request first");
    assert!(
        elapsed >= Duration::from_millis(1900),
        "closed early: {elapsed:?}"
    );
    // A fresh 2 s for the password would close it at about 3.5 s.
    assert!(
        elapsed < Duration::from_millis(3000),
        "closed at {elapsed:?}"
    );
    relay.stop().await;
}

/// A login's database is looked up again after a reload: one removed from
/// the configuration is refused, though clients logged in to it before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_removed_by_reload_is_refused_to_new_logins() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "pool_mode: transaction").await;
    let existing = relay.connect(&cluster).await;
    let again = relay.connect(&cluster).await;
    assert_eq!(scalar(&again, "SELECT 1").await, "1");
    let running = relay.running.as_ref().unwrap();
    let mut config = running.app.config();
    config.databases.remove(cluster.database());
    running.app.reload(config, &running.pools).expect("reload");
    let Err(refused) = try_connect(&relay.conn_string(&cluster)).await else {
        panic!("a login to a removed database was accepted");
    };
    assert_eq!(sqlstate(&refused).as_deref(), Some("3D000"));
    assert_eq!(scalar(&existing, "SELECT 'still here'").await, "still here");
    relay.stop().await;
}
