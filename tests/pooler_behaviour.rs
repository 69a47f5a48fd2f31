//! Pooling behaviour against a real PostgreSQL: limits, parameter tracking,
//! cleanup of abandoned transactions, cancellation and bad input.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster, connect, sqlstate, start_relay, try_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Server connections the app user holds on the primary, as PostgreSQL counts them.
fn app_backends(cluster: &pgrelay_testcontainers::Cluster) -> usize {
    cluster
        .primary()
        .sql("select count(*) from pg_stat_activity where usename = 'app' and backend_type = 'client backend'")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_a_pool_of_ten() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(
        &cluster,
        "pool_mode: transaction\ndefault_pool_size: 10\nmax_client_conn: 300",
    )
    .await;
    let conn = relay.conn_string(&cluster);
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let conn = conn.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&conn).await;
            for _ in 0..5 {
                let rows = client
                    .simple_query(&format!("select {i}, pg_sleep(0.001)"))
                    .await
                    .expect("query through a shared pool");
                assert!(!rows.is_empty());
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let mut peak = 0;
    let sampler = async {
        while done.load(Ordering::SeqCst) < 200 {
            peak = peak.max(app_backends(&cluster));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let all = async {
        for t in tasks {
            t.await.expect("client task");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(sampler, all)
    })
    .await
    .expect("200 clients finish");
    assert_eq!(done.load(Ordering::SeqCst), 200);
    assert!(peak >= 1, "sampler saw the pool working");
    assert!(
        peak <= 10,
        "server connections peaked at {peak}, pool size is 10"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_only_the_extra_client() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "pool_mode: transaction\nmax_client_conn: 5").await;
    let conn = relay.conn_string(&cluster);
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(connect(&conn).await);
    }
    let Err(err) = try_connect(&conn).await else {
        panic!("sixth client admitted");
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{err}");
    for c in &clients {
        assert_eq!(common::scalar(c, "select 1").await, "1");
    }
    // A slot frees when a client leaves.
    drop(clients.pop());
    let mut ok = None;
    for _ in 0..50 {
        if let Ok(c) = try_connect(&conn).await {
            ok = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok.is_some(), "a freed slot admits a new client");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_parameters_follow_the_client_across_servers_and_do_not_leak() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "pool_mode: transaction\ndefault_pool_size: 2").await;
    let a = relay.connect(&cluster).await;
    let b = relay.connect(&cluster).await;
    a.batch_execute("SET application_name = 'client_a'; SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let first_pid: i32 = common::backend_pid(&a).await;
    // b holds the server a just used, so a's next transaction lands elsewhere.
    b.batch_execute("BEGIN").await.unwrap();
    let b_pid: i32 = common::backend_pid(&b).await;
    let row = a
        .query_one(
            "select pg_backend_pid(), current_setting('application_name'), current_setting('TimeZone')",
            &[],
        )
        .await
        .unwrap();
    let (pid, app, tz): (i32, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_ne!(pid, b_pid);
    if b_pid == first_pid {
        assert_ne!(pid, first_pid, "a moved to another server");
    }
    assert_eq!(app, "client_a");
    assert_eq!(tz, "Asia/Tokyo");
    b.batch_execute("COMMIT").await.unwrap();
    // b, on servers a used, still sees its own defaults.
    for _ in 0..4 {
        let row = b
            .query_one(
                "select current_setting('application_name'), current_setting('TimeZone')",
                &[],
            )
            .await
            .unwrap();
        let (app, tz): (String, String) = (row.get(0), row.get(1));
        assert_ne!(app, "client_a");
        assert_ne!(tz, "Asia/Tokyo");
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_transaction_releases_its_locks() {
    let cluster = cluster(0, false).await;
    cluster
        .primary()
        .sql_in(
            cluster.database(),
            "create table locked(id int primary key); insert into locked values (1); grant all on locked to app",
        )
        .unwrap();
    let relay = start_relay(&cluster, "pool_mode: transaction\ndefault_pool_size: 2").await;
    let conn = relay.conn_string(&cluster);
    let (victim, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    victim
        .batch_execute("BEGIN; SELECT * FROM locked WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    // Kill the client: its socket closes without a Terminate.
    driver.abort();
    drop(victim);
    let other = relay.connect(&cluster).await;
    let started = Instant::now();
    other
        .batch_execute(
            "SET lock_timeout = '1s'; BEGIN; SELECT * FROM locked WHERE id = 1 FOR UPDATE; COMMIT",
        )
        .await
        .expect("row lock is free within a second");
    assert!(started.elapsed() < Duration::from_secs(2));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_running_query_and_a_wrong_key_does_nothing() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "pool_mode: transaction").await;
    let client = relay.connect(&cluster).await;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let started = Instant::now();
    let err = client
        .simple_query("select pg_sleep(30)")
        .await
        .expect_err("cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    canceller.await.unwrap().expect("cancel sent");

    // A cancel with a wrong key: the query runs to completion.
    let port = relay.port;
    let wrong = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut msg = Vec::new();
        msg.extend_from_slice(&16i32.to_be_bytes());
        msg.extend_from_slice(&80877102i32.to_be_bytes());
        msg.extend_from_slice(&1i32.to_be_bytes());
        msg.extend_from_slice(&2i32.to_be_bytes());
        s.write_all(&msg).await.unwrap();
        let mut buf = [0u8; 8];
        let _ = s.read(&mut buf).await;
    });
    let rows = client
        .simple_query("select pg_sleep(1), 'done'")
        .await
        .expect("not cancelled");
    assert!(!rows.is_empty());
    wrong.await.unwrap();
    relay.stop().await;
}

async fn read_error(s: &mut TcpStream) -> (String, bool) {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let closed = matches!(read, Ok(Ok(_)));
    let text = String::from_utf8_lossy(&buf).into_owned();
    (text, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_gets_an_error_and_a_closed_connection() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "pool_mode: transaction\nmax_packet_size: 65536").await;
    let port = relay.port;

    // A startup packet claiming an absurd length.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0x7f, 0, 0, 0, 0, 3, 0, 0]).await.unwrap();
    let (_, closed) = read_error(&mut s).await;
    assert!(closed, "oversized startup packet closes the connection");

    // A length shorter than the header.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0, 0, 0, 2]).await.unwrap();
    let (_, closed) = read_error(&mut s).await;
    assert!(closed);

    // Garbage after a good login: an unknown message type.
    let mut raw = common::raw_login(&cluster, port, &[]).await;
    raw.write_all(&[b'?', 0, 0, 0, 4]).await.unwrap();
    let (text, closed) = read_error(&mut raw).await;
    assert!(closed);
    assert!(text.contains("08P01"), "{text:?}");

    // The same inside a transaction, with a server attached: still refused,
    // and the server is not pooled with the transaction open.
    let mut raw = common::raw_login(&cluster, port, &[]).await;
    let mut batch = vec![b'Q', 0, 0, 0, 10];
    batch.extend_from_slice(b"BEGIN\0");
    batch.extend_from_slice(&[b'?', 0, 0, 0, 4]);
    raw.write_all(&batch).await.unwrap();
    let (text, closed) = read_error(&mut raw).await;
    assert!(closed);
    assert!(text.contains("08P01"), "{text:?}");

    // A query message announcing more than max_packet_size.
    let mut raw = common::raw_login(&cluster, port, &[]).await;
    raw.write_all(&[b'Q', 0x01, 0, 0, 0]).await.unwrap();
    let (text, closed) = read_error(&mut raw).await;
    assert!(closed);
    assert!(text.contains("54000"), "{text:?}");

    // The proxy still serves others.
    let client = relay.connect(&cluster).await;
    assert_eq!(common::scalar(&client, "select 1").await, "1");
    relay.stop().await;
}
