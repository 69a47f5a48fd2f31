//! One postmaster process: spawning it, waiting until it accepts
//! connections, and shutting it down.
//!
//! We spawn `postgres -D` ourselves instead of going through `pg_ctl` so the
//! postmaster is our child: we can reap it (the container's PID 1 may not),
//! notice immediately when it exits during startup, and kill its whole
//! process group.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const FAST_STOP_TIMEOUT: Duration = Duration::from_secs(30);
const IMMEDIATE_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Line 8 of postmaster.pid holds the postmaster's status.
const PIDFILE_STATUS_LINE: usize = 7;
const LOG_TAIL_LINES: usize = 30;

/// How to stop a server; maps to PostgreSQL's shutdown modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT: roll back sessions, checkpoint, exit (`pg_ctl stop -m fast`).
    Fast,
    /// SIGQUIT: exit without checkpoint (`pg_ctl stop -m immediate`).
    Immediate,
    /// SIGKILL to the whole process group: a crash.
    Kill,
}

enum ServerState {
    Stopped,
    Running(Child),
}

/// What `start` needs to know about the node.
pub struct Launch<'a> {
    pub node: &'a str,
    pub command: Command,
    pub data_dir: &'a Path,
    pub log_path: &'a Path,
}

/// The postmaster of one node (or none while stopped).
pub struct ServerProcess {
    state: Mutex<ServerState>,
}

impl ServerProcess {
    pub fn new() -> Self {
        ServerProcess {
            state: Mutex::new(ServerState::Stopped),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match &*self.lock() {
            ServerState::Running(child) => Some(child.id()),
            ServerState::Stopped => None,
        }
    }

    /// Starts the postmaster and waits until it reports "ready"; a no-op if
    /// it is already running.
    pub fn start(&self, launch: Launch<'_>) -> Result<()> {
        let mut state = self.lock();
        if let ServerState::Running(child) = &mut *state {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let Launch {
            node,
            mut command,
            data_dir,
            log_path,
        } = launch;
        let log = open_log(log_path)?;
        let log_start = log
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", log_path.display()), e))?
            .len();
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io("duplicating the log file handle", e))?;
        // Own process group: a Ctrl-C on the demo's terminal must not reach
        // the servers directly, and a crash simulation can kill the group.
        command
            .arg("-D")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| Error::io(format!("spawning postgres for {node}"), e))?;
        *state = ServerState::Running(child);
        let ServerState::Running(child) = &mut *state else {
            unreachable!("state was just set to Running");
        };
        match wait_ready(child, data_dir) {
            Ok(()) => Ok(()),
            Err(reason) => {
                // Never leave a half-started server behind.
                terminate(child, Shutdown::Kill);
                *state = ServerState::Stopped;
                let log_tail = tail_since(log_path, log_start);
                if log_tail.contains("Address already in use") {
                    let port = read_port(data_dir).unwrap_or_default();
                    return Err(Error::PortInUse {
                        node: node.to_string(),
                        port,
                    });
                }
                Err(Error::StartFailed {
                    node: node.to_string(),
                    reason,
                    log: log_path.to_path_buf(),
                    log_tail,
                })
            }
        }
    }

    /// Stops the postmaster (no-op when stopped). Escalates to SIGKILL if the
    /// requested mode does not finish in time, so this always ends stopped.
    pub fn stop(&self, mode: Shutdown) {
        let mut state = self.lock();
        if let ServerState::Running(child) = &mut *state {
            terminate(child, mode);
        }
        *state = ServerState::Stopped;
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        // A panic while holding the lock leaves consistent state (the child
        // handle), so poisoning is safe to ignore.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop(Shutdown::Immediate);
    }
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// Waits until postmaster.pid says "ready" for this child's pid, or the
/// child exits, or the timeout passes. Err carries a human reason.
fn wait_ready(child: &mut Child, data_dir: &Path) -> Result<(), String> {
    let pidfile = data_dir.join("postmaster.pid");
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("postgres exited during startup ({status})")),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for postgres failed: {e}")),
        }
        if pidfile_says_ready(&pidfile, child.id()) {
            return Ok(());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Err(format!("not ready after {START_TIMEOUT:?}"))
}

fn pidfile_says_ready(pidfile: &Path, pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(pidfile) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
        && lines.get(PIDFILE_STATUS_LINE).map(|l| l.trim()) == Some("ready")
}

fn read_port(data_dir: &Path) -> Option<u16> {
    let conf = std::fs::read_to_string(data_dir.join(crate::node::NODE_CONF)).ok()?;
    conf.lines()
        .find_map(|l| l.strip_prefix("port = "))
        .and_then(|p| p.trim().parse().ok())
}

