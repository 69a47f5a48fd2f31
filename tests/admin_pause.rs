//! The console's PAUSE and RESUME on a running pgrelay against real PostgreSQL.

mod common;

use std::time::Duration;

/// `SHOW STATE` as `key=value` lines.
async fn state(console: &tokio_postgres::Client) -> Vec<String> {
    common::console_rows(console, "SHOW STATE")
        .await
        .into_iter()
        .map(|r| format!("{}={}", r["key"], r["value"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_transactions_closes_servers_and_holds_queries_until_resume() {
    let (cluster, relay, console) = common::relay_with_console("default_pool_size: 2").await;
    let base = relay.conn_string(&cluster);
    let holder = common::connect(&base).await;
    let later = common::connect(&base).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let pausing = common::console_in_background(console, "PAUSE");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pausing.is_finished(),
        "PAUSE returned with a transaction open"
    );
    // A new query waits for RESUME instead of taking the free server slot.
    let held = tokio::spawn(async move {
        let answer = later.simple_query("SELECT 2").await.map(|_| ());
        (later, answer)
    });
    holder.batch_execute("COMMIT").await.unwrap();
    let (console, paused) = tokio::time::timeout(Duration::from_secs(10), pausing)
        .await
        .expect("PAUSE returns once the transaction ends")
        .unwrap();
    paused.expect("PAUSE succeeds");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !common::app_backend_pids(&cluster).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "paused, yet PostgreSQL still runs pgrelay's servers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a query ran while paused");

    let err = console.simple_query("PAUSE").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "55000", "{err}");
    let paused = |rows: Vec<std::collections::HashMap<String, String>>| {
        rows.iter()
            .find(|r| r["name"] == cluster.database())
            .expect("the database's row")["paused"]
            .clone()
    };
    let databases = common::console_rows(&console, "SHOW DATABASES").await;
    assert_eq!(paused(databases), "1");
    assert_eq!(
        state(&console).await,
        ["active=no", "paused=yes", "suspended=no"]
    );
    console.simple_query("RESUME").await.expect("RESUME");
    let databases = common::console_rows(&console, "SHOW DATABASES").await;
    assert_eq!(paused(databases), "0");
    assert_eq!(
        state(&console).await,
        ["active=yes", "paused=no", "suspended=no"]
    );
    let (later, answer) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held query runs after RESUME")
        .unwrap();
    answer.expect("SELECT 2 after RESUME");
    later.simple_query("SELECT 3").await.unwrap();
    let err = console.simple_query("RESUME").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "55000", "not paused: {err}");
    let err = console.simple_query("PAUSE nosuchdb").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "3D000", "{err}");
    drop((holder, later, console));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_held_by_pause_fails_at_query_wait_timeout() {
    let (cluster, relay, console) =
        common::relay_with_console("default_pool_size: 2\nquery_wait_timeout: 1").await;
    let db = cluster.database();
    // Logged in first: a login before any server has been seen takes one,
    // for the parameters it reports, and would wait out the pause too.
    let client = common::connect(&relay.conn_string(&cluster)).await;
    console
        .simple_query(&format!("PAUSE {db}"))
        .await
        .expect("PAUSE of an idle database returns at once");
    assert_eq!(
        state(&console).await,
        ["active=yes", "paused=no", "suspended=no"],
        "one database paused is not the pooler paused"
    );
    let started = std::time::Instant::now();
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "08P01", "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let err = console.simple_query("RESUME otherdb").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "3D000", "{err}");
    console
        .simple_query(&format!("RESUME {db}"))
        .await
        .expect("RESUME");
    let client = common::connect(&relay.conn_string(&cluster)).await;
    client.simple_query("SELECT 1").await.expect("served again");
    drop((client, console));
    relay.stop().await;
}

/// Ctrl-C on a console waiting in PAUSE: the wait ends with PostgreSQL's
/// cancel error and the pause is taken back, so queries flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pause_stops_waiting_and_is_taken_back() {
    let (cluster, relay, console) = common::relay_with_console("default_pool_size: 2").await;
    let base = relay.conn_string(&cluster);
    let holder = common::connect(&base).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let token = console.cancel_token();
    let pausing = common::console_in_background(console, "PAUSE");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pausing.is_finished(), "PAUSE waits for the transaction");
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    let (console, paused) = tokio::time::timeout(Duration::from_secs(10), pausing)
        .await
        .expect("the cancel ends the wait")
        .unwrap();
    let err = paused.expect_err("PAUSE was cancelled");
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    assert_eq!(
        state(&console).await,
        ["active=yes", "paused=no", "suspended=no"]
    );
    // Not paused: another client gets the free server at once.
    let other = common::connect(&base).await;
    tokio::time::timeout(Duration::from_secs(5), other.simple_query("SELECT 2"))
        .await
        .expect("not held by a pause")
        .unwrap();
    // The transaction went on undisturbed, and the console still works.
    holder.batch_execute("COMMIT").await.unwrap();
    console.simple_query("PAUSE").await.expect("PAUSE");
    console.simple_query("RESUME").await.expect("RESUME");
    relay.stop().await;
}
