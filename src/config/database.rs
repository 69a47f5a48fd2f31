//! Database entries: the YAML `databases:` map, PgBouncer's `[databases]`
//! syntax (`PGBOUNCER_DATABASES`), and lookup of a requested name.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::modes::PoolMode;
use super::sections::PoolDefaults;
use super::value::{is_secret_name, optional_setting, setting, Secret, SettingValue, MASK};

/// PgBouncer's fallback entry: serves any database name not listed.
pub const FALLBACK_DATABASE: &str = "*";

/// Default server port of a database entry.
pub const DEFAULT_SERVER_PORT: u16 = 5432;

/// One `databases:` entry: where the primary is, optional pool overrides, and
/// optionally the replicas that take its reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(deserialize_with = "setting")]
    pub host: String,
    #[serde(deserialize_with = "setting")]
    pub port: u16,
    /// Server database name; `None` means the name the client asked for.
    #[serde(deserialize_with = "optional_setting")]
    pub dbname: Option<String>,
    /// Forced server user; `None` means the client's user.
    #[serde(deserialize_with = "optional_setting")]
    pub user: Option<String>,
    pub password: Option<Secret>,
    #[serde(deserialize_with = "optional_setting")]
    pub pool_size: Option<u32>,
    #[serde(deserialize_with = "optional_setting")]
    pub min_pool_size: Option<u32>,
    /// PgBouncer 1.22 spells this `reserve_pool` in `[databases]`; both are accepted.
    #[serde(deserialize_with = "optional_setting", alias = "reserve_pool")]
    pub reserve_pool_size: Option<u32>,
    #[serde(deserialize_with = "optional_setting")]
    pub pool_mode: Option<PoolMode>,
    #[serde(deserialize_with = "optional_setting")]
    pub max_db_connections: Option<u32>,
    /// DNS server `host:port` for `host` (re-resolved to follow a failover)
    /// and the default for replica groups; default: the system resolver.
    #[serde(deserialize_with = "optional_setting")]
    pub nameserver: Option<String>,
    /// Replicas for reads; without them every statement goes to `host`.
    /// Also the default group: reads no rule sends to a named group go here.
    pub replicas: Option<ReplicasConfig>,
    /// Named replica groups (`group:<name>` targets in rule files), each with
    /// its own discovery, health checks and balancer.
    pub replica_groups: BTreeMap<String, ReplicasConfig>,
}

/// Where a database's replicas are and how reads are spread over them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicasConfig {
    /// Static replicas, `host` or `host:port`.
    pub hosts: Vec<String>,
    /// A name whose A/AAAA records are the replicas (each at `port`), as a
    /// Kubernetes headless Service gives.
    #[serde(deserialize_with = "optional_setting")]
    pub dns: Option<String>,
    /// An SRV name (`_postgresql._tcp.<name>`): targets and ports.
    #[serde(deserialize_with = "optional_setting")]
    pub srv: Option<String>,
    /// Port for `hosts` without one and for `dns`; default: the database's port.
    #[serde(deserialize_with = "optional_setting")]
    pub port: Option<u16>,
    /// DNS server `host:port` to ask; default: the system resolver.
    #[serde(deserialize_with = "optional_setting")]
    pub nameserver: Option<String>,
    /// `p2c_ewma` (default), `round_robin`, `random`, `least_outstanding`.
    #[serde(deserialize_with = "setting")]
    pub balance: String,
    /// When no replica can take a read: `primary` (default) or `error`.
    #[serde(deserialize_with = "setting")]
    pub fallback: String,
    /// Re-resolution interval bounds around the records' TTL.
    #[serde(deserialize_with = "setting")]
    pub min_ttl: std::time::Duration,
    #[serde(deserialize_with = "setting")]
    pub max_ttl: std::time::Duration,
    /// How often each replica (and the primary, for its WAL position) is probed.
    #[serde(deserialize_with = "setting")]
    pub health_check_interval: std::time::Duration,
    /// A replica whose replay is further behind takes no reads; 0 = no limit.
    #[serde(deserialize_with = "setting")]
    pub max_lag: std::time::Duration,
    /// The same limit in bytes of WAL; 0 = no limit.
    #[serde(deserialize_with = "setting")]
    pub max_lag_bytes: u64,
    /// After a client's write: `off`, `window` (its reads go to the primary
    /// for `read_your_writes_window`) or `lsn` (only to replicas that have
    /// replayed past its commit, else the primary).
    #[serde(deserialize_with = "setting")]
    pub read_your_writes: String,
    #[serde(deserialize_with = "setting")]
    pub read_your_writes_window: std::time::Duration,
}

