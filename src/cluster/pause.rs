//! The console's `PAUSE` and `RESUME`: which databases hand out no server
//! connections now. A checkout asks [`PauseGate::is_paused`] first; while
//! nothing is paused that is one atomic load.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use thiserror::Error;
use tokio::sync::Notify;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PauseError {
    #[error("already paused")]
    AlreadyPaused,
    #[error("not paused")]
    NotPaused,
    #[error("every database is paused: RESUME without a name resumes them")]
    AllPaused,
}

impl PauseError {
    /// object_not_in_prerequisite_state: the command does not fit the state.
    pub fn sqlstate(&self) -> &'static str {
        "55000"
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Paused {
    #[default]
    Nothing,
    All,
    Only(BTreeSet<String>),
}

impl Paused {
    fn covers(&self, database: &str) -> bool {
        match self {
            Paused::Nothing => false,
            Paused::All => true,
            Paused::Only(names) => names.contains(database),
        }
    }
}

/// The state before and after one `PAUSE`.
#[derive(Debug, PartialEq, Eq)]
pub struct PauseChange {
    before: Paused,
    after: Paused,
}

#[derive(Debug, Default)]
pub struct PauseGate {
    /// False exactly when nothing is paused: the checkout's fast path.
    any: AtomicBool,
    paused: Mutex<Paused>,
    resumed: Notify,
}

impl PauseGate {
    pub fn is_paused(&self, database: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.lock().covers(database)
    }

    /// True while `PAUSE` without a database is in force.
    pub fn is_all_paused(&self) -> bool {
        self.any.load(Ordering::Acquire) && matches!(*self.lock(), Paused::All)
    }

    /// Pauses `database`, or every database with `None`; what changed, for
    /// [`PauseGate::undo`].
    pub fn pause(&self, database: Option<&str>) -> Result<PauseChange, PauseError> {
        let mut paused = self.lock();
        let next = match (database, &*paused) {
            (_, Paused::All) => return Err(PauseError::AlreadyPaused),
            (None, _) => Paused::All,
            (Some(name), Paused::Only(names)) if names.contains(name) => {
                return Err(PauseError::AlreadyPaused)
            }
            (Some(name), Paused::Only(names)) => {
                let mut names = names.clone();
                names.insert(name.to_string());
                Paused::Only(names)
            }
            (Some(name), Paused::Nothing) => Paused::Only(BTreeSet::from([name.to_string()])),
        };
        let change = PauseChange {
            before: std::mem::replace(&mut *paused, next.clone()),
            after: next,
        };
        self.any.store(true, Ordering::Release);
        Ok(change)
    }

    /// Takes back a `PAUSE` whose wait was cancelled, as PostgreSQL takes
    /// back a cancelled statement; false (and nothing done) if a later
    /// `PAUSE` or `RESUME` changed the state since: theirs stands.
    pub fn undo(&self, change: PauseChange) -> bool {
        let mut paused = self.lock();
        if *paused != change.after {
            return false;
        }
        self.any
            .store(change.before != Paused::Nothing, Ordering::Release);
        *paused = change.before;
        drop(paused);
        self.resumed.notify_waiters();
        true
    }

    /// Resumes `database`, or everything with `None`.
    pub fn resume(&self, database: Option<&str>) -> Result<(), PauseError> {
        let mut paused = self.lock();
        let next = match (database, &*paused) {
            (_, Paused::Nothing) => return Err(PauseError::NotPaused),
            (None, _) => Paused::Nothing,
            (Some(_), Paused::All) => return Err(PauseError::AllPaused),
            (Some(name), Paused::Only(names)) => {
                if !names.contains(name) {
                    return Err(PauseError::NotPaused);
                }
                let mut names = names.clone();
                names.remove(name);
                if names.is_empty() {
                    Paused::Nothing
                } else {
                    Paused::Only(names)
                }
            }
        };
        self.any.store(next != Paused::Nothing, Ordering::Release);
        *paused = next;
        drop(paused);
        self.resumed.notify_waiters();
        Ok(())
    }

    /// Returns once `database` is not paused.
    pub async fn until_resumed(&self, database: &str) {
        loop {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            // Registered before the check, so a RESUME in between still wakes us.
            resumed.as_mut().enable();
            if !self.is_paused(database) {
                return;
            }
            resumed.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Paused> {
        // Every update is one assignment: a panic cannot leave it half done.
        self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn pause_and_resume_by_name_or_all() {
        let gate = PauseGate::default();
        assert!(!gate.is_paused("a"));
        assert_eq!(gate.resume(None), Err(PauseError::NotPaused));
        gate.pause(Some("a")).unwrap();
        assert!(gate.is_paused("a") && !gate.is_paused("b"));
        assert_eq!(gate.pause(Some("a")), Err(PauseError::AlreadyPaused));
        gate.pause(Some("b")).unwrap();
        assert_eq!(gate.resume(Some("c")), Err(PauseError::NotPaused));
        gate.resume(Some("a")).unwrap();
        assert!(!gate.is_paused("a") && gate.is_paused("b"));
        gate.pause(None).unwrap();
        assert!(gate.is_paused("c"));
        assert_eq!(gate.pause(Some("c")), Err(PauseError::AlreadyPaused));
        assert_eq!(gate.resume(Some("c")), Err(PauseError::AllPaused));
        gate.resume(None).unwrap();
        assert!(!gate.is_paused("b") && !gate.is_paused("c"));
        assert!(!gate.any.load(Ordering::Relaxed), "fast path restored");
    }

    #[tokio::test]
    async fn a_waiter_runs_on_when_its_database_resumes() {
        let gate = Arc::new(PauseGate::default());
        gate.pause(Some("a")).unwrap();
        gate.pause(Some("b")).unwrap();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.until_resumed("a").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.resume(Some("b")).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "another database's resume");
        gate.resume(Some("a")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by its resume")
            .unwrap();
    }

    #[test]
    fn undo_takes_back_one_pause_unless_the_state_moved_on() {
        let gate = PauseGate::default();
        gate.pause(Some("a")).unwrap();
        let all = gate.pause(None).unwrap();
        assert!(gate.undo(all), "back to only a");
        assert!(gate.is_paused("a") && !gate.is_paused("b"));
        let b = gate.pause(Some("b")).unwrap();
        assert!(gate.undo(b));
        assert!(gate.is_paused("a") && !gate.is_paused("b"));
        let c = gate.pause(Some("c")).unwrap();
        gate.resume(Some("a")).unwrap();
        assert!(!gate.undo(c), "a RESUME since stands");
        assert!(gate.is_paused("c"));
        gate.resume(Some("c")).unwrap();
        let all = gate.pause(None).unwrap();
        assert!(gate.undo(all));
        assert!(!gate.is_paused("a") && !gate.is_all_paused());
    }
}
