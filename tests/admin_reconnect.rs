//! The console's RECONNECT, WAIT_CLOSE, DISABLE and ENABLE on a running
//! pgrelay against real PostgreSQL. Which servers exist is asked of
//! PostgreSQL itself (`pg_stat_activity`), not of pgrelay.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{console_rows, relay_with_console, scalar};

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    scalar(client, "select pg_backend_pid()")
        .await
        .parse()
        .unwrap()
}

fn row_by<'a>(
    rows: &'a [HashMap<String, String>],
    column: &str,
    value: &str,
) -> &'a HashMap<String, String> {
    rows.iter()
        .find(|r| r[column] == value)
        .unwrap_or_else(|| panic!("no row with {column} = {value}: {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_closes_idle_servers_now_busy_ones_at_release_and_wait_close_waits() {
    let (cluster, relay, console) = relay_with_console("default_pool_size: 2").await;
    let base = relay.conn_string(&cluster);
    let in_tx = common::connect(&base).await;
    let other = common::connect(&base).await;
    in_tx.batch_execute("BEGIN").await.unwrap();
    let busy = backend_pid(&in_tx).await;
    let idle = backend_pid(&other).await;
    assert_ne!(busy, idle, "the transaction holds its server");

    console.simple_query("RECONNECT").await.expect("RECONNECT");
    common::wait_server_gone(&cluster, idle, "RECONNECT closes idle servers at once").await;
    let servers = console_rows(&console, "SHOW SERVERS").await;
    let row = row_by(&servers, "remote_pid", &busy.to_string());
    assert_eq!(row["close_needed"], "1", "{row:?}");
    assert_eq!(row["state"], "active", "{row:?}");

    let waiting = common::console_in_background(console, "WAIT_CLOSE");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "WAIT_CLOSE returned while a marked server is in use"
    );
    // The transaction goes on, on its server, until it ends.
    assert_eq!(backend_pid(&in_tx).await, busy);
    in_tx.batch_execute("COMMIT").await.unwrap();
    let (console, waited) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("WAIT_CLOSE returns once the marked server is released")
        .unwrap();
    waited.expect("WAIT_CLOSE");
    common::wait_server_gone(&cluster, busy, "released after RECONNECT").await;

    // New servers serve new transactions, and are not marked.
    let fresh = backend_pid(&other).await;
    assert!(![busy, idle].contains(&fresh), "{fresh}");
    let servers = console_rows(&console, "SHOW SERVERS").await;
    assert!(
        servers.iter().all(|r| r["close_needed"] == "0"),
        "{servers:?}"
    );
    console
        .simple_query("WAIT_CLOSE")
        .await
        .expect("nothing to wait for");

    let db = cluster.database();
    console
        .simple_query(&format!("RECONNECT {db}"))
        .await
        .expect("RECONNECT db");
    common::wait_server_gone(&cluster, fresh, "RECONNECT of its database").await;
    for sql in ["RECONNECT nosuchdb", "WAIT_CLOSE nosuchdb"] {
        let err = console.simple_query(sql).await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), "3D000", "{sql}: {err}");
    }
    drop((in_tx, other, console));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_refuses_new_logins_and_enable_takes_them_again() {
    let (cluster, relay, console) = relay_with_console("").await;
    let base = relay.conn_string(&cluster);
    let db = cluster.database();
    let logged_in = common::connect(&base).await;
    let disabled =
        |rows: Vec<HashMap<String, String>>| row_by(&rows, "name", db)["disabled"].clone();

    console
        .simple_query(&format!("DISABLE {db}"))
        .await
        .expect("DISABLE");
    let err = common::try_connect(&base).await.unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("55000"), "{err:?}");
    assert!(
        format!("{err:?}").contains("is not currently accepting connections"),
        "{err:?}"
    );
    assert_eq!(
        disabled(console_rows(&console, "SHOW DATABASES").await),
        "1"
    );
    // Clients already in stay.
    assert_eq!(scalar(&logged_in, "select 1").await, "1");

    console
        .simple_query(&format!("ENABLE {db}"))
        .await
        .expect("ENABLE");
    let again = common::connect(&base).await;
    assert_eq!(scalar(&again, "select 2").await, "2");
    assert_eq!(
        disabled(console_rows(&console, "SHOW DATABASES").await),
        "0"
    );

    for (sql, code) in [
        ("DISABLE", "42601"),
        ("DISABLE nosuchdb", "3D000"),
        ("ENABLE nosuchdb", "3D000"),
    ] {
        let err = console.simple_query(sql).await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), code, "{sql}: {err}");
    }
    drop((logged_in, again, console));
    relay.stop().await;
}
