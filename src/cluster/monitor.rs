//! What is known about the endpoints of one replica group of one database,
//! shared by every user's pools of that database: discovery, health probes,
//! bans, replay positions, reads in flight and the latency EWMA. Probes
//! therefore scale with endpoints, not with endpoints × users.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use super::balance::{Ewma, InFlight};
use super::discovery::{Discovery, Endpoint, EndpointSet};
use super::health::{
    self, HealthMonitor, HealthSnapshot, Lsn, MonitorConfig, PgProber, ProbeResult, Prober,
};
use super::{HealthSettings, PrimaryAddress};
use crate::backend::LiveOptions;
use crate::shutdown::ShutdownSignal;

/// How long a replica that failed a connection is skipped, at first.
const FIRST_BAN: Duration = Duration::from_secs(2);
const MAX_BAN: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Strikes {
    until: Option<Instant>,
    count: u32,
}

/// Connection failures on real traffic since the last success, and the ban
/// they earn. Every routed read asks; a clean endpoint, the common case,
/// answers from one atomic load without the lock.
#[derive(Default)]
struct Bans {
    strikes: Mutex<Strikes>,
    /// Whether `strikes` holds any: set and cleared under its lock.
    struck: AtomicBool,
}

impl Bans {
    /// One more failure at `now`: banned for a backoff that doubles per strike.
    fn strike(&self, now: Instant) {
        let mut strikes = self.strikes.lock().unwrap();
        strikes.count = strikes.count.saturating_add(1);
        let backoff = FIRST_BAN
            .saturating_mul(1 << strikes.count.min(6).saturating_sub(1))
            .min(MAX_BAN);
        strikes.until = Some(now + backoff);
        self.struck.store(true, Ordering::Release);
    }

    fn clear(&self) {
        if !self.struck.load(Ordering::Acquire) {
            return;
        }
        *self.strikes.lock().unwrap() = Strikes::default();
        self.struck.store(false, Ordering::Release);
    }

    fn is_banned(&self, now: Instant) -> bool {
        self.struck.load(Ordering::Acquire)
            && self.strikes.lock().unwrap().until.is_some_and(|u| now < u)
    }

    fn count(&self) -> u32 {
        match self.struck.load(Ordering::Acquire) {
            true => self.strikes.lock().unwrap().count,
            false => 0,
        }
    }
}

/// The shared state of one replica endpoint.
pub struct EndpointState {
    pub addr: SocketAddr,
    /// The DNS name the address was found under; servers there must carry
    /// it in their certificates under verify-full.
    pub name: Option<String>,
    weight: f64,
    outstanding: Arc<AtomicU32>,
    latency: Ewma,
    bans: Bans,
    /// Probes reachability, recovery state and replay lag.
    health: HealthMonitor,
    /// The furthest replay position seen by an on-demand check.
    checked_replay: AtomicU64,
    /// The lag at which a replica stops taking reads (`Duration::ZERO`: none).
    max_lag: Duration,
}

/// What the balancer reads of one usable endpoint to weigh it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub configured_weight: f64,
    pub outstanding: u32,
    pub latency: Duration,
    /// Connection failures on real traffic since the last success.
    pub strikes: u32,
    pub lag: Duration,
    pub max_lag: Duration,
}

impl Reading {
    pub const NONE: Reading = Reading {
        configured_weight: 0.0,
        outstanding: 0,
        latency: Duration::ZERO,
        strikes: 0,
        lag: Duration::ZERO,
        max_lag: Duration::ZERO,
    };

    /// Each failure since the last success halves the error factor's share.
    pub fn error_rate(&self) -> f64 {
        1.0 - 0.5f64.powi(self.strikes.min(16) as i32)
    }
}

impl EndpointState {
    pub fn enter(&self) -> InFlight {
        InFlight::enter(&self.outstanding)
    }

    /// A read's latency as seen at `now` (the caller's clock reading).
    pub fn observe_latency(&self, sample: Duration, now: Instant) {
        self.latency.observe_at(sample, now);
    }

    /// A connection failed: skip this endpoint for a growing while.
    pub fn report_failure(&self) {
        self.health.report_connection_failure();
        self.bans.strike(Instant::now());
    }

    pub fn report_success(&self) {
        self.bans.clear();
    }

