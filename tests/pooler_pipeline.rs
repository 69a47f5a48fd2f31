//! A client that pipelines large requests whose replies are large too: the
//! server stops reading while its output is full, so pgrelay must keep
//! reading the server while it writes to it, or both sides wait forever.

mod common;

use std::time::Duration;

use common::{cluster, start_relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_pipelined_batch_with_big_replies_does_not_stall() {
    let cluster = cluster(0, false).await;
    for mode in ["session", "transaction"] {
        let relay = start_relay(
            &cluster,
            &format!("pool_mode: {mode}\ndefault_pool_size: 2"),
        )
        .await;
        let client = std::sync::Arc::new(relay.connect(&cluster).await);
        let statement = client.prepare("SELECT $1::text").await.unwrap();
        // 48 requests of 2 MiB, each echoed back: ~100 MiB each way, far more
        // than the loopback socket buffers hold. tokio-postgres writes them
        // all without waiting for replies (and reads replies as they come).
        let big = std::sync::Arc::new("x".repeat(2 << 20));
        let mut queries = tokio::task::JoinSet::new();
        for _ in 0..48 {
            let (client, statement, big) = (client.clone(), statement.clone(), big.clone());
            queries.spawn(async move {
                let row = client.query_one(&statement, &[&*big]).await?;
                Ok::<usize, tokio_postgres::Error>(row.get::<_, String>(0).len())
            });
        }
        let replies = tokio::time::timeout(Duration::from_secs(60), queries.join_all())
            .await
            .unwrap_or_else(|_| panic!("{mode} mode: the pipelined batch stalled"));
        assert_eq!(replies.len(), 48);
        for reply in replies {
            assert_eq!(reply.expect("query"), big.len(), "{mode} mode");
        }
        // The server connection is still usable afterwards.
        let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);
        relay.stop().await;
    }
}
