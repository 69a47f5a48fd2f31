//! Wires a validated [`Config`] into a running pgrelay: the directory that
//! sessions consult, the pools, the listeners and the background upkeep.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use thiserror::Error;
use tracing::{info, warn};

use crate::admin::{AdminError, Privilege};
use crate::auth::{AuthError, ScramKeyring, ScramSecret, Secret, Userlist};
use crate::backend::{ConnectOptions, ServerSecret, ServerTlsPolicy};
use crate::cluster::balance::Strategy;
use crate::cluster::discovery::{DiscoveryConfig, DiscoverySource, HostPort};
use crate::cluster::health::HealthPolicy;
use crate::cluster::{
    DatabaseSpec, HealthSettings, PoolRegistry, ReadFallback, ReadYourWrites, ReplicaSpec,
};
use crate::config::{AuthType, Config, ReplicasConfig, SslMode};
use crate::cores::Cores;
use crate::frontend::{self, CancelRegistry, Directory, FrontendSettings, ListenerHandle, Shared};
use crate::metrics::{Metrics, TrafficWindow};
use crate::pool::PoolSettings;
use crate::router::{Classifier, RuleSet};
use crate::shutdown::Shutdown;
use crate::tls::{self, ClientTlsSettings, ServerTlsSettings, TlsError};

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Userlist(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("client TLS needs client_tls_cert_file and client_tls_key_file")]
    ClientTlsIncomplete,
    #[error(transparent)]
    Rules(#[from] crate::router::RouterError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("database {database:?}: {reason}")]
    Replicas { database: String, reason: String },
    #[error("cannot start the per-core runtimes: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Everything derived from one configuration; replaced whole on reload.
/// Database name → user → pools; nested so a lookup borrows both names.
type LoginPools = std::collections::HashMap<
    String,
    std::collections::HashMap<String, Arc<crate::cluster::DatabasePools>>,
>;

struct Snapshot {
    config: Config,
    userlist: Userlist,
    classifier: Arc<Classifier>,
    /// SCRAM secrets derived from plain userlist passwords. Deriving one costs
    /// 4096 PBKDF2 rounds; doing it once per user keeps logins cheap and makes a
    /// known user's login cost the same as an unknown user's mock exchange.
    scram_cache: std::sync::Mutex<std::collections::HashMap<String, Secret>>,
    /// The pools each (database as named by clients, user) logged in to under
    /// this configuration: a login then skips rebuilding the database's
    /// settings, which the registry would drop for pools that exist. A reload
    /// makes a new snapshot, so a database removed from the configuration is
    /// refused again.
    login_pools: std::sync::Mutex<LoginPools>,
    frontend: Arc<FrontendSettings>,
    server_tls: ServerTlsPolicy,
}

impl Snapshot {
    fn build(config: Config) -> Result<Snapshot, AppError> {
        let userlist = match &config.auth.auth_file {
            Some(path) => Userlist::load(path)?,
            None => Userlist::parse("", "(no auth_file)")?,
        };
        let server_tls = ServerTlsPolicy {
            mode: config.server_tls.sslmode,
            connector: tls::server_connector(&ServerTlsSettings {
                mode: config.server_tls.sslmode,
                ca_file: config.server_tls.ca_file.clone(),
                cert_file: config.server_tls.cert_file.clone(),
                key_file: config.server_tls.key_file.clone(),
            })?,
        };
        let frontend = Arc::new(frontend_settings(&config));
        for (name, db) in &config.databases {
            let ns = db.nameserver.as_deref();
            if let Some(r) = &db.replicas {
                replica_spec(name, db.port, ns, r)?;
            }
            group_specs(name, db.port, ns, &db.replica_groups)?;
            primary_discovery(name, &db.host, db.port, ns, db.replicas.as_ref())?;
        }
        let rule_files = config.routing.rule_files_or_default(|p| p.exists());
        let rules = if rule_files.is_empty() {
            RuleSet::builtin()
        } else {
            RuleSet::load(&rule_files)?
        };
        for group in undefined_groups(&rules, &config) {
            warn!(
                group,
                "routing rules target replica group {group:?}, which no database defines; \
                 its reads go to each database's default replicas"
            );
        }
        let classifier = Arc::new(Classifier::new(rules, CLASSIFIER_CACHE));
        Ok(Snapshot {
            config,
            userlist,
            classifier,
            scram_cache: Default::default(),
            login_pools: Default::default(),
            frontend,
            server_tls,
        })
    }
}

/// Statement texts whose classification is cached (per process).
const CLASSIFIER_CACHE: usize = 10_000;

/// The named replica groups of one database entry, validated, in name order.
fn group_specs(
    database: &str,
    db_port: u16,
    nameserver: Option<&str>,
    groups: &std::collections::BTreeMap<String, ReplicasConfig>,
) -> Result<Vec<(Arc<str>, ReplicaSpec)>, AppError> {
    groups
        .iter()
        .map(|(name, r)| {
            // The spelling rule files accept after `group:`.
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(AppError::Replicas {
                    database: database.to_string(),
                    reason: format!("invalid replica group name {name:?}"),
                });
            }
            let spec = replica_spec(database, db_port, nameserver, r)?;
            Ok((Arc::from(name.as_str()), spec))
        })
        .collect()
}

