//! The replica pools of one (database, user) pair: one pool per endpoint of
//! the group's shared [`GroupMonitor`], kept in step with it, chosen per read
//! by the balancer over the shared health, bans and latency.
//!
//! The endpoint list is an immutable snapshot swapped whole when the group's
//! endpoints change; a pick reads the snapshot without holding a lock across
//! anything slow. Removed endpoints are drained: their pool refuses new
//! checkouts and closes idle servers, and servers in use close at release.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::balance::{effective_weight, Balancer, Candidate, InFlight, LoadSignals, Strategy};
use super::groups::GroupId;
use super::health::{self, HealthPolicy, Lsn};
use super::monitor::{EndpointState, GroupMonitor, Reading};
use super::{ReplicaSpec, ServerConnector, ServerPool};
use crate::pool::{ConnLimit, Pool, PoolSettings};

/// How replicas are probed and judged.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub interval: Duration,
    pub policy: HealthPolicy,
}

/// A replica up to this many times slower than the group's fastest is not
/// penalised by latency.
const LATENCY_TOLERANCE: u32 = 2;

/// Nor is one less than this much slower: at sub-millisecond latencies, twice
/// the fastest is within scheduling noise on a busy host.
const LATENCY_SLACK: Duration = Duration::from_millis(1);

/// Groups up to this size are picked from without allocating.
const INLINE_CANDIDATES: usize = 16;

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

/// One replica: this user's pool to it and the group's shared view of it.
pub struct ReplicaEndpoint {
    pub addr: SocketAddr,
    /// The group whose reads this endpoint serves.
    pub group: GroupId,
    pub pool: ServerPool,
    shared: Arc<EndpointState>,
}

impl ReplicaEndpoint {
    /// Counts a request in flight here until the guard drops.
    pub fn enter(&self) -> InFlight {
        self.shared.enter()
    }

    /// A read's latency, seen at `now` (the caller's clock reading).
    pub fn observe_latency(&self, sample: Duration, now: Instant) {
        self.shared.observe_latency(sample, now);
    }

    /// A connection to this replica failed: skip it for a growing while.
    pub fn report_failure(&self) {
        self.shared.report_failure();
    }

    pub fn report_success(&self) {
        self.shared.report_success();
    }

    /// How far this replica has certainly replayed: the later of the last
    /// probe and the last on-demand check.
    pub fn replayed(&self) -> Lsn {
        self.shared.replayed()
    }

    pub fn note_replayed(&self, lsn: Lsn) {
        self.shared.note_replayed(lsn);
    }

    pub fn health(&self) -> Arc<health::HealthSnapshot> {
        self.shared.health()
    }

    pub fn weight(&self) -> f64 {
        self.shared.weight()
    }

    pub fn outstanding(&self) -> u32 {
        self.shared.outstanding()
    }

    pub fn latency(&self) -> Duration {
        self.shared.latency_at(Instant::now())
    }
}

pub struct ReplicaSet {
    pub group: GroupId,
    /// Opens connections to any of the group's servers ([`ServerConnector::at`]).
    connector: ServerConnector,
    /// Settings for the endpoints' pools. Held while endpoints are added
    /// and while a reload reconfigures them, so no pool misses a reload.
    pool_settings: Mutex<PoolSettings>,
    limits: Vec<Arc<ConnLimit>>,
    monitor: Arc<GroupMonitor>,
    applied_version: AtomicU64,
    endpoints: RwLock<Arc<Vec<Arc<ReplicaEndpoint>>>>,
    balancer: Balancer,
    pub fallback: ReadFallback,
    pub read_your_writes: ReadYourWrites,
}

