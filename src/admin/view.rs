//! The console's numbers, read from the running pools and their server list,
//! the traffic counters, the connected clients and the current configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::rows::{
    AdminView, ClientRow, ClientState, ConfigRow, DatabaseRow, PoolRow, PoolerState, ReplicaRow,
    ServerRow, ServerState, StatsRow, UserRow, DEFAULT_GROUP,
};
use crate::cluster::PoolRegistry;
use crate::config::Config;
use crate::metrics::{Traffic, TrafficAverages, TrafficWindow};

/// The connected clients, as the frontend's registry knows them.
pub trait ClientList {
    fn clients(&self) -> Vec<ClientRow>;
}

pub struct LiveView<'a> {
    config: Config,
    /// Users the auth file names.
    auth_users: Vec<String>,
    pools: Arc<PoolRegistry>,
    traffic: Arc<TrafficWindow>,
    clients: &'a dyn ClientList,
}

impl<'a> LiveView<'a> {
    pub fn new(
        config: Config,
        auth_users: Vec<String>,
        pools: Arc<PoolRegistry>,
        traffic: Arc<TrafficWindow>,
        clients: &'a dyn ClientList,
    ) -> Self {
        LiveView {
            config,
            auth_users,
            pools,
            traffic,
            clients,
        }
    }
}

fn stats_row(database: String, total: &Traffic, avg: &TrafficAverages) -> StatsRow {
    StatsRow {
        database,
        total_server_assignment_count: total.assignments,
        total_xact_count: total.transactions,
        total_query_count: total.queries,
        total_received: total.received,
        total_sent: total.sent,
        total_xact_time: total.transaction_us,
        total_query_time: total.query_us,
        total_wait_time: total.wait_us,
        avg_server_assignment_count: avg.assignments_per_second,
        avg_xact_count: avg.transactions_per_second,
        avg_query_count: avg.queries_per_second,
        avg_recv: avg.received_per_second,
        avg_sent: avg.sent_per_second,
        avg_xact_time: avg.transaction_us,
        avg_query_time: avg.query_us,
        avg_wait_time: avg.wait_us,
        total_client_parse_count: total.client_parses,
        total_server_parse_count: total.server_parses,
        total_bind_count: total.binds,
        avg_client_parse_count: avg.client_parses_per_second,
        avg_server_parse_count: avg.server_parses_per_second,
        avg_bind_count: avg.binds_per_second,
    }
}

/// One pool's clients, as PgBouncer counts them in `SHOW POOLS`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ClientCounts {
    /// Logged in and not waiting for a server: attached, or idle.
    active: u64,
    /// Sent a request and wait for a server.
    waiting: u64,
    /// How long the one that has waited longest has waited.
    max_wait: Duration,
}

/// Clients per pool key (database, login user).
fn client_counts(clients: &[ClientRow]) -> HashMap<(String, String), ClientCounts> {
    let mut counts: HashMap<(String, String), ClientCounts> = HashMap::new();
    for c in clients {
        let entry = counts
            .entry((c.database.clone(), c.user.clone()))
            .or_default();
        match c.state {
            ClientState::Waiting | ClientState::WaitingCancelReq => {
                entry.waiting += 1;
                entry.max_wait = entry.max_wait.max(c.wait);
            }
            ClientState::Active | ClientState::ActiveCancelReq => entry.active += 1,
        }
    }
    counts
}

