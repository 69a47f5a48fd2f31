//! The admin console (database `pgbouncer`) on a running pgrelay, with psql.

mod common;

use std::collections::HashMap;

use common::{cluster, console_rows, psql, rows_when, start_relay};

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

/// The console's `SHOW STATS` row for `database`, by column name.
async fn show_stats(port: u16, user: &str, password: &str, database: &str) -> HashMap<String, u64> {
    let console = common::connect(&format!(
        "host=127.0.0.1 port={port} user={user} password={password} dbname=pgbouncer"
    ))
    .await;
    let rows = console_rows(&console, "SHOW STATS").await;
    let row = rows
        .iter()
        .find(|r| r["database"] == database)
        .unwrap_or_else(|| panic!("no SHOW STATS row for {database}: {rows:?}"));
    row.iter()
        .filter(|(k, _)| k.as_str() != "database")
        .map(|(k, v)| (k.clone(), v.parse().expect("a number")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_counts_transactions_queries_and_bytes_and_averages_them() {
    let cluster = cluster(0, false).await;
    let (su, su_pw) = cluster.superuser();
    let relay = start_relay(
        &cluster,
        &format!("pool_mode: transaction\nauth_type: plain\nadmin_users: {su}\nstats_period: 1"),
    )
    .await;
    let db = cluster.database();
    let before = show_stats(relay.port, su, su_pw, db).await;
    assert_eq!(before["total_xact_count"], 0, "{before:?}");

    // Five single-statement transactions, then one of three statements:
    // six transactions and eight queries, each transaction on one checkout.
    let client = relay.connect(&cluster).await;
    for _ in 0..5 {
        client.simple_query("select 1").await.unwrap();
    }
    for sql in ["begin", "select pg_sleep(0.05)", "commit"] {
        client.simple_query(sql).await.unwrap();
    }
    let stats = show_stats(relay.port, su, su_pw, db).await;
    assert_eq!(stats["total_xact_count"], 6, "{stats:?}");
    assert_eq!(stats["total_query_count"], 8, "{stats:?}");
    // One checkout per transaction, and the first login's, which fetched
    // the server's parameters.
    assert_eq!(stats["total_server_assignment_count"], 7, "{stats:?}");
    assert!(
        stats["total_received"] > 0 && stats["total_sent"] > 0,
        "{stats:?}"
    );
    // The explicit transaction alone held its server for the 50 ms sleep.
    assert!(stats["total_xact_time"] >= 50_000, "{stats:?}");
    assert!(stats["total_query_time"] >= 50_000, "{stats:?}");
    assert!(
        stats["total_query_time"] <= stats["total_xact_time"],
        "{stats:?}"
    );

    let extended = |s: &HashMap<String, u64>| {
        (
            s["total_client_parse_count"],
            s["total_server_parse_count"],
            s["total_bind_count"],
        )
    };
    assert_eq!(extended(&stats), (0, 0, 0), "simple queries only");
    // A named statement, prepared once and executed three times. Its server
    // prepares it once, more only if an execution lands on another server.
    let statement = client.prepare("select $1::int").await.unwrap();
    for i in 0..3 {
        client.query_one(&statement, &[&i]).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stats = loop {
        // Published just after the client has its reply: poll.
        let stats = show_stats(relay.port, su, su_pw, db).await;
        if stats["total_bind_count"] == 3 || std::time::Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (client_parses, server_parses, binds) = extended(&stats);
    assert_eq!((client_parses, binds), (1, 3), "{stats:?}");
    assert!((1..=4).contains(&server_parses), "{stats:?}");

    // Averages cover the last complete second: keep traffic going until one
    // such second has some.
    let mut averaged = None;
    for _ in 0..40 {
        client.simple_query("select 1").await.unwrap();
        let stats = show_stats(relay.port, su, su_pw, db).await;
        if stats["avg_xact_count"] > 0 {
            averaged = Some(stats);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let stats = averaged.expect("averages appear within 4 s at stats_period = 1");
    assert!(
        stats["avg_query_count"] >= stats["avg_xact_count"],
        "{stats:?}"
    );
    assert!(stats["avg_recv"] > 0 && stats["avg_sent"] > 0, "{stats:?}");
    assert!(stats["avg_xact_time"] > 0, "{stats:?}");

    // STATS_TOTALS and TOTALS read the same counters, under PgBouncer's
    // names; with one database, TOTALS is its row. Traffic has stopped.
    let console = common::connect(&format!(
        "host=127.0.0.1 port={} user={su} password={su_pw} dbname=pgbouncer",
        relay.port
    ))
    .await;
    let stats = show_stats(relay.port, su, su_pw, db).await;
    let split = console_rows(&console, "SHOW STATS_TOTALS").await;
    let split = split.iter().find(|r| r["database"] == db).expect("a row");
    assert_eq!(split["xact_count"], stats["total_xact_count"].to_string());
    assert_eq!(split["bytes_received"], stats["total_received"].to_string());
    assert_eq!(split["bind_count"], "3");
    let totals: HashMap<String, String> = console_rows(&console, "SHOW TOTALS")
        .await
        .into_iter()
        .map(|r| (r["name"].clone(), r["value"].clone()))
        .collect();
    assert_eq!(
        totals["total_xact_count"],
        stats["total_xact_count"].to_string()
    );
    assert_eq!(
        totals["total_server_bytes"],
        stats["total_sent"].to_string()
    );
    let averages = console_rows(&console, "SHOW STATS_AVERAGES").await;
    assert!(averages.iter().any(|r| r["database"] == db), "{averages:?}");
    drop(statement);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_session_mode_a_query_is_timed_from_when_it_is_sent_not_from_login() {
    let cluster = cluster(0, false).await;
    let (su, su_pw) = cluster.superuser();
    let relay = start_relay(
        &cluster,
        &format!("pool_mode: session\nauth_type: plain\nadmin_users: {su}"),
    )
    .await;
    // The session holds its server from login on; it idles before querying.
    let client = relay.connect(&cluster).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    client.simple_query("select 1").await.unwrap();
    for sql in ["begin", "select 1", "commit"] {
        client.simple_query(sql).await.unwrap();
    }
    let stats = show_stats(relay.port, su, su_pw, cluster.database()).await;
    assert_eq!(stats["total_xact_count"], 2, "{stats:?}");
    assert_eq!(stats["total_query_count"], 4, "{stats:?}");
    assert!(stats["total_query_time"] < 250_000, "{stats:?}");
    assert!(stats["total_xact_time"] < 250_000, "{stats:?}");
    relay.stop().await;
}

/// [`rows_when`] for `SHOW CLIENTS`, by `application_name`.
async fn clients_when(
    console: &tokio_postgres::Client,
    ready: impl Fn(&HashMap<String, HashMap<String, String>>) -> bool,
) -> HashMap<String, HashMap<String, String>> {
    let by_name = |rows: &[HashMap<String, String>]| -> HashMap<String, HashMap<String, String>> {
        rows.iter()
            .map(|row| (row["application_name"].clone(), row.clone()))
            .collect()
    };
    by_name(&rows_when(console, "SHOW CLIENTS", |rows| ready(&by_name(rows))).await)
}

/// `SHOW CLIENTS` rows by `application_name`.
async fn show_clients(
    console: &tokio_postgres::Client,
) -> HashMap<String, HashMap<String, String>> {
    console_rows(console, "SHOW CLIENTS")
        .await
        .into_iter()
        .map(|row| (row["application_name"].clone(), row))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_lists_who_is_connected_what_they_wait_for_and_their_server() {
    let (cluster, relay, console) = common::relay_with_console("default_pool_size: 1").await;
    let base = relay.conn_string(&cluster);
    let holder = common::connect(&format!("{base} application_name=holder")).await;
    let idle = common::connect(&format!("{base} application_name=idler")).await;
    let waiter = common::connect(&format!("{base} application_name=waiter")).await;

    // The holder keeps the pool's one server in a transaction; the waiter queues.
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let queued = tokio::spawn(async move {
        waiter.simple_query("SELECT 1").await.unwrap();
        waiter
    });
    let clients = clients_when(&console, |c| {
        c.get("waiter").is_some_and(|w| w["state"] == "waiting")
    })
    .await;
    let (app_user, _) = cluster.app_user();
    let holding = &clients["holder"];
    assert_eq!(holding["type"], "C");
    assert_eq!(holding["user"], app_user);
    assert_eq!(holding["database"], cluster.database());
    assert_eq!(holding["state"], "active");
    assert_eq!(holding["addr"], "127.0.0.1");
    assert_eq!(holding["local_port"], relay.port.to_string());
    assert_eq!(holding["tls"], "");
    assert_ne!(holding["link"], "", "attached to the server");
    assert_eq!(clients["idler"]["state"], "active");
    assert_eq!(clients["idler"]["link"], "", "idle between transactions");
    assert_eq!(clients["waiter"]["link"], "");
    assert_eq!(clients["console"]["database"], "pgbouncer");
    assert_eq!(clients.len(), 4, "{clients:?}");
    let ids: std::collections::BTreeSet<&String> = clients.values().map(|c| &c["ptr"]).collect();
    assert_eq!(ids.len(), 4, "each client has its own id");
    // wait/wait_us: whole seconds plus microseconds, only for the waiter.
    let waited = |c: &HashMap<String, String>| {
        c["wait"].parse::<u64>().unwrap() * 1_000_000 + c["wait_us"].parse::<u64>().unwrap()
    };
    assert!(waited(&clients["waiter"]) > 0, "{:?}", clients["waiter"]);
    assert_eq!(waited(&clients["idler"]), 0);

    // The holder commits: the waiter gets the server, runs, and goes idle.
    holder.batch_execute("COMMIT").await.unwrap();
    let waiter = tokio::time::timeout(std::time::Duration::from_secs(10), queued)
        .await
        .expect("the waiter is served")
        .unwrap();
    let clients = clients_when(&console, |c| c["waiter"]["link"].is_empty()).await;
    assert_eq!(clients["waiter"]["state"], "active");
    assert_eq!(clients["holder"]["link"], "");
    // Same format, so the strings order as the times do.
    for name in ["waiter", "holder"] {
        let c = &clients[name];
        assert!(c["request_time"] >= c["connect_time"], "{c:?}");
    }

    // A client that renames itself is listed under its new name, as the
    // server reported it.
    idle.batch_execute("SET application_name = 'renamed'")
        .await
        .unwrap();
    let clients = clients_when(&console, |c| c.contains_key("renamed")).await;
    assert!(!clients.contains_key("idler"), "{clients:?}");

    drop(idle);
    clients_when(&console, |c| !c.contains_key("renamed")).await;
    drop((waiter, holder, console));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_servers_lists_pooled_servers_and_the_client_on_each() {
    let (cluster, relay, console) = common::relay_with_console("default_pool_size: 2").await;
    let base = relay.conn_string(&cluster);
    let holder = common::connect(&format!("{base} application_name=holder")).await;
    let other = common::connect(&format!("{base} application_name=other")).await;
    // Two transactions at once open two servers; one stays attached.
    holder.batch_execute("BEGIN").await.unwrap();
    other.batch_execute("BEGIN").await.unwrap();
    let statement = holder.prepare("SELECT pg_backend_pid()").await.unwrap();
    let pid: i32 = holder.query_one(&statement, &[]).await.unwrap().get(0);
    other.batch_execute("COMMIT").await.unwrap();

    let servers = rows_when(&console, "SHOW SERVERS", |rows| {
        rows.iter().filter(|s| s["state"] == "active").count() == 1
    })
    .await;
    assert_eq!(servers.len(), 2, "{servers:?}");
    let clients = show_clients(&console).await;
    let active: Vec<_> = servers.iter().filter(|s| s["state"] == "active").collect();
    assert_eq!(active.len(), 1, "{servers:?}");
    let active = active[0];
    let (app_user, _) = cluster.app_user();
    assert_eq!(active["type"], "S");
    assert_eq!(active["user"], app_user);
    assert_eq!(active["database"], cluster.database());
    assert_eq!(active["addr"], "127.0.0.1");
    assert_eq!(active["port"], cluster.port().to_string());
    assert_eq!(
        active["remote_pid"],
        pid.to_string(),
        "the holder's backend"
    );
    assert_eq!(active["link"], clients["holder"]["ptr"]);
    assert_eq!(clients["holder"]["link"], active["ptr"]);
    assert_eq!(clients["holder"]["prepared_statements"], "1");
    assert_eq!(clients["other"]["prepared_statements"], "0");
    assert_eq!(active["application_name"], "holder");
    assert_ne!(active["prepared_statements"], "0", "{active:?}");
    let idle = servers.iter().find(|s| s["state"] == "idle").unwrap();
    assert_eq!(idle["link"], "");
    assert_eq!(idle["application_name"], "");
    assert_ne!(idle["ptr"], active["ptr"]);
    assert_eq!(active["request_time"], clients["holder"]["request_time"]);
    assert_eq!(idle["request_time"], idle["connect_time"]);
    let lists = console_rows(&console, "SHOW LISTS").await;
    let used_servers = lists.iter().find(|r| r["list"] == "used_servers").unwrap();
    assert_eq!(used_servers["items"], "2", "{lists:?}");

    holder.batch_execute("COMMIT").await.unwrap();
    let servers = rows_when(&console, "SHOW SERVERS", |rows| {
        rows.iter().all(|s| s["state"] == "idle")
    })
    .await;
    assert!(servers.iter().all(|s| s["link"].is_empty()), "{servers:?}");
    drop((holder, other, console));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_users_lists_the_auth_file_users_with_their_server_connections() {
    let (cluster, relay, console) =
        common::relay_with_console("default_pool_size: 3\nmax_user_connections: 7").await;
    let base = relay.conn_string(&cluster);
    let first = common::hold_a_server(&base).await;
    let second = common::hold_a_server(&base).await;
    let (su, _) = cluster.superuser();
    let (app, _) = cluster.app_user();

    let users = console_rows(&console, "SHOW USERS").await;
    let names: Vec<&str> = users.iter().map(|u| u["name"].as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "by name");
    assert!(names.contains(&su) && names.contains(&app), "{users:?}");
    let row = |name: &str| users.iter().find(|u| u["name"] == name).unwrap();
    assert_eq!(row(app)["current_connections"], "2", "{users:?}");
    assert_eq!(row(su)["current_connections"], "0", "{users:?}");
    assert_eq!(row(app)["max_user_connections"], "7");
    assert_eq!(row(app)["pool_mode"], "", "no per-user pool mode: NULL");
    drop((first, second, console));
    relay.stop().await;
}

/// A console session sits idle between commands: a shutdown ends it (57P01)
/// instead of waiting out `shutdown_timeout` for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_console_session_does_not_hold_up_shutdown() {
    let (_cluster, relay, console) = common::relay_with_console("shutdown_timeout: 60s").await;
    console.simple_query("SHOW VERSION").await.expect("console");
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(15), relay.stop()).await;
    assert!(stopped.is_ok(), "the shutdown waited for the idle console");
    assert!(console.simple_query("SHOW VERSION").await.is_err());
}

/// `SHOW POOLS` counts a pool's clients as PgBouncer does: idle and attached
/// clients are active, a queued one is waiting, and `maxwait` is how long the
/// oldest in the queue has waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_pools_counts_idle_attached_and_waiting_clients_and_the_longest_wait() {
    let (cluster, relay, console) = common::relay_with_console(
        "default_pool_size: 1\nquery_wait_timeout: 60\nserver_idle_timeout: 600",
    )
    .await;
    let base = relay.conn_string(&cluster);
    let holder = common::hold_a_server(&base).await;
    let idle = common::connect(&base).await;
    let waiter = common::connect(&base).await;
    let queued = tokio::spawn(async move {
        let answer = waiter.simple_query("SELECT 1").await.map(|_| ());
        (waiter, answer)
    });

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let row = loop {
        let pools = console_rows(&console, "SHOW POOLS").await;
        let row = pools
            .into_iter()
            .find(|r| r["database"] == cluster.database())
            .expect("a pool row for the database");
        // Wait until the queued client has waited over a second.
        if row["cl_waiting"] == "1" && row["maxwait"] != "0" {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no waiting client with a wait: {row:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        row["cl_active"], "2",
        "the holder and the idle client: {row:?}"
    );
    assert_eq!(row["sv_active"], "1", "{row:?}");
    assert_eq!(row["sv_idle"], "0", "{row:?}");
    assert_eq!(row["sv_login"], "0", "{row:?}");
    let maxwait: u64 = row["maxwait"].parse().unwrap();
    let maxwait_us: u64 = row["maxwait_us"].parse().unwrap();
    assert!(
        (1..10).contains(&maxwait) && maxwait_us < 1_000_000,
        "{row:?}"
    );

    holder.batch_execute("COMMIT").await.unwrap();
    let (_waiter, answer) = tokio::time::timeout(std::time::Duration::from_secs(10), queued)
        .await
        .expect("the queued query runs once the server is free")
        .unwrap();
    answer.expect("served");
    let pools = console_rows(&console, "SHOW POOLS").await;
    let row = pools
        .iter()
        .find(|r| r["database"] == cluster.database())
        .unwrap();
    assert_eq!(
        (row["cl_waiting"].as_str(), row["maxwait"].as_str()),
        ("0", "0"),
        "{row:?}"
    );
    assert_eq!(row["cl_active"], "3", "{row:?}");
    drop(idle);
    relay.stop().await;
}
