//! The replica pools of one (database, user) pair: one pool per replica
//! endpoint, kept in step with discovery, chosen per read by the balancer.
//!
//! The endpoint list is an immutable snapshot swapped whole when discovery
//! publishes a new set; a pick reads the snapshot without holding a lock
//! across anything slow. Removed endpoints are drained: their pool refuses new
//! checkouts and closes idle servers, and servers in use close at release.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use super::balance::{Balancer, Candidate, Ewma, InFlight};
use super::discovery::EndpointSet;
use super::groups::GroupId;
use super::health::{self, HealthMonitor, HealthPolicy, Lsn, MonitorConfig, PgProber};
use super::{ReplicaSpec, ServerConnector, ServerPool};
use crate::backend::ConnectOptions;
use crate::pool::{ConnLimit, Pool, PoolSettings};
use crate::shutdown::ShutdownSignal;

/// How replicas are probed and judged.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub interval: Duration,
    pub policy: HealthPolicy,
}

/// What to do with a read when no replica can take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFallback {
    Primary,
    Error,
}

/// What a client's reads must see of its own earlier writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadYourWrites {
    Off,
    /// Reads go to the primary for this long after a write.
    Window(Duration),
    /// Reads go only to replicas that replayed past the write's LSN.
    Lsn,
}

/// How long a replica that failed a connection is skipped, at first.
const FIRST_BAN: Duration = Duration::from_secs(2);
const MAX_BAN: Duration = Duration::from_secs(60);

/// One replica and its pool.
pub struct ReplicaEndpoint {
    pub addr: SocketAddr,
    /// The group whose reads this endpoint serves.
    pub group: GroupId,
    pub pool: ServerPool,
    weight: f64,
    outstanding: Arc<AtomicU32>,
    latency: Ewma,
    ban: Mutex<Ban>,
    /// Probes reachability, recovery state and replay lag.
    health: HealthMonitor,
    /// The furthest replay position seen by an on-demand check.
    checked_replay: AtomicU64,
}

#[derive(Default)]
struct Ban {
    until: Option<Instant>,
    strikes: u32,
}

impl ReplicaEndpoint {
    /// Counts a request in flight here until the guard drops.
    pub fn enter(&self) -> InFlight {
        InFlight::enter(&self.outstanding)
    }

    pub fn observe_latency(&self, sample: Duration) {
        self.latency.observe(sample);
    }

    /// A connection to this replica failed: skip it for a growing while.
    pub fn report_failure(&self) {
        self.health.report_connection_failure();
        let mut ban = self.ban.lock().unwrap();
        ban.strikes = ban.strikes.saturating_add(1);
        let backoff = FIRST_BAN
            .saturating_mul(1 << ban.strikes.min(6).saturating_sub(1))
            .min(MAX_BAN);
        ban.until = Some(Instant::now() + backoff);
    }

    pub fn report_success(&self) {
        let mut ban = self.ban.lock().unwrap();
        ban.strikes = 0;
        ban.until = None;
    }

    fn is_banned(&self, now: Instant) -> bool {
        self.ban.lock().unwrap().until.is_some_and(|u| now < u)
    }

    /// How far this replica has certainly replayed: the later of the last
    /// probe and the last on-demand check.
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

    pub fn health(&self) -> Arc<health::HealthSnapshot> {
        self.health.current()
    }

    pub fn weight(&self) -> f64 {
        self.weight
    }

    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn latency(&self) -> Duration {
        self.latency.faded(Instant::now())
    }

    /// Probed healthy: reachable, in recovery, within the lag limits.
    pub fn is_healthy(&self) -> bool {
        self.health.current().is_usable()
    }
}

pub struct ReplicaSet {
    pub group: GroupId,
    template: ConnectOptions,
    pool_settings: PoolSettings,
    limits: Vec<Arc<ConnLimit>>,
    source: Mutex<watch::Receiver<Arc<EndpointSet>>>,
    applied_version: AtomicU64,
    endpoints: RwLock<Arc<Vec<Arc<ReplicaEndpoint>>>>,
    balancer: Balancer,
    pub fallback: ReadFallback,
    pub read_your_writes: ReadYourWrites,
    health: HealthSettings,
    /// Probes the primary for its WAL position, to measure replicas' lag in bytes.
    primary_health: HealthMonitor,
    shutdown: ShutdownSignal,
}

