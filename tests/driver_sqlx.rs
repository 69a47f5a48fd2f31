//! sqlx, the driver most Rust services use, through pgrelay in transaction
//! mode. sqlx prepares every query as a named statement and caches it per
//! connection, so a client reuses statements its next server never saw: the
//! case that fails with "prepared statement sqlx_s_1 does not exist" behind a
//! pooler that passes names through.

mod common;

use std::time::Duration;

use common::{cluster, start_relay, start_relay_with_db};
use pgrelay_testcontainers::Cluster;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};

fn options(cluster: &Cluster, port: u16) -> PgConnectOptions {
    let (user, password) = cluster.app_user();
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(password)
        .database(cluster.database())
}

async fn pool(cluster: &Cluster, port: u16, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options(cluster, port))
        .await
        .expect("sqlx pool through pgrelay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_statements_transactions_and_errors_with_more_clients_than_servers() {
    let cluster = cluster(0, false).await;
    cluster
        .prepare_schema(
            "create table ledger (id int primary key, amount int not null);
             grant all on ledger to app",
        )
        .unwrap();
    // Eight sqlx connections share two servers: consecutive statements of one
    // connection land on different servers.
    let relay = start_relay(
        &cluster,
        "pool_mode: transaction\nauth_type: plain\ndefault_pool_size: 2",
    )
    .await;
    let pool = pool(&cluster, relay.port, 8).await;

    // The same few statements, cached by every connection, from 8 tasks.
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let n = task * 1000 + i;
                    let row = sqlx::query("SELECT $1::int + 1 AS next, $2::text AS tag")
                        .bind(n)
                        .bind(format!("t{task}"))
                        .fetch_one(&pool)
                        .await
                        .expect("a cached statement on whichever server");
                    assert_eq!(row.get::<i32, _>("next"), n + 1);
                    assert_eq!(row.get::<String, _>("tag"), format!("t{task}"));
                    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
                        .fetch_one(&pool)
                        .await
                        .expect("a second cached statement");
                    assert!(count >= 0);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    // A transaction keeps its server; what it commits is there afterwards.
    let mut tx = pool.begin().await.unwrap();
    for id in 0..10 {
        sqlx::query("INSERT INTO ledger (id, amount) VALUES ($1, $2)")
            .bind(id)
            .bind(id * 10)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let inside: i64 = sqlx::query_scalar("SELECT sum(amount)::bigint FROM ledger")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(inside, 450);
    tx.commit().await.unwrap();

    // A failed statement aborts only its own transaction; the connection
    // and its cached statements stay usable.
    let mut tx = pool.begin().await.unwrap();
    let err = sqlx::query("INSERT INTO ledger (id, amount) VALUES ($1, $2)")
        .bind(3)
        .bind(0)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("23505"), "{err}");
    tx.rollback().await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT sum(amount)::bigint FROM ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, 450, "the committed rows, nothing of the failed one");

    // A result streamed row by row.
    let rows = sqlx::query("SELECT g FROM generate_series(1, 5000) AS g")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999].get::<i32, _>("g"), 5000);

    pool.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_reads_go_to_the_replica_and_writes_to_the_primary() {
    let cluster = cluster(1, false).await;
    cluster
        .prepare_schema("create table notes (id int); grant all on notes to app")
        .unwrap();
    let relay = start_relay_with_db(
        &cluster,
        "pool_mode: transaction\nauth_type: plain",
        "    replicas:\n      hosts: [127.0.0.2]\n      health_check_interval: 200ms\n",
    )
    .await;
    let mut conn = sqlx::PgConnection::connect_with(&options(&cluster, relay.port))
        .await
        .unwrap();
    let server = "SELECT host(inet_server_addr())";
    // Reads take the replica once its first health check has passed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let addr: String = sqlx::query_scalar(server)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if addr == "127.0.0.2" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reads never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same cached statement, executed again, still reads on the replica;
    // a write and a locking read go to the primary.
    let again: String = sqlx::query_scalar(server)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(again, "127.0.0.2");
    let written: String = sqlx::query_scalar(
        "WITH w AS (INSERT INTO notes VALUES (1) RETURNING id) \
         SELECT host(inet_server_addr()) FROM w",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(written, "127.0.0.1", "a writing CTE on the primary");
    let locked: String =
        sqlx::query_scalar("SELECT host(inet_server_addr()) FROM notes FOR UPDATE")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(locked, "127.0.0.1", "a locking read on the primary");
    conn.close().await.unwrap();
    relay.stop().await;
}

/// sqlx (like JDBC) sends `extra_float_digits` at startup. PgBouncer refuses
/// it unless told to ignore it; pgrelay applies it on whichever server the
/// client lands on and takes it back off for a client that did not ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_float_digits_follows_the_client_across_one_shared_server() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(
        &cluster,
        "pool_mode: transaction\nauth_type: plain\ndefault_pool_size: 1",
    )
    .await;
    let mut sqlx_conn = sqlx::PgConnection::connect_with(&options(&cluster, relay.port))
        .await
        .expect("extra_float_digits accepted at startup");
    let plain = relay.connect(&cluster).await;
    let show = "SHOW extra_float_digits";
    for round in 0..3 {
        let wanted: String = sqlx::query_scalar(show)
            .fetch_one(&mut sqlx_conn)
            .await
            .unwrap();
        assert_eq!(wanted, "2", "round {round}: sqlx's own value");
        let default = common::scalar(&plain, show).await;
        assert_eq!(default, "1", "round {round}: PostgreSQL's default, reset");
    }
    let (plain_pid, sqlx_pid): (i32, i32) = (
        common::backend_pid(&plain).await,
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut sqlx_conn)
            .await
            .unwrap(),
    );
    assert_eq!(plain_pid, sqlx_pid, "one server for both clients");
    sqlx_conn.close().await.unwrap();
    drop(plain);
    relay.stop().await;
}
