//! Cleaning up after test processes that died without running `Drop`
//! (SIGKILL by a CI timeout, abort on double panic).
//!
//! Each cluster dir records its owner (pid + process start time, so a
//! reused pid does not count as alive). Starting a cluster sweeps dirs
//! whose owner is gone: their postmasters are killed and the dir removed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub(crate) const DIR_PREFIX: &str = "pgrelay-tc-";
const OWNER_FILE: &str = "owner";

/// Records this process as the owner of `base`.
pub(crate) fn claim(base: &Path) -> Result<()> {
    let me = std::process::id();
    let started = start_time(me).unwrap_or_default();
    let path = base.join(OWNER_FILE);
    std::fs::write(&path, format!("{me} {started}\n"))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Best effort: removes clusters under `temp_root` whose owner died.
/// Dirs without an owner file are skipped (they may be mid-creation).
pub(crate) fn sweep(temp_root: &Path) {
    let Ok(entries) = std::fs::read_dir(temp_root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        if owner_is_dead(&dir) {
            tracing::info!(dir = %dir.display(), "removing cluster left behind by a dead process");
            kill_postmasters(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn owner_is_dead(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
        return false;
    };
    let mut fields = text.split_whitespace();
    let (Some(pid), Some(started)) = (
        fields.next().and_then(|p| p.parse::<u32>().ok()),
        fields.next().and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return false;
    };
    start_time(pid) != Some(started)
}

/// Kills each node's postmaster group, but only if the pid in
/// postmaster.pid still runs with that data dir on its command line.
fn kill_postmasters(dir: &Path) {
    let Ok(nodes) = std::fs::read_dir(dir) else {
        return;
    };
    for node in nodes.flatten() {
        let data_dir = node.path().join("data");
        let Some(pid) = postmaster_pid(&data_dir) else {
            continue;
        };
        if command_line_mentions(pid, &data_dir) {
            // SAFETY: kill(2) on the postmaster's process group (it was
            // started with process_group(0)); verified above to be ours.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
    }
}

fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn command_line_mentions(pid: u32, path: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&raw);
    cmdline.split('\0').any(|arg| Path::new(arg) == path)
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state).
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Where new cluster dirs go (and where the sweep looks).
pub(crate) fn temp_root() -> PathBuf {
    std::env::temp_dir()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn own_claim_is_alive_and_forged_claim_is_dead() {
        let root = tempfile::tempdir().unwrap();
        let alive = root.path().join(format!("{DIR_PREFIX}alive"));
        std::fs::create_dir(&alive).unwrap();
        claim(&alive).unwrap();
        assert!(!owner_is_dead(&alive));

        let forged = root.path().join(format!("{DIR_PREFIX}forged"));
        std::fs::create_dir(&forged).unwrap();
        // Our pid but another start time: a reused pid.
        std::fs::write(
            forged.join(OWNER_FILE),
            format!("{} 1\n", std::process::id()),
        )
        .unwrap();
        assert!(owner_is_dead(&forged));

        let unclaimed = root.path().join(format!("{DIR_PREFIX}new"));
        std::fs::create_dir(&unclaimed).unwrap();
        assert!(
            !owner_is_dead(&unclaimed),
            "no owner file yet: leave it alone"
        );

        sweep(root.path());
        assert!(alive.exists() && unclaimed.exists());
        assert!(!forged.exists());
    }

    #[test]
    fn sweep_kills_the_dead_owners_postmaster_group() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(format!("{DIR_PREFIX}stale"));
        let data_dir = dir.join("primary").join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::write(dir.join(OWNER_FILE), "999999999 1\n").unwrap();
        // Stand-in postmaster: its command line carries the data dir.
        let mut fake = Command::new("sh")
            .args(["-c", "sleep 30; exit 0", data_dir.to_str().unwrap()])
            .process_group(0)
            .spawn()
            .unwrap();
        std::fs::write(data_dir.join("postmaster.pid"), format!("{}\n", fake.id())).unwrap();
        // Until exec completes the child still shows our command line.
        for _ in 0..500 {
            if command_line_mentions(fake.id(), &data_dir) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(command_line_mentions(fake.id(), &data_dir));

        sweep(root.path());
        let status = fake.wait().unwrap();
        assert!(!status.success(), "killed, not finished: {status:?}");
        assert!(!dir.exists());
    }
}