impl Default for ReplicasConfig {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            dns: None,
            srv: None,
            port: None,
            nameserver: None,
            balance: "p2c_ewma".to_string(),
            fallback: "primary".to_string(),
            min_ttl: std::time::Duration::from_secs(1),
            max_ttl: std::time::Duration::from_secs(300),
            health_check_interval: std::time::Duration::from_secs(1),
            max_lag: std::time::Duration::from_secs(10),
            max_lag_bytes: 0,
            read_your_writes: "off".to_string(),
            read_your_writes_window: std::time::Duration::from_secs(1),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: DEFAULT_SERVER_PORT,
            dbname: None,
            user: None,
            password: None,
            pool_size: None,
            min_pool_size: None,
            reserve_pool_size: None,
            pool_mode: None,
            max_db_connections: None,
            nameserver: None,
            replicas: None,
            replica_groups: BTreeMap::new(),
        }
    }
}

/// PgBouncer `[databases]` options pgrelay does not implement: rejected with a
/// clear message rather than silently changing behaviour.
const UNSUPPORTED_OPTIONS: &[&str] = &[
    "auth_user",
    "auth_query",
    "auth_dbname",
    "connect_query",
    "client_encoding",
    "datestyle",
    "timezone",
    "application_name",
];

impl DatabaseConfig {
    /// Set one libpq-style option of a `[databases]` entry.
    pub fn apply_option(&mut self, key: &str, raw: &str) -> Result<(), String> {
        // An empty value means "not set", as in libpq.
        fn opt<T: SettingValue>(raw: &str) -> Result<Option<T>, String> {
            if raw.trim().is_empty() {
                return Ok(None);
            }
            T::parse_setting(raw).map(Some)
        }
        let parsed = match key {
            "host" => String::parse_setting(raw).map(|v| self.host = v),
            "port" => u16::parse_setting(raw).map(|v| self.port = v),
            "dbname" => opt(raw).map(|v| self.dbname = v),
            "user" => opt(raw).map(|v| self.user = v),
            "password" => {
                self.password = Some(Secret::new(raw));
                Ok(())
            }
            "pool_size" => opt(raw).map(|v| self.pool_size = v),
            "min_pool_size" => opt(raw).map(|v| self.min_pool_size = v),
            "reserve_pool" | "reserve_pool_size" => opt(raw).map(|v| self.reserve_pool_size = v),
            "pool_mode" => opt(raw).map(|v| self.pool_mode = v),
            "max_db_connections" => opt(raw).map(|v| self.max_db_connections = v),
            // pgrelay's own: `replicas=host1,host2:5433`, `replicas_dns=name`, `replicas_srv=name`.
            "replicas" => Vec::<String>::parse_setting(raw)
                .map(|v| self.replicas.get_or_insert_with(Default::default).hosts = v),
            "replicas_dns" => {
                opt(raw).map(|v| self.replicas.get_or_insert_with(Default::default).dns = v)
            }
            "replicas_srv" => {
                opt(raw).map(|v| self.replicas.get_or_insert_with(Default::default).srv = v)
            }
            _ if UNSUPPORTED_OPTIONS.contains(&key) => {
                return Err(format!("option {key} is not supported by pgrelay"))
            }
            _ => return Err(format!("unknown option {key:?}")),
        };
        parsed.map_err(|reason| {
            let shown = if is_secret_name(key) { MASK } else { raw };
            format!("invalid {key} value {shown:?}: {reason}")
        })
    }

