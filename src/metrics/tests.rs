use std::time::Duration;

use prometheus::proto::MetricType;

use super::*;

/// The value of the one series of `name` carrying all of `labels`.
fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let family = m
        .registry()
        .gather()
        .into_iter()
        .find(|f| f.name() == name)?;
    let kind = family.get_field_type();
    let metric = family.get_metric().iter().find(|s| {
        labels.iter().all(|(k, v)| {
            s.get_label()
                .iter()
                .any(|l| l.name() == *k && l.value() == *v)
        })
    })?;
    Some(match kind {
        MetricType::COUNTER => metric.get_counter().get_value(),
        MetricType::GAUGE => metric.get_gauge().get_value(),
        MetricType::HISTOGRAM => metric.get_histogram().get_sample_count() as f64,
        other => panic!("unexpected metric type {other:?}"),
    })
}

#[test]
fn pool_handles_record_per_pool_and_role() {
    let m = Metrics::new().unwrap();
    let app = m.pool("app", "svc");
    let other = m.pool("other", "svc");
    app.queries_done(Role::Primary, 1, Duration::from_millis(250));
    app.queries_done(Role::Primary, 1, Duration::from_millis(250));
    app.queries_done(Role::Replica, 1, Duration::from_millis(100));
    app.transactions_done(Role::Primary, 1, Duration::from_secs(2));
    other.client_bytes((10, 0));
    app.client_bytes((100, 0));
    app.client_bytes((0, 7));

    let primary = [("database", "app"), ("user", "svc"), ("target", "primary")];
    assert_eq!(value(&m, "pgrelay_queries_total", &primary), Some(2.0));
    assert_eq!(
        value(&m, "pgrelay_query_seconds_total", &primary),
        Some(0.5)
    );
    assert_eq!(value(&m, "pgrelay_transactions_total", &primary), Some(1.0));
    assert_eq!(
        value(&m, "pgrelay_transaction_seconds_total", &primary),
        Some(2.0)
    );
    let replica = [("database", "app"), ("target", "replica")];
    assert_eq!(value(&m, "pgrelay_queries_total", &replica), Some(1.0));
    let app_pool = [("database", "app"), ("user", "svc")];
    assert_eq!(
        value(&m, "pgrelay_client_received_bytes_total", &app_pool),
        Some(100.0)
    );
    assert_eq!(
        value(&m, "pgrelay_client_sent_bytes_total", &app_pool),
        Some(7.0)
    );
    let other_pool = [("database", "other")];
    assert_eq!(
        value(&m, "pgrelay_client_received_bytes_total", &other_pool),
        Some(10.0)
    );
}

#[test]
fn asking_for_a_pool_twice_shares_its_series() {
    let m = Metrics::new().unwrap();
    m.pool("app", "svc").client_bytes((0, 3));
    m.pool("app", "svc").client_bytes((0, 4));
    let labels = [("database", "app"), ("user", "svc")];
    assert_eq!(
        value(&m, "pgrelay_client_sent_bytes_total", &labels),
        Some(7.0)
    );
}

