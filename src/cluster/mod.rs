//! Topology: which server pools serve a (database, user) pair.
//!
//! Today each pair has one primary pool; replica groups join it later.
//! Pools are created on first use and shared by every client of the pair.

pub mod balance;
mod disabled;
pub mod discovery;
mod groups;
pub mod health;
mod monitor;
mod pause;
mod primary;
mod replicas;
pub mod snapshots;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::backend::{
    BackendError, ConnectOptions, LiveOptions, ServerCard, ServerConn, ServerList,
};
use crate::config::PoolMode;
use crate::pool::{ConnLimit, Connector, Pool, PoolSettings};
use crate::shutdown::ShutdownSignal;

pub use disabled::DisabledDatabases;
pub use groups::{GroupId, NamedGroup, ReplicaGroups};
pub use monitor::{EndpointState, GroupMonitor};
pub use pause::{PauseError, PauseGate};
pub use primary::{PrimaryAddress, PrimaryWatch};
pub use replicas::{HealthSettings, ReadFallback, ReadYourWrites, ReplicaEndpoint, ReplicaSet};

/// Opens logged-in server connections for a pool.
#[derive(Debug, Clone)]
pub struct ServerConnector {
    /// The database as clients name it (the console's name for it), which
    /// may differ from the server's `dbname`.
    pub name: Arc<str>,
    /// Shared with the database's other connectors and its probes; a reload
    /// replaces them for every connection opened after.
    pub opts: LiveOptions,
    /// For a primary named by DNS: where the name points now.
    pub primary: Option<PrimaryAddress>,
    /// Where the connections it opens are listed for `SHOW SERVERS`.
    pub servers: Arc<ServerList>,
}

impl ServerConnector {
    pub fn new(
        name: impl Into<Arc<str>>,
        opts: impl Into<LiveOptions>,
        servers: Arc<ServerList>,
    ) -> Self {
        ServerConnector {
            name: name.into(),
            opts: opts.into(),
            primary: None,
            servers,
        }
    }

    /// The same connector for the server at `addr` (a replica endpoint),
    /// found under the DNS name `name`.
    pub fn at(&self, addr: std::net::SocketAddr, name: Option<&str>) -> Self {
        ServerConnector::new(
            self.name.clone(),
            self.opts.at(addr, name),
            self.servers.clone(),
        )
    }

    async fn open(&self, opts: &ConnectOptions) -> Result<ServerConn, BackendError> {
        match &self.primary {
            Some(primary) => Self::connect_primary(primary, opts).await,
            None => ServerConn::connect(opts).await,
        }
    }

    /// Connects to the primary's current addresses in turn (as libpq tries
    /// each address of a name), or by name before the first lookup answers.
    async fn connect_primary(
        primary: &PrimaryAddress,
        opts: &ConnectOptions,
    ) -> Result<ServerConn, BackendError> {
        let addrs = primary.addrs(opts.connect_timeout).await;
        let mut last = None;
        for addr in addrs {
            match ServerConn::connect(&opts.at_address(addr, Some(&opts.host))).await {
                Err(e @ (BackendError::Connect { .. } | BackendError::ConnectTimeout(_))) => {
                    last = Some(e)
                }
                other => return other,
            }
        }
        match last {
            Some(e) => Err(e),
            None => ServerConn::connect(opts).await,
        }
    }
}

impl Connector for ServerConnector {
    type Conn = ServerConn;
    type Error = BackendError;
    async fn connect(&self) -> Result<ServerConn, BackendError> {
        // Read before the options: a reload swaps options, then marks servers.
        let reconnects = self.servers.reconnects();
        let opts = self.opts.get();
        let mut conn = self.open(&opts).await?;
        conn.list_in(&self.servers, &opts.user, &self.name, reconnects);
        Ok(conn)
    }

    fn rehome(&self, conn: ServerConn) -> Option<ServerConn> {
        match conn.rehome() {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "could not move an idle server to this core; closing it");
                None
            }
        }
    }

    fn is_alive(&self, conn: &ServerConn) -> bool {
        conn.is_idle_and_open() && self.may_reuse(conn)
    }

    /// A server marked by `RECONNECT`, or of a primary whose DNS name moved,
    /// is not pooled again.
    fn may_reuse(&self, conn: &ServerConn) -> bool {
        !conn.close_needed()
            && self
                .primary
                .as_ref()
                .is_none_or(|p| p.is_current(conn.cancel_key().addr))
    }
}

