//! End-to-end config loading: a real PgBouncer-image environment, YAML files on
//! disk, precedence, masking and validation errors.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgrelay::config::{
    check_config_report, AuthType, Config, ConfigError, PoolMode, SslMode, ValidationError,
};

use common::deployment::DEPLOYMENT_ENV as DEPLOYMENT;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn deployment_with(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut vars = env(DEPLOYMENT);
    vars.extend(env(extra));
    vars
}

fn yaml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

const APP_YAML: &str = "\
databases:
  app:
    host: pg-primary.internal
    port: 5433
    dbname: app_production
    user: app_svc
    password: s3cr3t-pw
    pool_size: 30
    pool_mode: transaction
";

#[test]
fn deployment_env_plus_yaml_database_parses_to_expected_values() {
    let file = yaml_file(APP_YAML);
    let cfg = Config::load(Some(file.path()), &env(DEPLOYMENT)).unwrap();

    assert_eq!(cfg.admin.admin_users, ["postgres"]);
    assert_eq!(cfg.admin.stats_users, ["postgres"]);
    assert_eq!(cfg.auth.auth_type, AuthType::Plain);
    assert_eq!(
        cfg.auth.auth_file.as_deref(),
        Some(Path::new("/etc/pgbouncer/userlist.txt"))
    );
    assert_eq!(cfg.pool.default_pool_size, 50);
    assert_eq!(cfg.pool.min_pool_size, 5);
    assert_eq!(cfg.pool.reserve_pool_size, 5);
    assert_eq!(cfg.pool.max_db_connections, 100);
    assert_eq!(cfg.pool.pool_mode, PoolMode::Session);
    assert_eq!(cfg.params.ignore_startup_parameters, ["extra_float_digits"]);
    assert_eq!(cfg.listen.port, 6432);
    assert_eq!(cfg.listen.addrs, ["0.0.0.0"]);
    assert_eq!(cfg.limits.max_client_conn, 1000);
    assert_eq!(cfg.server_tls.sslmode, SslMode::Require);
    assert_eq!(cfg.client_tls.sslmode, SslMode::Disable);
    // Untouched settings keep PgBouncer's defaults.
    assert_eq!(cfg.timeouts.query_wait_timeout, Duration::from_secs(120));
    assert_eq!(cfg.timeouts.server_lifetime, Duration::from_secs(3600));
    assert_eq!(cfg.server.reset_query, "DISCARD ALL");

    let app = cfg.database("app").unwrap();
    assert_eq!(app.host, "pg-primary.internal");
    assert_eq!(app.port, 5433);
    assert_eq!(app.dbname, "app_production");
    assert_eq!(app.forced_user.as_deref(), Some("app_svc"));
    assert_eq!(app.password.unwrap().expose(), "s3cr3t-pw");
    assert_eq!(app.pool.pool_size, 30);
    assert_eq!(app.pool.pool_mode, PoolMode::Transaction);
    // Not overridden: from the env defaults.
    assert_eq!(app.pool.min_pool_size, 5);
    assert_eq!(app.pool.max_db_connections, 100);
    assert!(cfg.database("other").is_none());
}

#[test]
fn deployment_env_alone_is_rejected_with_the_three_ways() {
    let err = Config::load(None, &env(DEPLOYMENT)).unwrap_err();
    let ConfigError::Invalid(problems) = &err else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(problems, &[ValidationError::NoDatabases]);
    let text = err.to_string();
    for way in ["databases:", "PGBOUNCER_DATABASES", "POSTGRESQL_HOST"] {
        assert!(text.contains(way), "{text}");
    }
}

#[test]
fn deployment_env_with_shorthand_serves_any_database() {
    let vars = deployment_with(&[("POSTGRESQL_HOST", "postgres"), ("POSTGRESQL_PORT", "5432")]);
    let cfg = Config::load(None, &vars).unwrap();
    let db = cfg.database("whatever").unwrap();
    assert_eq!((db.host.as_str(), db.port), ("postgres", 5432));
    assert_eq!(db.dbname, "whatever");
    assert!(db.via_fallback);
    assert_eq!(db.pool.pool_size, 50);
}