fn settings(cfg: &Config) -> Vec<(String, String)> {
    cfg.effective_settings()
        .lines()
        .filter_map(|l| {
            l.split_once(" = ")
                .or_else(|| l.strip_suffix(" =").map(|k| (k, "")))
        })
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl AdminView for LiveView<'_> {
    fn pools(&self) -> Vec<PoolRow> {
        let clients = client_counts(&self.clients.clients());
        self.pools
            .entries()
            .into_iter()
            .map(|(key, p)| {
                let s = p.primary.stats();
                let being_canceled = p.being_canceled.load(Ordering::Relaxed);
                // One cancel connection from the client, one to the server.
                let forwarding = p.cancels_forwarding.load(Ordering::Relaxed) as u64;
                // Checked out as far as the pool knows, attached to nobody.
                let active = s.live.saturating_sub(s.idle);
                let attached = active.saturating_sub(being_canceled);
                let counts = clients.get(&key).copied().unwrap_or_default();
                PoolRow {
                    database: p.spec.name.clone(),
                    user: p.server_user(),
                    cl_active: counts.active,
                    cl_waiting: counts.waiting,
                    cl_active_cancel_req: forwarding,
                    cl_waiting_cancel_req: 0,
                    sv_active: attached as u64,
                    sv_active_cancel: forwarding,
                    sv_being_canceled: being_canceled as u64,
                    sv_idle: s.idle as u64,
                    sv_used: 0,
                    sv_tested: 0,
                    // Checkouts that hold a slot but no live server yet are
                    // still connecting or logging in.
                    sv_login: s.checked_out.saturating_sub(active) as u64,
                    max_wait: counts.max_wait,
                    pool_mode: p.spec.pool_mode,
                }
            })
            .collect()
    }

    fn databases(&self) -> Vec<DatabaseRow> {
        let all = self.pools.all();
        self.config
            .databases
            .iter()
            .map(|(name, db)| {
                let current: usize = all
                    .iter()
                    .filter(|p| &p.spec.name == name)
                    .map(|p| p.primary.stats().live)
                    .sum();
                DatabaseRow {
                    name: name.clone(),
                    host: Some(db.host.clone()),
                    port: db.port,
                    database: db.dbname.clone().unwrap_or_else(|| name.clone()),
                    force_user: db.user.clone(),
                    pool_size: u64::from(
                        db.pool_size.unwrap_or(self.config.pool.default_pool_size),
                    ),
                    min_pool_size: u64::from(
                        db.min_pool_size.unwrap_or(self.config.pool.min_pool_size),
                    ),
                    reserve_pool: u64::from(
                        db.reserve_pool_size
                            .unwrap_or(self.config.pool.reserve_pool_size),
                    ),
                    pool_mode: db.pool_mode,
                    max_connections: u64::from(
                        db.max_db_connections
                            .unwrap_or(self.config.pool.max_db_connections),
                    ),
                    current_connections: current as u64,
                    paused: self.pools.pause_gate().is_paused(name),
                    disabled: self.pools.disabled().is_disabled(name),
                }
            })
            .collect()
    }

    fn config(&self) -> Vec<ConfigRow> {
        let defaults = settings(&Config::default());
        settings(&self.config)
            .into_iter()
            .map(|(key, value)| {
                let default = defaults
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                ConfigRow {
                    changeable: crate::config::is_changeable(&key),
                    key,
                    value,
                    default,
                }
            })
            .collect()
    }

    fn clients(&self) -> Vec<ClientRow> {
        self.clients.clients()
    }

    /// The auth file's users, every user a pool was made for and every
    /// user a pool logs in as (a trust login needs no auth file entry; a
    /// database's forced user has none either).
    fn users(&self) -> Vec<UserRow> {
        let pool_users = self
            .pools
            .entries()
            .into_iter()
            .flat_map(|((_, client_user), p)| [client_user, p.server_user()]);
        let mut connections: BTreeMap<String, u64> = self
            .auth_users
            .iter()
            .cloned()
            .chain(pool_users)
            .map(|u| (u, 0))
            .collect();
        for card in self.pools.servers() {
            *connections.entry(card.user.clone()).or_default() += 1;
        }
        connections
            .into_iter()
            .map(|(name, current_connections)| UserRow {
                name,
                pool_mode: None,
                max_user_connections: u64::from(self.config.limits.max_user_connections),
                current_connections,
            })
            .collect()
    }

    fn state(&self) -> PoolerState {
        if self.pools.pause_gate().is_all_paused() {
            PoolerState::Paused
        } else {
            PoolerState::Active
        }
    }

    /// Pooled servers, `active` while a client is attached (the client list
    /// names them by the same id); health probes are not listed.
    fn servers(&self) -> Vec<ServerRow> {
        let clients = self.clients.clients();
        let attached: HashMap<u64, &ClientRow> =
            clients.iter().filter_map(|c| Some((c.link?, c))).collect();
        self.pools
            .servers()
            .iter()
            .map(|card| {
                let id = card.key.console_id();
                let client = attached.get(&id);
                ServerRow {
                    id,
                    user: card.user.clone(),
                    database: card.database.clone(),
                    state: match client {
                        Some(_) => ServerState::Active,
                        None => ServerState::Idle,
                    },
                    addr: card.key.addr,
                    local: card.local,
                    connect_time: card.connect_time,
                    // The client's last request while attached; an idle
                    // server's last use is not kept (see `ServerCard`).
                    request_time: client.map_or(card.connect_time, |c| c.request_time),
                    close_needed: card.close_needed(),
                    link: client.map(|c| c.id),
                    remote_pid: card.key.process_id,
                    tls: card.tls.clone(),
                    application_name: client
                        .map(|c| c.application_name.clone())
                        .unwrap_or_default(),
                    prepared_statements: card.prepared() as u64,
                }
            })
            .collect()
    }

    /// One row per configured database (zeros until a client uses it) and
    /// per database a `*` entry made a pool for.
    fn stats(&self) -> Vec<StatsRow> {
        let totals = self.pools.traffic_by_database();
        let names: std::collections::BTreeSet<&String> = self
            .config
            .databases
            .keys()
            .filter(|name| name.as_str() != "*")
            .chain(totals.keys())
            .collect();
        names
            .into_iter()
            .map(|name| {
                let total = totals.get(name).copied().unwrap_or_default();
                stats_row(name.clone(), &total, &self.traffic.averages(name))
            })
            .collect()
    }

    fn version(&self) -> String {
        format!("pgrelay {}", env!("CARGO_PKG_VERSION"))
    }

    fn replicas(&self) -> Vec<ReplicaRow> {
        let mut rows = Vec::new();
        for p in self.pools.all() {
            for (group, set) in p.replica_sets() {
                for e in set.endpoints().iter() {
                    let health = e.health();
                    let facts = health.facts();
                    rows.push(ReplicaRow {
                        database: p.spec.name.clone(),
                        group: group.unwrap_or(DEFAULT_GROUP).to_string(),
                        host: e.addr.ip().to_string(),
                        port: e.addr.port(),
                        state: health.state,
                        lag_bytes: facts.and_then(|f| f.lag_bytes),
                        lag: facts.and_then(|f| f.lag),
                        weight: e.weight() as u32,
                        outstanding: u64::from(e.outstanding()),
                        latency: Some(e.latency()),
                        servers: e.pool.stats().live as u64,
                    });
                }
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn client(id: u64, database: &str, user: &str, state: ClientState, wait_ms: u64) -> ClientRow {
        ClientRow {
            id,
            user: user.into(),
            database: database.into(),
            state,
            peer: "127.0.0.1:5000".parse().unwrap(),
            local: "127.0.0.1:6432".parse().unwrap(),
            connect_time: SystemTime::UNIX_EPOCH,
            request_time: SystemTime::UNIX_EPOCH,
            wait: Duration::from_millis(wait_ms),
            link: None,
            tls: String::new(),
            application_name: String::new(),
            prepared_statements: 0,
        }
    }

    #[test]
    fn pool_clients_are_counted_per_database_and_user_with_the_longest_wait() {
        let counts = client_counts(&[
            client(1, "app", "alice", ClientState::Active, 0),
            client(2, "app", "alice", ClientState::Waiting, 1500),
            client(3, "app", "alice", ClientState::Waiting, 300),
            client(4, "app", "bob", ClientState::Active, 0),
            client(5, "other", "alice", ClientState::WaitingCancelReq, 50),
        ]);
        let key = |d: &str, u: &str| (d.to_string(), u.to_string());
        assert_eq!(
            counts[&key("app", "alice")],
            ClientCounts {
                active: 1,
                waiting: 2,
                max_wait: Duration::from_millis(1500)
            }
        );
        assert_eq!(counts[&key("app", "bob")].active, 1);
        assert_eq!(counts[&key("app", "bob")].max_wait, Duration::ZERO);
        assert_eq!(counts[&key("other", "alice")].waiting, 1);
        assert_eq!(counts.len(), 3);
    }
}
