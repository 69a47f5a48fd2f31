//! Where `pgrelay run` writes its logs: stderr, as PgBouncer does without a
//! logfile, so stdout carries only what a command prints.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn logs_go_to_stderr_and_stdout_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let userlist = dir.path().join("userlist.txt");
    std::fs::write(&userlist, "\"app\" \"secret\"\n").unwrap();
    let config = dir.path().join("pgrelay.yaml");
    // No server is contacted: pools connect on a client's first query.
    std::fs::write(
        &config,
        format!(
            "listen_addr: 127.0.0.1\nlisten_port: 0\nmetrics_addr: off\nauth_file: {}\n\
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
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|l: &String| l.contains("listening")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    // SAFETY: kill(2) on our own child's pid; no memory is shared.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait for pgrelay");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        seen.iter().any(|l| l.contains("listening")),
        "no \"listening\" log line on stderr: {seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "no colour codes when stderr is not a terminal: {seen:?}"
    );
    assert!(status.success(), "{status}");
    assert_eq!(stdout, "", "nothing on stdout");
}
