//! The PgBouncer-image deployment pgrelay must serve unchanged.

/// Its environment, verbatim (it names no database).
pub const DEPLOYMENT_ENV: &[(&str, &str)] = &[
    ("PGBOUNCER_ADMIN_USERS", "postgres"),
    ("PGBOUNCER_AUTH_FILE", "/etc/pgbouncer/userlist.txt"),
    ("PGBOUNCER_AUTH_TYPE", "plain"),
    ("PGBOUNCER_DEFAULT_POOL_SIZE", "50"),
    ("PGBOUNCER_IGNORE_STARTUP_PARAMETERS", "extra_float_digits"),
    ("PGBOUNCER_LISTEN_PORT", "6432"),
    ("PGBOUNCER_MAX_CLIENT_CONN", "1000"),
    ("PGBOUNCER_MAX_DB_CONNECTIONS", "100"),
    ("PGBOUNCER_MIN_POOL_SIZE", "5"),
    ("PGBOUNCER_POOL_MODE", "session"),
    ("PGBOUNCER_RESERVE_POOL_SIZE", "5"),
    ("PGBOUNCER_STATS_USERS", "postgres"),
    ("SERVER_TLS_SSLMODE", "require"),
];
