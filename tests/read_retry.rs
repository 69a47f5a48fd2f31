//! A read whose replica connection breaks before any answer is sent again,
//! once, elsewhere: the client sees its result, not the failure. The break is
//! made deterministic with a relay in front of the replica that is stopped
//! while the read runs.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{cluster, scalar, start_relay_with_db};
use pgrelay_testcontainers::DelayRelay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_replica_drops_before_answering_is_retried_and_answered() {
    let cluster = cluster(1, false).await;
    let cut = DelayRelay::start(
        Ipv4Addr::new(127, 0, 0, 9).into(),
        cluster.replicas()[0].socket_addr(),
        Duration::ZERO,
    )
    .expect("relay in front of the replica");
    let relay = start_relay_with_db(
        &cluster,
        "pool_mode: transaction",
        &format!(
            "    replicas:\n      hosts: [\"127.0.0.9:{}\"]\n      health_check_interval: 200ms\n",
            cut.addr().port()
        ),
    )
    .await;
    let client = relay.connect(&cluster).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while scalar(&client, "select host(inet_server_addr())").await != "127.0.0.2" {
        assert!(Instant::now() < deadline, "the replica never took a read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = std::sync::Arc::new(client);
    let read = {
        let client = client.clone();
        tokio::spawn(async move {
            scalar(
                &client,
                "select pg_sleep(1.5)::text || host(inet_server_addr())",
            )
            .await
        })
    };
    // The read is running on the replica; its connection breaks under it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!read.is_finished());
    drop(cut);
    let answer = tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("the read is answered")
        .expect("the read succeeds: it was sent again");
    assert_eq!(
        answer, "127.0.0.1",
        "retried on the primary, the only server left"
    );
    // The session goes on.
    assert_eq!(scalar(&client, "select 1").await, "1");
    relay.stop().await;
}