    /// This entry as a `[databases]` connection string, password masked.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("host={}", self.host), format!("port={}", self.port)];
        let mut push = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                parts.push(format!("{key}={value}"));
            }
        };
        push("dbname", self.dbname.clone());
        push("user", self.user.clone());
        push("password", self.password.as_ref().map(|_| MASK.to_string()));
        push("pool_size", self.pool_size.map(|v| v.to_string()));
        push("min_pool_size", self.min_pool_size.map(|v| v.to_string()));
        push(
            "reserve_pool_size",
            self.reserve_pool_size.map(|v| v.to_string()),
        );
        push("pool_mode", self.pool_mode.map(|v| v.to_string()));
        push(
            "max_db_connections",
            self.max_db_connections.map(|v| v.to_string()),
        );
        if let Some(r) = &self.replicas {
            if !r.hosts.is_empty() {
                parts.push(format!("replicas={}", r.hosts.join(",")));
            }
            if let Some(d) = &r.dns {
                parts.push(format!("replicas_dns={d}"));
            }
            if let Some(s) = &r.srv {
                parts.push(format!("replicas_srv={s}"));
            }
        }
        if !self.replica_groups.is_empty() {
            let names: Vec<&str> = self.replica_groups.keys().map(String::as_str).collect();
            parts.push(format!("replica_groups={}", names.join(",")));
        }
        parts.join(" ")
    }
}

/// Pool settings after applying a database's overrides to the global defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectivePool {
    pub pool_mode: PoolMode,
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    /// 0 = unlimited.
    pub max_db_connections: u32,
}

impl EffectivePool {
    pub fn for_database(db: &DatabaseConfig, defaults: &PoolDefaults) -> Self {
        Self {
            pool_mode: db.pool_mode.unwrap_or(defaults.pool_mode),
            pool_size: db.pool_size.unwrap_or(defaults.default_pool_size),
            min_pool_size: db.min_pool_size.unwrap_or(defaults.min_pool_size),
            reserve_pool_size: db.reserve_pool_size.unwrap_or(defaults.reserve_pool_size),
            max_db_connections: db.max_db_connections.unwrap_or(defaults.max_db_connections),
        }
    }
}

/// Everything the pooler needs to connect for one requested database name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDatabase {
    /// The name the client asked for.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The database to open on the server.
    pub dbname: String,
    pub forced_user: Option<String>,
    pub password: Option<Secret>,
    pub pool: EffectivePool,
    /// Served by the `*` entry rather than an entry of its own.
    pub via_fallback: bool,
    pub nameserver: Option<String>,
    pub replicas: Option<ReplicasConfig>,
    pub replica_groups: BTreeMap<String, ReplicasConfig>,
}

/// Look up `requested`, falling back to the `*` entry.
pub fn resolve(
    databases: &BTreeMap<String, DatabaseConfig>,
    defaults: &PoolDefaults,
    requested: &str,
) -> Option<ResolvedDatabase> {
    let (db, via_fallback) = match databases.get(requested) {
        Some(db) => (db, false),
        None => (databases.get(FALLBACK_DATABASE)?, true),
    };
    Some(ResolvedDatabase {
        name: requested.to_string(),
        host: db.host.clone(),
        port: db.port,
        dbname: db.dbname.clone().unwrap_or_else(|| requested.to_string()),
        forced_user: db.user.clone(),
        password: db.password.clone(),
        pool: EffectivePool::for_database(db, defaults),
        via_fallback,
        nameserver: db.nameserver.clone(),
        replicas: db.replicas.clone(),
        replica_groups: db.replica_groups.clone(),
    })
}

/// A `[databases]` parse failure; `database` is empty when the name itself is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    pub database: String,
    pub reason: String,
}

/// Parse PgBouncer `[databases]` text: `name = key=value ...` entries separated
/// by newlines or `;` (outside quotes). Lines starting with `#` are comments.
pub fn parse_databases(text: &str) -> Result<Vec<(String, DatabaseConfig)>, EntryError> {
    let mut entries = Vec::new();
    for entry in split_entries(text) {
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let (name, conninfo) = entry.split_once('=').ok_or_else(|| EntryError {
            database: String::new(),
            reason: "expected `name = host=... dbname=...`".to_string(),
        })?;
        let name = name.trim().to_string();
        let fail = |reason: String| EntryError {
            database: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(fail("database name is empty".to_string()));
        }
        let mut db = DatabaseConfig::default();
        for (key, value) in parse_conninfo(conninfo).map_err(fail)? {
            db.apply_option(&key, &value).map_err(fail)?;
        }
        entries.push((name, db));
    }
    Ok(entries)
}

