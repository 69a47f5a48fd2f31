//! The probe task of one endpoint and the snapshots it publishes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{
    HealthPolicy, HealthState, HealthTracker, Lsn, PgProber, ProbeResult, Role, ServerFacts,
};
use crate::shutdown::ShutdownSignal;

/// Something that can probe one endpoint; [`PgProber`] in production.
pub trait Prober: Send + 'static {
    fn probe(&mut self, primary_lsn: Option<Lsn>) -> impl Future<Output = ProbeResult> + Send;

    /// Releases what the prober holds (its kept connection).
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

impl Prober for PgProber {
    async fn probe(&mut self, primary_lsn: Option<Lsn>) -> ProbeResult {
        PgProber::probe(self, primary_lsn).await
    }

    async fn close(&mut self) {
        PgProber::close(self).await
    }
}

/// How one endpoint is watched.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// For logs and snapshots, e.g. `127.0.0.2:5432`.
    pub label: String,
    pub role: Role,
    pub interval: Duration,
    /// Longest one probe may take before it counts as a failure.
    pub timeout: Duration,
    pub policy: HealthPolicy,
}

/// The published view of one endpoint's health.
#[derive(Debug, Clone)]
pub struct HealthSnapshot {
    pub label: String,
    pub role: Role,
    pub state: HealthState,
    /// The latest probe result, if any probe has finished.
    pub last_probe: Option<ProbeResult>,
    pub checked_at: Option<Instant>,
    pub probes: u64,
    pub failed_probes: u64,
}

impl HealthSnapshot {
    fn new(config: &MonitorConfig) -> Self {
        HealthSnapshot {
            label: config.label.clone(),
            role: config.role,
            state: HealthState::Unknown,
            last_probe: None,
            checked_at: None,
            probes: 0,
            failed_probes: 0,
        }
    }

    pub fn is_usable(&self) -> bool {
        self.state.is_usable()
    }

    pub fn facts(&self) -> Option<&ServerFacts> {
        self.last_probe.as_ref().and_then(ProbeResult::facts)
    }

    /// The primary's write position as last probed.
    pub fn current_lsn(&self) -> Option<Lsn> {
        self.facts().and_then(|f| f.current_lsn)
    }
}

/// Handle to a probe task; dropping it stops the task.
#[derive(Debug)]
pub struct HealthMonitor {
    rx: watch::Receiver<Arc<HealthSnapshot>>,
    /// The current snapshot's [`HealthSnapshot::is_usable`], kept apart so a
    /// routed read asks one atomic instead of the channel's lock.
    usable: Arc<AtomicBool>,
    failures: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HealthMonitor {
    /// A receiver woken on each state change after this call.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HealthSnapshot>> {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        rx
    }

    pub fn current(&self) -> Arc<HealthSnapshot> {
        self.rx.borrow().clone()
    }

    /// [`HealthSnapshot::is_usable`] of the current snapshot, read without
    /// the channel's lock (asked on every routed read).
    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// A connection failure or timeout on real traffic: bans the endpoint
    /// at once. Never blocks; a report while one is pending is redundant.
    pub fn report_connection_failure(&self) {
        let _ = self.failures.try_send(());
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts probing with `prober` every `config.interval`. For a replica,
/// `primary` (the primary's monitor snapshots) supplies the LSN that
/// replication lag in bytes is measured against.
pub fn spawn_monitor<P: Prober>(
    config: MonitorConfig,
    prober: P,
    primary: Option<watch::Receiver<Arc<HealthSnapshot>>>,
    shutdown: ShutdownSignal,
) -> HealthMonitor {
    let first = HealthSnapshot::new(&config);
    let usable = Arc::new(AtomicBool::new(first.is_usable()));
    let (tx, rx) = watch::channel(Arc::new(first));
    let (failures, failure_rx) = mpsc::channel(1);
    let published = Published {
        tx,
        usable: usable.clone(),
    };
    let task = tokio::spawn(run(
        config, prober, primary, published, failure_rx, shutdown,
    ));
    HealthMonitor {
        rx,
        usable,
        failures,
        task,
    }
}

async fn run<P: Prober>(
    config: MonitorConfig,
    mut prober: P,
    primary: Option<watch::Receiver<Arc<HealthSnapshot>>>,
    published: Published,
    mut failures: mpsc::Receiver<()>,
    shutdown: ShutdownSignal,
) {
    let mut tracker = HealthTracker::new(config.role, config.policy.clone());
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let primary_lsn = primary.as_ref().and_then(|rx| rx.borrow().current_lsn());
                let result = tokio::select! {
                    result = tokio::time::timeout(config.timeout, prober.probe(primary_lsn)) => {
                        result.unwrap_or_else(|_| ProbeResult::Unreachable {
                            error: format!("probe timed out after {:?}", config.timeout),
                        })
                    }
                    _ = shutdown.triggered() => break,
                };
                let now = now();
                let before = tracker.state();
                let after = tracker.observe(&result, now);
                publish(&published, &config, before, after, |snap| {
                    snap.probes += 1;
                    if matches!(result, ProbeResult::Unreachable { .. }) {
                        snap.failed_probes += 1;
                    }
                    snap.last_probe = Some(result);
                    snap.checked_at = Some(now);
                });
            }
            Some(()) = failures.recv() => {
                let before = tracker.state();
                let after = tracker.connection_failed(now());
                publish(&published, &config, before, after, |_| {});
            }
            _ = shutdown.triggered() => break,
        }
    }
    prober.close().await;
}

/// The current time as tokio sees it, so paused-time tests stay coherent.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Where a monitor's task publishes what it learns.
struct Published {
    tx: watch::Sender<Arc<HealthSnapshot>>,
    usable: Arc<AtomicBool>,
}

/// Stores the new snapshot; wakes receivers only when the kind of state
/// changed (new lag figures inside `Lagging` are not news).
fn publish(
    published: &Published,
    config: &MonitorConfig,
    before: HealthState,
    after: HealthState,
    update: impl FnOnce(&mut HealthSnapshot),
) {
    let changed = std::mem::discriminant(&before) != std::mem::discriminant(&after);
    if changed {
        tracing::info!(
            endpoint = config.label,
            from = before.name(),
            to = after.name(),
            "endpoint health changed"
        );
    }
    published.tx.send_if_modified(|current| {
        let mut next = HealthSnapshot::clone(current);
        next.state = after;
        update(&mut next);
        published.usable.store(next.is_usable(), Ordering::Release);
        *current = Arc::new(next);
        changed
    });
}
