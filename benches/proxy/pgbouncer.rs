//! PgBouncer from Debian's package, run as the `postgres` user (it refuses
//! root) with its own ini and userlist in a temp dir.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{BenchError, Result};
use crate::pooler::{temp_dir, PoolerSettings, RunningPooler, Upstream};
use crate::process::{free_port, user_ids, ChildGuard};

const CANDIDATES: [&str; 2] = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"];
const RUN_AS: &str = "postgres";

/// The pgbouncer binary, installing Debian's package when it is missing.
/// `Err` is the note to print when it cannot be had.
pub fn ensure_installed() -> Result<PathBuf, String> {
    if let Some(found) = find() {
        return Ok(found);
    }
    eprintln!("bench: pgbouncer missing; running apt-get install -y pgbouncer");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "pgbouncer"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        // A fresh container may have no package lists yet.
        let _ = Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::null())
            .status();
        install();
    }
    find().ok_or_else(|| {
        "PgBouncer could not be installed (apt-get install -y pgbouncer failed)".into()
    })
}

fn find() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

pub fn version(program: &Path) -> Option<String> {
    crate::process::first_line_of(program, &["--version"])
}

pub fn start(
    program: &Path,
    upstream: &Upstream,
    settings: PoolerSettings,
) -> Result<RunningPooler> {
    let (uid, gid) = user_ids(RUN_AS).ok_or_else(|| BenchError::Start {
        name: "pgbouncer".into(),
        detail: format!("no `{RUN_AS}` system user to run it as"),
    })?;
    let dir = temp_dir("pgbouncer-bench-")?;
    let userlist = upstream.write_userlist(dir.path())?;
    let port = free_port()?;
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(&ini, ini_text(upstream, settings, port, &userlist))
        .map_err(|e| BenchError::io("writing pgbouncer.ini", e))?;
    for path in [dir.path(), &ini, &userlist] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| BenchError::io(format!("chown {}", path.display()), e))?;
    }
    let mut cmd = Command::new(program);
    cmd.arg(&ini).current_dir(dir.path()).uid(uid).gid(gid);
    cmd.env_clear().env("LC_ALL", "C");
    // PgBouncer logs to stderr, which goes to a file we opened as root.
    let log = dir.path().join("pgbouncer.log");
    let process = ChildGuard::spawn_listening("pgbouncer", cmd, &log, port)?;
    Ok(RunningPooler::new(port, process, dir))
}

fn ini_text(upstream: &Upstream, s: PoolerSettings, port: u16, userlist: &Path) -> String {
    format!(
        "[databases]\n\
         {db} = host=127.0.0.1 port={upstream_port} dbname={db}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = {auth}\n\
         auth_file = {userlist}\n\
         pool_mode = transaction\n\
         default_pool_size = {pool}\n\
         max_client_conn = {max_clients}\n\
         server_tls_sslmode = disable\n\
         log_connections = 0\n\
         log_disconnections = 0\n",
        db = upstream.database,
        upstream_port = upstream.port,
        auth = s.auth.setting(),
        userlist = userlist.display(),
        pool = s.pool_size,
        max_clients = s.max_client_conn,
    )
}