/// Split on `;` and newlines that are not inside single quotes.
fn split_entries(text: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '\'' => in_quotes = !in_quotes,
            ';' | '\n' if !in_quotes => {
                entries.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    entries.push(current);
    entries
}

/// libpq `key=value` pairs; values may be single-quoted, `\` escapes the next character.
fn parse_conninfo(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while chars.peek().is_some() {
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("expected `=` after option {key:?}"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        let mut closed = !quoted;
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                c if c.is_whitespace() && !quoted => break,
                c => value.push(c),
            }
        }
        if !closed {
            // Do not echo the value: it may be a password.
            return Err(format!("unterminated quote in option {key:?}"));
        }
        if key.is_empty() {
            return Err("option name missing before `=`".to_string());
        }
        pairs.push((key.to_ascii_lowercase(), value));
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_with_quotes_and_separators() {
        let text = "app = host=db.internal port=5433 dbname=appdb user=svc password='p;a ss\\'w' pool_size=40 pool_mode=transaction\n\
                    # comment\n\
                    * = host=fallback ; reports=host=r reserve_pool=3";
        let dbs = parse_databases(text).unwrap();
        let names: Vec<&str> = dbs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["app", "*", "reports"]);
        let app = &dbs[0].1;
        assert_eq!(app.host, "db.internal");
        assert_eq!(app.port, 5433);
        assert_eq!(app.dbname.as_deref(), Some("appdb"));
        assert_eq!(app.user.as_deref(), Some("svc"));
        assert_eq!(app.password.as_ref().unwrap().expose(), "p;a ss'w");
        assert_eq!(app.pool_size, Some(40));
        assert_eq!(app.pool_mode, Some(PoolMode::Transaction));
        assert_eq!(dbs[1].1.host, "fallback");
        assert_eq!(dbs[1].1.port, DEFAULT_SERVER_PORT);
        assert_eq!(dbs[2].1.reserve_pool_size, Some(3));

        let (_, blank) = parse_databases("b = host=h user='' dbname=")
            .unwrap()
            .remove(0);
        assert_eq!((blank.user, blank.dbname), (None, None));
    }

    #[test]
    fn rejects_bad_entries_naming_the_database() {
        let err = parse_databases("app = host=x port=abc").unwrap_err();
        assert_eq!(err.database, "app");
        assert!(
            err.reason.contains("port") && err.reason.contains("abc"),
            "{err:?}"
        );

        let err = parse_databases("app = host=x auth_user=pgb").unwrap_err();
        assert!(err.reason.contains("not supported"), "{err:?}");

        let err = parse_databases("app = host=x colour=blue").unwrap_err();
        assert!(err.reason.contains("colour"), "{err:?}");

        let err = parse_databases("app = host=x password='secret").unwrap_err();
        assert!(!err.reason.contains("secret"), "{err:?}");

        assert!(parse_databases("just-a-name").is_err());
    }

    #[test]
    fn fallback_entry_serves_unknown_names_with_their_own_dbname() {
        let mut dbs = BTreeMap::new();
        dbs.insert(
            "*".to_string(),
            DatabaseConfig {
                host: "pg".into(),
                ..DatabaseConfig::default()
            },
        );
        dbs.insert(
            "app".to_string(),
            DatabaseConfig {
                host: "pg-app".into(),
                dbname: Some("real_app".into()),
                pool_size: Some(7),
                ..DatabaseConfig::default()
            },
        );
        let defaults = PoolDefaults::default();

        let any = resolve(&dbs, &defaults, "shop").unwrap();
        assert_eq!((any.host.as_str(), any.dbname.as_str()), ("pg", "shop"));
        assert!(any.via_fallback);
        assert_eq!(any.pool.pool_size, defaults.default_pool_size);

        let app = resolve(&dbs, &defaults, "app").unwrap();
        assert_eq!(
            (app.host.as_str(), app.dbname.as_str()),
            ("pg-app", "real_app")
        );
        assert!(!app.via_fallback);
        assert_eq!(app.pool.pool_size, 7);

        dbs.remove("*");
        assert!(resolve(&dbs, &defaults, "shop").is_none());
    }

    #[test]
    fn describe_masks_the_password() {
        let (_, db) = parse_databases("a = host=h password=topsecret")
            .unwrap()
            .remove(0);
        let shown = db.describe();
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("password=****"), "{shown}");
    }
}
