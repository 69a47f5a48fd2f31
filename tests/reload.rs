//! What a configuration reload changes in running pools, against a real
//! PostgreSQL: pool sizes, and the server address and credentials new
//! servers open with, without cutting a transaction short.

mod common;

use std::time::Duration;

use common::{cluster, scalar, start_relay};
use pgrelay::config::Config;

/// Applies `change` to the running configuration and reloads it.
fn reload(relay: &common::Relay, change: impl FnOnce(&mut Config)) {
    let running = relay.running.as_ref().unwrap();
    let mut config = running.app.config();
    change(&mut config);
    running.app.reload(config, &running.pools).expect("reload");
}

/// A reload's pool size applies to the running pool: a larger one serves a
/// waiting client at once; a smaller one takes effect as servers come back,
/// and upkeep closes the idle servers above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_resizes_running_pools() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(
        &cluster,
        "pool_mode: transaction\ndefault_pool_size: 1\nquery_wait_timeout: 20s",
    )
    .await;
    let running = relay.running.as_ref().unwrap();
    let resize = |size: u32| {
        let mut config = running.app.config();
        config.pool.default_pool_size = size;
        running.app.reload(config, &running.pools).expect("reload");
    };
    let holder = relay.connect(&cluster).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let waiter = relay.connect(&cluster).await;
    let waiting = tokio::spawn(async move {
        let answer = scalar(&waiter, "SELECT 'served'").await;
        (waiter, answer)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "one server, and it is in a transaction"
    );

    resize(2);
    let (waiter, answer) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the second server is opened for the waiting client")
        .unwrap();
    assert_eq!(answer, "served");
    assert_eq!(common::app_backend_pids(&cluster).await.len(), 2);

    // Back to one: the idle server goes at the next upkeep round (every 1 s),
    // and a second transaction waits for the first again.
    resize(1);
    let trimmed = tokio::time::timeout(Duration::from_secs(5), async {
        while common::app_backend_pids(&cluster).await.len() > 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(trimmed.is_ok(), "the idle server above the new size stays");
    let waiting = tokio::spawn(async move { scalar(&waiter, "SELECT 'second'").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "one server again, held by the holder"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert_eq!(answer.expect("served after COMMIT").unwrap(), "second");
    relay.stop().await;
}

/// Servers of the app user on `database`, as PostgreSQL lists them.
async fn app_servers_on(cluster: &pgrelay_testcontainers::Cluster, database: &str) -> usize {
    let row = common::superuser_direct(cluster)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = $1",
            &[&database],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) as usize
}

/// The manual failover move: point a database elsewhere and reload. New
/// transactions reach the new place at once; one already running finishes
/// where it began, and its server is closed when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_sends_new_transactions_to_a_moved_database() {
    let cluster = cluster(0, false).await;
    cluster.primary().sql("CREATE DATABASE moved").unwrap();
    let relay = start_relay(&cluster, "pool_mode: transaction").await;
    let in_tx = relay.connect(&cluster).await;
    let other = relay.connect(&cluster).await;
    in_tx.batch_execute("BEGIN").await.unwrap();
    assert_eq!(scalar(&in_tx, "SELECT current_database()").await, "app");
    assert_eq!(scalar(&other, "SELECT current_database()").await, "app");

    reload(&relay, |c| {
        c.databases.get_mut("app").unwrap().dbname = Some("moved".to_string());
    });
    assert_eq!(
        scalar(&other, "SELECT current_database()").await,
        "moved",
        "the idle server on the old database is not reused"
    );
    assert_eq!(
        scalar(&in_tx, "SELECT current_database()").await,
        "app",
        "an open transaction keeps its server"
    );
    in_tx.batch_execute("COMMIT").await.unwrap();
    assert_eq!(scalar(&in_tx, "SELECT current_database()").await, "moved");
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while app_servers_on(&cluster, "app").await > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(drained.is_ok(), "servers on the old database stay open");
    relay.stop().await;
}

/// A rotated password: the server and the userlist change, then a reload.
/// Servers already logged in stay; the next one logs in with the new
/// password, where before the reload it kept trying the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_gives_new_servers_the_rotated_password() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "pool_mode: transaction\nserver_login_retry: 0").await;
    let client = relay.connect(&cluster).await;
    let first_server = scalar(&client, "SELECT pg_backend_pid()").await;

    let (user, _) = cluster.app_user();
    cluster
        .primary()
        .sql(&format!("ALTER ROLE {user} PASSWORD 'rotated'"))
        .unwrap();
    let userlist = relay.dir.path().join("userlist.txt");
    let (su, su_pw) = cluster.superuser();
    std::fs::write(
        &userlist,
        format!("\"{su}\" \"{su_pw}\"\n\"{user}\" \"rotated\"\n"),
    )
    .unwrap();
    reload(&relay, |_| {});
    assert_eq!(
        scalar(&client, "SELECT pg_backend_pid()").await,
        first_server,
        "a password change alone closes no server"
    );

    // Its server ends; the replacement must log in with the new password.
    cluster
        .primary()
        .sql(&format!("SELECT pg_terminate_backend({first_server})"))
        .unwrap();
    let fresh = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match common::try_scalar(&client, "SELECT pg_backend_pid()").await {
                Ok(pid) if pid != first_server => return pid,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(fresh.is_ok(), "no server could log in after the rotation");
    relay.stop().await;
}
