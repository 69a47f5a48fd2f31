//! `query_timeout` against real PostgreSQL: a server that has not answered in
//! time is closed and its client told why; queries under the limit, and
//! clients idle in a transaction, are not touched.

mod common;

use std::time::{Duration, Instant};

use common::{relay_with_console, scalar, sqlstate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_query_timeout_closes_its_server_and_ends_the_client() {
    let (cluster, relay, _console) =
        relay_with_console("query_timeout: 800ms\ndefault_pool_size: 2").await;
    let base = relay.conn_string(&cluster);

    // Under the limit, and idle in a transaction longer than it: untouched.
    let patient = common::connect(&base).await;
    assert_eq!(scalar(&patient, "SELECT pg_sleep(0.2)::text").await, "");
    patient.batch_execute("BEGIN").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(scalar(&patient, "SELECT 'still here'").await, "still here");
    patient.batch_execute("COMMIT").await.unwrap();

    // Over it: the client hears 08006 long before the sleep would end.
    // In a transaction, so the sleep runs on the server whose pid we read.
    let slow = common::connect(&base).await;
    slow.batch_execute("BEGIN").await.unwrap();
    let server_pid: i32 = scalar(&slow, "SELECT pg_backend_pid()")
        .await
        .parse()
        .unwrap();
    let started = Instant::now();
    let e = slow
        .simple_query("SELECT pg_sleep(30)")
        .await
        .expect_err("query_timeout ends it");
    let waited = started.elapsed();
    assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{e}");
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("query_timeout")),
        "{e:?}"
    );
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // Its server is closed, not pooled, and its query cancelled: the backend
    // ends now, not when the 30 s sleep would.
    common::wait_server_gone(&cluster, server_pid, "the timed-out server").await;

    // Others go on.
    assert_eq!(scalar(&patient, "SELECT 'next'").await, "next");
    relay.stop().await;
}