/// Group names the rules target that no database entry defines (rules are
/// global, groups per database), sorted.
fn undefined_groups(rules: &RuleSet, config: &Config) -> Vec<String> {
    let mut missing: Vec<String> = rules
        .rules()
        .iter()
        .filter_map(|rule| match &rule.target {
            crate::router::Target::Group(name) => Some(name.to_string()),
            _ => None,
        })
        .filter(|name| {
            !config
                .databases
                .values()
                .any(|db| db.replica_groups.contains_key(name))
        })
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// How a database's primary host is re-resolved: `None` for an IP literal.
/// Timings follow the default replica group's, if any.
fn primary_discovery(
    database: &str,
    host: &str,
    port: u16,
    nameserver: Option<&str>,
    replicas: Option<&ReplicasConfig>,
) -> Result<Option<DiscoveryConfig>, AppError> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(None);
    }
    let mut config = DiscoveryConfig::new(DiscoverySource::DnsA {
        name: host.to_string(),
        port,
    });
    if let Some(r) = replicas {
        config.min_ttl = r.min_ttl;
        config.max_ttl = r.max_ttl;
    }
    config.nameserver = parse_nameserver(database, nameserver)?;
    Ok(Some(config))
}

fn parse_nameserver(
    database: &str,
    nameserver: Option<&str>,
) -> Result<Option<SocketAddr>, AppError> {
    nameserver
        .map(|ns| {
            ns.parse().map_err(|_| AppError::Replicas {
                database: database.to_string(),
                reason: format!("nameserver {ns:?} is not host:port"),
            })
        })
        .transpose()
}

/// The replica topology of one database entry, validated; `db_nameserver`
/// is the database's, used when the group names none.
fn replica_spec(
    database: &str,
    db_port: u16,
    db_nameserver: Option<&str>,
    r: &ReplicasConfig,
) -> Result<ReplicaSpec, AppError> {
    let fail = |reason: String| AppError::Replicas {
        database: database.to_string(),
        reason,
    };
    let port = r.port.unwrap_or(db_port);
    let source = match (&r.srv, &r.dns) {
        (Some(srv), _) => DiscoverySource::DnsSrv { name: srv.clone() },
        (None, Some(name)) => DiscoverySource::DnsA {
            name: name.clone(),
            port,
        },
        (None, None) if !r.hosts.is_empty() => {
            let mut list = Vec::new();
            for host in &r.hosts {
                let with_port = if host.parse::<SocketAddr>().is_ok() {
                    host.clone()
                } else if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                    SocketAddr::new(ip, port).to_string()
                } else if host.contains(':') {
                    host.clone() // name:port
                } else {
                    format!("{host}:{port}")
                };
                list.push(
                    with_port
                        .parse::<HostPort>()
                        .map_err(|e| fail(format!("replica {host:?}: {e}")))?,
                );
            }
            DiscoverySource::Static(list)
        }
        _ => return Err(fail("replicas need hosts, dns or srv".into())),
    };
    let mut discovery = DiscoveryConfig::new(source);
    discovery.min_ttl = r.min_ttl;
    discovery.max_ttl = r.max_ttl;
    discovery.nameserver = parse_nameserver(database, r.nameserver.as_deref().or(db_nameserver))?;
    let strategy = r
        .balance
        .parse::<Strategy>()
        .map_err(|e| fail(e.to_string()))?;
    let fallback = match r.fallback.as_str() {
        "primary" => ReadFallback::Primary,
        "error" => ReadFallback::Error,
        other => {
            return Err(fail(format!(
                "fallback {other:?}: expected primary or error"
            )))
        }
    };
    let health = HealthSettings {
        interval: r.health_check_interval.max(Duration::from_millis(100)),
        policy: HealthPolicy {
            max_lag: nonzero(r.max_lag),
            max_lag_bytes: (r.max_lag_bytes > 0).then_some(r.max_lag_bytes),
            ..HealthPolicy::default()
        },
    };
    let read_your_writes = match r.read_your_writes.as_str() {
        "off" => ReadYourWrites::Off,
        "window" => ReadYourWrites::Window(r.read_your_writes_window),
        "lsn" => ReadYourWrites::Lsn,
        other => {
            return Err(fail(format!(
                "read_your_writes {other:?}: expected off, window or lsn"
            )))
        }
    };
    Ok(ReplicaSpec {
        discovery,
        strategy,
        fallback,
        health,
        read_your_writes,
    })
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn lower(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.to_ascii_lowercase()).collect()
}