pub type ServerPool = Pool<ServerConnector>;
pub type PooledServer = crate::pool::Pooled<ServerConnector>;

/// Everything needed to build the pools of one (database, user) pair.
#[derive(Debug, Clone)]
pub struct DatabaseSpec {
    /// The name clients use.
    pub name: String,
    pub connect: ConnectOptions,
    pub pool: PoolSettings,
    pub pool_mode: PoolMode,
    /// 0 = unlimited.
    pub max_db_connections: usize,
    pub max_user_connections: usize,
    /// Replicas for reads, if the database has any: the default group.
    pub replicas: Option<ReplicaSpec>,
    /// Named replica groups, sorted by name.
    pub groups: Vec<(Arc<str>, ReplicaSpec)>,
    /// Re-resolving the primary's host, when it is a DNS name.
    pub primary_discovery: Option<discovery::DiscoveryConfig>,
}

impl DatabaseSpec {
    /// The settings that differ from `new` and that running pools keep
    /// until a restart, by configuration name.
    fn restart_only_differences(&self, new: &DatabaseSpec) -> Vec<&'static str> {
        let mut differ = Vec::new();
        if self.pool_mode != new.pool_mode {
            differ.push("pool_mode");
        }
        if self.max_db_connections != new.max_db_connections {
            differ.push("max_db_connections");
        }
        if self.max_user_connections != new.max_user_connections {
            differ.push("max_user_connections");
        }
        if self.replicas != new.replicas {
            differ.push("replicas");
        }
        if self.groups != new.groups {
            differ.push("replica_groups");
        }
        if self.primary_discovery != new.primary_discovery {
            differ.push("host (a DNS name)");
        }
        differ
    }
}

/// What [`DatabasePools::apply_reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// New pool sizes or timeouts took effect.
    pub pool_settings: bool,
    /// Servers are now reached at another host, port or database, or as
    /// another user: the ones open should be closed as they come back.
    pub servers_moved: bool,
    /// Settings that changed but apply only after a restart.
    pub restart_only: Vec<&'static str>,
}

/// Where a database's replicas come from and how reads are spread.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    pub discovery: discovery::DiscoveryConfig,
    pub strategy: balance::Strategy,
    pub fallback: ReadFallback,
    pub health: HealthSettings,
    pub read_your_writes: ReadYourWrites,
}

/// ParameterStatus values as a server reported them at login.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// The pools serving one (database, user) pair.
pub struct DatabasePools {
    /// As configured when the pools were made; a reload changes only their
    /// pool settings and connect options.
    pub spec: DatabaseSpec,
    /// The connect options all of the pair's servers and probes open with.
    connect: LiveOptions,
    pub metrics: crate::metrics::PoolMetrics,
    pub primary: ServerPool,
    /// The default replica group.
    pub replicas: Option<ReplicaSet>,
    /// Named replica groups.
    pub groups: ReplicaGroups,
    /// ParameterStatus values of the first server logged in, sent to clients at login.
    /// Set once; read without a lock on every checkout.
    server_params: std::sync::OnceLock<ServerParams>,
    /// Client parameter values shared by like clients of these pools.
    pub param_snapshots: snapshots::ParamSnapshots,
    /// The console's PAUSE state, shared by every database's pools.
    pub pause: Arc<PauseGate>,
    /// Primary servers released while a cancel to them is unconfirmed, kept
    /// out of the pool until it is (`SHOW POOLS`' `sv_being_canceled`).
    pub being_canceled: AtomicUsize,
    /// Cancels for these pools' clients on their way to a server
    /// (`SHOW POOLS`' `cl_active_cancel_req` and `sv_active_cancel`).
    pub cancels_forwarding: Arc<AtomicUsize>,
}

impl DatabasePools {
    /// True when reads have somewhere to go besides the primary.
    pub fn has_replicas(&self) -> bool {
        self.replicas.is_some() || !self.groups.is_empty()
    }

    /// The group a rule's `group:<name>` means for this database.
    pub fn group_id(&self, name: &str) -> GroupId {
        self.groups.id_of(name, &self.spec.name)
    }

