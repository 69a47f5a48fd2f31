//! The console's KILL_CLIENT and KILL on a running pgrelay against real
//! PostgreSQL: killed clients hear 57P01, their servers close (a transaction
//! under way is rolled back by PostgreSQL), and after KILL new work on the
//! database waits for RESUME, as in PgBouncer.

mod common;

use std::time::{Duration, Instant};

use common::{app_backend_pids, console_rows, relay_with_console, scalar, sqlstate};

/// A client whose connection task's end is kept: a FATAL the client did not
/// ask for arrives there, not as a query's error.
async fn watched_client(
    conn: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .expect("connect through pgrelay");
    (client, tokio::spawn(connection))
}

/// The SQLSTATE a killed client's connection ended with.
async fn end_state(ended: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) -> String {
    let result = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the killed client's connection ends")
        .unwrap();
    let error = result.expect_err("ended by an error from pgrelay");
    sqlstate(&error).unwrap_or_else(|| panic!("no SQLSTATE: {error}"))
}

async fn wait_no_servers(cluster: &pgrelay_testcontainers::Cluster, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app_backend_pids(cluster).await.is_empty() {
        assert!(Instant::now() < deadline, "servers still run: {why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_drops_one_client_and_its_transaction() {
    let (cluster, relay, console) = relay_with_console("").await;
    cluster
        .prepare_schema("create table t (v int); grant insert, select on t to app")
        .unwrap();
    let base = relay.conn_string(&cluster);
    let (victim, victim_ended) = watched_client(&format!("{base} application_name=victim")).await;
    let bystander = common::connect(&base).await;
    victim
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let victim_server = scalar(&victim, "SELECT pg_backend_pid()").await;

    let clients = console_rows(&console, "SHOW CLIENTS").await;
    let row = clients
        .iter()
        .find(|r| r["application_name"] == "victim")
        .unwrap_or_else(|| panic!("victim not listed: {clients:?}"));
    console
        .simple_query(&format!("KILL_CLIENT {}", row["ptr"]))
        .await
        .expect("KILL_CLIENT");
    assert_eq!(end_state(victim_ended).await, "57P01");
    assert!(victim.is_closed());

    let victim_server = victim_server.parse().unwrap();
    common::wait_server_gone(&cluster, victim_server, "the victim's server").await;
    assert_eq!(
        scalar(&bystander, "SELECT count(*) FROM t").await,
        "0",
        "the killed transaction is rolled back"
    );
    let clients = console_rows(&console, "SHOW CLIENTS").await;
    assert!(clients.iter().all(|r| r["application_name"] != "victim"));

    let unknown = console
        .simple_query("KILL_CLIENT 0x7ffffffe")
        .await
        .expect_err("no such client");
    assert_eq!(sqlstate(&unknown).as_deref(), Some("42704"), "{unknown}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_drops_a_databases_clients_and_servers_and_holds_new_work_until_resume() {
    let (cluster, relay, console) = relay_with_console("default_pool_size: 3").await;
    let base = relay.conn_string(&cluster);
    let (in_tx, in_tx_ended) = watched_client(&base).await;
    let (idle, idle_ended) = watched_client(&base).await;
    in_tx.batch_execute("BEGIN").await.unwrap();
    assert_eq!(scalar(&in_tx, "SELECT 1").await, "1");
    assert_eq!(scalar(&idle, "SELECT 2").await, "2");
    assert!(!app_backend_pids(&cluster).await.is_empty());

    console
        .simple_query(&format!("KILL {}", cluster.database()))
        .await
        .expect("KILL");
    assert_eq!(end_state(in_tx_ended).await, "57P01");
    assert_eq!(end_state(idle_ended).await, "57P01");
    wait_no_servers(&cluster, "KILL closes the database's servers").await;

    // A new client logs in, but its query waits for RESUME.
    let later = common::connect(&base).await;
    let query = tokio::spawn(async move { scalar(&later, "SELECT 'after resume'").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!query.is_finished(), "the killed database is paused");
    console
        .simple_query(&format!("RESUME {}", cluster.database()))
        .await
        .expect("RESUME");
    let answer = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("served after RESUME")
        .unwrap();
    assert_eq!(answer, "after resume");

    let unknown = console
        .simple_query("KILL nowhere")
        .await
        .expect_err("unknown database");
    assert_eq!(sqlstate(&unknown).as_deref(), Some("3D000"), "{unknown}");
    relay.stop().await;
}

/// KILL_CLIENT reaches a client wherever it waits, not only between
/// queries: here in the queue for the only server, long before
/// `query_wait_timeout` would end the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_ends_a_client_waiting_for_a_server() {
    let (cluster, relay, console) =
        relay_with_console("default_pool_size: 1\nquery_wait_timeout: 120").await;
    let base = relay.conn_string(&cluster);
    let holder = common::hold_a_server(&base).await;
    let (waiter, waiter_ended) = watched_client(&format!("{base} application_name=waiter")).await;
    let query = tokio::spawn(async move { waiter.simple_query("SELECT 2").await.map(|_| ()) });

    let deadline = Instant::now() + Duration::from_secs(10);
    let ptr = loop {
        let clients = console_rows(&console, "SHOW CLIENTS").await;
        if let Some(row) = clients
            .iter()
            .find(|r| r["application_name"] == "waiter" && r["state"] == "waiting")
        {
            break row["ptr"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "waiter never queued: {clients:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    console
        .simple_query(&format!("KILL_CLIENT {ptr}"))
        .await
        .expect("KILL_CLIENT");
    // The FATAL answers the query the client is waiting on.
    let query = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the waiting query ends")
        .unwrap();
    let error = query.expect_err("the killed client's query got no answer");
    assert_eq!(sqlstate(&error).as_deref(), Some("57P01"), "{error}");
    tokio::time::timeout(Duration::from_secs(10), waiter_ended)
        .await
        .expect("the killed client's connection ends")
        .unwrap()
        .expect_err("closed by pgrelay");

    // The holder's transaction and server are untouched.
    assert_eq!(scalar(&holder, "SELECT 3").await, "3");
    holder.batch_execute("COMMIT").await.unwrap();
    relay.stop().await;
}
