//! Read-your-writes: "insert a row, then read it at once" through pgrelay in
//! transaction pooling, with one replica's replay paused so it lags.

mod common;

use std::time::Duration;

use common::{scalar, start_relay_with_db};
use pgrelay_testcontainers::Cluster;

struct Outcome {
    misses: usize,
    replica_reads: usize,
}

async fn insert_then_read(mode: &str, iterations: usize) -> Outcome {
    let cluster = tokio::task::spawn_blocking(|| Cluster::builder().replicas(2).start().unwrap())
        .await
        .unwrap();
    cluster
        .prepare_schema(
            "create table ryw (id serial primary key, v int); grant all on ryw, ryw_id_seq to app",
        )
        .unwrap();
    let yaml = format!(
        "    replicas:\n      hosts: [127.0.0.2, 127.0.0.3]\n      health_check_interval: 200ms\n      \
         balance: round_robin\n      max_lag: 0\n      read_your_writes: {mode}\n"
    );
    let relay = start_relay_with_db(&cluster, "pool_mode: transaction", &yaml).await;
    let client = relay.connect(&cluster).await;
    // Both replicas in rotation before one starts lagging.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..500 {
        seen.insert(scalar(&client, "SELECT inet_server_addr()").await);
        if seen.contains("127.0.0.2") && seen.contains("127.0.0.3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.contains("127.0.0.2") && seen.contains("127.0.0.3"),
        "{seen:?}"
    );
    tokio::task::block_in_place(|| cluster.replicas()[0].pause_replay()).unwrap();

    let mut outcome = Outcome {
        misses: 0,
        replica_reads: 0,
    };
    for i in 0..iterations {
        let id = scalar(
            &client,
            &format!("INSERT INTO ryw (v) VALUES ({i}) RETURNING id"),
        )
        .await;
        let row = scalar(
            &client,
            &format!(
                "SELECT count(*)::text || ' ' || host(inet_server_addr()) FROM ryw WHERE id = {id}"
            ),
        )
        .await;
        let (count, addr) = row.split_once(' ').unwrap();
        if count != "1" {
            outcome.misses += 1;
        }
        if addr != "127.0.0.1" {
            outcome.replica_reads += 1;
        }
    }
    tokio::task::block_in_place(|| cluster.replicas()[0].resume_replay()).unwrap();
    relay.stop().await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lsn_mode_never_misses_a_clients_own_write() {
    let o = insert_then_read("lsn", 2000).await;
    println!(
        "lsn: {} misses, {} of 2000 reads on replicas",
        o.misses, o.replica_reads
    );
    assert_eq!(o.misses, 0);
    assert!(o.replica_reads > 0, "reads never reached a replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_mode_misses_writes_on_a_lagging_replica() {
    let o = insert_then_read("off", 200).await;
    println!(
        "off: {} misses, {} of 200 reads on replicas",
        o.misses, o.replica_reads
    );
    assert!(o.misses > 0, "the test could not have caught a stale read");
}
