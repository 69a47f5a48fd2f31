//! `pgrelay demo`, the README's first command, run as a user runs it: the
//! binary starts a real primary, two replicas and a DNS server with pgrelay in
//! front; reads reach both replicas through DNS discovery, a write lands on the
//! primary, and SIGTERM stops and removes everything.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{connect, scalar};

/// The demo process; dropping it (a failed assertion) still stops the cluster.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start() -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgrelay"))
            .args(["demo", "--port", "0"])
            .env("PGRELAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pgrelay demo");
        let lines = common::line_channel(child.stdout.take().expect("piped stdout"));
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) that `pick` accepts, within `limit`.
    fn wait_line<T>(&mut self, limit: Duration, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = pick(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(e) => panic!(
                    "demo output ended or stalled ({e}); so far:\n{:#?}",
                    self.seen
                ),
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits up to `limit` for the process to exit on its own.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        common::wait_exit(&mut self.child, limit)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(60)).is_none() {
                // The testcontainers sweep removes what a killed owner left.
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Processes whose command line names `dir` (the cluster's postmasters).
fn processes_using(dir: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(dir) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_routes_reads_to_both_replicas_and_removes_everything_on_sigterm() {
    let mut demo = Demo::start();
    let startup = Duration::from_secs(180);
    let files: PathBuf = demo.wait_line(startup, |l| {
        l.trim()
            .strip_prefix("files:")
            .map(|dir| PathBuf::from(dir.trim()))
    });
    demo.wait_line(startup, |l| l.contains("listens on").then_some(()));
    let conn: String = demo.wait_line(startup, |l| {
        l.trim()
            .strip_prefix("psql \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .map(str::to_string)
    });
    assert!(files.is_dir(), "cluster files at {}", files.display());
    assert!(
        conn.starts_with("host=127.0.0.1 "),
        "pgrelay's line: {conn}"
    );

    let client = connect(&conn).await;
    client
        .batch_execute("CREATE TABLE demo_check (id int)")
        .await
        .expect("CREATE TABLE through pgrelay");
    let writer = scalar(
        &client,
        "WITH w AS (INSERT INTO demo_check VALUES (1) RETURNING id) \
         SELECT inet_server_addr() FROM w",
    )
    .await;
    assert_eq!(writer, "127.0.0.1", "a writing CTE runs on the primary");

    // Replicas take reads once DNS has named them and their probes passed.
    let mut readers = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && !(readers.contains("127.0.0.2") && readers.contains("127.0.0.3"))
    {
        readers.insert(scalar(&client, "SELECT inet_server_addr()").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        readers.contains("127.0.0.2") && readers.contains("127.0.0.3"),
        "reads reached {readers:?}, not both replicas"
    );
    drop(client);

    demo.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| demo.wait_exit(Duration::from_secs(60)))
        .expect("demo exits within 60 s of SIGTERM");
    assert!(status.success(), "demo exit status {status}");
    demo.wait_line(Duration::from_secs(5), |l| {
        l.contains("demo stopped and removed").then_some(())
    });
    assert!(!files.exists(), "{} left behind", files.display());
    let left = processes_using(&files.to_string_lossy());
    assert!(
        left.is_empty(),
        "processes still using the cluster dir: {left:?}"
    );
}