    /// The replica set of group `id`, if the database has it.
    pub fn replica_set(&self, id: GroupId) -> Option<&ReplicaSet> {
        if id == GroupId::DEFAULT {
            self.replicas.as_ref()
        } else {
            self.groups.get(id)
        }
    }

    /// Applies what a reload may change in running pools: the pool settings
    /// and the connect options (a server opened after uses the new host,
    /// credentials or TLS files). Reports what changed, and what differs but
    /// only applies to pools made after a restart.
    pub fn apply_reload(&self, new: &DatabaseSpec) -> Reloaded {
        let restart_only = self.spec.restart_only_differences(new);
        let pool_settings = self.reconfigure(new.pool);
        // A DNS-named primary's connectors follow the watch of the name they
        // were made with: a new name waits for the restart with them.
        let servers_moved = self.spec.primary_discovery == new.primary_discovery
            && self.connect.replace(new.connect.clone());
        Reloaded {
            pool_settings,
            servers_moved,
            restart_only,
        }
    }

    /// The user servers log in as now (a reload may change it).
    pub fn server_user(&self) -> String {
        self.connect.get().user.clone()
    }

    /// Applies new pool settings to the primary's pool and every replica
    /// pool; false when they are the ones in force.
    pub fn reconfigure(&self, settings: PoolSettings) -> bool {
        if self.primary.settings() == settings {
            return false;
        }
        self.primary.reconfigure(settings);
        for (_, set) in self.replica_sets() {
            set.reconfigure(settings);
        }
        true
    }

    /// Every server pool: the primary's and each replica endpoint's.
    pub fn server_pools(&self) -> Vec<ServerPool> {
        let mut pools = vec![self.primary.clone()];
        for (_, set) in self.replica_sets() {
            pools.extend(set.endpoints().iter().map(|e| e.pool.clone()));
        }
        pools
    }

    /// Every replica set with its group name (`None` for the default group).
    pub fn replica_sets(&self) -> impl Iterator<Item = (Option<&str>, &ReplicaSet)> {
        self.replicas
            .iter()
            .map(|set| (None, set))
            .chain(self.groups.iter().map(|g| (Some(&*g.name), &g.set)))
    }

    pub fn server_params(&self) -> Option<ServerParams> {
        self.server_params.get().cloned()
    }

    pub fn remember_server_params(&self, params: &[(String, String)]) {
        if self.server_params.get().is_none() {
            let _ = self.server_params.set(Arc::new(params.to_vec()));
        }
    }
}

/// All pools, created on demand; shared by every session.
pub struct PoolRegistry {
    pools: Mutex<HashMap<(String, String), Arc<DatabasePools>>>,
    db_limits: Mutex<HashMap<String, Arc<ConnLimit>>>,
    user_limits: Mutex<HashMap<String, Arc<ConnLimit>>>,
    /// Discovery and health of each (database, group; "" = default), shared
    /// by its users' replica sets.
    monitors: Mutex<HashMap<(String, String), Arc<GroupMonitor>>>,
    /// One WAL-position probe of each database's primary, for replica lag.
    primary_probes: Mutex<HashMap<String, health::HealthMonitor>>,
    /// One address watch per database whose primary is a DNS name.
    primaries: Mutex<HashMap<String, PrimaryWatch>>,
    shutdown: ShutdownSignal,
    metrics: Arc<crate::metrics::Metrics>,
    /// Every pooled server connection, for the console.
    servers: Arc<ServerList>,
    pause: Arc<PauseGate>,
    disabled: DisabledDatabases,
}

impl PoolRegistry {
    pub fn new(shutdown: ShutdownSignal, metrics: Arc<crate::metrics::Metrics>) -> Self {
        PoolRegistry {
            metrics,
            pools: Mutex::default(),
            db_limits: Mutex::default(),
            user_limits: Mutex::default(),
            monitors: Mutex::default(),
            primary_probes: Mutex::default(),
            primaries: Mutex::default(),
            shutdown,
            servers: ServerList::new(),
            pause: Arc::default(),
            disabled: DisabledDatabases::default(),
        }
    }

    pub fn pause_gate(&self) -> &PauseGate {
        &self.pause
    }

    /// Databases the console's `DISABLE` closed to new logins.
    pub fn disabled(&self) -> &DisabledDatabases {
        &self.disabled
    }

