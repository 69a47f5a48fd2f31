//! Locating the PostgreSQL binaries and running them as the right OS user.
//!
//! PostgreSQL refuses to run as root, so when we are root every server-side
//! program (initdb, postgres, pg_basebackup) runs as the `postgres` system
//! user and the directories it writes are handed over to that user.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::error::{Error, Result};

/// Programs every cluster needs; a bin dir is only accepted if it has all of them.
const REQUIRED_PROGRAMS: [&str; 4] = ["initdb", "postgres", "pg_basebackup", "psql"];
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
const SERVER_USER_NAME: &str = "postgres";

/// The uid/gid server processes run as when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerUser {
    pub uid: u32,
    pub gid: u32,
}

/// Where the binaries are and whom they run as.
#[derive(Debug, Clone)]
pub struct Toolchain {
    bin_dir: PathBuf,
    server_user: Option<ServerUser>,
}

impl Toolchain {
    /// Finds the binaries (PG_BIN, then `pg_config --bindir`, then the
    /// newest `/usr/lib/postgresql/*/bin`) and the server user.
    pub fn discover() -> Result<Self> {
        let bin_dir = find_bin_dir()?;
        let server_user = if is_root() {
            Some(lookup_user(SERVER_USER_NAME).ok_or(Error::NoServerUser)?)
        } else {
            None
        };
        Ok(Toolchain {
            bin_dir,
            server_user,
        })
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A command for a server-side program: runs as the server user, with a
    /// clean environment (no stray PGHOST/PGDATA from the caller) and a
    /// working directory the server user can enter.
    pub fn server_command(&self, program: &str, cwd: &Path) -> Command {
        let mut cmd = self.client_command(program);
        cmd.current_dir(cwd);
        if let Some(user) = self.server_user {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    /// A command for a client program (psql) run as ourselves.
    pub fn client_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.program(program));
        cmd.env_clear().env("LC_ALL", "C");
        cmd
    }

    /// Gives `path` to the server user (no-op when not root).
    pub fn hand_over(&self, path: &Path) -> Result<()> {
        if let Some(user) = self.server_user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(|e| Error::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }
}

/// Runs `cmd` to completion and turns a non-zero exit into `Error::Command`.
pub fn run_checked(mut cmd: Command, node: &str, program: &str) -> Result<Output> {
    let output = cmd
        .output()
        .map_err(|e| Error::io(format!("spawning {program} for {node}"), e))?;
    check_output(output, node, program)
}

/// Turns a finished process's non-zero exit into `Error::Command`.
pub fn check_output(output: Output, node: &str, program: &str) -> Result<Output> {
    if output.status.success() {
        return Ok(output);
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    Err(Error::Command {
        node: node.to_string(),
        program: program.to_string(),
        status: output.status.to_string(),
        stderr,
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn lookup_user(name: &str) -> Option<ServerUser> {
    let c_name = CString::new(name).ok()?;
    // SAFETY: c_name is a valid NUL-terminated string; getpwnam returns
    // either NULL or a pointer to static storage that we read immediately.
    // Tests may call this from several threads; the window is tiny and only
    // uid/gid are copied out.
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: entry is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Some(ServerUser { uid, gid })
}

fn find_bin_dir() -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_required_programs(&dir) {
            return Ok(dir);
        }
        searched.push(format!("PG_BIN={}", dir.display()));
    }
    match pg_config_bindir() {
        Some(dir) if has_required_programs(&dir) => return Ok(dir),
        Some(dir) => searched.push(format!("`pg_config --bindir` ({})", dir.display())),
        None => searched.push("`pg_config --bindir` (no pg_config on PATH)".to_string()),
    }
    if let Some(dir) = versioned_bin_dirs(Path::new(DEBIAN_PG_ROOT))
        .into_iter()
        .find(|dir| has_required_programs(dir))
    {
        return Ok(dir);
    }
    searched.push(format!("{DEBIAN_PG_ROOT}/*/bin"));
    Err(Error::BinariesNotFound {
        searched: searched.join(", "),
    })
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

/// `<root>/<version>/bin` directories, newest version first.
pub fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn has_required_programs(dir: &Path) -> bool {
    REQUIRED_PROGRAMS.iter().all(|p| dir.join(p).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_dirs_sort_numerically_newest_first() {
        let root = tempfile::tempdir().unwrap();
        for v in ["9.6", "15", "16", "not-a-version"] {
            std::fs::create_dir_all(root.path().join(v).join("bin")).unwrap();
        }
        let dirs = versioned_bin_dirs(root.path());
        let names: Vec<_> = dirs
            .iter()
            .map(|d| d.parent().unwrap().file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["16", "15", "9.6"]);
    }

    #[test]
    fn incomplete_bin_dir_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("initdb"), "").unwrap();
        assert!(!has_required_programs(dir.path()));
        for p in REQUIRED_PROGRAMS {
            std::fs::write(dir.path().join(p), "").unwrap();
        }
        assert!(has_required_programs(dir.path()));
    }

    #[test]
    fn failed_command_carries_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let err = run_checked(cmd, "primary", "sh").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("boom") && msg.contains("primary"), "{msg}");
    }
}
