//! Real clients (psql, pgbench) through pgrelay against a real PostgreSQL.

mod common;

use std::time::Duration;

use common::{cluster, start_relay, Relay};
use pgrelay_testcontainers::Cluster;
use tokio::process::Command;

async fn run_tool(cluster: &Cluster, relay: &Relay, tool: &str, args: &[&str]) -> String {
    let (user, password) = cluster.app_user();
    let port = relay.port.to_string();
    let mut cmd = Command::new(cluster.bin_dir().join(tool));
    cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", user])
        .args(args)
        .arg(cluster.database())
        .env("PGPASSWORD", password)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{tool} {args:?} timed out"))
        .expect("run client tool");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    stdout + &stderr
}

fn assert_no_failures(output: &str) {
    assert!(
        output.contains("number of failed transactions: 0 (0.000%)"),
        "pgbench reported failures:\n{output}"
    );
    let processed = output
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .expect("pgbench summary");
    assert!(!processed.starts_with("0/"), "nothing processed:\n{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_work_in_session_and_transaction_mode() {
    let cluster = cluster(0, false).await;
    let mut initialised = false;
    // Session mode holds a server per client, so its pool must fit every client;
    // transaction mode shares a smaller pool.
    for (mode, pool_size) in [("session", 8), ("transaction", 3)] {
        let relay = start_relay(
            &cluster,
            &format!("pool_mode: {mode}\ndefault_pool_size: {pool_size}"),
        )
        .await;
        let out = run_tool(&cluster, &relay, "psql", &["-XAtc", "select 41 + 1"]).await;
        assert_eq!(out.trim(), "42");

        if !initialised {
            let out = run_tool(&cluster, &relay, "pgbench", &["-i", "-s", "1", "-q"]).await;
            assert!(out.contains("done"), "{out}");
            initialised = true;
        }
        for protocol in ["simple", "extended", "prepared"] {
            for script in [&["-S"][..], &["-N"][..], &[][..]] {
                // One thread per client: pgbench prepares statements with a blocking
                // call, which would stall the other clients of a shared thread
                // while they hold pooled servers in open transactions.
                let mut args = vec!["-c", "8", "-j", "8", "-t", "40", "-M", protocol];
                args.extend_from_slice(script);
                let out = run_tool(&cluster, &relay, "pgbench", &args).await;
                assert_no_failures(&out);
            }
        }
        relay.stop().await;
    }
}
