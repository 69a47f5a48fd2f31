//! Per-pool metrics, labelled by (database, user). [`PoolMetrics`] resolves every
//! labelled series once, when a pool is created, so the hot path only touches
//! atomics.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{Counter, CounterVec, Histogram, HistogramVec, IntCounter, IntCounterVec};
use prometheus::{IntGauge, IntGaugeVec, Registry};

use super::labels::{ClientState, ConnectResult, Role, ServerState};
use super::register::{counter_vec, float_counter_vec, gauge_vec, histogram_vec};
use super::traffic::Traffic;
use super::MetricsError;

/// Checkout waits range from microseconds (an idle server) to `query_wait_timeout`.
/// Few buckets: every one is a series per pool and role.
const WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 120.0,
];

/// The labelled metric families behind [`PoolMetrics`] (clones share series).
#[derive(Clone)]
pub(super) struct PoolFamilies {
    clients: IntGaugeVec,
    servers: IntGaugeVec,
    connects: IntCounterVec,
    wait: HistogramVec,
    queries: IntCounterVec,
    query_seconds: CounterVec,
    transactions: IntCounterVec,
    transaction_seconds: CounterVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    client_parses: IntCounterVec,
    server_parses: IntCounterVec,
    binds: IntCounterVec,
}

const POOL: &[&str] = &["database", "user"];
const POOL_ROLE: &[&str] = &["database", "user", "role"];
const POOL_TARGET: &[&str] = &["database", "user", "target"];

impl PoolFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(PoolFamilies {
            clients: gauge_vec(
                r,
                "pgrelay_pool_client_connections",
                "Logged-in client connections of a pool by state (idle, waiting, active).",
                &["database", "user", "state"],
            )?,
            servers: gauge_vec(
                r,
                "pgrelay_pool_server_connections",
                "Server connections of a pool by role and state (active = checked out).",
                &["database", "user", "role", "state"],
            )?,
            connects: counter_vec(
                r,
                "pgrelay_server_connects_total",
                "Attempts to open and log in to a server connection, by result.",
                &["database", "user", "role", "result"],
            )?,
            wait: histogram_vec(
                r,
                "pgrelay_pool_wait_seconds",
                "Time a client waited to check out a server connection.",
                POOL_ROLE,
                WAIT_BUCKETS,
            )?,
            queries: counter_vec(
                r,
                "pgrelay_queries_total",
                "Queries completed, by the server role that ran them.",
                POOL_TARGET,
            )?,
            query_seconds: float_counter_vec(
                r,
                "pgrelay_query_seconds_total",
                "Total time spent in completed queries, by server role.",
                POOL_TARGET,
            )?,
            transactions: counter_vec(
                r,
                "pgrelay_transactions_total",
                "Transactions completed, by the server role that ran them.",
                POOL_TARGET,
            )?,
            transaction_seconds: float_counter_vec(
                r,
                "pgrelay_transaction_seconds_total",
                "Total time spent in completed transactions, by server role.",
                POOL_TARGET,
            )?,
            received: counter_vec(
                r,
                "pgrelay_client_received_bytes_total",
                "Bytes received from clients of a pool.",
                POOL,
            )?,
            sent: counter_vec(
                r,
                "pgrelay_client_sent_bytes_total",
                "Bytes sent to clients of a pool.",
                POOL,
            )?,
            client_parses: counter_vec(
                r,
                "pgrelay_client_parses_total",
                "Parse messages clients of a pool sent.",
                POOL,
            )?,
            server_parses: counter_vec(
                r,
                "pgrelay_server_parses_total",
                "Parse messages pgrelay sent to servers for clients of a pool (a named \
                 statement is prepared once per server in transaction pooling).",
                POOL,
            )?,
            binds: counter_vec(
                r,
                "pgrelay_binds_total",
                "Bind messages clients of a pool sent.",
                POOL,
            )?,
        })
    }

    pub(super) fn handles(&self, database: &str, user: &str) -> PoolMetrics {
        let pool = [database, user];
        let clients = ClientState::ALL
            .iter()
            .map(|s| match s {
                // A client is only attributed to a pool once it has logged in.
                ClientState::Login => None,
                _ => Some(self.clients.with_label_values(&[database, user, s.label()])),
            })
            .collect();
        PoolMetrics {
            inner: Arc::new(PoolHandles {
                clients,
                received: self.received.with_label_values(&pool),
                sent: self.sent.with_label_values(&pool),
                client_parses: self.client_parses.with_label_values(&pool),
                server_parses: self.server_parses.with_label_values(&pool),
                binds: self.binds.with_label_values(&pool),
                primary: RoleHandles::resolve(self, database, user, Role::Primary),
                replica: OnceLock::new(),
                families: self.clone(),
                database: database.to_string(),
                user: user.to_string(),
            }),
        }
    }
}

/// The series of one pool and one server role.
struct RoleHandles {
    servers: Vec<IntGauge>,
    connects: Vec<IntCounter>,
    wait: Histogram,
    queries: IntCounter,
    query_seconds: Counter,
    transactions: IntCounter,
    transaction_seconds: Counter,
}