    /// The later of the last probe's replay position and the last on-demand check.
    pub fn replayed(&self) -> Lsn {
        let probed = self
            .health
            .current()
            .facts()
            .and_then(|f| f.replay_lsn)
            .map_or(0, |l| l.0);
        Lsn(probed.max(self.checked_replay.load(Ordering::Relaxed)))
    }

    pub fn note_replayed(&self, lsn: Lsn) {
        self.checked_replay.fetch_max(lsn.0, Ordering::Relaxed);
    }

    pub fn health(&self) -> Arc<HealthSnapshot> {
        self.health.current()
    }

    pub fn weight(&self) -> f64 {
        self.weight
    }

    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn latency_at(&self, now: Instant) -> Duration {
        self.latency.faded(now)
    }

    /// Whether reads may go here at `now`: not banned, and healthy as last probed.
    pub fn is_usable(&self, now: Instant) -> bool {
        !self.bans.is_banned(now) && self.health.is_usable()
    }

    /// Everything weighing this endpoint against others needs, read once.
    pub fn reading(&self, now: Instant) -> Reading {
        let strikes = self.bans.count();
        let health = self.health.current();
        Reading {
            configured_weight: self.weight,
            outstanding: self.outstanding(),
            latency: self.latency_at(now),
            strikes,
            lag: health.facts().and_then(|f| f.lag).unwrap_or_default(),
            max_lag: self.max_lag,
        }
    }
}

/// The endpoints of one (database, group), kept in step with discovery.
pub struct GroupMonitor {
    source: Mutex<watch::Receiver<Arc<EndpointSet>>>,
    applied_version: AtomicU64,
    endpoints: RwLock<Arc<Vec<Arc<EndpointState>>>>,
    /// Probes log in with the connect options of the first user of the group.
    probe_template: LiveOptions,
    health: HealthSettings,
    /// The primary's snapshots, for replicas' lag in bytes.
    primary: watch::Receiver<Arc<HealthSnapshot>>,
    shutdown: ShutdownSignal,
    /// Keeps the discovery task running as long as the group is in use.
    _discovery: Discovery,
}

impl GroupMonitor {
    pub fn new(
        discovery: Discovery,
        probe_template: LiveOptions,
        health: HealthSettings,
        primary: watch::Receiver<Arc<HealthSnapshot>>,
        shutdown: ShutdownSignal,
    ) -> Self {
        GroupMonitor {
            source: Mutex::new(first_seen_as_changed(discovery.subscribe())),
            applied_version: AtomicU64::new(u64::MAX),
            endpoints: RwLock::new(Arc::new(Vec::new())),
            probe_template,
            health,
            primary,
            shutdown,
            _discovery: discovery,
        }
    }

    /// The discovery version the endpoints reflect, after applying a newer
    /// set if discovery published one. Asked on every routed read: when
    /// nothing changed this is a lock and an atomic load, no snapshot taken.
    pub fn version(&self) -> u64 {
        self.sync();
        self.applied_version.load(Ordering::Acquire)
    }

    /// The endpoints as last applied (see [`GroupMonitor::version`]).
    pub fn endpoints(&self) -> Arc<Vec<Arc<EndpointState>>> {
        self.endpoints.read().unwrap().clone()
    }

    /// Applies the latest discovered set if it changed since the last call.
    fn sync(&self) {
        let mut source = self.source.lock().unwrap();
        // A closed channel (discovery stopped) is checked the slow way: its
        // last value may not have been applied yet.
        if matches!(source.has_changed(), Ok(false)) {
            return;
        }
        let latest = source.borrow_and_update().clone();
        drop(source);
        let version = latest.version();
        if self.applied_version.load(Ordering::Acquire) == version {
            return;
        }
        // One writer at a time, so two callers do not both start monitors.
        let mut slot = self.endpoints.write().unwrap();
        if self.applied_version.load(Ordering::Acquire) == version {
            return;
        }
        let next: Vec<Arc<EndpointState>> = latest
            .endpoints()
            .iter()
            .map(|e| match slot.iter().find(|kept| kept.addr == e.addr) {
                Some(kept) => kept.clone(),
                None => {
                    info!(addr = %e.addr, "replica joined");
                    Arc::new(self.new_endpoint(e))
                }
            })
            .collect();
        for gone in slot
            .iter()
            .filter(|e| !next.iter().any(|n| n.addr == e.addr))
        {
            info!(addr = %gone.addr, "replica left; draining");
        }
        *slot = Arc::new(next);
        self.applied_version.store(version, Ordering::Release);
    }

