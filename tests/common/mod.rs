//! Shared helpers for integration tests: a real cluster from the
//! testcontainers crate with pgrelay started in-process in front of it.
#![allow(dead_code)] // each test binary uses a different subset

pub mod deployment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgrelay::app::Running;
use pgrelay::config::Config;
use pgrelay_testcontainers::Cluster;

pub struct Relay {
    pub running: Option<Running>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Relay {
    /// libpq connection string through pgrelay as the cluster's app user.
    pub fn conn_string(&self, cluster: &Cluster) -> String {
        let (user, password) = cluster.app_user();
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={}",
            self.port,
            cluster.database()
        )
    }

    pub async fn connect(&self, cluster: &Cluster) -> tokio_postgres::Client {
        connect(&self.conn_string(cluster)).await
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A protocol 3.0 StartupMessage for `user` on `database`, for tests that
/// drive the login by hand.
pub fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    startup_packet_with(user, database, &[])
}

/// [`startup_packet`] with more startup parameters (e.g. `client_encoding`).
pub fn startup_packet_with(user: &str, database: &str, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", database)]
        .into_iter()
        .chain(params.iter().copied())
    {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A raw socket past authentication as the cluster's app user (md5 or plain
/// password, as the userlist has it), at its first ReadyForQuery.
pub async fn raw_login(
    cluster: &Cluster,
    port: u16,
    params: &[(&str, &str)],
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (user, password) = cluster.app_user();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&startup_packet_with(user, cluster.database(), params))
        .await
        .unwrap();
    let mut header = [0u8; 9];
    s.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0], b'R');
    let code = i32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    let mut rest =
        vec![0u8; i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize - 8];
    s.read_exact(&mut rest).await.unwrap();
    let response = match code {
        5 => {
            let salt = [rest[0], rest[1], rest[2], rest[3]];
            postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt)
        }
        3 => password.to_string(),
        other => panic!("unexpected auth request {other}"),
    };
    let mut pw = vec![b'p'];
    pw.extend_from_slice(&((response.len() + 5) as i32).to_be_bytes());
    pw.extend_from_slice(response.as_bytes());
    pw.push(0);
    s.write_all(&pw).await.unwrap();
    let login = read_until_ready(&mut s).await;
    assert!(
        !login.iter().any(|(tag, _)| *tag == b'E'),
        "login failed: {login:?}"
    );
    s
}

/// Backend messages (tag, body) up to and including the next ReadyForQuery;
/// panics if the connection closes first or nothing arrives for 30 s.
pub async fn read_until_ready(s: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut messages = Vec::new();
    loop {
        let mut header = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut header))
            .await
            .expect("a reply within 30 s")
            .unwrap_or_else(|e| panic!("connection closed after {messages:?}: {e}"));
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await.unwrap();
        let done = header[0] == b'Z';
        messages.push((header[0], body));
        if done {
            return messages;
        }
    }
}

/// Connects with tokio-postgres and drives the connection in the background.
pub async fn connect(conn: &str) -> tokio_postgres::Client {
    try_connect(conn).await.expect("connect through pgrelay")
}