impl ReplicaSet {
    pub fn new(
        group: GroupId,
        connector: ServerConnector,
        pool_settings: PoolSettings,
        limits: Vec<Arc<ConnLimit>>,
        monitor: Arc<GroupMonitor>,
        spec: &ReplicaSpec,
    ) -> Self {
        let set = ReplicaSet {
            group,
            connector,
            pool_settings: Mutex::new(pool_settings),
            limits,
            monitor,
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

    /// Follows the group's endpoints if they changed since the last call.
    fn sync(&self) {
        let version = self.monitor.version();
        // A load first: the common case changes nothing and needs no locked write.
        if self.applied_version.load(Ordering::Acquire) == version
            || self.applied_version.swap(version, Ordering::AcqRel) == version
        {
            return;
        }
        let shared = self.monitor.endpoints();
        let settings = self.pool_settings.lock().unwrap();
        let current = self.endpoints.read().unwrap().clone();
        let next: Vec<Arc<ReplicaEndpoint>> = shared
            .iter()
            .map(
                |state| match current.iter().find(|e| e.addr == state.addr) {
                    Some(kept) => kept.clone(),
                    None => Arc::new(self.new_endpoint(state.clone(), *settings)),
                },
            )
            .collect();
        for gone in current
            .iter()
            .filter(|e| !next.iter().any(|n| n.addr == e.addr))
        {
            gone.pool.close();
        }
        *self.endpoints.write().unwrap() = Arc::new(next);
    }

    /// Applies new pool settings (a reload) to every endpoint's pool and to
    /// endpoints that join later.
    pub fn reconfigure(&self, settings: PoolSettings) {
        let mut template = self.pool_settings.lock().unwrap();
        *template = settings;
        for endpoint in self.endpoints.read().unwrap().iter() {
            endpoint.pool.reconfigure(settings);
        }
    }

    fn new_endpoint(&self, shared: Arc<EndpointState>, settings: PoolSettings) -> ReplicaEndpoint {
        ReplicaEndpoint {
            addr: shared.addr,
            group: self.group,
            pool: Pool::new(
                self.connector.at(shared.addr, shared.name.as_deref()),
                settings,
                self.limits.clone(),
            ),
            shared,
        }
    }

    /// Picks a replica for the next read, skipping `exclude` (a replica that
    /// just failed this read), banned and unhealthy ones. Each candidate's
    /// weight is its configured weight scaled by measured health (latency
    /// against the group's fastest, recent failures, replication lag).
    /// `now` is the caller's clock reading: bans and latency figures age by it.
    pub fn pick(&self, exclude: Option<SocketAddr>, now: Instant) -> Option<Arc<ReplicaEndpoint>> {
        let endpoints = self.endpoints();
        let is_candidate =
            |e: &Arc<ReplicaEndpoint>| Some(e.addr) != exclude && e.shared.is_usable(now);
        // The common group is small: no allocation per read.
        if endpoints.len() <= INLINE_CANDIDATES {
            let mut usable = [0; INLINE_CANDIDATES];
            let mut count = 0;
            for (i, endpoint) in endpoints.iter().enumerate() {
                if is_candidate(endpoint) {
                    usable[count] = i;
                    count += 1;
                }
            }
            if count < 2 {
                return usable[..count]
                    .first()
                    .and_then(|&i| only_one(&endpoints[i]));
            }
            let mut readings = [Reading::NONE; INLINE_CANDIDATES];
            let mut candidates = [Candidate::new(0.0, 0, Duration::ZERO); INLINE_CANDIDATES];
            self.weigh(
                &endpoints,
                now,
                &usable[..count],
                &mut readings[..count],
                &mut candidates[..count],
            )
        } else {
            let usable: Vec<usize> = (0..endpoints.len())
                .filter(|&i| is_candidate(&endpoints[i]))
                .collect();
            if usable.len() < 2 {
                return usable.first().and_then(|&i| only_one(&endpoints[i]));
            }
            let mut readings = vec![Reading::NONE; usable.len()];
            let mut candidates = vec![Candidate::new(0.0, 0, Duration::ZERO); usable.len()];
            self.weigh(&endpoints, now, &usable, &mut readings, &mut candidates)
        }
    }

    /// Weighs two or more usable endpoints (`usable`: their indexes) and
    /// lets the balancer choose; `readings` and `candidates` are scratch
    /// space of the same length.
    fn weigh(
        &self,
        endpoints: &[Arc<ReplicaEndpoint>],
        now: Instant,
        usable: &[usize],
        readings: &mut [Reading],
        candidates: &mut [Candidate],
    ) -> Option<Arc<ReplicaEndpoint>> {
        for (reading, &i) in readings.iter_mut().zip(usable) {
            *reading = endpoints[i].shared.reading(now);
        }
        // p2c_ewma prices latency itself; the others see it through the weight,
        // with up to twice the fastest replica's latency (and at least 1 ms more)
        // counted as normal so noise between equal replicas does not move the split.
        let reference_latency = match self.balancer.strategy() {
            Strategy::P2cEwma => Duration::ZERO,
            _ => {
                let fastest = readings.iter().map(|r| r.latency).min().unwrap_or_default();
                if fastest.is_zero() {
                    Duration::ZERO
                } else {
                    fastest
                        .saturating_mul(LATENCY_TOLERANCE)
                        .max(fastest + LATENCY_SLACK)
                }
            }
        };
        for (candidate, r) in candidates.iter_mut().zip(readings.iter()) {
            let signals = LoadSignals {
                latency: r.latency,
                reference_latency,
                error_rate: r.error_rate(),
                lag: r.lag,
                max_lag: r.max_lag,
            };
            *candidate = Candidate::new(
                effective_weight(r.configured_weight, &signals),
                r.outstanding,
                r.latency,
            );
        }
        let index = self.balancer.pick(candidates, &mut rand::rng())?;
        Some(endpoints[usable[index]].clone())
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

/// The one usable replica, unless its weight drains it (a weight of 0, as
/// `effective_weight` and the balancer would treat it): with nothing to
/// weigh it against, its latency and load are not read.
fn only_one(endpoint: &Arc<ReplicaEndpoint>) -> Option<Arc<ReplicaEndpoint>> {
    let weight = endpoint.weight();
    (weight.is_finite() && weight > 0.0).then(|| endpoint.clone())
}