#[test]
fn server_connections_connects_and_waits() {
    let m = Metrics::new().unwrap();
    let p = m.pool("app", "svc");
    p.set_server_connections(Role::Primary, 3, 2);
    p.set_server_connections(Role::Primary, 1, 4);
    p.server_connect(Role::Primary, ConnectResult::Ok);
    p.server_connect(Role::Primary, ConnectResult::Timeout);
    p.server_connect(Role::Primary, ConnectResult::Timeout);
    p.checkout_waited(Role::Primary, Duration::from_micros(50));
    p.checkout_waited(Role::Primary, Duration::from_secs(3));

    let state = |s| [("database", "app"), ("role", "primary"), ("state", s)];
    assert_eq!(
        value(&m, "pgrelay_pool_server_connections", &state("active")),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "pgrelay_pool_server_connections", &state("idle")),
        Some(4.0)
    );
    let result = |r| [("role", "primary"), ("result", r)];
    assert_eq!(
        value(&m, "pgrelay_server_connects_total", &result("ok")),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "pgrelay_server_connects_total", &result("timeout")),
        Some(2.0)
    );
    assert_eq!(
        value(&m, "pgrelay_server_connects_total", &result("error")),
        Some(0.0)
    );
    let primary = [("database", "app"), ("role", "primary")];
    assert_eq!(value(&m, "pgrelay_pool_wait_seconds", &primary), Some(2.0));

    let text = m.encode().unwrap();
    // 50µs lands in the first bucket, 3s only from the 5s bucket on.
    assert!(text.contains(r#"pgrelay_pool_wait_seconds_bucket{database="app",role="primary",user="svc",le="0.0001"} 1"#), "{text}");
    assert!(text.contains(
        r#"pgrelay_pool_wait_seconds_bucket{database="app",role="primary",user="svc",le="1"} 1"#
    ));
    assert!(text.contains(
        r#"pgrelay_pool_wait_seconds_bucket{database="app",role="primary",user="svc",le="5"} 2"#
    ));
}

#[test]
fn replica_series_appear_only_once_used() {
    let m = Metrics::new().unwrap();
    let p = m.pool("app", "svc");
    p.queries_done(Role::Primary, 1, Duration::from_millis(1));
    assert!(!m.encode().unwrap().contains(r#"role="replica""#));
    assert!(!m.encode().unwrap().contains(r#"target="replica""#));
    p.checkout_waited(Role::Replica, Duration::from_millis(1));
    p.queries_done(Role::Replica, 1, Duration::from_millis(1));
    let replica = [("database", "app"), ("target", "replica")];
    assert_eq!(value(&m, "pgrelay_queries_total", &replica), Some(1.0));
    assert!(m.encode().unwrap().contains(r#"role="replica""#));
}

#[test]
fn client_tracker_moves_between_states_and_leaves_on_drop() {
    let m = Metrics::new().unwrap();
    let global = |s| value(&m, "pgrelay_client_connections", &[("state", s)]);
    let pooled = |s| {
        value(
            &m,
            "pgrelay_pool_client_connections",
            &[("database", "app"), ("state", s)],
        )
    };

    let mut a = m.client_connected();
    let b = m.client_connected();
    assert_eq!(global("login"), Some(2.0));
    a.logged_in(m.pool("app", "svc"));
    assert_eq!(a.state(), ClientState::Idle);
    assert_eq!((global("login"), global("idle")), (Some(1.0), Some(1.0)));
    assert_eq!(pooled("idle"), Some(1.0));

    a.set_state(ClientState::Waiting);
    a.set_state(ClientState::Active);
    a.set_state(ClientState::Active);
    assert_eq!(
        (global("waiting"), global("active")),
        (Some(0.0), Some(1.0))
    );
    assert_eq!((pooled("idle"), pooled("active")), (Some(0.0), Some(1.0)));

    drop(a);
    assert_eq!(global("active"), Some(0.0));
    assert_eq!(pooled("active"), Some(0.0));
    drop(b);
    assert_eq!(global("login"), Some(0.0));
    // A pool never gets a `login` series: clients join it only after login.
    assert_eq!(pooled("login"), None);
}

#[test]
fn logins_errors_and_routes() {
    let m = Metrics::new().unwrap();
    m.login(LoginResult::Ok);
    m.login(LoginResult::AuthFailed);
    m.login(LoginResult::AuthFailed);
    m.error(ErrorOrigin::Pooler, "28P01");
    m.error(ErrorOrigin::Server, "23505");
    m.error(ErrorOrigin::Server, "23503");
    m.error(ErrorOrigin::Server, "not a sqlstate");
    m.route(Role::Replica, "read_only_select");
    m.route_counter(Role::Primary, "default").inc_by(2);

    let login = |r| value(&m, "pgrelay_client_logins_total", &[("result", r)]);
    assert_eq!(login("ok"), Some(1.0));
    assert_eq!(login("auth_failed"), Some(2.0));
    assert_eq!(login("refused"), Some(0.0));
    let errors = |o, c| value(&m, "pgrelay_errors_total", &[("origin", o), ("class", c)]);
    assert_eq!(errors("pooler", "28"), Some(1.0));
    assert_eq!(errors("server", "23"), Some(2.0));
    assert_eq!(errors("server", "unknown"), Some(1.0));
    let route = |t, r| {
        value(
            &m,
            "pgrelay_routing_decisions_total",
            &[("target", t), ("reason", r)],
        )
    };
    assert_eq!(route("replica", "read_only_select"), Some(1.0));
    assert_eq!(route("primary", "default"), Some(2.0));
}

#[test]
fn replica_gauges_and_removal() {
    let m = Metrics::new().unwrap();
    let r = m.replica("app", "10.0.0.7:5432");
    r.set_healthy(true);
    r.set_lag(Duration::from_millis(1500), 4096);
    r.set_weight(3);
    let labels = [("database", "app"), ("endpoint", "10.0.0.7:5432")];
    assert_eq!(value(&m, "pgrelay_replica_healthy", &labels), Some(1.0));
    assert_eq!(value(&m, "pgrelay_replica_lag_seconds", &labels), Some(1.5));
    assert_eq!(
        value(&m, "pgrelay_replica_lag_bytes", &labels),
        Some(4096.0)
    );
    assert_eq!(value(&m, "pgrelay_replica_weight", &labels), Some(3.0));
    r.set_healthy(false);
    assert_eq!(value(&m, "pgrelay_replica_healthy", &labels), Some(0.0));

    assert!(m.remove_replica("app", "10.0.0.7:5432"));
    assert!(!m.remove_replica("app", "10.0.0.7:5432"));
    assert_eq!(value(&m, "pgrelay_replica_healthy", &labels), None);
    assert_eq!(value(&m, "pgrelay_replica_lag_bytes", &labels), None);
}

#[test]
fn encode_has_help_types_build_info_and_process_metrics() {
    let m = Metrics::new().unwrap();
    let text = m.encode().unwrap();
    assert!(text.contains("# TYPE pgrelay_client_logins_total counter\n"));
    assert!(text.contains("# TYPE pgrelay_client_connections gauge\n"));
    let version = env!("CARGO_PKG_VERSION");
    assert!(text.contains(&format!("pgrelay_build_info{{version=\"{version}\"}} 1\n")));
    if cfg!(target_os = "linux") {
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .expect("rss line");
        assert!(rss.parse::<f64>().unwrap() > 0.0);
    }
}

#[test]
fn label_values_are_escaped_not_trusted() {
    let m = Metrics::new().unwrap();
    m.pool("we\"ird\ndb", "u").client_bytes((0, 1));
    let text = m.encode().unwrap();
    assert!(text.contains(r#"database="we\"ird\ndb""#), "{text}");
}

#[test]
fn separate_instances_do_not_share_state() {
    let a = Metrics::new().unwrap();
    let b = Metrics::new().unwrap();
    a.login(LoginResult::Ok);
    assert_eq!(
        value(&a, "pgrelay_client_logins_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        value(&b, "pgrelay_client_logins_total", &[("result", "ok")]),
        Some(0.0)
    );
}
