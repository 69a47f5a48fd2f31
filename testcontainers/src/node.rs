//! One PostgreSQL server of a cluster: its directories, its per-node
//! configuration, its process, and SQL access through psql.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::server::{Launch, ServerProcess, Shutdown};
use crate::tls::ServerCert;
use crate::toolchain::{run_checked, Toolchain};

/// Per-node settings file inside the data directory, included from
/// postgresql.conf. pg_basebackup copies the primary's; each replica
/// overwrites it with its own.
pub(crate) const NODE_CONF: &str = "pgrelay_node.conf";
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const PSQL_CONNECT_TIMEOUT_SECS: &str = "10";

/// What the node was started as. A promoted replica keeps `Replica` here;
/// ask the server (`is_in_recovery`) for its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica { upstream: Ipv4Addr },
}

/// Facts shared by every node of one cluster.
pub(crate) struct ClusterContext {
    pub toolchain: Toolchain,
    pub superuser: String,
    pub superuser_password: String,
    pub database: String,
}

/// A PostgreSQL server belonging to a `Cluster`.
pub struct Node {
    name: String,
    role: Role,
    addr: Ipv4Addr,
    port: u16,
    dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    tls: Option<(PathBuf, PathBuf)>,
    ctx: Arc<ClusterContext>,
    server: ServerProcess,
}

impl Node {
    /// Creates the node's directories under `dir` (data dir comes later from
    /// initdb or pg_basebackup) and installs its TLS files if any.
    pub(crate) fn create(
        name: &str,
        role: Role,
        addr: Ipv4Addr,
        dir: PathBuf,
        ctx: Arc<ClusterContext>,
        cert: Option<&ServerCert>,
    ) -> Result<Self> {
        let socket_dir = dir.join("sock");
        for d in [&dir, &socket_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
            ctx.toolchain.hand_over(d)?;
        }
        let tls = match cert {
            Some(cert) => Some(install_cert(&dir, cert, &ctx.toolchain)?),
            None => None,
        };
        Ok(Node {
            name: name.to_string(),
            role,
            addr,
            port: 0,
            data_dir: dir.join("data"),
            log_path: dir.join("postgres.log"),
            socket_dir,
            dir,
            tls,
            ctx,
            server: ServerProcess::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The loopback address this node listens on.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// `addr()` as a string, for connection strings.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.addr, self.port))
    }

    /// Directory holding this node's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Postmaster pid while running.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    pub fn is_running(&self) -> bool {
        self.server.pid().is_some()
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        let command = self.ctx.toolchain.server_command("postgres", &self.dir);
        self.server.start(Launch {
            node: &self.name,
            command,
            data_dir: &self.data_dir,
            log_path: &self.log_path,
        })
    }

    /// Clean "fast" shutdown (like `pg_ctl stop -m fast`).
    pub fn stop(&self) {
        self.server.stop(Shutdown::Fast);
    }

    /// Simulates a crash: SIGKILL to the postmaster and its backends.
    pub fn kill(&self) {
        self.server.stop(Shutdown::Kill);
    }

    /// Immediate shutdown (like `pg_ctl stop -m immediate`): no checkpoint,
    /// crash recovery on next start.
    pub fn stop_immediate(&self) {
        self.server.stop(Shutdown::Immediate);
    }

    pub fn restart(&self) -> Result<()> {
        self.stop();
        self.start()
    }

    /// Runs `sql` with psql as the superuser in the cluster's database and
    /// returns stdout trimmed (unaligned, tuples only: one row per line,
    /// columns separated by `|`).
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.sql_in(&self.ctx.database, sql)
    }

