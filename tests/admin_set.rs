//! The console's `SET name = value` on a running pgrelay against real
//! PostgreSQL: a changeable setting takes effect as a reload applies it, and
//! every refusal has its own SQLSTATE.

mod common;

use std::time::Duration;

use common::{console_rows, relay_with_console, scalar, sqlstate};

async fn config_value(console: &tokio_postgres::Client, key: &str) -> (String, String) {
    let rows = console_rows(console, "SHOW CONFIG").await;
    let row = rows
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in SHOW CONFIG"));
    (row["value"].clone(), row["changeable"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_grows_a_running_pool_and_shows_in_show_config() {
    let (cluster, relay, console) =
        relay_with_console("default_pool_size: 1\nquery_wait_timeout: 30").await;
    let base = relay.conn_string(&cluster);
    let holder = common::hold_a_server(&base).await;

    // The only server is held: a second client's query waits...
    let waiter = common::connect(&base).await;
    let queued = tokio::spawn(async move {
        let answer = scalar(&waiter, "SELECT 'served'").await;
        (waiter, answer)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!queued.is_finished(), "a pool of one is busy");

    // ...until the pool may open a second one.
    console
        .simple_query("SET default_pool_size = 2")
        .await
        .expect("SET");
    let (_waiter, answer) = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("served once the pool grew, long before query_wait_timeout")
        .unwrap();
    assert_eq!(answer, "served");
    assert_eq!(
        config_value(&console, "default_pool_size").await,
        ("2".to_string(), "yes".to_string())
    );
    holder.batch_execute("COMMIT").await.unwrap();

    // The `TO` spelling and a quoted value.
    console
        .simple_query("set query_wait_timeout to '15'")
        .await
        .expect("SET ... TO");
    assert_eq!(config_value(&console, "query_wait_timeout").await.0, "15s");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_refuses_what_it_cannot_change_each_with_its_sqlstate() {
    let (cluster, relay, console) = relay_with_console("").await;
    let refused = |sql: &'static str| {
        let console = &console;
        async move {
            let e = console.simple_query(sql).await.expect_err(sql);
            let message = e.as_db_error().map(|d| d.message().to_string());
            (
                sqlstate(&e).unwrap_or_default(),
                message.unwrap_or_default(),
            )
        }
    };
    let (state, message) = refused("SET listen_port = 7000").await;
    assert_eq!(state, "55P02", "{message}");
    assert!(message.contains("restart"), "{message}");
    assert_eq!(refused("SET no_such_setting = 1").await.0, "42704");
    assert_eq!(refused("SET default_pool_size = many").await.0, "22023");
    assert_eq!(refused("SET auth_query = 'select 1'").await.0, "0A000");
    assert_eq!(refused("SET default_pool_size").await.0, "42601");
    // Start-only settings say so in SHOW CONFIG, and nothing changed.
    assert_eq!(config_value(&console, "max_client_conn").await.1, "no");
    let before = config_value(&console, "listen_port").await;
    assert_eq!(
        before.0, "0",
        "as configured (any free port), not the refused 7000"
    );
    assert_eq!(before.1, "no");

    // A stats user may look, not SET.
    let (app, app_pw) = cluster.app_user();
    let stats_relay =
        common::start_relay(&cluster, &format!("auth_type: plain\nstats_users: {app}")).await;
    let stats_console = common::connect(&format!(
        "host=127.0.0.1 port={} user={app} password={app_pw} dbname=pgbouncer",
        stats_relay.port
    ))
    .await;
    let e = stats_console
        .simple_query("SET default_pool_size = 5")
        .await
        .expect_err("stats users may not SET");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    stats_relay.stop().await;
    relay.stop().await;
}
