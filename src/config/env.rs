//! Environment variables in the PgBouncer container-image style:
//! `PGBOUNCER_<SETTING>`, unprefixed `SERVER_TLS_SSLMODE` / `CLIENT_TLS_SSLMODE`,
//! `PGBOUNCER_DATABASES`, and the `PGBOUNCER_DATABASE` + `POSTGRESQL_HOST` +
//! `POSTGRESQL_PORT` shorthand. Reads only the map it is given.

use std::collections::BTreeMap;

use super::database::{parse_databases, DatabaseConfig, FALLBACK_DATABASE};
use super::error::{ConfigError, Origin};
use super::settings::{apply_setting, SettingError};
use super::value::{is_secret_name, SettingValue, MASK};
use super::Config;

pub const ENV_PREFIX: &str = "PGBOUNCER_";
pub const DATABASES_VAR: &str = "PGBOUNCER_DATABASES";
pub const DATABASE_NAME_VAR: &str = "PGBOUNCER_DATABASE";
pub const HOST_VAR: &str = "POSTGRESQL_HOST";
pub const PORT_VAR: &str = "POSTGRESQL_PORT";

/// Accepted without the prefix, as the PgBouncer images do.
const UNPREFIXED: &[&str] = &["SERVER_TLS_SSLMODE", "CLIENT_TLS_SSLMODE"];

/// Apply every recognised variable in `env` to `cfg`.
pub fn apply_env(cfg: &mut Config, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    // Unprefixed first, so the PGBOUNCER_ form wins when both are set.
    for var in UNPREFIXED {
        if let Some(value) = env.get(*var) {
            apply_var(cfg, var, &var.to_ascii_lowercase(), value)?;
        }
    }
    let prefixed = env
        .range(ENV_PREFIX.to_string()..)
        .take_while(|(var, _)| var.starts_with(ENV_PREFIX));
    for (var, value) in prefixed {
        if var == DATABASES_VAR || var == DATABASE_NAME_VAR {
            continue;
        }
        if is_service_link(var, value) {
            tracing::debug!(var = %var, "skipping Kubernetes/Docker service-link variable");
            continue;
        }
        let name = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        apply_var(cfg, var, &name, value)?;
    }
    apply_database_vars(cfg, env)
}

fn apply_var(cfg: &mut Config, var: &str, name: &str, value: &str) -> Result<(), ConfigError> {
    apply_setting(cfg, name, value).map_err(|err| match err {
        SettingError::Unknown => ConfigError::UnknownEnvVar {
            var: var.to_string(),
            setting: name.to_string(),
        },
        SettingError::Unsupported => ConfigError::UnsupportedSetting {
            origin: Origin::EnvVar(var.to_string()),
            setting: name.to_string(),
        },
        SettingError::BadValue(reason) => bad_value(var, name, value, reason),
    })
}

