//! Cross-setting rules checked after all sources are merged.

use super::database::{DatabaseConfig, EffectivePool};
use super::error::ValidationError;
use super::modes::{AuthType, SslMode};
use super::Config;

/// The admin console's database name; a real database cannot use it.
pub const ADMIN_DATABASE: &str = "pgbouncer";

/// Every rule `cfg` breaks, in a stable order.
pub fn problems(cfg: &Config) -> Vec<ValidationError> {
    let mut out = Vec::new();
    check_listen(cfg, &mut out);
    check_auth(cfg, &mut out);
    check_tls(cfg, &mut out);
    check_pools(cfg, &mut out);
    out
}

fn check_listen(cfg: &Config, out: &mut Vec<ValidationError>) {
    if cfg.listen.addrs.is_empty() {
        out.push(ValidationError::NoListenAddr);
    }
    for peer in &cfg.listen.cancel_peers {
        if !is_host_port(peer) {
            out.push(ValidationError::BadCancelPeer(peer.clone()));
        }
    }
    if cfg.limits.max_client_conn == 0 {
        out.push(too_small("max_client_conn", 1));
    }
    // Smaller than a typical startup packet would lock everyone out.
    const MIN_PACKET: u32 = 1024;
    if cfg.limits.max_packet_size < MIN_PACKET {
        out.push(too_small("max_packet_size", MIN_PACKET));
    }
}

/// `host:port` or `[v6]:port`, the form `tokio::net::lookup_host` takes.
fn is_host_port(peer: &str) -> bool {
    match peer.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

fn check_auth(cfg: &Config, out: &mut Vec<ValidationError>) {
    let needs_file = cfg.auth.auth_type != AuthType::Trust;
    if needs_file && cfg.auth.auth_file.is_none() {
        out.push(ValidationError::AuthFileRequired(
            cfg.auth.auth_type.as_str(),
        ));
    }
}

fn check_tls(cfg: &Config, out: &mut Vec<ValidationError>) {
    let server = &cfg.server_tls;
    if matches!(server.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && server.ca_file.is_none()
    {
        out.push(ValidationError::TlsNeedsFile {
            setting: "server_tls_sslmode",
            mode: server.sslmode.as_str(),
            needs: "server_tls_ca_file",
        });
    }
    if server.cert_file.is_some() != server.key_file.is_some() {
        out.push(ValidationError::CertWithoutKey {
            cert: "server_tls_cert_file",
            key: "server_tls_key_file",
        });
    }

    let client = &cfg.client_tls;
    if client.sslmode != SslMode::Disable
        && (client.cert_file.is_none() || client.key_file.is_none())
    {
        out.push(ValidationError::TlsNeedsFile {
            setting: "client_tls_sslmode",
            mode: client.sslmode.as_str(),
            needs: "client_tls_cert_file and client_tls_key_file",
        });
    }
    if matches!(client.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && client.ca_file.is_none()
    {
        out.push(ValidationError::TlsNeedsFile {
            setting: "client_tls_sslmode",
            mode: client.sslmode.as_str(),
            needs: "client_tls_ca_file",
        });
    }
}

fn check_pools(cfg: &Config, out: &mut Vec<ValidationError>) {
    if cfg.databases.is_empty() {
        out.push(ValidationError::NoDatabases);
    }
    let global = EffectivePool::for_database(&DatabaseConfig::default(), &cfg.pool);
    check_pool("global", &global, out);
    for (name, db) in &cfg.databases {
        if name == ADMIN_DATABASE {
            out.push(ValidationError::ReservedDatabase(name.clone()));
        }
        if db.host.trim().is_empty() {
            out.push(ValidationError::EmptyHost(name.clone()));
        }
        if db.port == 0 {
            out.push(too_small(&format!("database {name:?}: port"), 1));
        }
        // Without overrides the global check already covers this entry.
        let overrides_sizes =
            db.pool_size.is_some() || db.min_pool_size.is_some() || db.max_db_connections.is_some();
        if overrides_sizes {
            let pool = EffectivePool::for_database(db, &cfg.pool);
            check_pool(&format!("database {name:?}"), &pool, out);
        }
    }
}

fn check_pool(scope: &str, pool: &EffectivePool, out: &mut Vec<ValidationError>) {
    if pool.pool_size == 0 {
        out.push(too_small(&format!("{scope}: pool size"), 1));
    }
    if pool.min_pool_size > pool.pool_size {
        out.push(ValidationError::MinAbovePoolSize {
            scope: scope.to_string(),
            min: pool.min_pool_size,
            size: pool.pool_size,
        });
    }
    if pool.max_db_connections != 0 && pool.min_pool_size > pool.max_db_connections {
        out.push(ValidationError::MinAboveMaxDb {
            scope: scope.to_string(),
            min: pool.min_pool_size,
            max: pool.max_db_connections,
        });
    }
}

fn too_small(setting: &str, min: u32) -> ValidationError {
    ValidationError::TooSmall {
        setting: setting.to_string(),
        min,
    }
}
