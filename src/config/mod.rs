//! Configuration: typed settings loaded from built-in defaults (PgBouncer
//! 1.22's), a YAML file, and `PGBOUNCER_*` environment variables, in that
//! order of precedence. Every setting is documented in `src/config/README.md`.
//!
//! This is a leaf module: it depends on no other pgrelay module.

mod database;
mod env;
mod error;
mod file;
mod modes;
mod report;
mod sections;
mod settings;
mod validate;
mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use database::{
    parse_databases, DatabaseConfig, EffectivePool, ReplicasConfig, ResolvedDatabase,
    DEFAULT_SERVER_PORT, FALLBACK_DATABASE,
};
pub use env::{DATABASES_VAR, DATABASE_NAME_VAR, ENV_PREFIX, HOST_VAR, PORT_VAR};
pub use error::{ConfigError, Origin, ValidationError};
pub use modes::{AuthType, InvalidMode, LogFormat, PoolMode, Scheduler, SslMode};
pub use report::check_config_report;
pub use sections::{
    AdminConfig, AuthConfig, IdlePoll, LimitsConfig, ListenConfig, LoggingConfig, MetricsConfig,
    PoolDefaults, RoutingConfig, RuntimeConfig, ServerSessionConfig, StartupParamsConfig, Timeouts,
    TlsConfig, DEFAULT_MAX_PACKET_SIZE, DEFAULT_ROUTING_RULES,
};
pub use settings::{
    is_changeable, SettingError, IGNORED_SETTINGS, SETTING_NAMES, START_ONLY_SETTINGS,
};
pub use validate::ADMIN_DATABASE;
pub use value::{Secret, MASK};

/// Env var naming the YAML file when `--config` is not given.
pub const CONFIG_FILE_VAR: &str = "PGRELAY_CONFIG";

/// The whole merged configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: ListenConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub pool: PoolDefaults,
    pub limits: LimitsConfig,
    pub timeouts: Timeouts,
    pub server: ServerSessionConfig,
    pub params: StartupParamsConfig,
    pub server_tls: TlsConfig,
    pub client_tls: TlsConfig,
    pub logging: LoggingConfig,
    pub metrics: MetricsConfig,
    pub routing: RoutingConfig,
    pub runtime: RuntimeConfig,
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// Harmless PgBouncer settings that were set but are not implemented: name → raw value.
    pub ignored: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ListenConfig::default(),
            auth: AuthConfig::default(),
            admin: AdminConfig::default(),
            pool: PoolDefaults::default(),
            limits: LimitsConfig::default(),
            timeouts: Timeouts::default(),
            server: ServerSessionConfig::default(),
            params: StartupParamsConfig::default(),
            server_tls: TlsConfig::with_mode(SslMode::Prefer),
            client_tls: TlsConfig::with_mode(SslMode::Disable),
            logging: LoggingConfig::default(),
            metrics: MetricsConfig::default(),
            routing: RoutingConfig::default(),
            runtime: RuntimeConfig::default(),
            databases: BTreeMap::new(),
            ignored: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Defaults ← YAML file ← environment, then [`Config::validate`].
    /// The file is `file`, else the path in `PGRELAY_CONFIG`, else none.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let from_env = env
            .get(CONFIG_FILE_VAR)
            .filter(|p| !p.trim().is_empty())
            .map(PathBuf::from);
        let file_settings = match file.or(from_env.as_deref()) {
            Some(path) => Some(file::read_file(path)?),
            None => None,
        };
        Self::merge(file_settings, env)
    }

    /// Like [`Config::load`] with the YAML given as text (`origin` names it in errors).
    pub fn load_from_str(
        origin: &Path,
        yaml: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        Self::merge(Some(file::parse_yaml(origin, yaml)?), env)
    }

    fn merge(
        file_settings: Option<settings::FileSettings>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        if let Some(file_settings) = file_settings {
            file_settings.apply_to(&mut cfg);
        }
        env::apply_env(&mut cfg, env)?;
        cfg.normalize();
        cfg.validate()?;
        Ok(cfg)
    }

    /// PgBouncer's `*` listen address means "all addresses".
    fn normalize(&mut self) {
        for addr in &mut self.listen.addrs {
            if addr == "*" {
                *addr = "0.0.0.0".to_string();
            }
        }
        self.listen.addrs.dedup();
    }

    /// This configuration with one setting changed, as the console's `SET`
    /// asks: `raw` parsed as the configuration file would, then every rule
    /// checked again. Whether the setting may change while running is the
    /// caller's question ([`is_changeable`]).
    pub fn with_setting(&self, name: &str, raw: &str) -> Result<Config, SettingError> {
        let mut next = self.clone();
        settings::apply_setting(&mut next, name, raw)?;
        next.normalize();
        next.validate()
            .map_err(|e| SettingError::BadValue(e.to_string()))?;
        Ok(next)
    }

    /// Check cross-setting rules; the error lists every broken rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let found = validate::problems(self);
        if found.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(found))
        }
    }

    /// Where to connect for a requested database name, applying the `*` fallback.
    pub fn database(&self, requested: &str) -> Option<ResolvedDatabase> {
        database::resolve(&self.databases, &self.pool, requested)
    }

    /// Valid but questionable choices (e.g. ignored PgBouncer settings). `load`
    /// runs before logging is set up (`log_format` is a setting), so the caller
    /// logs these once its subscriber is installed.
    pub fn warnings(&self) -> Vec<String> {
        report::warnings(self)
    }

    /// Every setting = value, one per line, sorted, passwords masked.
    pub fn effective_settings(&self) -> String {
        report::effective_settings(self)
    }
}