pub async fn try_connect(conn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A userlist with the cluster's users and their plain passwords.
pub fn write_userlist(cluster: &Cluster, dir: &Path) -> PathBuf {
    let (su, su_pw) = cluster.superuser();
    let (app, app_pw) = cluster.app_user();
    let path = dir.join("userlist.txt");
    std::fs::write(
        &path,
        format!("\"{su}\" \"{su_pw}\"\n\"{app}\" \"{app_pw}\"\n"),
    )
    .unwrap();
    path
}

/// Starts pgrelay in front of the cluster's primary on an ephemeral port.
/// `extra` is YAML appended at top level (e.g. `pool_mode: transaction`).
pub async fn start_relay(cluster: &Cluster, extra: &str) -> Relay {
    start_relay_with_env(cluster, extra, &BTreeMap::new()).await
}

/// Like [`start_relay`], with `db_extra` (YAML, indented 4 spaces) added to
/// the database entry, e.g. its replicas.
pub async fn start_relay_with_db(cluster: &Cluster, extra: &str, db_extra: &str) -> Relay {
    start_relay_full(cluster, extra, db_extra, &BTreeMap::new()).await
}

pub async fn start_relay_with_env(
    cluster: &Cluster,
    extra: &str,
    env: &BTreeMap<String, String>,
) -> Relay {
    start_relay_full(cluster, extra, "", env).await
}

async fn start_relay_full(
    cluster: &Cluster,
    extra: &str,
    db_extra: &str,
    env: &BTreeMap<String, String>,
) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let userlist = write_userlist(cluster, dir.path());
    let yaml = format!(
        "listen_addr: 127.0.0.1\nlisten_port: 0\nauth_file: {}\n\
         server_tls_sslmode: disable\n{metrics}{extra}\n\
         databases:\n  {db}:\n    host: 127.0.0.1\n    port: {port}\n{db_extra}\n",
        userlist.display(),
        db = cluster.database(),
        port = cluster.port(),
        metrics = if extra.contains("metrics_addr") {
            ""
        } else {
            "metrics_addr: off\n"
        },
    );
    start_yaml(dir, &yaml, env).await
}

/// Starts pgrelay from `yaml`, written to `dir` as its configuration file
/// (so RELOAD rereads it); `dir` lives as long as the relay.
pub async fn start_yaml(
    dir: tempfile::TempDir,
    yaml: &str,
    env: &BTreeMap<String, String>,
) -> Relay {
    let path = dir.path().join("pgrelay.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = Config::load_from_str(&path, yaml, env)
        .unwrap_or_else(|e| panic!("test config invalid: {e}\n{yaml}"));
    let running = pgrelay::app::start_from(config, Some(path))
        .await
        .expect("start pgrelay");
    let port = running.addrs[0].port();
    Relay {
        running: Some(running),
        port,
        dir,
    }
}

pub async fn start_with_config(config: Config, dir: tempfile::TempDir) -> Relay {
    let running = pgrelay::app::start(config).await.expect("start pgrelay");
    let port = running.addrs[0].port();
    Relay {
        running: Some(running),
        port,
        dir,
    }
}

/// Starts a cluster on a blocking thread (it shells out and waits).
pub async fn cluster(replicas: usize, ssl: bool) -> Cluster {
    tokio::task::spawn_blocking(move || {
        Cluster::builder()
            .replicas(replicas)
            .ssl(ssl)
            .start()
            .expect("start PostgreSQL cluster")
    })
    .await
    .unwrap()
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server (or pgrelay) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// A client that holds a server in an open transaction (the only one, in a
/// pool of one, so the next client's query queues).
pub async fn hold_a_server(conn: &str) -> tokio_postgres::Client {
    let holder = connect(conn).await;
    holder.batch_execute("BEGIN").await.unwrap();
    assert_eq!(scalar(&holder, "SELECT 1").await, "1");
    holder
}

/// First column of the first row of a simple query, as text.
pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> String {
    try_scalar(client, sql).await.expect("simple query")
}

pub async fn try_scalar(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<String, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .expect("a row"))
}

/// Runs `psql -XAt -c sql` through pgrelay as `user`; returns (success, stdout+stderr).
pub async fn psql(
    cluster: &Cluster,
    port: u16,
    user: &str,
    password: &str,
    sql: &str,
) -> (bool, String) {
    psql_conninfo(cluster, &app_conninfo(cluster, port, user), password, sql).await
}

/// `host=127.0.0.1 port=… user=… dbname=<the cluster's database>`.
pub fn app_conninfo(cluster: &Cluster, port: u16, user: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user={user} dbname={}",
        cluster.database()
    )
}

/// Runs `psql -XAt -c sql "<conninfo>"`; returns (success, stdout+stderr).
pub async fn psql_conninfo(
    cluster: &Cluster,
    conninfo: &str,
    password: &str,
    sql: &str,
) -> (bool, String) {
    psql_with(cluster, conninfo, password, sql.as_ref(), &[]).await
}

