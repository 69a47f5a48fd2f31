//! The data behind each `SHOW`, and the trait that supplies it.
//!
//! Fields mirror PgBouncer 1.22's columns; where pgrelay has no equivalent
//! (cancel-request queues, `sv_used`/`sv_tested`, DNS caches) the caller
//! fills 0. Durations and times are typed here and formatted by `table.rs`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::cluster::health::HealthState;
use crate::config::PoolMode;

/// Where the console's numbers come from. The lead implements it over the
/// pool registry and the configuration snapshot; tests stub it.
pub trait AdminView {
    fn pools(&self) -> Vec<PoolRow>;
    fn databases(&self) -> Vec<DatabaseRow>;
    /// Every setting, with secrets already masked (`render` masks
    /// password-like keys again as a safety net).
    fn config(&self) -> Vec<ConfigRow>;
    fn clients(&self) -> Vec<ClientRow>;
    fn servers(&self) -> Vec<ServerRow>;
    fn stats(&self) -> Vec<StatsRow>;
    /// The single `SHOW VERSION` value, e.g. `"pgrelay 0.1.0"`.
    fn version(&self) -> String;

    /// Counts for `SHOW LISTS`. The default derives what it can from the
    /// other methods; override it to avoid building the client/server lists.
    fn lists(&self) -> ListsRow {
        let pools = self.pools();
        let users: BTreeSet<&str> = pools.iter().map(|p| p.user.as_str()).collect();
        ListsRow {
            databases: self.databases().len() as u64,
            users: users.len() as u64,
            pools: pools.len() as u64,
            used_clients: self.clients().len() as u64,
            used_servers: self.servers().len() as u64,
            ..ListsRow::default()
        }
    }

    /// `SHOW TOTALS`: every database's `SHOW STATS` row summed. Rates add
    /// up; a time per item is averaged over the items of every database.
    fn totals(&self) -> StatsRow {
        sum_stats(&self.stats())
    }

    /// `SHOW USERS`, by name.
    fn users(&self) -> Vec<UserRow>;

    /// `SHOW STATE`.
    fn state(&self) -> PoolerState;

    /// pgrelay's `SHOW REPLICAS`; empty unless replicas are configured.
    fn replicas(&self) -> Vec<ReplicaRow> {
        Vec::new()
    }
}

/// One (database, user) pool: `SHOW POOLS`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRow {
    pub database: String,
    pub user: String,
    /// Clients attached to a server or idle (PgBouncer counts idle as active).
    pub cl_active: u64,
    /// Clients that sent a query and wait for a server.
    pub cl_waiting: u64,
    pub cl_active_cancel_req: u64,
    pub cl_waiting_cancel_req: u64,
    /// Servers attached to a client.
    pub sv_active: u64,
    pub sv_active_cancel: u64,
    pub sv_being_canceled: u64,
    /// Servers in the pool, ready for a client.
    pub sv_idle: u64,
    pub sv_used: u64,
    pub sv_tested: u64,
    /// Servers connecting or logging in.
    pub sv_login: u64,
    /// How long the oldest waiting client has waited (shown as `maxwait`
    /// seconds plus `maxwait_us`).
    pub max_wait: Duration,
    pub pool_mode: PoolMode,
}

/// One configured database: `SHOW DATABASES`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseRow {
    /// The name clients connect to.
    pub name: String,
    /// `None` for a Unix socket (shown as NULL).
    pub host: Option<String>,
    pub port: u16,
    /// The database name sent to the server.
    pub database: String,
    pub force_user: Option<String>,
    pub pool_size: u64,
    pub min_pool_size: u64,
    pub reserve_pool: u64,
    /// The database's own `pool_mode`, `None` when it inherits the default.
    pub pool_mode: Option<PoolMode>,
    /// `max_db_connections` (0 = unlimited).
    pub max_connections: u64,
    /// Server connections open to this database, all pools.
    pub current_connections: u64,
    pub paused: bool,
    pub disabled: bool,
}

/// One setting: `SHOW CONFIG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRow {
    pub key: String,
    pub value: String,
    pub default: String,
    /// Whether RELOAD applies a change without a restart.
    pub changeable: bool,
}

/// Client connection states as PgBouncer 1.22 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Attached to a server, or idle between transactions.
    Active,
    /// Sent a query, waiting for a server.
    Waiting,
    ActiveCancelReq,
    WaitingCancelReq,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
            ClientState::ActiveCancelReq => "active_cancel_req",
            ClientState::WaitingCancelReq => "waiting_cancel_req",
        }
    }
}

/// One client connection: `SHOW CLIENTS`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRow {
    /// Unique among clients; shown as `ptr`, and as `link` on its server.
    pub id: u64,
    pub user: String,
    pub database: String,
    pub state: ClientState,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub connect_time: SystemTime,
    /// When the client last sent a request.
    pub request_time: SystemTime,
    /// How long it has been waiting for a server (zero unless `Waiting`).
    pub wait: Duration,
    /// The attached server's id.
    pub link: Option<u64>,
    /// TLS version and cipher, empty for plain TCP.
    pub tls: String,
    pub application_name: String,
    pub prepared_statements: u64,
}

/// Server connection states as PgBouncer 1.22 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Attached to a client.
    Active,
    /// In the pool, ready.
    Idle,
    Used,
    Tested,
    /// Connecting or logging in.
    New,
    ActiveCancel,
    BeingCanceled,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Active => "active",
            ServerState::Idle => "idle",
            ServerState::Used => "used",
            ServerState::Tested => "tested",
            ServerState::New => "new",
            ServerState::ActiveCancel => "active_cancel",
            ServerState::BeingCanceled => "being_canceled",
        }
    }
}