impl RoleHandles {
    fn resolve(f: &PoolFamilies, database: &str, user: &str, role: Role) -> RoleHandles {
        let labels = [database, user, role.label()];
        RoleHandles {
            servers: ServerState::ALL
                .iter()
                .map(|s| {
                    f.servers
                        .with_label_values(&[database, user, role.label(), s.label()])
                })
                .collect(),
            connects: ConnectResult::ALL
                .iter()
                .map(|r| {
                    f.connects
                        .with_label_values(&[database, user, role.label(), r.label()])
                })
                .collect(),
            wait: f.wait.with_label_values(&labels),
            queries: f.queries.with_label_values(&labels),
            query_seconds: f.query_seconds.with_label_values(&labels),
            transactions: f.transactions.with_label_values(&labels),
            transaction_seconds: f.transaction_seconds.with_label_values(&labels),
        }
    }

    fn traffic(&self) -> Traffic {
        let micros = |seconds: f64| (seconds * 1e6).round() as u64;
        Traffic {
            assignments: self.wait.get_sample_count(),
            transactions: self.transactions.get(),
            queries: self.queries.get(),
            transaction_us: micros(self.transaction_seconds.get()),
            query_us: micros(self.query_seconds.get()),
            wait_us: micros(self.wait.get_sample_sum()),
            ..Traffic::default()
        }
    }
}

struct PoolHandles {
    /// Indexed by [`ClientState`]; `None` for `Login`.
    clients: Vec<Option<IntGauge>>,
    received: IntCounter,
    sent: IntCounter,
    client_parses: IntCounter,
    server_parses: IntCounter,
    binds: IntCounter,
    primary: RoleHandles,
    /// Resolved on first use, so pools without replicas export no replica series.
    replica: OnceLock<RoleHandles>,
    families: PoolFamilies,
    database: String,
    user: String,
}

/// Cheap, clonable handles for one (database, user) pool. Get it once per pool
/// with [`super::Metrics::pool`]; every method is a few atomic operations.
#[derive(Clone)]
pub struct PoolMetrics {
    inner: Arc<PoolHandles>,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics").finish_non_exhaustive()
    }
}

impl PoolMetrics {
    fn role(&self, role: Role) -> &RoleHandles {
        let h = &self.inner;
        match role {
            Role::Primary => &h.primary,
            Role::Replica => h
                .replica
                .get_or_init(|| RoleHandles::resolve(&h.families, &h.database, &h.user, role)),
        }
    }

    pub(super) fn client_gauge(&self, state: ClientState) -> Option<&IntGauge> {
        self.inner.clients[state as usize].as_ref()
    }

    /// A checkout finished (with or without a connection) after waiting `waited`.
    pub fn checkout_waited(&self, role: Role, waited: Duration) {
        self.role(role).wait.observe(waited.as_secs_f64());
    }

    /// An attempt to open a server connection ended with `result`.
    pub fn server_connect(&self, role: Role, result: ConnectResult) {
        self.role(role).connects[result as usize].inc();
    }

    /// Publishes the pool's current server connection counts (sampled, e.g. by the
    /// upkeep task from `Pool::stats()`: active = live - idle).
    pub fn set_server_connections(&self, role: Role, active: usize, idle: usize) {
        let servers = &self.role(role).servers;
        servers[ServerState::Active as usize].set(saturating_i64(active));
        servers[ServerState::Idle as usize].set(saturating_i64(idle));
    }

    /// `count` queries (simple Query, or Sync of an extended-protocol batch)
    /// completed, taking `elapsed` between them.
    pub fn queries_done(&self, target: Role, count: u32, elapsed: Duration) {
        let role = self.role(target);
        role.queries.inc_by(u64::from(count));
        role.query_seconds.inc_by(elapsed.as_secs_f64());
    }

    /// `count` transactions (explicit, or implicit single-statement ones)
    /// completed, taking `elapsed` between them.
    pub fn transactions_done(&self, target: Role, count: u32, elapsed: Duration) {
        let role = self.role(target);
        role.transactions.inc_by(u64::from(count));
        role.transaction_seconds.inc_by(elapsed.as_secs_f64());
    }

    /// This pool's traffic since start, over both server roles.
    pub fn traffic(&self) -> Traffic {
        let h = &self.inner;
        let mut total = Traffic {
            received: h.received.get(),
            sent: h.sent.get(),
            client_parses: h.client_parses.get(),
            server_parses: h.server_parses.get(),
            binds: h.binds.get(),
            ..Traffic::default()
        };
        for role in std::iter::once(&h.primary).chain(h.replica.get()) {
            total.add(&role.traffic());
        }
        total
    }

    /// `(received, sent)` bytes from and to a client of this pool.
    pub fn client_bytes(&self, (received, sent): (u64, u64)) {
        if received > 0 {
            self.inner.received.inc_by(received);
        }
        if sent > 0 {
            self.inner.sent.inc_by(sent);
        }
    }

    /// Publishes and resets a session's extended-protocol counts; nothing
    /// to do for simple-protocol clients.
    pub fn extended_done(&self, counts: &mut ExtendedCounts) {
        if *counts == ExtendedCounts::default() {
            return;
        }
        let h = &self.inner;
        h.client_parses.inc_by(u64::from(counts.client_parses));
        h.server_parses.inc_by(u64::from(counts.server_parses));
        h.binds.inc_by(u64::from(counts.binds));
        *counts = ExtendedCounts::default();
    }
}

/// Extended-protocol messages a session handled since it last published them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtendedCounts {
    pub client_parses: u32,
    pub server_parses: u32,
    pub binds: u32,
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