#[test]
fn pgbouncer_databases_env_with_quotes_and_fallback() {
    let vars = deployment_with(&[(
        "PGBOUNCER_DATABASES",
        "billing = host=pg-b dbname=billing_db password='a b;c' pool_size=12; * = host=pg-any port=6000",
    )]);
    let cfg = Config::load(None, &vars).unwrap();
    let billing = cfg.database("billing").unwrap();
    assert_eq!(billing.dbname, "billing_db");
    assert_eq!(billing.password.unwrap().expose(), "a b;c");
    assert_eq!(billing.pool.pool_size, 12);
    let any = cfg.database("reports").unwrap();
    assert_eq!((any.host.as_str(), any.port), ("pg-any", 6000));
    assert_eq!(any.dbname, "reports");
}

#[test]
fn precedence_is_env_over_file_over_default() {
    let file = yaml_file(
        "default_pool_size: 33\nquery_wait_timeout: 500ms\nserver_idle_timeout: 2m\n\
         databases:\n  app:\n    host: from-file\n",
    );
    let vars = env(&[
        ("PGBOUNCER_DEFAULT_POOL_SIZE", "44"),
        ("PGBOUNCER_AUTH_TYPE", "trust"),
        ("PGBOUNCER_DATABASES", "app = host=from-env"),
    ]);
    let cfg = Config::load(Some(file.path()), &vars).unwrap();
    assert_eq!(cfg.pool.default_pool_size, 44, "env beats file");
    assert_eq!(cfg.timeouts.query_wait_timeout, Duration::from_millis(500));
    assert_eq!(cfg.timeouts.server_idle_timeout, Duration::from_secs(120));
    assert_eq!(cfg.timeouts.client_login_timeout, Duration::from_secs(60));
    assert_eq!(cfg.database("app").unwrap().host, "from-env");
}

#[test]
fn config_file_can_come_from_pgrelay_config_env() {
    let file = yaml_file("auth_type: trust\ndatabases:\n  '*':\n    host: pg\n");
    let path: PathBuf = file.path().to_path_buf();
    let vars = env(&[("PGRELAY_CONFIG", path.to_str().unwrap())]);
    let cfg = Config::load(None, &vars).unwrap();
    assert_eq!(cfg.database("x").unwrap().host, "pg");

    // An explicit path beats PGRELAY_CONFIG; an empty PGRELAY_CONFIG means none.
    let other = yaml_file("auth_type: trust\ndatabases: { '*': { host: other } }\n");
    let cfg = Config::load(Some(other.path()), &vars).unwrap();
    assert_eq!(cfg.database("x").unwrap().host, "other");
    let blank = env(&[
        ("PGRELAY_CONFIG", " "),
        ("POSTGRESQL_HOST", "h"),
        ("PGBOUNCER_AUTH_TYPE", "trust"),
    ]);
    assert_eq!(
        Config::load(None, &blank)
            .unwrap()
            .database("x")
            .unwrap()
            .host,
        "h"
    );
}

#[test]
fn each_duration_form_in_yaml_and_env() {
    let file = yaml_file(
        "auth_type: trust\n\
         query_timeout: 5\n\
         query_wait_timeout: 0.25\n\
         client_idle_timeout: \"500ms\"\n\
         client_login_timeout: 5s\n\
         server_lifetime: 2m\n\
         databases: { db: { host: h } }\n",
    );
    let vars = env(&[("PGBOUNCER_SERVER_IDLE_TIMEOUT", "1.5")]);
    let cfg = Config::load(Some(file.path()), &vars).unwrap();
    let t = &cfg.timeouts;
    assert_eq!(t.query_timeout, Duration::from_secs(5));
    assert_eq!(t.query_wait_timeout, Duration::from_millis(250));
    assert_eq!(t.client_idle_timeout, Duration::from_millis(500));
    assert_eq!(t.client_login_timeout, Duration::from_secs(5));
    assert_eq!(t.server_lifetime, Duration::from_secs(120));
    assert_eq!(t.server_idle_timeout, Duration::from_millis(1500));
}

