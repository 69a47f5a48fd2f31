//! A connection limit shared by several pools (`max_db_connections`,
//! `max_user_connections`): each live connection holds one permit.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A pool that can give up an idle connection so a sibling can open one.
pub(super) trait EvictIdle: Send + Sync {
    fn evict_one_idle(&self) -> bool;
}

pub struct ConnLimit {
    name: String,
    sem: Arc<Semaphore>,
    members: Mutex<Vec<Weak<dyn EvictIdle>>>,
}

impl std::fmt::Debug for ConnLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnLimit")
            .field("name", &self.name)
            .field("available", &self.sem.available_permits())
            .finish()
    }
}

impl ConnLimit {
    pub fn new(name: impl Into<String>, max: usize) -> Arc<Self> {
        Arc::new(ConnLimit {
            name: name.into(),
            sem: Arc::new(Semaphore::new(max)),
            members: Mutex::new(Vec::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    pub(super) fn register(&self, pool: Weak<dyn EvictIdle>) {
        let mut members = self.members.lock().unwrap();
        members.retain(|m| m.strong_count() > 0);
        members.push(pool);
    }

    /// A permit for one more connection: at once if free, else after closing an
    /// idle connection of a member pool, else by waiting until `deadline`.
    pub(super) async fn acquire(&self, deadline: Option<Instant>) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Some(p);
        }
        let members: Vec<_> = self.members.lock().unwrap().clone();
        for member in members.iter().filter_map(Weak::upgrade) {
            if member.evict_one_idle() {
                break;
            }
        }
        let wait = self.sem.clone().acquire_owned();
        match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), wait).await.ok()?.ok(),
            None => wait.await.ok(),
        }
    }
}
