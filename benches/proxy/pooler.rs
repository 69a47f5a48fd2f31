//! What pgrelay and PgBouncer are given alike: the upstream server, the
//! users, pool size and mode; and the handle of a running pooler.

use std::path::{Path, PathBuf};

use crate::error::{BenchError, Result};
use crate::pgbench::Endpoint;
use crate::process::ChildGuard;

/// How clients authenticate to a pooler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Cheap logins: most scenarios and the 10,000 idle clients.
    Md5,
    /// What PostgreSQL itself asks for; costs a PBKDF2 per login.
    ScramSha256,
}

impl ClientAuth {
    pub fn setting(self) -> &'static str {
        match self {
            ClientAuth::ScramSha256 => "scram-sha-256",
            ClientAuth::Md5 => "md5",
        }
    }
}

/// Settings both poolers get, spelled the same way in both configs.
#[derive(Debug, Clone, Copy)]
pub struct PoolerSettings {
    pub pool_size: u32,
    pub max_client_conn: u32,
    pub auth: ClientAuth,
}

/// The PostgreSQL server behind the pooler and the users it accepts.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub port: u16,
    pub database: String,
    /// (name, plain password); the first one is the benchmark's user.
    pub users: Vec<(String, String)>,
}

impl Upstream {
    /// The endpoint a client uses through a pooler listening on `port`.
    pub fn endpoint_via(&self, port: u16) -> Endpoint {
        let (user, password) = self.users[0].clone();
        Endpoint {
            port,
            user,
            password,
            database: self.database.clone(),
        }
    }

    /// A PgBouncer-format userlist (both poolers read it) in `dir`.
    pub fn write_userlist(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("userlist.txt");
        let body: String = self
            .users
            .iter()
            .map(|(u, p)| format!("\"{u}\" \"{p}\"\n"))
            .collect();
        std::fs::write(&path, body).map_err(|e| BenchError::io("writing userlist.txt", e))?;
        Ok(path)
    }
}

/// A pooler process listening on 127.0.0.1:`port`; stopped on drop.
pub struct RunningPooler {
    pub port: u16,
    // Field order is drop order: the process stops before its directory goes.
    process: ChildGuard,
    _dir: tempfile::TempDir,
}

impl RunningPooler {
    pub fn new(port: u16, process: ChildGuard, dir: tempfile::TempDir) -> Self {
        RunningPooler {
            port,
            process,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| BenchError::io("creating a temp dir", e))
}