#[test]
fn unknown_yaml_key_names_file_line_and_column() {
    let file = yaml_file("auth_type: trust\nmax_client_con: 10\n");
    let err = Config::load(Some(file.path()), &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Yaml {
                line: 2,
                column: 1,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&file.path().display().to_string()), "{text}");
    assert!(text.contains("max_client_con"), "{text}");
}

#[test]
fn missing_file_is_reported_with_its_path() {
    let err = Config::load(
        Some(Path::new("/nonexistent/pgrelay.yaml")),
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/pgrelay.yaml"));
}

#[test]
fn unknown_pgbouncer_var_is_named() {
    let vars = deployment_with(&[("PGBOUNCER_DEFAULT_POOL_SISE", "10")]);
    let err = Config::load(None, &vars).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownEnvVar { var, .. } if var == "PGBOUNCER_DEFAULT_POOL_SISE"),
        "{err}"
    );
    assert!(err.to_string().contains("PGBOUNCER_DEFAULT_POOL_SISE"));
}

#[test]
fn unsupported_pgbouncer_setting_is_refused_by_name() {
    let vars = deployment_with(&[("PGBOUNCER_AUTH_QUERY", "SELECT 1")]);
    let err = Config::load(None, &vars).unwrap_err();
    assert!(err.to_string().contains("auth_query"), "{err}");
    assert!(err.to_string().contains("not supported"), "{err}");
}

#[test]
fn bad_value_names_the_variable_and_value() {
    let vars = deployment_with(&[("PGBOUNCER_MAX_CLIENT_CONN", "lots")]);
    let err = Config::load(None, &vars).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("PGBOUNCER_MAX_CLIENT_CONN"), "{text}");
    assert!(text.contains("\"lots\""), "{text}");

    let vars = deployment_with(&[("SERVER_TLS_SSLMODE", "sometimes")]);
    let text = Config::load(None, &vars).unwrap_err().to_string();
    assert!(
        text.contains("SERVER_TLS_SSLMODE") && text.contains("verify-full"),
        "{text}"
    );
}

