//! Prometheus metrics: a [`Metrics`] handle owning its own registry (no global
//! default registry), cheap pre-resolved handles for the hot path, and a tiny
//! HTTP endpoint serving them ([`serve`]).
//!
//! This is a leaf module: it depends on no other pgrelay module. Every label
//! value comes from configuration or a closed enum (see [`labels`]), never from
//! SQL text or client addresses, so the number of series stays bounded.

mod client;
mod http;
pub mod labels;
mod pool;
mod process;
mod register;
mod replica;
mod traffic;

use std::sync::Arc;

use prometheus::{Encoder, IntCounter, IntCounterVec, Registry, TextEncoder};
use thiserror::Error;

pub use client::ClientTracker;
pub use http::{serve, MetricsServer, MAX_REQUEST_HEAD, REQUEST_TIMEOUT};
pub use labels::{ClientState, ConnectResult, ErrorOrigin, LoginResult, Role, ServerState};
pub use pool::{ExtendedCounts, PoolMetrics};
pub use replica::ReplicaMetrics;
pub use traffic::{Traffic, TrafficAverages, TrafficWindow};

use client::ClientGauges;
use pool::PoolFamilies;
use process::ProcessMetrics;
use register::{counter_vec, gauge_vec};
use replica::ReplicaFamilies;

#[derive(Debug, Error)]
pub enum MetricsError {
    /// A metric definition was rejected (bad or duplicate name): a bug.
    #[error("cannot register metric: {0}")]
    Register(prometheus::Error),
    #[error("cannot encode metrics: {0}")]
    Encode(prometheus::Error),
}

/// Route reasons recorded on every checkout: their counters are looked up once
/// (on first use) so the hot path skips the prometheus crate's label lookup
/// (a hash and a lock).
const COMMON_ROUTE_REASONS: [&str; 3] = ["primary", "read", "read_fallback"];

/// All of pgrelay's metrics. Create one at start-up and pass `Arc<Metrics>` to
/// whoever records or serves them.
pub struct Metrics {
    registry: Registry,
    clients: Arc<ClientGauges>,
    logins: Vec<IntCounter>,
    errors: IntCounterVec,
    routes: IntCounterVec,
    /// The routes the query loop records on every checkout, each looked up on
    /// first use (a series appears only once used): [role][reason].
    common_routes: [[std::sync::OnceLock<IntCounter>; COMMON_ROUTE_REASONS.len()]; Role::ALL.len()],
    topology: IntCounterVec,
    pools: PoolFamilies,
    replicas: ReplicaFamilies,
    process: ProcessMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let r = Registry::new();
        let build_info = gauge_vec(
            &r,
            "pgrelay_build_info",
            "Always 1; the version label says which pgrelay is running.",
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let client_family = gauge_vec(
            &r,
            "pgrelay_client_connections",
            "Client connections by state (login, idle, waiting, active).",
            &["state"],
        )?;
        let login_family = counter_vec(
            &r,
            "pgrelay_client_logins_total",
            "Client logins by result (ok, auth_failed, refused, timeout).",
            &["result"],
        )?;
        let errors = counter_vec(
            &r,
            "pgrelay_errors_total",
            "Errors sent to clients, by origin (pooler, server) and SQLSTATE class.",
            &["origin", "class"],
        )?;
        let routes = counter_vec(
            &r,
            "pgrelay_routing_decisions_total",
            "Statements routed, by target (primary, replica) and the router's reason.",
            &["target", "reason"],
        )?;
        let topology = counter_vec(
            &r,
            "pgrelay_topology_events_total",
            "Topology events by database: unknown_group (a rule named a replica group the \
             database lacks; its default replicas served it), primary_moved (the primary's \
             DNS name now resolves elsewhere).",
            &["database", "event"],
        )?;
        Ok(Metrics {
            topology,
            clients: Arc::new(ClientGauges::resolve(&client_family)),
            logins: LoginResult::ALL
                .iter()
                .map(|res| login_family.with_label_values(&[res.label()]))
                .collect(),
            errors,
            common_routes: Default::default(),
            routes,
            pools: PoolFamilies::register(&r)?,
            replicas: ReplicaFamilies::register(&r)?,
            process: ProcessMetrics::register(&r)?,
            registry: r,
        })
    }

    /// The registry, for registering extra collectors or gathering directly.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text exposition format (process metrics
    /// are refreshed first).
    pub fn encode(&self) -> Result<String, MetricsError> {
        self.process.refresh();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(MetricsError::Encode)?;
        // The text encoder only writes UTF-8 (names, escaped label values, numbers).
        String::from_utf8(out)
            .map_err(|e| MetricsError::Encode(prometheus::Error::Msg(e.to_string())))
    }

    /// Handles for one (database, user) pool. Call once when the pool is created
    /// and keep the result next to the pool: this is the only place that looks
    /// labels up. Calling it again for the same pair yields the same series.
    pub fn pool(&self, database: &str, user: &str) -> PoolMetrics {
        self.pools.handles(database, user)
    }

    /// A client connection was accepted; it counts as `login` until
    /// [`ClientTracker::logged_in`], and until the tracker is dropped.
    pub fn client_connected(&self) -> ClientTracker {
        ClientTracker::new(self.clients.clone())
    }

    /// A client login ended with `result`.
    pub fn login(&self, result: LoginResult) {
        self.logins[result as usize].inc();
    }

    /// An `ErrorResponse` with `sqlstate` was sent to a client.
    pub fn error(&self, origin: ErrorOrigin, sqlstate: &str) {
        self.errors
            .with_label_values(&[origin.label(), labels::sqlstate_class(sqlstate)])
            .inc();
    }

    /// The router sent a statement to `target` for `reason`. `reason` must be
    /// one of the router's fixed reason names (hence `'static`), never SQL text.
    pub fn route(&self, target: Role, reason: &'static str) {
        match self.common_route(target, reason) {
            Some(counter) => counter.inc(),
            None => self.route_counter(target, reason).inc(),
        }
    }

    fn common_route(&self, target: Role, reason: &'static str) -> Option<&IntCounter> {
        let slot = COMMON_ROUTE_REASONS.iter().position(|r| *r == reason)?;
        Some(
            self.common_routes[target as usize][slot]
                .get_or_init(|| self.routes.with_label_values(&[target.label(), reason])),
        )
    }

    /// The counter behind [`Metrics::route`], for callers that pre-resolve it.
    pub fn route_counter(&self, target: Role, reason: &'static str) -> IntCounter {
        self.common_route(target, reason)
            .cloned()
            .unwrap_or_else(|| self.routes.with_label_values(&[target.label(), reason]))
    }

    /// The counter of one topology `event` (a fixed name, see the metric's
    /// help) of `database`, for callers to keep next to what they count.
    pub fn topology_counter(&self, database: &str, event: &'static str) -> IntCounter {
        self.topology.with_label_values(&[database, event])
    }

    /// Health gauges for one replica endpoint (e.g. `"10.0.0.7:5432"`).
    pub fn replica(&self, database: &str, endpoint: &str) -> ReplicaMetrics {
        self.replicas.handles(database, endpoint)
    }

    /// Forgets a replica endpoint's series (discovery removed it); `false` if
    /// it had none.
    pub fn remove_replica(&self, database: &str, endpoint: &str) -> bool {
        self.replicas.remove(database, endpoint)
    }
}

#[cfg(test)]
mod tests;
