//! The settings table: the one place that lists every global setting, its
//! value type (which decides how it parses) and the `Config` field it sets.
//! Env parsing, the YAML file struct and `effective_settings` are all
//! generated from it, so they cannot drift apart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::database::DatabaseConfig;
use super::modes::{AuthType, LogFormat, PoolMode, Scheduler, SslMode};
use super::sections::IdlePoll;
use super::value::{SettingValue, YamlSetting};
use super::Config;

/// Why a setting name/value was refused; the caller adds where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingError {
    Unknown,
    /// A real PgBouncer setting whose behaviour pgrelay does not implement.
    Unsupported,
    BadValue(String),
}

macro_rules! settings_table {
    (
        settings { $( $name:ident : $ty:ty => $($field:ident).+ ; )* }
        ignored { $( $ignored:ident ),* $(,)? }
    ) => {
        /// Names of all implemented settings, in table order.
        pub const SETTING_NAMES: &[&str] = &[$( stringify!($name) ),*];

        /// PgBouncer settings that only tune PgBouncer internals or OS details:
        /// accepted so existing deployments start, recorded in `Config::ignored`, logged.
        pub const IGNORED_SETTINGS: &[&str] = &[$( stringify!($ignored) ),*];

        /// Parse `raw` for the setting `name` (lower case) and store it in `cfg`.
        pub fn apply_setting(cfg: &mut Config, name: &str, raw: &str) -> Result<(), SettingError> {
            match name {
                $( stringify!($name) => {
                    cfg.$($field).+ = <$ty as SettingValue>::parse_setting(raw)
                        .map_err(SettingError::BadValue)?;
                } )*
                $( stringify!($ignored) => {
                    cfg.ignored.insert(name.to_string(), raw.to_string());
                } )*
                _ if UNSUPPORTED_SETTINGS.contains(&name) => return Err(SettingError::Unsupported),
                _ => return Err(SettingError::Unknown),
            }
            Ok(())
        }

        /// `(name, value)` for every implemented setting, in table order.
        pub fn render_settings(cfg: &Config) -> Vec<(&'static str, String)> {
            vec![$( (stringify!($name), SettingValue::render(&cfg.$($field).+)) ),*]
        }

        /// The YAML file: the same setting names at top level, plus `databases`.
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileSettings {
            $( #[serde(default)] $name: Option<YamlSetting<$ty>>, )*
            $( #[serde(default)] $ignored: Option<YamlSetting<String>>, )*
            #[serde(default)]
            pub databases: BTreeMap<String, DatabaseConfig>,
        }

        impl FileSettings {
            /// Store every setting present in the file into `cfg`.
            pub fn apply_to(self, cfg: &mut Config) {
                $( if let Some(v) = self.$name { cfg.$($field).+ = v.0; } )*
                $( if let Some(v) = self.$ignored {
                    cfg.ignored.insert(stringify!($ignored).to_string(), v.0);
                } )*
                cfg.databases.extend(self.databases);
            }
        }
    };
}

settings_table! {
    settings {
        listen_addr: Vec<String> => listen.addrs;
        listen_port: u16 => listen.port;
        unix_socket_dir: String => listen.unix_socket_dir;
        cancel_peers: Vec<String> => listen.cancel_peers;
        so_reuseport: bool => listen.so_reuseport;

        auth_type: AuthType => auth.auth_type;
        auth_file: Option<PathBuf> => auth.auth_file;
        admin_users: Vec<String> => admin.admin_users;
        stats_users: Vec<String> => admin.stats_users;

        pool_mode: PoolMode => pool.pool_mode;
        default_pool_size: u32 => pool.default_pool_size;
        min_pool_size: u32 => pool.min_pool_size;
        reserve_pool_size: u32 => pool.reserve_pool_size;
        reserve_pool_timeout: Duration => pool.reserve_pool_timeout;
        max_db_connections: u32 => pool.max_db_connections;

        max_client_conn: u32 => limits.max_client_conn;
        max_user_connections: u32 => limits.max_user_connections;
        max_packet_size: u32 => limits.max_packet_size;

        server_reset_query: String => server.reset_query;
        server_reset_query_always: bool => server.reset_query_always;
        server_check_query: String => server.check_query;
        server_check_delay: Duration => server.check_delay;
        server_round_robin: bool => server.round_robin;

        ignore_startup_parameters: Vec<String> => params.ignore_startup_parameters;
        track_extra_parameters: Vec<String> => params.track_extra_parameters;
        application_name_add_host: bool => params.application_name_add_host;

        query_timeout: Duration => timeouts.query_timeout;
        query_wait_timeout: Duration => timeouts.query_wait_timeout;
        client_idle_timeout: Duration => timeouts.client_idle_timeout;
        client_login_timeout: Duration => timeouts.client_login_timeout;
        idle_transaction_timeout: Duration => timeouts.idle_transaction_timeout;
        server_idle_timeout: Duration => timeouts.server_idle_timeout;
        server_lifetime: Duration => timeouts.server_lifetime;
        server_connect_timeout: Duration => timeouts.server_connect_timeout;
        server_login_retry: Duration => timeouts.server_login_retry;
        shutdown_timeout: Duration => timeouts.shutdown_timeout;

        server_tls_sslmode: SslMode => server_tls.sslmode;
        server_tls_ca_file: Option<PathBuf> => server_tls.ca_file;
        server_tls_cert_file: Option<PathBuf> => server_tls.cert_file;
        server_tls_key_file: Option<PathBuf> => server_tls.key_file;
        client_tls_sslmode: SslMode => client_tls.sslmode;
        client_tls_ca_file: Option<PathBuf> => client_tls.ca_file;
        client_tls_cert_file: Option<PathBuf> => client_tls.cert_file;
        client_tls_key_file: Option<PathBuf> => client_tls.key_file;

        log_connections: bool => logging.log_connections;
        log_disconnections: bool => logging.log_disconnections;
        log_format: LogFormat => logging.log_format;
        stats_period: Duration => logging.stats_period;

        metrics_addr: Option<SocketAddr> => metrics.addr;
        worker_threads: u32 => runtime.worker_threads;
        scheduler: Scheduler => runtime.scheduler;
        idle_poll_time: IdlePoll => runtime.idle_poll_time;
        routing_rules: Vec<PathBuf> => routing.rule_files;
    }
    ignored {
        pkt_buf, sbuf_loopcnt, listen_backlog, tcp_defer_accept, tcp_socket_buffer,
        tcp_keepalive, tcp_keepcnt, tcp_keepidle, tcp_keepintvl, tcp_user_timeout,
        unix_socket_mode, unix_socket_group, dns_max_ttl, dns_nxdomain_ttl,
        dns_zone_check_period, log_pooler_errors, log_stats, verbose,
        disable_pqexec, suspend_timeout, cancel_wait_timeout, autodb_idle_timeout,
        server_fast_close, server_tls_protocols, server_tls_ciphers,
        client_tls_protocols, client_tls_ciphers, client_tls_ecdhcurve,
        client_tls_dheparams, syslog, syslog_ident, syslog_facility, logfile, pidfile,
    }
}

/// Settings read once at start: a reload or a console `SET` cannot change
/// them (SHOW CONFIG says `changeable` no).
pub const START_ONLY_SETTINGS: &[&str] = &[
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "so_reuseport",
    "max_client_conn",
    "client_tls_ca_file",
    "client_tls_cert_file",
    "client_tls_key_file",
    "log_format",
    "stats_period",
    "shutdown_timeout",
    "metrics_addr",
    "worker_threads",
    "scheduler",
    "idle_poll_time",
];

/// True unless the setting is read at start only.
pub fn is_changeable(name: &str) -> bool {
    !START_ONLY_SETTINGS.contains(&name)
}

/// Real PgBouncer settings that change behaviour pgrelay does not implement;
/// refused so a deployment does not silently lose the behaviour it relies on.
const UNSUPPORTED_SETTINGS: &[&str] = &[
    "auth_query",
    "auth_user",
    "auth_dbname",
    "auth_hba_file",
    "auth_ident_file",
    "user",
    "peer_id",
    "max_prepared_statements",
    "resolv_conf",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_only_settings_are_real_settings() {
        for name in START_ONLY_SETTINGS {
            assert!(SETTING_NAMES.contains(name), "{name}");
            assert!(!is_changeable(name));
        }
        assert!(is_changeable("default_pool_size"));
    }

    #[test]
    fn apply_and_render_round_trip_for_every_setting() {
        let defaults = Config::default();
        for (name, value) in render_settings(&defaults) {
            let mut cfg = Config::default();
            apply_setting(&mut cfg, name, &value)
                .unwrap_or_else(|e| panic!("{name} = {value:?}: {e:?}"));
            assert_eq!(cfg, defaults, "{name} did not round-trip through {value:?}");
        }
    }

    #[test]
    fn names_are_unique_and_sets_disjoint() {
        let mut all: Vec<&str> = SETTING_NAMES
            .iter()
            .chain(IGNORED_SETTINGS)
            .chain(UNSUPPORTED_SETTINGS)
            .copied()
            .collect();
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), total);
    }

    #[test]
    fn classifies_names() {
        let mut cfg = Config::default();
        assert_eq!(apply_setting(&mut cfg, "default_pool_size", "50"), Ok(()));
        assert_eq!(cfg.pool.default_pool_size, 50);
        assert_eq!(apply_setting(&mut cfg, "pkt_buf", "8192"), Ok(()));
        assert_eq!(cfg.ignored.get("pkt_buf").map(String::as_str), Some("8192"));
        assert_eq!(
            apply_setting(&mut cfg, "auth_query", "select 1"),
            Err(SettingError::Unsupported)
        );
        assert_eq!(
            apply_setting(&mut cfg, "default_pool_sise", "5"),
            Err(SettingError::Unknown)
        );
        assert!(matches!(
            apply_setting(&mut cfg, "listen_port", "70000"),
            Err(SettingError::BadValue(_))
        ));
    }
}
