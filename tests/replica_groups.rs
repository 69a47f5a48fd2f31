//! Named replica groups: a rule's `group:<name>` target sends reads to that
//! group of the database, everything else to its default replicas.
//! 127.0.0.1 is the primary; the default group is 127.0.0.2 only and the
//! `reports` group 127.0.0.3 only.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{cluster, metric_sum, scalar, scrape, start_relay_with_db};

const DEFAULT_REPLICA: &str = "127.0.0.2";
const REPORTS_REPLICA: &str = "127.0.0.3";

const GROUPS_YAML: &str = "    replicas:\n      hosts: [127.0.0.2]\n      \
    health_check_interval: 200ms\n    replica_groups:\n      reports:\n        \
    hosts: [127.0.0.3]\n        health_check_interval: 200ms\n";

const RULES: &str = "rules:\n  \
    - name: reports\n    match:\n      regex: '(?i)\\breport_\\w+'\n    target: group:reports\n  \
    - name: nowhere\n    match:\n      tables: [elsewhere]\n    target: group:nosuch\n";

const REPORT_READ: &str = "SELECT inet_server_addr() FROM report_daily LIMIT 1";
const DEFAULT_READ: &str = "SELECT inet_server_addr() FROM t LIMIT 1";
const UNKNOWN_GROUP_READ: &str = "SELECT inet_server_addr() FROM elsewhere LIMIT 1";

/// Reads `sql` until it lands on `want`, or panics after 15 s (replicas take
/// reads once their health checks pass; until then reads go to the primary).
async fn wait_until_served_by(client: &tokio_postgres::Client, sql: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while scalar(client, sql).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{want} never served {sql}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spread(client: &tokio_postgres::Client, sql: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(scalar(client, sql).await).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_rule_sends_its_reads_to_that_group_and_others_to_the_default_set() {
    let cluster = cluster(2, false).await;
    cluster
        .prepare_schema(
            "create table t (id int); insert into t values (1);
             create table report_daily (id int); insert into report_daily values (1);
             create table elsewhere (id int); insert into elsewhere values (1);
             grant select on t, report_daily, elsewhere to app",
        )
        .unwrap();
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rules.path(), RULES).unwrap();
    let default_rules = concat!(env!("CARGO_MANIFEST_DIR"), "/routing-rules/default.yaml");
    let (su, _) = cluster.superuser();
    let extra = format!(
        "pool_mode: transaction\nmetrics_addr: 127.0.0.1:0\nauth_type: plain\nadmin_users: {su}\n\
         routing_rules: [{default_rules}, {}]",
        rules.path().display()
    );
    let relay = start_relay_with_db(&cluster, &extra, GROUPS_YAML).await;
    let client = relay.connect(&cluster).await;
    wait_until_served_by(&client, REPORT_READ, REPORTS_REPLICA).await;
    wait_until_served_by(&client, DEFAULT_READ, DEFAULT_REPLICA).await;

    let reports = spread(&client, REPORT_READ, 200).await;
    assert_eq!(reports.get(REPORTS_REPLICA), Some(&200), "{reports:?}");
    let others = spread(&client, DEFAULT_READ, 200).await;
    assert_eq!(others.get(DEFAULT_REPLICA), Some(&200), "{others:?}");

    // Pipelined reads of alternating groups: a server attached for one group
    // must not serve the next statement of the other.
    for _ in 0..50 {
        let (a, b) = tokio::join!(scalar(&client, REPORT_READ), scalar(&client, DEFAULT_READ));
        assert_eq!((a.as_str(), b.as_str()), (REPORTS_REPLICA, DEFAULT_REPLICA));
    }

    // A group the database does not define: its default replicas, counted.
    let unknown = spread(&client, UNKNOWN_GROUP_READ, 20).await;
    assert_eq!(unknown.get(DEFAULT_REPLICA), Some(&20), "{unknown:?}");
    let metrics_addr = relay.running.as_ref().unwrap().metrics_addr.unwrap();
    let text = scrape(metrics_addr).await;
    let counted = metric_sum(
        &text,
        "pgrelay_topology_events_total",
        &["event=\"unknown_group\""],
    );
    assert!(counted >= 20.0, "unknown_group counted {counted}");

    // SHOW REPLICAS names each endpoint's group.
    let (_, su_pw) = cluster.superuser();
    let conninfo = format!(
        "host=127.0.0.1 port={} user={su} dbname=pgbouncer",
        relay.port
    );
    let (ok, out) = common::psql_conninfo(&cluster, &conninfo, su_pw, "SHOW REPLICAS").await;
    assert!(ok, "{out}");
    let db = cluster.database();
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{db}|default|{DEFAULT_REPLICA}|"))),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{db}|reports|{REPORTS_REPLICA}|"))),
        "{out}"
    );
    relay.stop().await;
}

/// Open probe connections on `node`: the probe's kept connection shows its
/// query as the last one run.
fn probe_connections(node: &pgrelay_testcontainers::Node) -> usize {
    node.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_is_in_recovery(), CASE%'")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_one_database_share_one_probe_per_endpoint() {
    let cluster = cluster(2, false).await;
    let relay = start_relay_with_db(&cluster, "pool_mode: transaction", GROUPS_YAML).await;
    let app = relay.connect(&cluster).await;
    let (su, su_pw) = cluster.superuser();
    let admin = common::connect(&format!(
        "host=127.0.0.1 port={} user={su} password={su_pw} dbname={}",
        relay.port,
        cluster.database()
    ))
    .await;
    for client in [&app, &admin] {
        wait_until_served_by(client, "SELECT inet_server_addr()", DEFAULT_REPLICA).await;
    }
    // Two users, two groups: still one probe per replica and one of the primary.
    for node in cluster.nodes() {
        assert!(
            common::eventually(Duration::from_secs(5), || probe_connections(node) == 1).await,
            "{}: {} probe connections",
            node.addr(),
            probe_connections(node)
        );
    }
    relay.stop().await;
}