/// Signals the postmaster and reaps it; escalates to SIGKILL of the whole
/// process group when the gentler mode times out.
fn terminate(child: &mut Child, mode: Shutdown) {
    let (signal, timeout) = match mode {
        Shutdown::Fast => (libc::SIGINT, FAST_STOP_TIMEOUT),
        Shutdown::Immediate => (libc::SIGQUIT, IMMEDIATE_STOP_TIMEOUT),
        Shutdown::Kill => (libc::SIGKILL, KILL_TIMEOUT),
    };
    let pid = child.id() as libc::pid_t;
    if matches!(child.try_wait(), Ok(Some(_))) {
        kill_group(pid);
        return;
    }
    if mode == Shutdown::Kill {
        kill_group(pid);
    } else {
        // SAFETY: plain kill(2) on our own child's pid, which is not yet reaped.
        unsafe { libc::kill(pid, signal) };
    }
    if !wait_exit(child, timeout) {
        tracing::warn!(
            pid,
            ?mode,
            "postmaster did not stop in time; killing its process group"
        );
        kill_group(pid);
        let _ = wait_exit(child, KILL_TIMEOUT);
    }
    // Backends normally exit with the postmaster; sweep any straggler and
    // wait until all are gone, or a restart finds the old shared memory
    // still attached ("pre-existing shared memory block is still in use").
    kill_group(pid);
    wait_group_gone(pid, KILL_TIMEOUT);
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: the postmaster was spawned with process_group(0), so its pid is
    // the pgid of it and its backends; ESRCH (group gone) is fine.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Waits until no live (non-zombie) process is left in process group `pgid`.
fn wait_group_gone(pgid: libc::pid_t, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while group_has_live_members(pgid) && Instant::now() < deadline {
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn group_has_live_members(pgid: libc::pid_t) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| live_member_of(&stat))
            == Some(pgid)
    })
}

/// The process group of a `/proc/<pid>/stat` line, unless it is a zombie.
/// The command name may contain spaces and parentheses, so fields are
/// counted from the last `)`.
fn live_member_of(stat: &str) -> Option<libc::pid_t> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    (state != "Z" && state != "X").then_some(pgrp)
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            Ok(None) => return false,
            // ECHILD: somebody else reaped it; it is gone either way.
            Err(_) => return true,
        }
    }
}

/// The last lines the server wrote since `offset`, for error messages.
pub fn tail_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_string(&mut text);
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_ready_requires_matching_pid_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("postmaster.pid");
        let body = |pid: u32, status: &str| {
            format!("{pid}\n/data\n1700000000\n5432\n/tmp\n127.0.0.1\n  1234  5678\n{status}\n")
        };
        std::fs::write(&pidfile, body(42, "starting")).unwrap();
        assert!(!pidfile_says_ready(&pidfile, 42));
        std::fs::write(&pidfile, body(42, "ready   ")).unwrap();
        assert!(pidfile_says_ready(&pidfile, 42));
        assert!(!pidfile_says_ready(&pidfile, 43));
    }

    #[test]
    fn tail_only_shows_new_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "old line\n").unwrap();
        let offset = std::fs::metadata(&log).unwrap().len();
        let mut text = String::from("old line\n");
        for i in 0..40 {
            text.push_str(&format!("new {i}\n"));
        }
        std::fs::write(&log, text).unwrap();
        let tail = tail_since(&log, offset);
        assert!(!tail.contains("old line"));
        assert!(
            tail.starts_with("new 10") && tail.ends_with("new 39"),
            "{tail}"
        );
    }

    #[test]
    fn proc_stat_parsing_handles_odd_names_and_zombies() {
        assert_eq!(live_member_of("12 (postgres) S 1 12 12 0 -1"), Some(12));
        assert_eq!(live_member_of("13 (a) b (c)) R 12 12 12 0"), Some(12));
        assert_eq!(live_member_of("14 (postgres) Z 12 12 12 0"), None);
        assert_eq!(live_member_of("garbage"), None);
    }

    #[test]
    fn stop_kills_a_running_child_and_is_idempotent() {
        let server = ServerProcess::new();
        let child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        *server.lock() = ServerState::Running(child);
        assert_eq!(server.pid(), Some(pid));
        server.stop(Shutdown::Kill);
        assert_eq!(server.pid(), None);
        // SAFETY: probing a pid with signal 0 has no side effects.
        assert_ne!(unsafe { libc::kill(pid as libc::pid_t, 0) }, 0);
        server.stop(Shutdown::Fast);
    }
}