fn frontend_settings(c: &Config) -> FrontendSettings {
    FrontendSettings {
        auth_type: c.auth.auth_type,
        max_client_conn: c.limits.max_client_conn as usize,
        max_message: c.limits.max_packet_size as usize,
        client_login_timeout: nonzero(c.timeouts.client_login_timeout),
        client_idle_timeout: nonzero(c.timeouts.client_idle_timeout),
        idle_transaction_timeout: nonzero(c.timeouts.idle_transaction_timeout),
        query_timeout: nonzero(c.timeouts.query_timeout),
        log_connections: c.logging.log_connections,
        log_disconnections: c.logging.log_disconnections,
        server_reset_query: c.server.reset_query.clone(),
        server_reset_query_always: c.server.reset_query_always,
        ignore_startup_parameters: lower(&c.params.ignore_startup_parameters),
        track_extra_parameters: lower(&c.params.track_extra_parameters),
        client_tls_mode: c.client_tls.sslmode,
        cancel_peers: c.listen.cancel_peers.clone(),
    }
}

/// The [`Directory`] sessions consult: current config and userlist.
pub struct App {
    snapshot: RwLock<Arc<Snapshot>>,
    mock_key: [u8; 32],
    /// ClientKeys for users whose userlist entry is a SCRAM secret.
    scram_keys: ScramKeyring,
    /// The YAML file the configuration was loaded from, for RELOAD.
    source: Option<PathBuf>,
    /// The per-core runtimes serving clients: each pool gets a waiting line per core.
    cores: usize,
}

impl App {
    pub fn new(
        config: Config,
        source: Option<PathBuf>,
        cores: usize,
    ) -> Result<Arc<App>, AppError> {
        Ok(Arc::new(App {
            snapshot: RwLock::new(Arc::new(Snapshot::build(config)?)),
            mock_key: rand::rng().random(),
            scram_keys: ScramKeyring::default(),
            source,
            cores,
        }))
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap().clone()
    }

    pub fn config(&self) -> Config {
        self.current().config.clone()
    }

    /// Swaps in a new configuration; sessions see it at their next lookup.
    /// Running pools take their database's new pool settings (sizes,
    /// timeouts) and connect options at once: servers already open to a
    /// moved host, port or database are closed as they are released, as
    /// `RECONNECT` does. Other changes to a database in use (pool mode,
    /// limits, replicas) reach it after a restart.
    pub fn reload(&self, config: Config, registry: &PoolRegistry) -> Result<(), AppError> {
        let next = Arc::new(Snapshot::build(config)?);
        *self.snapshot.write().unwrap() = next;
        for ((database, user), pools) in registry.entries() {
            let Some(spec) = self.database(&database, &user) else {
                continue; // Removed: its clients stay, new logins are refused.
            };
            let done = pools.apply_reload(&spec);
            if done.pool_settings {
                info!(
                    database,
                    user,
                    pool_size = spec.pool.size,
                    "pool settings reloaded"
                );
            }
            if done.servers_moved {
                info!(
                    database,
                    user, "server address or login changed; reconnecting"
                );
                registry.reconnect(Some(&database));
            }
            if !done.restart_only.is_empty() {
                warn!(
                    database,
                    user,
                    settings = ?done.restart_only,
                    "changed settings of a database in use take effect after a restart"
                );
            }
        }
        Ok(())
    }

