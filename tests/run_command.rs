//! `pgrelay run` as a deployment runs it: the built binary with a config file,
//! no PostgreSQL needed (pools connect on a client's first query). Where its
//! logs go, and the console's SHUTDOWN.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Run {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Run {
    /// Starts the binary with a userlist holding `admin`/`secret` and `extra` settings.
    fn start(extra: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let userlist = dir.path().join("userlist.txt");
        std::fs::write(&userlist, "\"admin\" \"secret\"\n").unwrap();
        let config = dir.path().join("pgrelay.yaml");
        std::fs::write(
            &config,
            format!(
                "listen_addr: 127.0.0.1\nlisten_port: 0\nmetrics_addr: off\nauth_file: {}\n{extra}\n\
                 databases:\n  app:\n    host: 127.0.0.1\n    port: 1\n",
                userlist.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgrelay"))
            .args(["run", "-c"])
            .arg(&config)
            .env("PGRELAY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pgrelay run");
        let lines = common::line_channel(child.stderr.take().unwrap());
        Run {
            child,
            stderr: lines,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// The first stderr line containing `text`, within 20 s.
    fn wait_log(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!("no {text:?} on stderr ({e}): {:?}", self.seen),
            }
        }
    }

    /// The port from the "listening" log line.
    fn port(&mut self) -> u16 {
        let line = self.wait_log("listening");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Logs in to the console as `admin` (the run must allow it).
    async fn console(
        &mut self,
    ) -> (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ) {
        let port = self.port();
        tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=admin password=secret dbname=pgbouncer"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("console login")
    }

    /// Waits up to `limit` for the process to exit on its own.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        common::wait_exit(&mut self.child, limit)
    }

    fn stdout(&mut self) -> String {
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut out).unwrap();
        }
        out
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_go_to_stderr_and_stdout_stays_empty() {
    let mut run = Run::start("");
    run.wait_log("listening");
    // SAFETY: kill(2) on our own child's pid; no memory is shared.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGTERM) };
    let status = run
        .wait_exit(Duration::from_secs(20))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        run.seen.iter().all(|l| !l.contains('\u{1b}')),
        "no colour codes when stderr is not a terminal: {:?}",
        run.seen
    );
    assert_eq!(run.stdout(), "", "nothing on stdout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shutdown_command_stops_the_process() {
    let mut run = Run::start("auth_type: plain\nadmin_users: admin");
    let (console, connection) = run.console().await;
    tokio::spawn(connection);
    console
        .simple_query("SHUTDOWN")
        .await
        .expect("SHUTDOWN is answered before the session ends");
    let status = tokio::task::spawn_blocking(move || {
        let status = run.wait_exit(Duration::from_secs(20));
        (status, run)
    })
    .await
    .unwrap();
    let (status, mut run) = status;
    let status = status.expect("the process exits after SHUTDOWN");
    assert!(status.success(), "{status}");
    run.wait_log("shutting down");
}

/// `log_connections` and `log_disconnections` (on by default, as in
/// PgBouncer): one line per login and one per client that leaves, naming
/// who, and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_disconnections_are_logged_without_the_password() {
    let mut run = Run::start("auth_type: plain\nadmin_users: admin");
    let (console, connection) = run.console().await;
    let connection = tokio::spawn(connection);
    console.simple_query("SHOW VERSION").await.unwrap();
    drop(console);
    let _ = connection.await;
    let (run, login, logout) = tokio::task::spawn_blocking(move || {
        let login = run.wait_log("client logged in");
        let logout = run.wait_log("client disconnected");
        (run, login, logout)
    })
    .await
    .unwrap();
    for line in [&login, &logout] {
        assert!(
            line.contains(r#"user="admin""#) && line.contains(r#"database="pgbouncer""#),
            "{line}"
        );
        assert!(line.contains("peer=127.0.0.1:"), "{line}");
    }
    assert!(login.contains(r#"tls="none""#), "{login}");
    assert!(
        logout.contains("client close request") && logout.contains("age_s="),
        "{logout}"
    );
    assert!(
        run.seen.iter().all(|l| !l.contains("secret")),
        "a password reached the log: {:?}",
        run.seen
    );
}
