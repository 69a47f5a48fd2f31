//! The groups of global settings that make up a [`super::Config`], with
//! PgBouncer 1.22's defaults unless a comment says otherwise.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::modes::{AuthType, LogFormat, PoolMode, Scheduler, SslMode};

/// Where clients connect (`listen_addr`, `listen_port`, `unix_socket_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// Host names or IPs to bind; PgBouncer's `*` is stored as `0.0.0.0`.
    pub addrs: Vec<String>,
    pub port: u16,
    /// Accepted for compatibility; empty means no Unix socket.
    pub unix_socket_dir: String,
    /// Other pgrelay processes (`host:port`, a name may resolve to several)
    /// that a cancel request matching no local client is passed on to.
    pub cancel_peers: Vec<String>,
    /// PgBouncer's `so_reuseport`: several processes share the listen address.
    pub so_reuseport: bool,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            // PgBouncer's default is "not set" (Unix socket only); a container
            // pooler is useless without TCP, so pgrelay listens on all IPv4.
            addrs: vec!["0.0.0.0".to_string()],
            port: 6432,
            unix_socket_dir: "/tmp".to_string(),
            cancel_peers: Vec::new(),
            so_reuseport: false,
        }
    }
}

/// Client authentication (`auth_type`, `auth_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub auth_type: AuthType,
    pub auth_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            auth_type: AuthType::Md5,
            auth_file: None,
        }
    }
}

/// Who may use the admin console (`admin_users`, `stats_users`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,
}

/// Pool sizing and mode; per-database entries may override each of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDefaults {
    pub pool_mode: PoolMode,
    pub default_pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    /// How long a client waits before the reserve pool may be used.
    pub reserve_pool_timeout: Duration,
    /// Server connections per database across all users; 0 = unlimited.
    pub max_db_connections: u32,
}

impl Default for PoolDefaults {
    fn default() -> Self {
        Self {
            pool_mode: PoolMode::Session,
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            max_db_connections: 0,
        }
    }
}

/// Connection-count and message-size limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_client_conn: u32,
    /// Server connections per user across all databases; 0 = unlimited.
    pub max_user_connections: u32,
    /// Largest protocol message accepted, in bytes.
    pub max_packet_size: u32,
}

/// pgrelay's `max_packet_size` default. PgBouncer's is 2147483647; PostgreSQL
/// itself caps most messages at 1 GB, and a smaller cap bounds what one client
/// can make pgrelay buffer.
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 256 * 1024 * 1024;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_client_conn: 100,
            max_user_connections: 0,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
        }
    }
}

/// Timeouts; `Duration::ZERO` means disabled where PgBouncer says 0 disables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub query_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub client_login_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub server_idle_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_connect_timeout: Duration,
    pub server_login_retry: Duration,
    /// pgrelay's own: how long SIGTERM waits for open transactions.
    pub shutdown_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Self {
            query_timeout: Duration::ZERO,
            query_wait_timeout: secs(120),
            client_idle_timeout: Duration::ZERO,
            client_login_timeout: secs(60),
            idle_transaction_timeout: Duration::ZERO,
            server_idle_timeout: secs(600),
            server_lifetime: secs(3600),
            server_connect_timeout: secs(15),
            server_login_retry: secs(15),
            shutdown_timeout: secs(30),
        }
    }
}

/// How server connections are cleaned, checked and chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSessionConfig {
    /// Sent when a server connection returns to the pool; empty disables.
    pub reset_query: String,
    /// Also run `reset_query` in transaction/statement pooling.
    pub reset_query_always: bool,
    /// Sent to a connection idle longer than `check_delay`; empty disables.
    pub check_query: String,
    pub check_delay: Duration,
    pub round_robin: bool,
}

impl Default for ServerSessionConfig {
    fn default() -> Self {
        Self {
            reset_query: "DISCARD ALL".to_string(),
            reset_query_always: false,
            check_query: "select 1".to_string(),
            check_delay: Duration::from_secs(30),
            round_robin: false,
        }
    }
}

/// Handling of client startup parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupParamsConfig {
    /// Startup parameters accepted from clients and not forwarded.
    pub ignore_startup_parameters: Vec<String>,
    /// Extra parameters tracked per client and restored on server switch.
    pub track_extra_parameters: Vec<String>,
    pub application_name_add_host: bool,
}