    /// The server pools of `database` (of every database with `None`).
    fn server_pools_of(&self, database: Option<&str>) -> Vec<ServerPool> {
        self.all()
            .iter()
            .filter(|p| database.is_none_or(|d| p.spec.name == d))
            .flat_map(|p| p.server_pools())
            .collect()
    }

    /// `RECONNECT`: every server of `database` (of every database with
    /// `None`) is closed instead of pooled again: idle ones now, the others
    /// when their clients release them. New servers open as needed.
    pub fn reconnect(&self, database: Option<&str>) {
        self.servers.mark_close_needed(database);
        for pool in self.server_pools_of(database) {
            pool.close_idle();
        }
    }

    /// `WAIT_CLOSE`: returns once no server `RECONNECT` marked is left.
    pub async fn wait_close(&self, database: Option<&str>) {
        while self.servers.any_close_needed(database) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// For `PAUSE`: waits until no server of `database` (of every database
    /// with `None`) is checked out, then closes their idle servers. Call
    /// after pausing, so no new checkout starts meanwhile.
    pub async fn drain(&self, database: Option<&str>) {
        // Slots, not live connections: a checkout still opening its server
        // holds a slot before the connection counts as live.
        while self
            .server_pools_of(database)
            .iter()
            .any(|p| p.stats().checked_out > 0)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for pool in self.server_pools_of(database) {
            pool.close_idle();
        }
    }

    /// Every pooled server connection alive now, in the order opened.
    pub fn servers(&self) -> Vec<Arc<ServerCard>> {
        self.servers.cards()
    }

    /// The shared monitor of `spec`'s replica `group` ("" = default),
    /// started on first use; its probes log in as this first user.
    fn group_monitor(
        &self,
        spec: &DatabaseSpec,
        connect: &LiveOptions,
        group: &str,
        r: &ReplicaSpec,
    ) -> Option<Arc<GroupMonitor>> {
        let mut monitors = self.monitors.lock().unwrap();
        let key = (spec.name.clone(), group.to_string());
        if let Some(m) = monitors.get(&key) {
            return Some(m.clone());
        }
        let resolver = match discovery::HickoryResolve::new(r.discovery.nameserver) {
            Ok(resolver) => resolver,
            Err(e) => {
                warn!(database = spec.name, group, error = %e, "cannot resolve replicas; reads go to the primary");
                return None;
            }
        };
        let found = discovery::spawn(r.discovery.clone(), resolver, self.shutdown.clone());
        let primary = self
            .primary_probes
            .lock()
            .unwrap()
            .entry(spec.name.clone())
            .or_insert_with(|| {
                monitor::primary_monitor(
                    connect.clone(),
                    self.primary_address(spec),
                    &r.health,
                    self.shutdown.clone(),
                )
            })
            .subscribe();
        let created = Arc::new(GroupMonitor::new(
            found,
            connect.clone(),
            r.health.clone(),
            primary,
            self.shutdown.clone(),
        ));
        monitors.insert(key, created.clone());
        Some(created)
    }

    /// Where `spec`'s primary is now, when its host is a DNS name; starts
    /// watching it on first use.
    fn primary_address(&self, spec: &DatabaseSpec) -> Option<PrimaryAddress> {
        let config = spec.primary_discovery.as_ref()?;
        let mut primaries = self.primaries.lock().unwrap();
        if let Some(watch) = primaries.get(&spec.name) {
            return Some(watch.address());
        }
        let resolver = match discovery::HickoryResolve::new(config.nameserver) {
            Ok(r) => r,
            Err(e) => {
                warn!(database = spec.name, error = %e, "cannot re-resolve the primary; connecting by name");
                return None;
            }
        };
        let watch = PrimaryWatch::spawn(
            &spec.name,
            config.clone(),
            resolver,
            self.metrics.topology_counter(&spec.name, "primary_moved"),
            self.shutdown.clone(),
        );
        let address = watch.address();
        primaries.insert(spec.name.clone(), watch);
        Some(address)
    }

    /// The pools for `spec` as `client_user` sees them: an existing set if the
    /// pair is known, otherwise a new one built from `spec`.
    pub fn get_or_create(&self, client_user: &str, spec: DatabaseSpec) -> Arc<DatabasePools> {
        let key = (spec.name.clone(), client_user.to_string());
        if let Some(p) = self.pools.lock().unwrap().get(&key) {
            return p.clone();
        }
        let mut limits = Vec::new();
        if spec.max_db_connections > 0 {
            limits.push(limit_for(
                &self.db_limits,
                &spec.name,
                spec.max_db_connections,
            ));
        }
        if spec.max_user_connections > 0 {
            limits.push(limit_for(
                &self.user_limits,
                &spec.connect.user,
                spec.max_user_connections,
            ));
        }
        // One set of options for all of the pair's connectors and the probes
        // they start, so a reload reaches them all.
        let connect = LiveOptions::new(spec.connect.clone());
        let replica_set = |group: GroupId, name: &str, r: &ReplicaSpec| {
            let monitor = self.group_monitor(&spec, &connect, name, r)?;
            Some(ReplicaSet::new(
                group,
                ServerConnector::new(spec.name.as_str(), connect.clone(), self.servers.clone()),
                spec.pool,
                limits.clone(),
                monitor,
                r,
            ))
        };
        let replicas = spec
            .replicas
            .as_ref()
            .and_then(|r| replica_set(GroupId::DEFAULT, "", r));
        let mut named: Vec<NamedGroup> = Vec::with_capacity(spec.groups.len());
        for (name, r) in &spec.groups {
            // Ids are positions among the groups that could start.
            if let Some(set) = replica_set(GroupId::named(named.len()), name, r) {
                named.push(NamedGroup {
                    name: name.clone(),
                    set,
                });
            }
        }
        let groups = ReplicaGroups::new(
            named,
            self.metrics.topology_counter(&spec.name, "unknown_group"),
        );
        let primary = Pool::new(
            ServerConnector {
                primary: self.primary_address(&spec),
                ..ServerConnector::new(spec.name.as_str(), connect.clone(), self.servers.clone())
            },
            spec.pool,
            limits,
        );
        let created = Arc::new(DatabasePools {
            metrics: self.metrics.pool(&spec.name, client_user),
            connect,
            spec,
            primary,
            replicas,
            groups,
            server_params: std::sync::OnceLock::new(),
            param_snapshots: Default::default(),
            pause: self.pause.clone(),
            being_canceled: AtomicUsize::new(0),
            cancels_forwarding: Arc::default(),
        });
        self.pools
            .lock()
            .unwrap()
            .entry(key)
            .or_insert(created)
            .clone()
    }

    /// Every (database, client user) pair's pools.
    pub fn entries(&self) -> Vec<((String, String), Arc<DatabasePools>)> {
        let pools = self.pools.lock().unwrap();
        pools.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn all(&self) -> Vec<Arc<DatabasePools>> {
        self.pools.lock().unwrap().values().cloned().collect()
    }

    /// Traffic since start per database, summed over its users' pools.
    pub fn traffic_by_database(&self) -> HashMap<String, crate::metrics::Traffic> {
        let mut by_database: HashMap<String, crate::metrics::Traffic> = HashMap::new();
        for pools in self.all() {
            by_database
                .entry(pools.spec.name.clone())
                .or_default()
                .add(&pools.metrics.traffic());
        }
        by_database
    }

    /// Runs pool upkeep (idle eviction, min_pool_size) for every pool.
    pub async fn maintain(&self) {
        for pools in self.all() {
            if self.pause.is_paused(&pools.spec.name) {
                // A paused database keeps no servers, not even min_pool_size.
                continue;
            }
            let stats = pools.primary.stats();
            pools.metrics.set_server_connections(
                crate::metrics::Role::Primary,
                stats.live.saturating_sub(stats.idle),
                stats.idle,
            );
            pools.primary.maintain().await;
            for (_, set) in pools.replica_sets() {
                set.maintain().await;
            }
        }
    }

    pub fn close_all(&self) {
        for pools in self.all() {
            pools.primary.close();
            for (_, set) in pools.replica_sets() {
                set.close();
            }
        }
        self.monitors.lock().unwrap().clear();
        self.primary_probes.lock().unwrap().clear();
        self.primaries.lock().unwrap().clear();
    }
}

fn limit_for(
    map: &Mutex<HashMap<String, Arc<ConnLimit>>>,
    name: &str,
    max: usize,
) -> Arc<ConnLimit> {
    map.lock()
        .unwrap()
        .entry(name.to_string())
        .or_insert_with(|| ConnLimit::new(name, max))
        .clone()
}
