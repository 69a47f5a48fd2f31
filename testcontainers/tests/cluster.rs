//! A real primary + replicas: startup, replication, replay lag.

use std::time::{Duration, Instant};

use pgrelay_testcontainers::Cluster;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn two_replica_cluster_replicates_rows() {
    let started = Instant::now();
    let cluster = Cluster::builder()
        .replicas(2)
        .start()
        .expect("cluster starts");
    let elapsed = started.elapsed();
    println!(
        "2-replica cluster started in {elapsed:?} on port {}",
        cluster.port()
    );
    assert!(
        elapsed < Duration::from_secs(60),
        "startup took {elapsed:?}"
    );

    assert_eq!(cluster.replicas().len(), 2);
    let addrs: Vec<String> = cluster.nodes().iter().map(|n| n.host()).collect();
    assert_eq!(addrs, ["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    assert!(cluster.nodes().iter().all(|n| n.port() == cluster.port()));
    assert!(!cluster.primary().is_in_recovery().unwrap());

    let primary = cluster.primary();
    primary
        .sql("CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items VALUES (1, 'one')")
        .unwrap();
    cluster.wait_caught_up(WAIT).unwrap();
    for replica in cluster.replicas() {
        assert!(
            replica.is_in_recovery().unwrap(),
            "{} is a standby",
            replica.name()
        );
        assert_eq!(
            replica.sql("SELECT label FROM items WHERE id = 1").unwrap(),
            "one"
        );
        let err = replica
            .sql("INSERT INTO items VALUES (2, 'two')")
            .unwrap_err();
        assert!(err.to_string().contains("read-only transaction"), "{err}");
    }
    // The app role can use what the superuser created.
    let (user, _) = cluster.app_user();
    assert_eq!(user, "app");
    let owner = primary
        .sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        .unwrap();
    assert_eq!(owner, "app");
    let app_can_write = primary
        .sql("SELECT has_table_privilege('app', 'items', 'INSERT')")
        .unwrap();
    assert_eq!(app_can_write, "t");
}

#[test]
fn paused_replica_lags_until_resumed() {
    let cluster = Cluster::builder().replicas(2).start().unwrap();
    let (paused, live) = (&cluster.replicas()[0], &cluster.replicas()[1]);
    let primary = cluster.primary();
    primary.sql("CREATE TABLE ticks (n int)").unwrap();
    cluster.wait_caught_up(WAIT).unwrap();

    paused.pause_replay().unwrap();
    let paused_at = paused.replay_lsn().unwrap();
    primary
        .sql("INSERT INTO ticks SELECT generate_series(1, 1000)")
        .unwrap();
    let target = primary.current_lsn().unwrap();
    assert!(target > paused_at);

    live.wait_replayed(target, WAIT).unwrap();
    assert_eq!(live.sql("SELECT count(*) FROM ticks").unwrap(), "1000");
    // Give the paused one ample time to (wrongly) replay.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(paused.replay_lsn().unwrap(), paused_at);
    assert_eq!(paused.sql("SELECT count(*) FROM ticks").unwrap(), "0");
    assert!(cluster.wait_caught_up(Duration::from_millis(300)).is_err());

    paused.resume_replay().unwrap();
    cluster.wait_caught_up(WAIT).unwrap();
    assert_eq!(paused.sql("SELECT count(*) FROM ticks").unwrap(), "1000");
}
