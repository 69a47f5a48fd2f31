//! Child processes the benchmark owns (pgrelay, PgBouncer), and the OS
//! facts it reads: free ports, resident memory, file descriptor limits.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};

/// How long a stopped child gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a started child gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped,
/// so an early return or a panic never leaves a pooler running.
pub struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr appended to `log`, then waits
    /// until it accepts TCP connections on 127.0.0.1:`port`.
    pub fn spawn_listening(name: &str, mut cmd: Command, log: &Path, port: u16) -> Result<Self> {
        let out = std::fs::File::create(log)
            .map_err(|e| BenchError::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| BenchError::io("duplicating a log handle", e))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::io(format!("spawning {name}"), e))?;
        let mut guard = ChildGuard {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        };
        guard.wait_listening(port)?;
        Ok(guard)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_listening(&mut self, port: u16) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.start_error(format!("exited with {status}")));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!("not listening on port {port}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_error(&self, what: String) -> BenchError {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        BenchError::Start {
            name: self.name.clone(),
            detail: format!("{what}; log {}:\n{}", self.log.display(), tail.join("\n")),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("bench: {} ignored SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now (the OS picks it; tiny reuse race).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| BenchError::io("binding an ephemeral port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| BenchError::io("reading an ephemeral port", e))?
        .port();
    Ok(port)
}

/// Resident set size of `pid` in KiB (VmRSS from /proc/<pid>/status).
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("reading {path}"), e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::io(path, std::io::Error::other("no VmRSS line")))
}

/// CPU time (user + system) `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("reading {path}"), e))?;
    let times = ProcessTimes::parse(&stat)
        .ok_or_else(|| BenchError::io(path, std::io::Error::other("unexpected format")))?;
    Ok(times.own)
}

/// One process's CPU times from `/proc/<pid>/stat`, in seconds.
struct ProcessTimes {
    command: String,
    /// User + system time of the process itself.
    own: f64,
    /// User + system time of its children that have exited and been waited for.
    reaped_children: f64,
}

impl ProcessTimes {
    fn parse(stat: &str) -> Option<Self> {
        // The command name is parenthesised and may hold spaces; after it,
        // state is field 3, utime and stime fields 14 and 15, cutime and
        // cstime fields 16 and 17.
        let (head, after_comm) = stat.rsplit_once(')')?;
        let command = head.split_once('(')?.1.to_string();
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        let per_second = clock_ticks_per_second();
        Some(ProcessTimes {
            command,
            own: (ticks(11)? + ticks(12)?) as f64 / per_second,
            reaped_children: (ticks(13)? + ticks(14)?) as f64 / per_second,
        })
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// CPU time used so far by every PostgreSQL process on the machine (all
/// servers: postmasters, backends, WAL senders and receivers).
#[derive(Debug, Clone, Copy)]
pub struct PostgresCpu {
    pub seconds: f64,
    /// How many PostgreSQL processes there are (exited ones not yet reaped included).
    pub processes: usize,
}

/// Reads [`PostgresCpu`]. A backend that exited is counted through its
/// postmaster's reaped-children time, so connections that come and go
/// (`-C`) are not lost.
pub fn postgres_cpu() -> PostgresCpu {
    // A process reaped while the list is read can be missed twice over: its
    // postmaster read before the reaping, itself gone when its turn comes.
    // Such a reading is taken again.
    for _ in 0..10 {
        if let Some(reading) = read_postgres_cpu() {
            return reading;
        }
    }
    read_postgres_cpu().unwrap_or(PostgresCpu {
        seconds: 0.0,
        processes: 0,
    })
}

/// One pass over `/proc`; `None` if a listed process vanished meanwhile.
fn read_postgres_cpu() -> Option<PostgresCpu> {
    let mut reading = PostgresCpu {
        seconds: 0.0,
        processes: 0,
    };
    for entry in std::fs::read_dir("/proc").ok()? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        if let Some(t) = ProcessTimes::parse(&stat).filter(|t| t.command == "postgres") {
            reading.seconds += t.own + t.reaped_children;
            reading.processes += 1;
        }
    }
    Some(reading)
}

/// [`postgres_cpu`] once no more PostgreSQL processes exist than `before`
/// had (or after a few seconds): a backend whose client just left is still
/// exiting, and read in between — gone from the list, not yet added to its
/// postmaster's reaped time — its CPU would land in the next measurement.
pub fn postgres_cpu_after(before: PostgresCpu) -> PostgresCpu {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = postgres_cpu();
        if now.processes <= before.processes || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time used so far by this process's children that have exited and
/// been waited for (pgbench, through `timeout`), in seconds.
pub fn reaped_children_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| BenchError::io("reading /proc/self/stat", e))?;
    ProcessTimes::parse(&stat)
        .map(|t| t.reaped_children)
        .ok_or_else(|| {
            BenchError::io(
                "/proc/self/stat",
                std::io::Error::other("unexpected format"),
            )
        })
}

/// CPU time the whole machine spent busy (user, system, interrupts) so far,
/// in seconds, from the first line of `/proc/stat`.
pub fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| BenchError::io("reading /proc/stat", e))?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Ok(busy as f64 / clock_ticks_per_second())
}

/// Raises this process's open-file limit as far as allowed; children
/// (pgrelay, PgBouncer, pgbench) inherit it. Returns the new soft limit.
pub fn raise_fd_limit(wanted: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        // Root may raise the hard limit too; if that is refused, settle for it.
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return wanted;
        }
        let capped = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &capped) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

/// uid and gid of a system user, from /etc/passwd.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// First line of a command's stdout (for versions); `None` if it fails.
pub fn first_line_of(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string())
}

/// The CPU model from /proc/cpuinfo (the first processor's).
pub fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
}

/// CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// Date and time now, UTC, to the minute (for reports).
pub fn utc_now() -> Option<String> {
    first_line_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}
