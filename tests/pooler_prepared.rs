//! Protocol-level named prepared statements in transaction pooling, with
//! tokio-postgres (which prepares every statement under a name).

mod common;

use std::time::Duration;

use common::{cluster, start_relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_survive_a_change_of_server() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "pool_mode: transaction\ndefault_pool_size: 2").await;
    let a = relay.connect(&cluster).await;
    let b = relay.connect(&cluster).await;

    let stmt = a
        .prepare("select $1::int + 1, pg_backend_pid()")
        .await
        .expect("prepare");
    let row = a.query_one(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    let prepared_on: i32 = row.get(1);

    // b takes a server and keeps it in a transaction; a's next use of its
    // statement then runs elsewhere, where pgrelay prepares it first.
    b.batch_execute("BEGIN").await.unwrap();
    let b_pid: i32 = common::backend_pid(&b).await;
    let row = a
        .query_one(&stmt, &[&41i32])
        .await
        .expect("statement follows the client");
    assert_eq!(row.get::<_, i32>(0), 42);
    let ran_on: i32 = row.get(1);
    assert_ne!(ran_on, b_pid, "never inside another client's transaction");
    if b_pid == prepared_on {
        assert_ne!(
            ran_on, prepared_on,
            "ran on a server that had not prepared it"
        );
    }
    // b prepares the same text on its server: the server's copy is shared.
    let same = b
        .prepare("select $1::int + 1, pg_backend_pid()")
        .await
        .expect("prepare inside a transaction");
    let row = b.query_one(&same, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(1), b_pid);
    b.batch_execute("COMMIT").await.unwrap();

    // The original statement still works after all that moving around.
    let again: i32 = a.query_one(&stmt, &[&9i32]).await.unwrap().get(0);
    assert_eq!(again, 10);
    drop(stmt); // sends Close: pgrelay answers it, the server keeps the statement
    let c = a.prepare("select 'after close'::text").await.unwrap();
    let text: String = a.query_one(&c, &[]).await.unwrap().get(0);
    assert_eq!(text, "after close");

    // A statement that fails to prepare is not remembered as prepared.
    cluster
        .primary()
        .sql_in(cluster.database(), "drop table if exists later_table")
        .unwrap();
    assert!(a.prepare("select count(*) from later_table").await.is_err());
    cluster
        .primary()
        .sql_in(
            cluster.database(),
            "create table later_table(x int); grant all on later_table to app",
        )
        .unwrap();
    let n: i64 = a
        .query_one("select count(*) from later_table", &[])
        .await
        .expect("prepared once the table exists")
        .get(0);
    assert_eq!(n, 0);

    tokio::time::timeout(Duration::from_secs(5), relay.stop())
        .await
        .expect("stops");
}