impl Default for StartupParamsConfig {
    fn default() -> Self {
        Self {
            ignore_startup_parameters: Vec::new(),
            track_extra_parameters: vec!["IntervalStyle".to_string()],
            application_name_add_host: false,
        }
    }
}

/// One side's TLS settings (`server_tls_*` or `client_tls_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub sslmode: SslMode,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn with_mode(sslmode: SslMode) -> Self {
        Self {
            sslmode,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// Logging switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    pub log_connections: bool,
    pub log_disconnections: bool,
    pub log_format: LogFormat,
    /// How often aggregated stats are logged / averaged.
    pub stats_period: Duration,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            log_connections: true,
            log_disconnections: true,
            log_format: LogFormat::Text,
            stats_period: Duration::from_secs(60),
        }
    }
}

/// Prometheus endpoint (pgrelay's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `None` disables the endpoint.
    pub addr: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            addr: Some(SocketAddr::from(([0, 0, 0, 0], 9127))),
        }
    }
}

/// How many threads serve clients and how they share them (pgrelay's own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// 0 (the default): one thread per core. 1: one thread, as PgBouncer
    /// runs. N > 1: N threads, shared out by `scheduler`.
    pub worker_threads: u32,
    /// `per_core` (the default): each thread runs its own clients, and the
    /// pools prefer servers on the caller's thread (`crate::cores`).
    /// `work_stealing`: tokio's scheduler moves tasks between threads.
    pub scheduler: Scheduler,
    /// How long a per-core thread that runs out of work keeps checking for
    /// readiness before it sleeps, at most (`crate::idle_poll`).
    pub idle_poll_time: IdlePoll,
}

/// `idle_poll_time`: `auto` (the default) or a duration, 0 for never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdlePoll {
    /// [`IdlePoll::AUTO_TIME`], unless the process runs under a CPU quota.
    #[default]
    Auto,
    Fixed(Duration),
}

impl IdlePoll {
    /// What `auto` polls for: longer than the one-client turnaround of a
    /// short query through pgbench and PostgreSQL on loopback (BENCHMARKS.md,
    /// "Polling before sleeping").
    pub const AUTO_TIME: Duration = Duration::from_micros(100);

    /// The window to poll for; `under_cpu_quota` is asked only for `auto`.
    pub fn resolve(self, under_cpu_quota: impl FnOnce() -> bool) -> Duration {
        match self {
            IdlePoll::Fixed(time) => time,
            IdlePoll::Auto if under_cpu_quota() => Duration::ZERO,
            IdlePoll::Auto => Self::AUTO_TIME,
        }
    }
}

impl RuntimeConfig {
    /// `worker_threads` with 0 resolved to the machine's core count.
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }

    /// How many per-core runtimes serve clients: the threads under
    /// `per_core`, 1 under `work_stealing`.
    pub fn cores(&self) -> usize {
        match self.scheduler {
            Scheduler::PerCore => self.threads(),
            Scheduler::WorkStealing => 1,
        }
    }
}

/// Routing rule files (pgrelay's own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Empty means "use [`DEFAULT_ROUTING_RULES`] if that file exists".
    pub rule_files: Vec<PathBuf>,
}

/// The rule file used when `routing_rules` is not set.
pub const DEFAULT_ROUTING_RULES: &str = "routing-rules/default.yaml";

impl RoutingConfig {
    /// The files to load. Config does no file I/O, so the caller says which paths exist.
    pub fn rule_files_or_default(&self, exists: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
        if !self.rule_files.is_empty() {
            return self.rule_files.clone();
        }
        let default = PathBuf::from(DEFAULT_ROUTING_RULES);
        if exists(&default) {
            vec![default]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_only_when_the_file_exists() {
        let unset = RoutingConfig::default();
        assert_eq!(
            unset.rule_files_or_default(|_| true),
            vec![PathBuf::from(DEFAULT_ROUTING_RULES)]
        );
        assert!(unset.rule_files_or_default(|_| false).is_empty());
        let set = RoutingConfig {
            rule_files: vec![PathBuf::from("a.yaml")],
        };
        assert_eq!(
            set.rule_files_or_default(|_| true),
            vec![PathBuf::from("a.yaml")]
        );
    }
}