/// One server connection: `SHOW SERVERS`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow {
    /// Unique among servers; shown as `ptr`, and as `link` on its client.
    pub id: u64,
    pub user: String,
    pub database: String,
    pub state: ServerState,
    pub addr: SocketAddr,
    /// `None` while the connection is not yet established.
    pub local: Option<SocketAddr>,
    pub connect_time: SystemTime,
    pub request_time: SystemTime,
    /// Will be closed when released (reload changed its database, lifetime up).
    pub close_needed: bool,
    /// The attached client's id.
    pub link: Option<u64>,
    /// The backend's process id from BackendKeyData.
    pub remote_pid: i32,
    pub tls: String,
    /// The attached client's `application_name`, empty when idle.
    pub application_name: String,
    pub prepared_statements: u64,
}

/// Traffic per database: `SHOW STATS`. Totals are since start; averages are
/// per second (counts, bytes) or per item (times) over the last stats period.
/// Times are microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsRow {
    pub database: String,
    pub total_server_assignment_count: u64,
    pub total_xact_count: u64,
    pub total_query_count: u64,
    pub total_received: u64,
    pub total_sent: u64,
    pub total_xact_time: u64,
    pub total_query_time: u64,
    pub total_wait_time: u64,
    pub total_client_parse_count: u64,
    pub total_server_parse_count: u64,
    pub total_bind_count: u64,
    pub avg_server_assignment_count: u64,
    pub avg_xact_count: u64,
    pub avg_query_count: u64,
    pub avg_recv: u64,
    pub avg_sent: u64,
    pub avg_xact_time: u64,
    pub avg_query_time: u64,
    pub avg_wait_time: u64,
    pub avg_client_parse_count: u64,
    pub avg_server_parse_count: u64,
    pub avg_bind_count: u64,
}

/// Internal list sizes: `SHOW LISTS` (one row per field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListsRow {
    pub databases: u64,
    pub users: u64,
    pub peers: u64,
    pub pools: u64,
    pub peer_pools: u64,
    pub free_clients: u64,
    pub used_clients: u64,
    pub login_clients: u64,
    pub free_servers: u64,
    pub used_servers: u64,
    pub dns_names: u64,
    pub dns_zones: u64,
    pub dns_queries: u64,
    pub dns_pending: u64,
}

/// One user: `SHOW USERS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    /// A pool mode of the user's own; pgrelay has none (NULL, as PgBouncer
    /// shows a user that inherits the database's or the default).
    pub pool_mode: Option<PoolMode>,
    /// `max_user_connections`, 0 for no limit.
    pub max_user_connections: u64,
    /// Server connections open as this user, primary and replicas.
    pub current_connections: u64,
}

/// The pooler as a whole: `SHOW STATE`. pgrelay cannot be suspended (there
/// is no online restart to suspend for), so only `PAUSE` without a database
/// changes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PoolerState {
    #[default]
    Active,
    Paused,
}

/// The group column of endpoints of a database's `replicas:` set.
pub const DEFAULT_GROUP: &str = "default";

/// One replica endpoint: pgrelay's `SHOW REPLICAS`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaRow {
    pub database: String,
    /// The replica group: [`DEFAULT_GROUP`] or a `replica_groups:` name.
    pub group: String,
    /// Host name or address as discovered.
    pub host: String,
    pub port: u16,
    pub state: HealthState,
    /// Replay lag behind the primary from the last probe, if measured.
    pub lag_bytes: Option<u64>,
    pub lag: Option<Duration>,
    pub weight: u32,
    /// Reads in flight on this endpoint.
    pub outstanding: u64,
    /// The balancer's latency estimate, if it keeps one.
    pub latency: Option<Duration>,
    /// Live server connections in the endpoint's pool.
    pub servers: u64,
}

/// The rows summed, per-item times weighted by the items they average over.
pub fn sum_stats(rows: &[StatsRow]) -> StatsRow {
    let mut sum = StatsRow::default();
    let (mut xact_us, mut query_us, mut wait_us) = (0u128, 0u128, 0u128);
    for r in rows {
        sum.total_server_assignment_count += r.total_server_assignment_count;
        sum.total_xact_count += r.total_xact_count;
        sum.total_query_count += r.total_query_count;
        sum.total_received += r.total_received;
        sum.total_sent += r.total_sent;
        sum.total_xact_time += r.total_xact_time;
        sum.total_query_time += r.total_query_time;
        sum.total_wait_time += r.total_wait_time;
        sum.total_client_parse_count += r.total_client_parse_count;
        sum.total_server_parse_count += r.total_server_parse_count;
        sum.total_bind_count += r.total_bind_count;
        sum.avg_server_assignment_count += r.avg_server_assignment_count;
        sum.avg_xact_count += r.avg_xact_count;
        sum.avg_query_count += r.avg_query_count;
        sum.avg_recv += r.avg_recv;
        sum.avg_sent += r.avg_sent;
        sum.avg_client_parse_count += r.avg_client_parse_count;
        sum.avg_server_parse_count += r.avg_server_parse_count;
        sum.avg_bind_count += r.avg_bind_count;
        xact_us += u128::from(r.avg_xact_time) * u128::from(r.avg_xact_count);
        query_us += u128::from(r.avg_query_time) * u128::from(r.avg_query_count);
        wait_us += u128::from(r.avg_wait_time) * u128::from(r.avg_server_assignment_count);
    }
    let per_item = |us: u128, items: u64| {
        us.checked_div(u128::from(items))
            .map_or(0, |v| u64::try_from(v).unwrap_or(u64::MAX))
    };
    sum.avg_xact_time = per_item(xact_us, sum.avg_xact_count);
    sum.avg_query_time = per_item(query_us, sum.avg_query_count);
    sum.avg_wait_time = per_item(wait_us, sum.avg_server_assignment_count);
    sum
}