/// [`psql_conninfo`] with SQL that need not be UTF-8 (in the client encoding
/// `env` may set, e.g. `PGCLIENTENCODING`) and more environment variables.
pub async fn psql_with(
    cluster: &Cluster,
    conninfo: &str,
    password: &str,
    sql: &std::ffi::OsStr,
    env: &[(&str, &str)],
) -> (bool, String) {
    let mut command = tokio::process::Command::new(cluster.bin_dir().join("psql"));
    command
        .arg("-XAt")
        .arg("-c")
        .arg(sql)
        .arg(conninfo)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("psql finished")
        .expect("psql runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The Prometheus text pgrelay serves at `addr`.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut body))
        .await
        .expect("scrape finishes")
        .unwrap();
    body
}

/// The sum of every sample of `metric` whose labels contain all of `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
        .filter(|l| l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The backend pid of the server the client's next statement runs on.
pub async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid")
        .get(0)
}

/// A cluster, pgrelay in front in transaction mode with plain passwords and
/// `extra` settings, and a console session as the superuser
/// (`application_name=console`).
pub async fn relay_with_console(extra: &str) -> (Cluster, Relay, tokio_postgres::Client) {
    let cluster = cluster(0, false).await;
    let (su, su_pw) = cluster.superuser();
    let relay = start_relay(
        &cluster,
        &format!("pool_mode: transaction\nauth_type: plain\nadmin_users: {su}\n{extra}"),
    )
    .await;
    let console = connect(&format!(
        "host=127.0.0.1 port={} user={su} password={su_pw} dbname=pgbouncer application_name=console",
        relay.port
    ))
    .await;
    (cluster, relay, console)
}

/// A console command's rows, each as column name → value (NULL as empty).
pub async fn console_rows(
    console: &tokio_postgres::Client,
    sql: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    let rows = console.simple_query(sql).await.expect(sql);
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| {
                        let value = row.get(i).unwrap_or_default().to_string();
                        (row.columns()[i].name().to_string(), value)
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The rows of `sql` once `ready` accepts them, polling for up to 10 s: a
/// client sees its reply a moment before pgrelay releases the server.
pub async fn rows_when(
    console: &tokio_postgres::Client,
    sql: &str,
    ready: impl Fn(&[std::collections::HashMap<String, String>]) -> bool,
) -> Vec<std::collections::HashMap<String, String>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = console_rows(console, sql).await;
        if ready(&rows) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql} never got there: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs a console command that may wait (PAUSE, WAIT_CLOSE) on a task of its
/// own; the task hands the console back with the command's outcome.
pub fn console_in_background(
    console: tokio_postgres::Client,
    sql: &'static str,
) -> tokio::task::JoinHandle<(tokio_postgres::Client, Result<(), tokio_postgres::Error>)> {
    tokio::spawn(async move {
        let done = console.simple_query(sql).await.map(|_| ());
        (console, done)
    })
}

/// The superuser, straight to the primary's `postgres` database.
pub async fn superuser_direct(cluster: &Cluster) -> tokio_postgres::Client {
    let (su, su_pw) = cluster.superuser();
    connect(&format!(
        "host=127.0.0.1 port={} user={su} password={su_pw} dbname=postgres",
        cluster.port()
    ))
    .await
}

/// Polls PostgreSQL until `gone` is no longer among the app user's servers
/// (10 s at most).
pub async fn wait_server_gone(cluster: &Cluster, gone: i32, why: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app_backend_pids(cluster).await.contains(&gone) {
        assert!(
            std::time::Instant::now() < deadline,
            "server {gone} still runs: {why}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Process ids of the server connections PostgreSQL runs for the app user
/// (pgrelay's pooled servers), asked straight from PostgreSQL.
pub async fn app_backend_pids(cluster: &Cluster) -> Vec<i32> {
    let (app, _) = cluster.app_user();
    superuser_direct(cluster)
        .await
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = $1 ORDER BY pid",
            &[&app],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Lines read from `from` (a child's stdout or stderr) on a thread of their
/// own, as they arrive.
pub fn line_channel(
    from: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits up to `limit` for `child` to exit on its own.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
