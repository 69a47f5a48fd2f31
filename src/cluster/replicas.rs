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
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::balance::{Balancer, Candidate, InFlight};
use super::groups::GroupId;
use super::health::{self, HealthPolicy, Lsn};
use super::monitor::{EndpointState, GroupMonitor};
use super::{ReplicaSpec, ServerConnector, ServerPool};
use crate::backend::ConnectOptions;
use crate::pool::{ConnLimit, Pool, PoolSettings};

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

    pub fn observe_latency(&self, sample: Duration) {
        self.shared.observe_latency(sample);
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

    /// Probed healthy: reachable, in recovery, within the lag limits.
    pub fn is_healthy(&self) -> bool {
        self.shared.is_healthy()
    }
}

pub struct ReplicaSet {
    pub group: GroupId,
    template: ConnectOptions,
    pool_settings: PoolSettings,
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
        template: ConnectOptions,
        pool_settings: PoolSettings,
        limits: Vec<Arc<ConnLimit>>,
        monitor: Arc<GroupMonitor>,
        spec: &ReplicaSpec,
    ) -> Self {
        let set = ReplicaSet {
            group,
            template,
            pool_settings,
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
        let (version, shared) = self.monitor.current();
        if self.applied_version.swap(version, Ordering::AcqRel) == version {
            return;
        }
        let current = self.endpoints.read().unwrap().clone();
        let next: Vec<Arc<ReplicaEndpoint>> = shared
            .iter()
            .map(
                |state| match current.iter().find(|e| e.addr == state.addr) {
                    Some(kept) => kept.clone(),
                    None => Arc::new(self.new_endpoint(state.clone())),
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

    fn new_endpoint(&self, shared: Arc<EndpointState>) -> ReplicaEndpoint {
        let mut opts = self.template.clone();
        opts.host = shared.addr.ip().to_string();
        opts.port = shared.addr.port();
        ReplicaEndpoint {
            addr: shared.addr,
            group: self.group,
            pool: Pool::new(
                ServerConnector::new(opts),
                self.pool_settings.clone(),
                self.limits.clone(),
            ),
            shared,
        }
    }

    /// Picks a replica for the next read, skipping `exclude` (a replica that
    /// just failed this read) and banned ones.
    pub fn pick(&self, exclude: Option<SocketAddr>) -> Option<Arc<ReplicaEndpoint>> {
        let endpoints = self.endpoints();
        let now = Instant::now();
        let usable: Vec<&Arc<ReplicaEndpoint>> = endpoints
            .iter()
            .filter(|e| {
                Some(e.addr) != exclude && !e.shared.is_banned(now) && e.shared.is_healthy()
            })
            .collect();
        let candidates: Vec<Candidate> = usable
            .iter()
            .map(|e| {
                Candidate::new(
                    e.shared.weight(),
                    e.shared.outstanding(),
                    e.shared.latency_at(now),
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