fn bad_value(var: &str, name: &str, value: &str, reason: String) -> ConfigError {
    let value = if is_secret_name(name) { MASK } else { value };
    ConfigError::BadEnvValue {
        var: var.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// Kubernetes injects `<SERVICE>_PORT=tcp://ip:port`, `<SERVICE>_SERVICE_HOST`,
/// `<SERVICE>_PORT_6432_TCP...` for every service in the namespace (Docker links
/// do the same). A Service named `pgbouncer` is likely in a drop-in deployment,
/// and refusing to start because of it would break the drop-in promise.
fn is_service_link(var: &str, value: &str) -> bool {
    let rest = &var[ENV_PREFIX.len()..];
    if rest == "SERVICE_HOST" || rest.starts_with("SERVICE_PORT") {
        return true;
    }
    let is_url = ["tcp://", "udp://", "sctp://"]
        .iter()
        .any(|scheme| value.starts_with(scheme));
    match rest.strip_prefix("PORT") {
        Some("") => is_url,
        Some(tail) => {
            let mut parts = tail.trim_start_matches('_').split('_');
            let port_ok = parts
                .next()
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            let proto_ok = parts
                .next()
                .is_some_and(|p| matches!(p, "TCP" | "UDP" | "SCTP"));
            port_ok && proto_ok && tail.starts_with('_')
        }
        None => false,
    }
}

fn apply_database_vars(
    cfg: &mut Config,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    if let Some(text) = env.get(DATABASES_VAR) {
        let entries = parse_databases(text).map_err(|e| ConfigError::BadDatabase {
            origin: Origin::EnvVar(DATABASES_VAR.to_string()),
            database: e.database,
            reason: e.reason,
        })?;
        cfg.databases.extend(entries);
    }

    let name = env.get(DATABASE_NAME_VAR);
    let Some(host) = env.get(HOST_VAR) else {
        if name.is_some() {
            return Err(ConfigError::MissingEnv {
                missing: HOST_VAR,
                because: DATABASE_NAME_VAR,
            });
        }
        return Ok(());
    };
    let port = match env.get(PORT_VAR) {
        Some(raw) => parse_port(raw).map_err(|reason| bad_value(PORT_VAR, "port", raw, reason))?,
        None => DatabaseConfig::default().port,
    };
    let name = name
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .unwrap_or(FALLBACK_DATABASE);
    cfg.databases.insert(
        name.to_string(),
        DatabaseConfig {
            host: host.trim().to_string(),
            port,
            ..DatabaseConfig::default()
        },
    );
    Ok(())
}

/// A port number, or a service-link URL `tcp://ip:port` (Kubernetes sets
/// `POSTGRESQL_PORT` that way for a Service named `postgresql`).
fn parse_port(raw: &str) -> Result<u16, String> {
    let raw = raw.trim();
    let port = match raw.strip_prefix("tcp://") {
        Some(url) => url.rsplit_once(':').map_or("", |(_, p)| p),
        None => raw,
    };
    u16::parse_setting(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn recognises_service_links_only_in_their_shapes() {
        assert!(is_service_link("PGBOUNCER_PORT", "tcp://10.0.0.3:6432"));
        assert!(is_service_link("PGBOUNCER_SERVICE_HOST", "10.0.0.3"));
        assert!(is_service_link("PGBOUNCER_SERVICE_PORT_PGBOUNCER", "6432"));
        assert!(is_service_link("PGBOUNCER_PORT_6432_TCP_ADDR", "10.0.0.3"));
        assert!(is_service_link(
            "PGBOUNCER_PORT_6432_TCP",
            "tcp://10.0.0.3:6432"
        ));
        assert!(!is_service_link("PGBOUNCER_PORT", "6432"));
        assert!(!is_service_link("PGBOUNCER_PORTS", "tcp://x:1"));
        assert!(!is_service_link("PGBOUNCER_POOL_MODE", "session"));
    }

    #[test]
    fn service_links_do_not_fail_the_load() {
        let mut cfg = Config::default();
        let vars = env(&[
            ("PGBOUNCER_PORT", "tcp://10.0.0.3:6432"),
            ("PGBOUNCER_PORT_6432_TCP_PROTO", "tcp"),
            ("PGBOUNCER_SERVICE_HOST", "10.0.0.3"),
        ]);
        apply_env(&mut cfg, &vars).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn shorthand_builds_a_fallback_entry() {
        let mut cfg = Config::default();
        let vars = env(&[
            ("POSTGRESQL_HOST", "pg"),
            ("POSTGRESQL_PORT", "tcp://10.1.2.3:6543"),
        ]);
        apply_env(&mut cfg, &vars).unwrap();
        let db = &cfg.databases["*"];
        assert_eq!((db.host.as_str(), db.port), ("pg", 6543));
    }

    #[test]
    fn shorthand_name_without_host_is_an_error() {
        let mut cfg = Config::default();
        let err = apply_env(&mut cfg, &env(&[("PGBOUNCER_DATABASE", "app")])).unwrap_err();
        assert!(err.to_string().contains("POSTGRESQL_HOST"), "{err}");
    }

    #[test]
    fn prefixed_sslmode_wins_over_unprefixed() {
        let mut cfg = Config::default();
        let vars = env(&[
            ("SERVER_TLS_SSLMODE", "require"),
            ("PGBOUNCER_SERVER_TLS_SSLMODE", "disable"),
            ("CLIENT_TLS_SSLMODE", "allow"),
        ]);
        apply_env(&mut cfg, &vars).unwrap();
        assert_eq!(cfg.server_tls.sslmode, crate::config::SslMode::Disable);
        assert_eq!(cfg.client_tls.sslmode, crate::config::SslMode::Allow);
    }
}