    fn server_secret(
        &self,
        snapshot: &Snapshot,
        password: Option<&str>,
        user: &str,
    ) -> ServerSecret {
        if let Some(p) = password {
            return ServerSecret::Password(p.to_string());
        }
        match snapshot.userlist.get(user) {
            Some(Secret::Plain(p)) => ServerSecret::Password(p.clone()),
            Some(Secret::Md5(h)) => ServerSecret::Md5Hash(h.clone()),
            Some(Secret::Scram(s)) => ServerSecret::ScramKeys(self.scram_keys.keys(user, s)),
            None => ServerSecret::None,
        }
    }
}

impl Directory for App {
    fn settings(&self) -> Arc<FrontendSettings> {
        self.current().frontend.clone()
    }

    fn database_pools(
        &self,
        name: &str,
        user: &str,
        registry: &PoolRegistry,
    ) -> Option<Arc<crate::cluster::DatabasePools>> {
        let snap = self.current();
        let known = snap
            .login_pools
            .lock()
            .unwrap()
            .get(name)
            .and_then(|users| users.get(user))
            .cloned();
        if known.is_some() {
            return known;
        }
        let pools = registry.get_or_create(user, self.database(name, user)?);
        snap.login_pools
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .insert(user.to_string(), pools.clone());
        Some(pools)
    }

    fn database(&self, name: &str, user: &str) -> Option<DatabaseSpec> {
        let snap = self.current();
        let c = &snap.config;
        let db = c.database(name)?;
        let server_user = db.forced_user.clone().unwrap_or_else(|| user.to_string());
        // Validated when the snapshot was built.
        let ns = db.nameserver.as_deref();
        let secret = self.server_secret(
            &snap,
            db.password.as_ref().map(|p| p.expose()),
            &server_user,
        );
        Some(DatabaseSpec {
            name: db.name.clone(),
            connect: ConnectOptions {
                host: db.host.clone(),
                port: db.port,
                tls_name: None,
                user: server_user,
                database: db.dbname.clone(),
                secret,
                tls: snap.server_tls.clone(),
                connect_timeout: nonzero(c.timeouts.server_connect_timeout)
                    .unwrap_or(Duration::from_secs(15)),
                max_message: c.limits.max_packet_size as usize,
            },
            pool: PoolSettings {
                size: db.pool.pool_size as usize,
                min_size: db.pool.min_pool_size as usize,
                reserve_size: db.pool.reserve_pool_size as usize,
                reserve_timeout: c.pool.reserve_pool_timeout,
                wait_timeout: nonzero(c.timeouts.query_wait_timeout),
                idle_timeout: nonzero(c.timeouts.server_idle_timeout),
                lifetime: nonzero(c.timeouts.server_lifetime),
                login_retry: c.timeouts.server_login_retry,
                cores: self.cores,
            },
            pool_mode: db.pool.pool_mode,
            max_db_connections: db.pool.max_db_connections as usize,
            max_user_connections: c.limits.max_user_connections as usize,
            replicas: db
                .replicas
                .as_ref()
                .and_then(|r| replica_spec(&db.name, db.port, ns, r).ok()),
            groups: group_specs(&db.name, db.port, ns, &db.replica_groups).unwrap_or_default(),
            primary_discovery: primary_discovery(
                &db.name,
                &db.host,
                db.port,
                ns,
                db.replicas.as_ref(),
            )
            .ok()
            .flatten(),
        })
    }

    fn client_secret(&self, user: &str) -> Option<Secret> {
        let snap = self.current();
        if snap.config.auth.auth_type == AuthType::Trust {
            return None;
        }
        match snap.userlist.get(user)? {
            Secret::Plain(password) if snap.config.auth.auth_type == AuthType::ScramSha256 => {
                let mut cache = snap.scram_cache.lock().unwrap();
                let derived = cache.entry(user.to_string()).or_insert_with(|| {
                    Secret::Scram(ScramSecret::from_password_random_salt(password))
                });
                Some(derived.clone())
            }
            other => Some(other.clone()),
        }
    }

