//! The admin console (database `pgbouncer`) on a running pgrelay, with psql.

mod common;

use common::{cluster, psql, start_relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_stats_users_use_the_console_and_others_are_refused() {
    let cluster = cluster(0, false).await;
    let (su, su_pw) = cluster.superuser();
    let (app, app_pw) = cluster.app_user();
    let relay = start_relay(
        &cluster,
        &format!("pool_mode: transaction\nauth_type: plain\nadmin_users: {su}\nstats_users: {app}"),
    )
    .await;
    // Traffic so a pool exists.
    let (ok, out) = psql(&cluster, relay.port, app, app_pw, "select 1").await;
    assert!(ok, "{out}");

    let port = relay.port;
    let console = |user: &str, pw: &str, sql: &str| {
        let conninfo = format!("host=127.0.0.1 port={port} user={user} dbname=pgbouncer");
        let (pw, sql) = (pw.to_string(), sql.to_string());
        let cluster = &cluster;
        async move { common::psql_conninfo(cluster, &conninfo, &pw, &sql).await }
    };
    let (ok, out) = console(su, su_pw, "SHOW POOLS;").await;
    assert!(ok, "{out}");
    assert!(out.lines().any(|l| l.starts_with("app|app|")), "{out}");
    let (ok, out) = console(su, su_pw, "show databases").await;
    assert!(ok && out.contains("app|127.0.0.1|"), "{out}");
    let (ok, out) = console(su, su_pw, "SHOW CONFIG").await;
    assert!(
        ok && out.contains("pool_mode|transaction|session|"),
        "{out}"
    );
    let (ok, out) = console(su, su_pw, "SHOW VERSION").await;
    assert!(ok && out.contains("pgrelay"), "{out}");
    let (ok, out) = console(su, su_pw, "RELOAD").await;
    assert!(ok, "admin may reload: {out}");
    let (ok, out) = console(su, su_pw, "SHOW NONSENSE").await;
    assert!(!ok && out.contains("SHOW"), "{out}");

    let (ok, out) = console(app, app_pw, "SHOW POOLS").await;
    assert!(ok, "stats user may look: {out}");
    let (ok, out) = console(app, app_pw, "RELOAD").await;
    assert!(!ok, "stats user may not reload: {out}");

    let (ok, out) = console(app, "wrong", "SHOW POOLS").await;
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
    relay.stop().await;
}
