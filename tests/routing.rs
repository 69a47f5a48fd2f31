//! Read/write routing through pgrelay in front of a primary and 2 replicas.
//! Where a statement ran is read back with `inet_server_addr()`: 127.0.0.1
//! is the primary, 127.0.0.2 and 127.0.0.3 the replicas.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{cluster, scalar, start_relay_with_db};
use pgrelay_testcontainers::Cluster;

const PRIMARY: &str = "127.0.0.1";
const REPLICAS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];

fn setup_schema(cluster: &Cluster) {
    cluster
        .prepare_schema(
            "create table t (id serial primary key, v int not null default 0);
             insert into t (v) select 0 from generate_series(1, 1000);
             create table pinned (id int); insert into pinned values (1);
             grant all on t, pinned, t_id_seq to app",
        )
        .unwrap();
}

/// Round robin, so one sequential client's reads visibly use both replicas.
const REPLICAS_YAML: &str = "    replicas:\n      hosts: [127.0.0.2, 127.0.0.3]\n      \
    health_check_interval: 200ms\n      balance: round_robin\n";

/// Replicas take reads once their health checks pass; until then reads go to
/// the primary. Waits until every replica has served a read.
async fn wait_for_replicas(client: &tokio_postgres::Client) {
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < REPLICAS.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas never became healthy: {seen:?}"
        );
        let addr = scalar(client, "SELECT inet_server_addr()").await;
        if REPLICAS.contains(&addr.as_str()) {
            seen.insert(addr);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn addr_of(client: &tokio_postgres::Client, sql: &str) -> String {
    scalar(client, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_everything_else_to_the_primary() {
    let cluster = cluster(2, false).await;
    setup_schema(&cluster);
    let relay = start_relay_with_db(
        &cluster,
        "pool_mode: transaction\nmetrics_addr: 127.0.0.1:0",
        REPLICAS_YAML,
    )
    .await;
    let client = relay.connect(&cluster).await;
    wait_for_replicas(&client).await;

    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..1000 {
        *counts
            .entry(addr_of(&client, "SELECT inet_server_addr()").await)
            .or_default() += 1;
    }
    assert!(
        !counts.contains_key(PRIMARY),
        "a read reached the primary: {counts:?}"
    );
    for r in REPLICAS {
        assert!(
            counts.get(r).copied().unwrap_or(0) > 0,
            "replica {r} unused: {counts:?}"
        );
    }

    // Prometheus saw the same: at least 1000 reads routed to replicas.
    let metrics_addr = relay
        .running
        .as_ref()
        .unwrap()
        .metrics_addr
        .expect("metrics on");
    let text = common::scrape(metrics_addr).await;
    let reads = common::metric_sum(
        &text,
        "pgrelay_routing_decisions_total",
        &["reason=\"read\""],
    );
    assert!(reads >= 1000.0, "routed reads {reads}:\n{text}");
    assert!(common::metric_sum(&text, "pgrelay_client_logins_total", &["ok"]) >= 1.0);

    for write in [
        "INSERT INTO t (v) VALUES (1) RETURNING inet_server_addr()",
        "UPDATE t SET v = v + 1 WHERE id = 1 RETURNING inet_server_addr()",
        "DELETE FROM t WHERE id = 1000 RETURNING inet_server_addr()",
        "SELECT inet_server_addr() FROM t WHERE id = 2 FOR UPDATE",
        "SELECT inet_server_addr() FROM t WHERE id = 3 FOR SHARE SKIP LOCKED",
        "WITH moved AS (UPDATE t SET v = 2 WHERE id = 4 RETURNING id) SELECT inet_server_addr() FROM moved",
        "SELECT inet_server_addr() FROM (SELECT nextval('t_id_seq')) s",
        "/* pgrelay:primary */ SELECT inet_server_addr()",
        "SELECT inet_server_addr() /* unparseable ??? */ FROM t WHERE (( LIMIT 1",
    ] {
        let result = client.simple_query(write).await;
        if write.contains("unparseable") {
            // Not valid SQL: it fails, and it failed on the primary (never a 25006).
            let err = result.expect_err("invalid SQL fails");
            let code = common::sqlstate(&err);
            assert_eq!(code.as_deref(), Some("42601"), "{write}: {err}");
            continue;
        }
        let rows = result.unwrap_or_else(|e| panic!("{write}: {e}"));
        let addr = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{write}: no row"));
        assert_eq!(addr, PRIMARY, "{write}");
    }

    // An explicit transaction runs on the primary, start to end.
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(addr_of(&client, "SELECT inet_server_addr()").await, PRIMARY);
    client.batch_execute("COMMIT").await.unwrap();

    // A read-only transaction runs on one replica.
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    let first = addr_of(&client, "SELECT inet_server_addr()").await;
    assert!(REPLICAS.contains(&first.as_str()), "{first}");
    for _ in 0..5 {
        assert_eq!(addr_of(&client, "SELECT inet_server_addr()").await, first);
    }
    client.batch_execute("COMMIT").await.unwrap();

    // The session override, intercepted and answered by pgrelay.
    client
        .batch_execute("SET pgrelay.route = 'primary'")
        .await
        .unwrap();
    assert_eq!(scalar(&client, "SHOW pgrelay.route").await, "primary");
    assert_eq!(addr_of(&client, "SELECT inet_server_addr()").await, PRIMARY);
    client.batch_execute("RESET pgrelay.route").await.unwrap();
    let back = addr_of(&client, "SELECT inet_server_addr()").await;
    assert!(REPLICAS.contains(&back.as_str()), "{back}");
    let err = client
        .batch_execute("SET pgrelay.route = 'sideways'")
        .await
        .expect_err("invalid route");
    assert_eq!(common::sqlstate(&err).as_deref(), Some("22023"));

    // The extended protocol (tokio-postgres prepares a named statement).
    let stmt = client
        .prepare("SELECT host(inet_server_addr())")
        .await
        .unwrap();
    for _ in 0..20 {
        let addr: String = client.query_one(&stmt, &[]).await.unwrap().get(0);
        assert!(REPLICAS.contains(&addr.as_str()), "{addr}");
    }
    let write = client
        .prepare("UPDATE t SET v = v + 1 WHERE id = $1 RETURNING host(inet_server_addr())")
        .await
        .unwrap();
    let addr: String = client.query_one(&write, &[&5i32]).await.unwrap().get(0);
    assert_eq!(addr, PRIMARY);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_file_pins_a_table_to_the_primary_and_startup_route_is_honoured() {
    let cluster = cluster(2, false).await;
    setup_schema(&cluster);
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        "rules:\n  - name: pinned-table\n    match:\n      tables: [pinned]\n    target: primary\n",
    )
    .unwrap();
    let default_rules = concat!(env!("CARGO_MANIFEST_DIR"), "/routing-rules/default.yaml");
    let extra = format!(
        "pool_mode: transaction\nrouting_rules: [{default_rules}, {}]",
        rules.path().display()
    );
    let relay = start_relay_with_db(&cluster, &extra, REPLICAS_YAML).await;
    let client = relay.connect(&cluster).await;
    wait_for_replicas(&client).await;
    for _ in 0..20 {
        assert_eq!(
            addr_of(&client, "SELECT inet_server_addr() FROM pinned").await,
            PRIMARY
        );
        let other = addr_of(&client, "SELECT inet_server_addr() FROM t LIMIT 1").await;
        assert!(REPLICAS.contains(&other.as_str()), "{other}");
    }
    // `pgrelay.route` at connect time, through libpq's `options`.
    let pinned = common::connect(&format!(
        "{} options='-c pgrelay.route=primary'",
        relay.conn_string(&cluster)
    ))
    .await;
    assert_eq!(scalar(&pinned, "SHOW pgrelay.route").await, "primary");
    assert_eq!(
        addr_of(&pinned, "SELECT inet_server_addr() FROM t LIMIT 1").await,
        PRIMARY
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_pgbench_run_through_the_router_has_no_errors() {
    let cluster = cluster(2, false).await;
    setup_schema(&cluster);
    let relay = start_relay_with_db(
        &cluster,
        "pool_mode: transaction\ndefault_pool_size: 4",
        REPLICAS_YAML,
    )
    .await;
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "\\set id random(1, 900)\n\
         SELECT v FROM t WHERE id = :id;\n\
         UPDATE t SET v = v + 1 WHERE id = :id;\n\
         SELECT count(*) FROM t WHERE v > 0;\n\
         BEGIN;\nSELECT v FROM t WHERE id = :id FOR UPDATE;\nUPDATE t SET v = v - 1 WHERE id = :id;\nCOMMIT;\n\
         BEGIN READ ONLY;\nSELECT sum(v) FROM t;\nCOMMIT;\n",
    )
    .unwrap();
    let (user, password) = cluster.app_user();
    for protocol in ["simple", "extended", "prepared"] {
        let out = tokio::process::Command::new(cluster.bin_dir().join("pgbench"))
            .args(["-h", "127.0.0.1", "-p", &relay.port.to_string(), "-U", user])
            .args([
                "-n", "-c", "4", "-j", "4", "-t", "100", "-M", protocol, "-f",
            ])
            .arg(script.path())
            .arg(cluster.database())
            .env("PGPASSWORD", password)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .expect("pgbench finishes")
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{protocol}: {text}");
        assert!(
            text.contains("number of failed transactions: 0 (0.000%)"),
            "{protocol}: {text}"
        );
        assert!(!text.contains("25006"), "a write reached a replica: {text}");
    }
    relay.stop().await;
}