    fn new_endpoint(&self, endpoint: &Endpoint) -> EndpointState {
        let opts = self
            .probe_template
            .at(endpoint.addr, endpoint.name.as_deref());
        EndpointState {
            addr: endpoint.addr,
            name: endpoint.name.clone(),
            weight: f64::from(endpoint.weight.max(1)),
            outstanding: Arc::new(AtomicU32::new(0)),
            latency: Ewma::new(Duration::from_secs(2)),
            bans: Bans::default(),
            health: health::spawn_monitor(
                monitor_config(&opts, health::Role::Replica, &self.health),
                PgProber::new(opts),
                Some(self.primary.clone()),
                self.shutdown.clone(),
            ),
            checked_replay: AtomicU64::new(0),
            max_lag: self.health.policy.max_lag.unwrap_or_default(),
        }
    }
}

/// A receiver whose current value counts as new, so the first sync applies it.
fn first_seen_as_changed<T>(mut rx: watch::Receiver<T>) -> watch::Receiver<T> {
    rx.mark_changed();
    rx
}

/// Starts probing a database's primary for its WAL position; with
/// `address` (a DNS-named primary), wherever the name points now.
pub fn primary_monitor(
    opts: LiveOptions,
    address: Option<PrimaryAddress>,
    health: &HealthSettings,
    shutdown: ShutdownSignal,
) -> HealthMonitor {
    health::spawn_monitor(
        monitor_config(&opts, health::Role::Primary, health),
        PrimaryProber {
            opts: opts.clone(),
            address,
            probing: None,
            inner: PgProber::new(opts),
        },
        None,
        shutdown,
    )
}

/// Probes the primary, moving its kept connection when the primary's DNS
/// name moves (a probe of the old primary would measure lag against it).
struct PrimaryProber {
    opts: LiveOptions,
    address: Option<PrimaryAddress>,
    /// The address `inner` connects to; `None` while by name.
    probing: Option<SocketAddr>,
    inner: PgProber,
}

impl Prober for PrimaryProber {
    async fn probe(&mut self, primary_lsn: Option<Lsn>) -> ProbeResult {
        if let Some(address) = &self.address {
            let now = address.addrs(Duration::ZERO).await.first().copied();
            if now.is_some() && now != self.probing {
                self.inner.close().await;
                let opts = match now {
                    Some(addr) => self.opts.at(addr, Some(&self.opts.get().host)),
                    None => self.opts.clone(),
                };
                self.inner = PgProber::new(opts);
                self.probing = now;
            }
        }
        self.inner.probe(primary_lsn).await
    }

    async fn close(&mut self) {
        self.inner.close().await;
    }
}

fn monitor_config(opts: &LiveOptions, role: health::Role, s: &HealthSettings) -> MonitorConfig {
    let opts = opts.get();
    MonitorConfig {
        label: format!("{}:{}", opts.host, opts.port),
        role,
        interval: s.interval,
        timeout: s.interval.max(Duration::from_secs(1)) * 2,
        policy: s.policy.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strike_bans_for_a_doubling_while_and_a_success_clears_it() {
        let bans = Bans::default();
        let t0 = Instant::now();
        assert!(!bans.is_banned(t0));
        assert_eq!(bans.count(), 0);

        bans.strike(t0);
        assert!(bans.is_banned(t0 + FIRST_BAN - Duration::from_millis(1)));
        assert!(!bans.is_banned(t0 + FIRST_BAN), "the first ban is over");
        bans.strike(t0);
        assert_eq!(bans.count(), 2);
        assert!(bans.is_banned(t0 + FIRST_BAN * 2 - Duration::from_millis(1)));
        for _ in 0..10 {
            bans.strike(t0);
        }
        assert!(!bans.is_banned(t0 + MAX_BAN), "capped at MAX_BAN");

        bans.clear();
        assert!(!bans.is_banned(t0));
        assert_eq!(bans.count(), 0);
        bans.strike(t0);
        assert_eq!(bans.count(), 1, "strikes count again from zero");
    }
}