impl ReplicaSet {
    pub fn new(
        group: GroupId,
        template: ConnectOptions,
        pool_settings: PoolSettings,
        limits: Vec<Arc<ConnLimit>>,
        source: watch::Receiver<Arc<EndpointSet>>,
        spec: &ReplicaSpec,
        shutdown: ShutdownSignal,
    ) -> Self {
        let health = spec.health.clone();
        let primary_health = health::spawn_monitor(
            monitor_config(&template, health::Role::Primary, &health),
            PgProber::new(template.clone()),
            None,
            shutdown.clone(),
        );
        let set = ReplicaSet {
            group,
            health,
            primary_health,
            shutdown,
            template,
            pool_settings,
            limits,
            source: Mutex::new(source),
            applied_version: AtomicU64::new(u64::MAX),
            endpoints: RwLock::new(Arc::new(Vec::new())),
            balancer: Balancer::new(spec.strategy),
            fallback: spec.fallback,
            read_your_writes: spec.read_your_writes,
        };
        set.sync();
        set
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<ReplicaEndpoint>>> {
        self.sync();
        self.endpoints.read().unwrap().clone()
    }

    /// Applies the latest discovered set if it changed since the last call.
    fn sync(&self) {
        let latest = self.source.lock().unwrap().borrow().clone();
        let version = latest.version();
        if self.applied_version.swap(version, Ordering::AcqRel) == version {
            return;
        }
        let current = self.endpoints.read().unwrap().clone();
        let mut next = Vec::with_capacity(latest.len());
        for endpoint in latest.endpoints() {
            match current.iter().find(|e| e.addr == endpoint.addr) {
                Some(kept) => next.push(kept.clone()),
                None => {
                    info!(addr = %endpoint.addr, "replica joined");
                    next.push(Arc::new(self.new_endpoint(endpoint.addr, endpoint.weight)));
                }
            }
        }
        for gone in current
            .iter()
            .filter(|e| !next.iter().any(|n| n.addr == e.addr))
        {
            info!(addr = %gone.addr, "replica left; draining");
            gone.pool.close();
        }
        *self.endpoints.write().unwrap() = Arc::new(next);
    }

    fn new_endpoint(&self, addr: SocketAddr, weight: u32) -> ReplicaEndpoint {
        let mut opts = self.template.clone();
        opts.host = addr.ip().to_string();
        opts.port = addr.port();
        let health = health::spawn_monitor(
            monitor_config(&opts, health::Role::Replica, &self.health),
            PgProber::new(opts.clone()),
            Some(self.primary_health.subscribe()),
            self.shutdown.clone(),
        );
        ReplicaEndpoint {
            group: self.group,
            health,
            checked_replay: AtomicU64::new(0),
            addr,
            pool: Pool::new(
                ServerConnector::new(opts),
                self.pool_settings.clone(),
                self.limits.clone(),
            ),
            weight: f64::from(weight.max(1)),
            outstanding: Arc::new(AtomicU32::new(0)),
            latency: Ewma::new(Duration::from_secs(2)),
            ban: Mutex::new(Ban::default()),
        }
    }

    /// Picks a replica for the next read, skipping `exclude` (a replica that
    /// just failed this read) and banned ones.
    pub fn pick(&self, exclude: Option<SocketAddr>) -> Option<Arc<ReplicaEndpoint>> {
        let endpoints = self.endpoints();
        let now = Instant::now();
        let usable: Vec<&Arc<ReplicaEndpoint>> = endpoints
            .iter()
            .filter(|e| Some(e.addr) != exclude && !e.is_banned(now) && e.is_healthy())
            .collect();
        let candidates: Vec<Candidate> = usable
            .iter()
            .map(|e| {
                Candidate::new(
                    e.weight,
                    e.outstanding.load(Ordering::Relaxed),
                    e.latency.faded(now),
                )
            })
            .collect();
        let index = self.balancer.pick(&candidates, &mut rand::rng())?;
        Some(usable[index].clone())
    }

    pub async fn maintain(&self) {
        for endpoint in self.endpoints().iter() {
            endpoint.pool.maintain().await;
        }
    }

    pub fn close(&self) {
        for endpoint in self.endpoints.read().unwrap().iter() {
            endpoint.pool.close();
        }
    }
}

fn monitor_config(opts: &ConnectOptions, role: health::Role, s: &HealthSettings) -> MonitorConfig {
    MonitorConfig {
        label: format!("{}:{}", opts.host, opts.port),
        role,
        interval: s.interval,
        timeout: s.interval.max(Duration::from_secs(1)) * 2,
        policy: s.policy.clone(),
    }
}
