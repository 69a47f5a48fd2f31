//! Errors from loading and validating configuration. Each names where the bad
//! input came from (file:line:column, env var, database entry) and never
//! contains a secret value.

use std::fmt;
use std::path::PathBuf;

/// Where a database entry or setting was written, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    EnvVar(String),
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::EnvVar(name) => write!(f, "environment variable {name}"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}:{line}:{column}: {message}", path.display())]
    Yaml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// YAML error without a position (e.g. empty document problems).
    #[error("{}: {message}", path.display())]
    YamlNoLocation { path: PathBuf, message: String },

    #[error(
        "unknown environment variable {var}: {setting:?} is not a PgBouncer or pgrelay setting"
    )]
    UnknownEnvVar { var: String, setting: String },

    #[error("{origin}: PgBouncer setting {setting} is not supported by pgrelay")]
    UnsupportedSetting { origin: Origin, setting: String },

    /// `value` is already masked when the setting is a secret.
    #[error("environment variable {var}: invalid value {value:?}: {reason}")]
    BadEnvValue {
        var: String,
        value: String,
        reason: String,
    },

    #[error("{origin}: database {database:?}: {reason}")]
    BadDatabase {
        origin: Origin,
        database: String,
        reason: String,
    },

    #[error("environment variable {missing} is required when {because} is set")]
    MissingEnv {
        missing: &'static str,
        because: &'static str,
    },

    #[error("invalid configuration:\n{}", list(.0))]
    Invalid(Vec<ValidationError>),
}

impl ConfigError {
    /// SQLSTATE for the (rare) case a config problem reaches a client: config_file_error.
    pub fn sqlstate(&self) -> &'static str {
        "F0000"
    }
}

fn list(problems: &[ValidationError]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    lines.join("\n")
}

/// One broken rule found by [`super::Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error(
        "no database configured; declare one of: a `databases:` map in the YAML file \
         (`--config` / PGRELAY_CONFIG), PGBOUNCER_DATABASES=\"name = host=... port=... dbname=...\", \
         or PGBOUNCER_DATABASE (default \"*\") with POSTGRESQL_HOST and POSTGRESQL_PORT"
    )]
    NoDatabases,

    #[error("{scope}: min_pool_size ({min}) is larger than the pool size ({size})")]
    MinAbovePoolSize { scope: String, min: u32, size: u32 },

    #[error("{scope}: min_pool_size ({min}) is larger than max_db_connections ({max})")]
    MinAboveMaxDb { scope: String, min: u32, max: u32 },

    #[error("{setting} must be at least {min}")]
    TooSmall { setting: String, min: u32 },

    #[error("{setting} = {mode} needs {needs}")]
    TlsNeedsFile {
        setting: &'static str,
        mode: &'static str,
        needs: &'static str,
    },

    #[error("{cert} and {key} must be set together")]
    CertWithoutKey {
        cert: &'static str,
        key: &'static str,
    },

    #[error("auth_type = {0} needs auth_file (pgrelay has no auth_query)")]
    AuthFileRequired(&'static str),

    #[error("listen_addr is empty; pgrelay only listens on TCP")]
    NoListenAddr,

    #[error("cancel_peers entry {0:?} is not host:port")]
    BadCancelPeer(String),

    #[error("database {0:?}: host is empty")]
    EmptyHost(String),

    #[error("database name {0:?} is reserved for the admin console")]
    ReservedDatabase(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_every_problem() {
        let err = ConfigError::Invalid(vec![
            ValidationError::NoListenAddr,
            ValidationError::EmptyHost("app".into()),
        ]);
        let text = err.to_string();
        assert!(text.contains("listen_addr is empty"), "{text}");
        assert!(text.contains("\"app\": host is empty"), "{text}");
        assert_eq!(err.sqlstate(), "F0000");
    }
}