#[test]
fn bad_password_entry_never_echoes_the_password() {
    let vars = deployment_with(&[(
        "PGBOUNCER_DATABASES",
        "app = host=h password='hunter2-unterminated",
    )]);
    let text = Config::load(None, &vars).unwrap_err().to_string();
    assert!(
        text.contains("PGBOUNCER_DATABASES") && text.contains("app"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn ignored_settings_are_accepted_and_reported() {
    let vars = deployment_with(&[("PGBOUNCER_PKT_BUF", "8192"), ("POSTGRESQL_HOST", "pg")]);
    let cfg = Config::load(None, &vars).unwrap();
    assert_eq!(cfg.ignored.get("pkt_buf").map(String::as_str), Some("8192"));
    assert!(cfg.warnings().iter().any(|w| w.contains("pkt_buf")));
    let report = check_config_report(&cfg);
    assert!(report.contains("pkt_buf = 8192 (ignored"), "{report}");
    assert!(report.contains("# warning: accepted but ignored PgBouncer settings: pkt_buf"));
}

#[test]
fn effective_settings_are_sorted_complete_and_masked() {
    let file = yaml_file(APP_YAML);
    let vars = deployment_with(&[("PGBOUNCER_DATABASES", "b = host=h password=env-secret")]);
    let cfg = Config::load(Some(file.path()), &vars).unwrap();
    let text = cfg.effective_settings();
    assert!(
        !text.contains("s3cr3t-pw") && !text.contains("env-secret"),
        "{text}"
    );
    assert!(text.contains("password=****"), "{text}");

    let lines: Vec<&str> = text.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted);
    for name in pgrelay::config::SETTING_NAMES {
        assert!(
            lines.iter().any(|l| l.split(" =").next() == Some(name)),
            "{name} missing"
        );
    }
    assert!(lines.contains(&"default_pool_size = 50"));
    assert!(lines.contains(&"server_tls_sslmode = require"));
    assert!(lines.contains(&"query_wait_timeout = 120s"));
    assert!(lines.contains(&"max_packet_size = 268435456"));
    assert!(
        lines.contains(&"server_tls_ca_file ="),
        "empty values leave no trailing blank"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("databases.app = host=pg-primary.internal port=5433")),
        "{text}"
    );

    let report = check_config_report(&cfg);
    assert!(report.starts_with("# configuration is valid\n"), "{report}");
    assert!(!report.contains("s3cr3t-pw"));
}

#[test]
fn validate_reports_every_broken_rule() {
    let vars = env(&[
        ("PGBOUNCER_AUTH_TYPE", "md5"),
        ("PGBOUNCER_MIN_POOL_SIZE", "30"),
        ("PGBOUNCER_SERVER_TLS_SSLMODE", "verify-full"),
        ("CLIENT_TLS_SSLMODE", "require"),
        ("PGBOUNCER_SERVER_TLS_CERT_FILE", "/tls/client.crt"),
        (
            "PGBOUNCER_DATABASES",
            "pgbouncer = host=x; small = host=y pool_size=2 min_pool_size=3",
        ),
    ]);
    let err = Config::load(None, &vars).unwrap_err();
    let ConfigError::Invalid(problems) = err else {
        panic!("unexpected error: {err}");
    };
    let has = |want: &dyn Fn(&ValidationError) -> bool| problems.iter().any(want);
    assert!(has(&|p| matches!(
        p,
        ValidationError::AuthFileRequired("md5")
    )));
    assert!(has(&|p| matches!(
        p,
        ValidationError::MinAbovePoolSize {
            min: 30,
            size: 20,
            ..
        }
    )));
    assert!(has(&|p| matches!(
        p,
        ValidationError::MinAbovePoolSize {
            min: 3,
            size: 2,
            ..
        }
    )));
    assert!(has(&|p| matches!(
        p,
        ValidationError::TlsNeedsFile {
            needs: "server_tls_ca_file",
            ..
        }
    )));
    assert!(has(&|p| matches!(
        p,
        ValidationError::TlsNeedsFile {
            setting: "client_tls_sslmode",
            ..
        }
    )));
    assert!(has(&|p| matches!(
        p,
        ValidationError::CertWithoutKey { .. }
    )));
    assert!(has(
        &|p| matches!(p, ValidationError::ReservedDatabase(n) if n == "pgbouncer")
    ));
    assert_eq!(problems.len(), 7, "{problems:?}");
}

#[test]
fn listen_star_means_all_addresses() {
    let vars = env(&[
        ("PGBOUNCER_LISTEN_ADDR", "*"),
        ("PGBOUNCER_AUTH_TYPE", "trust"),
        ("POSTGRESQL_HOST", "pg"),
    ]);
    let cfg = Config::load(None, &vars).unwrap();
    assert_eq!(cfg.listen.addrs, ["0.0.0.0"]);
}

#[test]
fn cancel_peers_are_host_port_pairs() {
    let ok = env(&[
        ("PGBOUNCER_AUTH_TYPE", "trust"),
        ("POSTGRESQL_HOST", "pg"),
        (
            "PGBOUNCER_CANCEL_PEERS",
            "pgrelay-peers.default.svc:6432, [::1]:6433",
        ),
    ]);
    let cfg = Config::load(None, &ok).unwrap();
    assert_eq!(
        cfg.listen.cancel_peers,
        vec!["pgrelay-peers.default.svc:6432", "[::1]:6433"]
    );

    let bad = env(&[
        ("PGBOUNCER_AUTH_TYPE", "trust"),
        ("POSTGRESQL_HOST", "pg"),
        ("PGBOUNCER_CANCEL_PEERS", "pgrelay-peers,host:0,:6432"),
    ]);
    let ConfigError::Invalid(problems) = Config::load(None, &bad).unwrap_err() else {
        panic!("cancel_peers without ports must be refused");
    };
    let refused: Vec<String> = problems
        .iter()
        .filter_map(|p| match p {
            ValidationError::BadCancelPeer(peer) => Some(peer.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec!["pgrelay-peers", "host:0", ":6432"]);
}

#[test]
fn scheduler_defaults_to_per_core_and_is_set_by_env_or_yaml() {
    use pgrelay::config::Scheduler;
    let app = yaml_file(APP_YAML);
    let cfg = Config::load(Some(app.path()), &deployment_with(&[])).unwrap();
    assert_eq!(cfg.runtime.scheduler, Scheduler::PerCore);
    assert_eq!(cfg.runtime.cores(), cfg.runtime.threads());

    let vars = deployment_with(&[
        ("PGBOUNCER_SCHEDULER", "work_stealing"),
        ("PGBOUNCER_WORKER_THREADS", "3"),
    ]);
    let cfg = Config::load(Some(app.path()), &vars).unwrap();
    assert_eq!(cfg.runtime.scheduler, Scheduler::WorkStealing);
    assert_eq!((cfg.runtime.threads(), cfg.runtime.cores()), (3, 1));

    let file = yaml_file(&format!(
        "scheduler: per-core\nworker_threads: 2\n{APP_YAML}"
    ));
    let cfg = Config::load(Some(file.path()), &deployment_with(&[])).unwrap();
    assert_eq!(
        (cfg.runtime.scheduler, cfg.runtime.cores()),
        (Scheduler::PerCore, 2)
    );

    let text = Config::load(
        None,
        &deployment_with(&[("PGBOUNCER_SCHEDULER", "fastest")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        text.contains("PGBOUNCER_SCHEDULER") && text.contains("per_core work_stealing"),
        "{text}"
    );
}

#[test]
fn idle_poll_time_defaults_to_auto_and_is_set_by_env_or_yaml() {
    use pgrelay::config::IdlePoll;
    use std::time::Duration;
    let app = yaml_file(APP_YAML);
    let cfg = Config::load(Some(app.path()), &deployment_with(&[])).unwrap();
    assert_eq!(cfg.runtime.idle_poll_time, IdlePoll::Auto);
    assert_eq!(
        cfg.runtime.idle_poll_time.resolve(|| false),
        IdlePoll::AUTO_TIME
    );
    assert_eq!(cfg.runtime.idle_poll_time.resolve(|| true), Duration::ZERO);

    let vars = deployment_with(&[("PGBOUNCER_IDLE_POLL_TIME", "50us")]);
    let cfg = Config::load(Some(app.path()), &vars).unwrap();
    let fixed = IdlePoll::Fixed(Duration::from_micros(50));
    assert_eq!(cfg.runtime.idle_poll_time, fixed);
    // A set time holds under a CPU quota too.
    assert_eq!(fixed.resolve(|| true), Duration::from_micros(50));

    let file = yaml_file(&format!("idle_poll_time: 0\n{APP_YAML}"));
    let cfg = Config::load(Some(file.path()), &deployment_with(&[])).unwrap();
    assert_eq!(cfg.runtime.idle_poll_time, IdlePoll::Fixed(Duration::ZERO));

    let text = Config::load(
        None,
        &deployment_with(&[("PGBOUNCER_IDLE_POLL_TIME", "soon")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        text.contains("PGBOUNCER_IDLE_POLL_TIME") && text.contains("auto or a duration"),
        "{text}"
    );
}