    /// Like `sql`, in another database.
    pub fn sql_in(&self, database: &str, sql: &str) -> Result<String> {
        let mut cmd = self.ctx.toolchain.client_command("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string()])
            .args(["-U", &self.ctx.superuser, "-d", database, "-c", sql])
            .env("PGPASSWORD", &self.ctx.superuser_password)
            .env("PGCONNECT_TIMEOUT", PSQL_CONNECT_TIMEOUT_SECS);
        let output = run_checked(cmd, &self.name, "psql")?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// True while the server is a standby.
    pub fn is_in_recovery(&self) -> Result<bool> {
        let out = self.sql_in("postgres", "SELECT pg_is_in_recovery()")?;
        self.parse_bool(out)
    }

    /// Stops applying WAL on a replica (WAL is still received).
    pub fn pause_replay(&self) -> Result<()> {
        self.sql_in("postgres", "SELECT pg_wal_replay_pause()")
            .map(drop)
    }

    pub fn resume_replay(&self) -> Result<()> {
        self.sql_in("postgres", "SELECT pg_wal_replay_resume()")
            .map(drop)
    }

    /// Promotes a replica to primary and waits (up to 60 s) until it is.
    pub fn promote(&self) -> Result<()> {
        let out = self.sql_in("postgres", "SELECT pg_promote(true, 60)")?;
        if self.parse_bool(out)? {
            Ok(())
        } else {
            Err(Error::Timeout {
                node: self.name.clone(),
                what: "promotion".to_string(),
                waited: Duration::from_secs(60),
            })
        }
    }

    /// The primary's current WAL write position.
    pub fn current_lsn(&self) -> Result<Lsn> {
        let out = self.sql_in("postgres", "SELECT pg_current_wal_lsn()")?;
        self.parse_lsn(out)
    }

    /// The last WAL position replayed on a replica.
    pub fn replay_lsn(&self) -> Result<Lsn> {
        let out = self.sql_in("postgres", "SELECT pg_last_wal_replay_lsn()")?;
        self.parse_lsn(out)
    }

    /// Waits until this replica has replayed at least `target`.
    pub fn wait_replayed(&self, target: Lsn, timeout: Duration) -> Result<()> {
        self.wait_until(&format!("replay up to {target}"), timeout, || {
            Ok(self.replay_lsn()? >= target)
        })
    }

    /// Polls `done` until it returns true or `timeout` passes.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if done()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    node: self.name.clone(),
                    what: what.to_string(),
                    waited: timeout,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The last lines of the server log, for diagnostics.
    pub fn log_tail(&self) -> String {
        crate::server::tail_since(&self.log_path, 0)
    }

    pub(crate) fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    /// Writes the settings that differ per node (address, port, socket dir,
    /// TLS files, upstream) into `NODE_CONF`.
    pub(crate) fn write_config(&self) -> Result<()> {
        let mut conf = String::from("# Per-node settings written by pgrelay-testcontainers.\n");
        let _ = writeln!(conf, "listen_addresses = {}", quote(&self.host()));
        let _ = writeln!(conf, "port = {}", self.port);
        let socket_dir = self.socket_dir.to_string_lossy();
        let _ = writeln!(conf, "unix_socket_directories = {}", quote(&socket_dir));
        let _ = writeln!(conf, "cluster_name = {}", quote(&self.name));
        if let Some((cert, key)) = &self.tls {
            conf.push_str("ssl = on\n");
            let _ = writeln!(conf, "ssl_cert_file = {}", quote(&cert.to_string_lossy()));
            let _ = writeln!(conf, "ssl_key_file = {}", quote(&key.to_string_lossy()));
        }
        if let Role::Replica { upstream } = self.role {
            let conninfo = format!(
                "host={upstream} port={} user={} password={} application_name={}",
                self.port, self.ctx.superuser, self.ctx.superuser_password, self.name
            );
            let _ = writeln!(conf, "primary_conninfo = {}", quote(&conninfo));
        }
        let path = self.data_dir.join(NODE_CONF);
        std::fs::write(&path, conf)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        self.ctx.toolchain.hand_over(&path)
    }

    /// After `pg_basebackup -R`: drop the primary_conninfo it wrote to
    /// postgresql.auto.conf, which would override ours (auto.conf is read
    /// last) and pin the port the backup was taken on.
    pub(crate) fn strip_auto_conninfo(&self) -> Result<()> {
        let path = self.data_dir.join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let kept: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("primary_conninfo"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, kept).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    fn parse_bool(&self, out: String) -> Result<bool> {
        match out.as_str() {
            "t" => Ok(true),
            "f" => Ok(false),
            _ => Err(self.unexpected(out)),
        }
    }

    fn parse_lsn(&self, out: String) -> Result<Lsn> {
        out.parse().map_err(|_| self.unexpected(out))
    }

    fn unexpected(&self, output: String) -> Error {
        Error::UnexpectedOutput {
            node: self.name.clone(),
            output,
        }
    }
}

/// Writes server.crt and server.key (mode 0600, which PostgreSQL insists on)
/// next to the data dir.
fn install_cert(
    dir: &Path,
    cert: &ServerCert,
    toolchain: &Toolchain,
) -> Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("server.crt");
    let key_path = dir.join("server.key");
    for (path, body) in [(&cert_path, &cert.cert_pem), (&key_path, &cert.key_pem)] {
        std::fs::write(path, body)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        toolchain.hand_over(path)?;
    }
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {}", key_path.display()), e))?;
    Ok((cert_path, key_path))
}

/// A postgresql.conf string literal.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_doubles_single_quotes() {
        assert_eq!(quote("a'b"), "'a''b'");
        assert_eq!(quote("/tmp/x"), "'/tmp/x'");
    }
}