    fn scram_mock_key(&self) -> [u8; 32] {
        self.mock_key
    }

    fn remember_scram_client_key(&self, user: &str, client_key: [u8; 32]) {
        // A client authenticated against a plain password's derived secret
        // needs no pass-through: the server login uses the password.
        if let Some(Secret::Scram(secret)) = self.current().userlist.get(user) {
            self.scram_keys.keys(user, secret).remember(client_key);
        }
    }

    fn classifier(&self) -> Arc<Classifier> {
        self.current().classifier.clone()
    }

    fn admin_privilege(&self, user: &str) -> Option<Privilege> {
        let snap = self.current();
        let admin = &snap.config.admin;
        if admin.admin_users.iter().any(|u| u == user) {
            Some(Privilege::Admin)
        } else if admin.stats_users.iter().any(|u| u == user) {
            Some(Privilege::Stats)
        } else {
            None
        }
    }

    fn config(&self) -> Config {
        App::config(self)
    }

    fn auth_users(&self) -> Vec<String> {
        self.current()
            .userlist
            .names()
            .map(str::to_string)
            .collect()
    }

    fn reload(&self, registry: &PoolRegistry) -> Result<(), String> {
        let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
        let config = Config::load(self.source.as_deref(), &env).map_err(|e| e.to_string())?;
        App::reload(self, config, registry).map_err(|e| e.to_string())
    }

    fn set(&self, name: &str, value: &str, registry: &PoolRegistry) -> Result<(), AdminError> {
        if !crate::config::is_changeable(name) {
            return Err(AdminError::StartOnlySetting(name.to_string()));
        }
        let config = App::config(self)
            .with_setting(name, value)
            .map_err(|e| AdminError::setting(name, e))?;
        App::reload(self, config, registry).map_err(|e| AdminError::BadSettingValue {
            name: name.to_string(),
            reason: e.to_string(),
        })
    }
}

/// A running pgrelay.
pub struct Running {
    pub app: Arc<App>,
    pub pools: Arc<PoolRegistry>,
    /// Where clients can connect (one per listen address).
    pub addrs: Vec<SocketAddr>,
    /// Where Prometheus can scrape, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    metrics_stop: tokio::sync::oneshot::Sender<()>,
    stop_requested: Arc<tokio::sync::Notify>,
    shutdown: Shutdown,
    listeners: Vec<ListenerHandle>,
    upkeep: tokio::task::JoinHandle<()>,
    /// Dropped last: the other cores' runtimes end with it.
    _cores: Arc<Cores>,
}

impl Running {
    /// Returns once a console user ran `SHUTDOWN` (the caller then calls
    /// [`Running::shutdown`]).
    pub async fn stop_requested(&self) {
        self.stop_requested.notified().await;
    }

    /// Stops accepting, drains sessions (up to `shutdown_timeout`) and closes the pools.
    pub async fn shutdown(self) {
        self.shutdown.trigger();
        for l in self.listeners {
            let _ = l.task.await;
        }
        self.upkeep.abort();
        self.pools.close_all();
        let _ = self.metrics_stop.send(());
    }
}

/// Binds the listeners and starts serving.
pub async fn start(config: Config) -> Result<Running, AppError> {
    start_from(config, None).await
}

