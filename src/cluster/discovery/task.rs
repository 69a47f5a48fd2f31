//! The background task that keeps one source's endpoint set fresh.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{DiscoveryConfig, DiscoveryError, Endpoint, EndpointSet, Resolve, Resolved};
use crate::shutdown::ShutdownSignal;

/// Counters of one discovery task.
#[derive(Debug, Default)]
struct Stats {
    lookups: AtomicU64,
    failures: AtomicU64,
    empty: AtomicU64,
    updates: AtomicU64,
}

/// A copy of a discovery task's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryCounts {
    /// Lookups attempted.
    pub lookups: u64,
    /// Lookups that failed (errors and timeouts, not empty answers).
    pub failures: u64,
    /// Lookups that answered with no endpoints (NXDOMAIN, no records).
    pub empty: u64,
    /// Snapshots published because the set changed.
    pub updates: u64,
}

impl Stats {
    fn snapshot(&self) -> DiscoveryCounts {
        DiscoveryCounts {
            lookups: self.lookups.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            empty: self.empty.load(Ordering::Relaxed),
            updates: self.updates.load(Ordering::Relaxed),
        }
    }
}

/// Handle to a running discovery task. Dropping it stops the task;
/// receivers taken with [`Discovery::subscribe`] then keep the last set and
/// their `changed()` returns an error.
#[derive(Debug)]
pub struct Discovery {
    rx: watch::Receiver<Arc<EndpointSet>>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Discovery {
    /// A receiver of snapshots: `borrow()` is the current one, `changed()`
    /// fires for each one published after this call.
    pub fn subscribe(&self) -> watch::Receiver<Arc<EndpointSet>> {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        rx
    }

    /// The latest snapshot (version 0 and empty before the first success).
    pub fn current(&self) -> Arc<EndpointSet> {
        self.rx.borrow().clone()
    }

    /// Waits for the first successful lookup and returns its set.
    pub async fn ready(&self) -> Result<Arc<EndpointSet>, DiscoveryError> {
        let mut rx = self.rx.clone();
        let set = rx
            .wait_for(|set| set.is_resolved())
            .await
            .map_err(|_| DiscoveryError::Stopped)?;
        Ok(set.clone())
    }

    pub fn counts(&self) -> DiscoveryCounts {
        self.stats.snapshot()
    }

    /// True once the task has ended (shutdown).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts the discovery task for `config.source` on the current runtime.
pub fn spawn<R: Resolve>(
    config: DiscoveryConfig,
    resolver: R,
    shutdown: ShutdownSignal,
) -> Discovery {
    let (tx, rx) = watch::channel(Arc::new(EndpointSet::default()));
    let stats = Arc::new(Stats::default());
    let task = tokio::spawn(run(config, resolver, tx, stats.clone(), shutdown));
    Discovery { rx, stats, task }
}

async fn run<R: Resolve>(
    config: DiscoveryConfig,
    resolver: R,
    tx: watch::Sender<Arc<EndpointSet>>,
    stats: Arc<Stats>,
    shutdown: ShutdownSignal,
) {
    let source = config.source.describe();
    loop {
        let outcome = tokio::select! {
            outcome = lookup_bounded(&config, &resolver) => outcome,
            _ = shutdown.triggered() => break,
        };
        stats.lookups.fetch_add(1, Ordering::Relaxed);
        let wait = match outcome {
            Ok(resolved) if !resolved.endpoints.is_empty() => {
                publish(&tx, resolved.endpoints, &stats, &source);
                config.refresh_after(resolved.ttl)
            }
            Ok(_) | Err(DiscoveryError::NoRecords(_)) => {
                stats.empty.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    source,
                    "lookup found no endpoints; keeping the last good set"
                );
                config.failure_retry
            }
            Err(error) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source, %error, "lookup failed; keeping the last good set");
                config.failure_retry
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.triggered() => break,
        }
    }
    tracing::debug!(source, "discovery stopped");
}

async fn lookup_bounded<R: Resolve>(
    config: &DiscoveryConfig,
    resolver: &R,
) -> Result<Resolved, DiscoveryError> {
    match tokio::time::timeout(config.lookup_timeout, resolver.lookup(&config.source)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(DiscoveryError::Timeout {
            name: config.source.describe(),
            timeout: config.lookup_timeout,
        }),
    }
}

/// Publishes a new snapshot only when the endpoints differ from the current one.
fn publish(
    tx: &watch::Sender<Arc<EndpointSet>>,
    endpoints: Vec<Endpoint>,
    stats: &Stats,
    source: &str,
) {
    tx.send_if_modified(|current| {
        let candidate = EndpointSet::new(endpoints, current.version() + 1);
        if current.is_resolved() && candidate.same_endpoints(current) {
            return false;
        }
        let diff = candidate.diff(current);
        tracing::info!(
            source,
            added = diff.added.len(),
            removed = diff.removed.len(),
            changed = diff.changed.len(),
            total = candidate.len(),
            "endpoints changed"
        );
        *current = Arc::new(candidate);
        stats.updates.fetch_add(1, Ordering::Relaxed);
        true
    });
}