/// Like [`start`], remembering the YAML file so RELOAD can re-read it.
pub async fn start_from(config: Config, source: Option<PathBuf>) -> Result<Running, AppError> {
    let client_tls = client_acceptor(&config)?;
    let drain = config.timeouts.shutdown_timeout;
    let listen: Vec<String> = config
        .listen
        .addrs
        .iter()
        .map(|a| format_addr(a, config.listen.port))
        .collect();
    let reuse_port = config.listen.so_reuseport;
    let max_clients = config.limits.max_client_conn as usize;
    let cores = Arc::new(
        Cores::start(config.runtime.cores(), idle_poll_time(&config.runtime))
            .map_err(AppError::Runtime)?,
    );
    let metrics_addr = config.metrics.addr;
    let traffic = Arc::new(TrafficWindow::new(config.logging.stats_period));
    let app = App::new(config, source, cores.count())?;
    let shutdown = Shutdown::new();
    let metrics = Arc::new(Metrics::new()?);
    let pools = Arc::new(PoolRegistry::new(shutdown.signal(), metrics.clone()));
    let stop_requested = Arc::new(tokio::sync::Notify::new());
    let shared = Arc::new(Shared {
        directory: app.clone(),
        pools: pools.clone(),
        cancels: CancelRegistry::new(),
        tls_acceptor: client_tls,
        client_slots: Arc::new(tokio::sync::Semaphore::new(max_clients)),
        metrics: metrics.clone(),
        traffic: traffic.clone(),
        stop_requested: stop_requested.clone(),
    });
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for addr in listen {
        let listener =
            frontend::bind(&addr, reuse_port)
                .await
                .map_err(|source| AppError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
        let handle = frontend::serve(
            listener,
            shared.clone(),
            cores.clone(),
            shutdown.signal(),
            drain,
        )
        .map_err(|source| AppError::Bind { addr, source })?;
        info!(addr = %handle.local_addr, "listening");
        addrs.push(handle.local_addr);
        listeners.push(handle);
    }
    // The endpoint outlives the drain so /healthz answers while sessions finish.
    let (metrics_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match metrics_addr {
        Some(addr) => {
            let server = crate::metrics::serve(addr, metrics.clone(), async move {
                let _ = stopped.await;
            })
            .await
            .map_err(|source| AppError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            info!(addr = %server.local_addr, "metrics endpoint listening");
            Some(server.local_addr)
        }
        None => None,
    };
    let upkeep = tokio::spawn({
        let pools = pools.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                pools.maintain().await;
                traffic.tick(Instant::now(), pools.traffic_by_database());
            }
        }
    });
    Ok(Running {
        app,
        pools,
        addrs,
        metrics_addr: metrics_server,
        metrics_stop,
        stop_requested,
        shutdown,
        listeners,
        upkeep,
        _cores: cores,
    })
}

/// `idle_poll_time` resolved, `auto` off under a CPU quota (said in the log,
/// since it changes one-client latency).
fn idle_poll_time(runtime: &crate::config::RuntimeConfig) -> Duration {
    let time = runtime
        .idle_poll_time
        .resolve(crate::idle_poll::under_cpu_quota);
    if runtime.idle_poll_time == crate::config::IdlePoll::Auto && time.is_zero() {
        info!("idle_poll_time auto: off, the process runs under a CPU quota");
    }
    time
}

fn format_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn client_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, AppError> {
    let c = &config.client_tls;
    if c.sslmode == SslMode::Disable {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&c.cert_file, &c.key_file) else {
        return Err(AppError::ClientTlsIncomplete);
    };
    Ok(Some(tls::client_acceptor(&ClientTlsSettings {
        mode: c.sslmode,
        cert_file: PathBuf::from(cert),
        key_file: PathBuf::from(key),
        ca_file: c.ca_file.clone(),
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_the_rules_name_but_no_database_defines_are_reported() {
        let rules = RuleSet::builtin_with(&[(
            "rules:\n  - match: {tables: [a]}\n    target: group:reports\n  \
             - match: {tables: [b]}\n    target: group:olap\n  \
             - match: {tables: [c]}\n    target: group:olap\n",
            "test.yaml",
        )])
        .unwrap();
        let mut config = Config::default();
        let db = config.databases.entry("app".into()).or_default();
        db.replica_groups
            .insert("reports".into(), ReplicasConfig::default());
        assert_eq!(undefined_groups(&rules, &config), ["olap"]);
    }

    #[test]
    fn group_names_are_checked_like_rule_targets() {
        let hosts = ReplicasConfig {
            hosts: vec!["127.0.0.2".into()],
            ..ReplicasConfig::default()
        };
        let mut groups = std::collections::BTreeMap::new();
        groups.insert("b".to_string(), hosts.clone());
        groups.insert("a-1.x".to_string(), hosts.clone());
        let specs = group_specs("app", 5432, None, &groups).unwrap();
        let names: Vec<&str> = specs.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["a-1.x", "b"]);
        groups.insert("no spaces".to_string(), hosts);
        assert!(group_specs("app", 5432, None, &groups).is_err());
    }
}
