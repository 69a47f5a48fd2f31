//! Health state machine, probe parsing and the probe task, without I/O.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::shutdown::Shutdown;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn replica_facts(lag_bytes: u64, lag_secs: u64) -> ServerFacts {
    ServerFacts {
        in_recovery: true,
        current_lsn: None,
        receive_lsn: Some(Lsn(1000)),
        replay_lsn: Some(Lsn(1000 - lag_bytes.min(1000))),
        lag_bytes: Some(lag_bytes),
        lag: Some(secs(lag_secs)),
        latency: Duration::from_millis(1),
    }
}

fn up() -> ProbeResult {
    ProbeResult::Reachable(replica_facts(0, 0))
}

fn down() -> ProbeResult {
    ProbeResult::Unreachable {
        error: "connection refused".into(),
    }
}

fn policy() -> HealthPolicy {
    HealthPolicy {
        rise: 2,
        fall: 3,
        ban_base: secs(1),
        ban_max: secs(8),
        max_lag_bytes: Some(1_000),
        max_lag: Some(secs(10)),
    }
}

/// Feeds `results` one second apart from `start`; returns the states seen.
fn feed(tracker: &mut HealthTracker, start: Instant, results: &[ProbeResult]) -> Vec<&'static str> {
    results
        .iter()
        .enumerate()
        .map(|(i, r)| tracker.observe(r, start + secs(i as u64)).name())
        .collect()
}

#[test]
fn rises_after_rise_probes_and_falls_after_fall_failures() {
    let mut tracker = HealthTracker::new(Role::Replica, policy());
    let t0 = Instant::now();
    assert_eq!(tracker.state(), HealthState::Unknown);
    let seen = feed(
        &mut tracker,
        t0,
        &[up(), up(), down(), down(), up(), down(), down(), down()],
    );
    assert_eq!(
        seen,
        [
            "unknown",
            "healthy",
            "healthy",
            "healthy",
            "healthy",
            "healthy",
            "healthy",
            "unhealthy"
        ]
    );
    assert!(matches!(tracker.state(), HealthState::Unhealthy { since } if since == t0 + secs(7)));
    // Back in after `rise` reachable probes; one failure in between resets the count.
    let seen = feed(&mut tracker, t0 + secs(8), &[up(), down(), up(), up()]);
    assert_eq!(seen, ["unhealthy", "unhealthy", "unhealthy", "healthy"]);
}

#[test]
fn connection_failure_bans_at_once_and_readmits_after_backoff_and_rise() {
    let mut tracker = HealthTracker::new(Role::Replica, policy());
    let t0 = Instant::now();
    feed(&mut tracker, t0, &[up(), up()]);
    assert!(tracker.state().is_usable());

    let banned = tracker.connection_failed(t0 + secs(2));
    assert_eq!(
        banned,
        HealthState::Banned {
            until: t0 + secs(3)
        }
    );
    // A burst of reports during the ban changes nothing.
    assert_eq!(tracker.connection_failed(t0 + secs(2)), banned);
    // Good probes during the ban do not count.
    tracker.observe(&up(), t0 + Duration::from_millis(2500));
    assert_eq!(tracker.state(), banned);
    // After the ban: `rise` good probes needed.
    assert_eq!(tracker.observe(&up(), t0 + secs(3)), banned);
    assert_eq!(tracker.observe(&up(), t0 + secs(4)), HealthState::Healthy);
}

#[test]
fn backoff_doubles_on_repeated_failure_and_is_capped() {
    let mut tracker = HealthTracker::new(Role::Replica, policy());
    let t0 = Instant::now();
    let mut bans = Vec::new();
    let mut now = t0;
    for _ in 0..6 {
        let HealthState::Banned { until } = tracker.connection_failed(now) else {
            panic!("not banned: {:?}", tracker.state());
        };
        bans.push((until - now).as_secs());
        now = until;
    }
    assert_eq!(bans, [1, 2, 4, 8, 8, 8]);

    // A failed probe right after a ban expires is a repeated failure too.
    let HealthState::Banned { until } = tracker.observe(&down(), now) else {
        panic!("expected a new ban");
    };
    assert_eq!(until - now, secs(8));

    // Up and steady for `ban_max`: strikes are forgiven.
    let mut t = until;
    for _ in 0..12 {
        tracker.observe(&up(), t);
        t += secs(1);
    }
    assert!(tracker.state().is_usable());
    assert_eq!(tracker.next_ban(), secs(1));
}

#[test]
fn lag_beyond_limits_is_lagging_and_catching_up_restores() {
    let mut tracker = HealthTracker::new(Role::Replica, policy());
    let t0 = Instant::now();
    feed(&mut tracker, t0, &[up(), up()]);
    let behind = ProbeResult::Reachable(replica_facts(5_000, 0));
    let state = tracker.observe(&behind, t0 + secs(2));
    assert_eq!(
        state,
        HealthState::Lagging {
            bytes: Some(5_000),
            delay: Some(secs(0))
        }
    );
    assert!(!state.is_usable());
    let slow = ProbeResult::Reachable(replica_facts(10, 30));
    assert_eq!(tracker.observe(&slow, t0 + secs(3)).name(), "lagging");
    assert_eq!(tracker.observe(&up(), t0 + secs(4)), HealthState::Healthy);
    // No limits configured: never lagging.
    let relaxed = HealthPolicy {
        max_lag_bytes: None,
        max_lag: None,
        ..policy()
    };
    assert_eq!(
        classify(&replica_facts(u64::MAX, 10_000), Role::Replica, &relaxed),
        HealthState::Healthy
    );
}

#[test]
fn wrong_role_is_flagged_for_both_roles() {
    let replica = replica_facts(0, 0);
    let primary = ServerFacts {
        in_recovery: false,
        current_lsn: Some(Lsn(5)),
        ..replica.clone()
    };
    let p = policy();
    assert_eq!(classify(&primary, Role::Primary, &p), HealthState::Healthy);
    assert_eq!(classify(&replica, Role::Replica, &p), HealthState::Healthy);
    assert_eq!(
        classify(&primary, Role::Replica, &p),
        HealthState::WrongRole { in_recovery: false }
    );
    assert_eq!(
        classify(&replica, Role::Primary, &p),
        HealthState::WrongRole { in_recovery: true }
    );
    // A replica promoted under us is taken out at the next probe.
    let mut tracker = HealthTracker::new(Role::Replica, p);
    let t0 = Instant::now();
    feed(&mut tracker, t0, &[up(), up()]);
    let promoted = ProbeResult::Reachable(primary);
    assert_eq!(
        tracker.observe(&promoted, t0 + secs(2)).name(),
        "wrong_role"
    );
}

fn text_row(cols: &[Option<&str>]) -> Vec<Option<String>> {
    cols.iter().map(|c| c.map(str::to_string)).collect()
}

#[test]
fn facts_from_probe_rows() {
    let ms = Duration::from_millis(3);
    let primary = facts_from_row(
        &text_row(&[Some("f"), Some("0/3000060"), None, None, None]),
        None,
        ms,
    )
    .unwrap();
    assert!(!primary.in_recovery);
    assert_eq!(primary.current_lsn, Some(Lsn(0x300_0060)));
    assert_eq!((primary.lag_bytes, primary.lag), (None, None));

    // Replica, everything received replayed: lag 0 even with an old replay timestamp.
    let idle = text_row(&[Some("t"), None, Some("1/10"), Some("1/10"), Some("3600.5")]);
    let facts = facts_from_row(&idle, Some("1/30".parse().unwrap()), ms).unwrap();
    assert_eq!(facts.lag, Some(Duration::ZERO));
    assert_eq!(facts.lag_bytes, Some(0x20));

    // Replay behind receive: the replay delay counts.
    let busy = text_row(&[Some("t"), None, Some("1/90"), Some("1/10"), Some("2.25")]);
    let facts = facts_from_row(&busy, None, ms).unwrap();
    assert_eq!(facts.lag, Some(Duration::from_millis(2250)));
    assert_eq!(facts.lag_bytes, None);

    assert!(facts_from_row(&text_row(&[Some("x"), None, None, None, None]), None, ms).is_err());
    assert!(facts_from_row(&text_row(&[Some("t")]), None, ms).is_err());
    assert!(facts_from_row(
        &text_row(&[Some("t"), None, Some("zz"), None, None]),
        None,
        ms
    )
    .is_err());
}

#[test]
fn lsn_round_trips() {
    let lsn: Lsn = "16/B374D848".parse().unwrap();
    assert_eq!(lsn.0, (0x16 << 32) | 0xB374_D848);
    assert_eq!(lsn.to_string(), "16/B374D848");
    for bad in ["", "12", "G/0", "1/2/3"] {
        assert!(bad.parse::<Lsn>().is_err(), "{bad}");
    }
}

#[test]
fn data_rows_decode_with_nulls() {
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.push(b't');
    body.extend_from_slice(&(-1i32).to_be_bytes());
    body.extend_from_slice(&3i32.to_be_bytes());
    body.extend_from_slice(b"0/1");
    assert_eq!(
        parse_data_row(&body).unwrap(),
        text_row(&[Some("t"), None, Some("0/1")])
    );
    assert!(parse_data_row(&body[..body.len() - 1]).is_err());
}

/// A prober answering from a script (repeating the last answer).
struct Scripted(
    Arc<Mutex<VecDeque<ProbeResult>>>,
    Arc<Mutex<Vec<Option<Lsn>>>>,
);

impl Prober for Scripted {
    async fn probe(&mut self, primary_lsn: Option<Lsn>) -> ProbeResult {
        self.1.lock().unwrap().push(primary_lsn);
        let mut script = self.0.lock().unwrap();
        if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script.front().cloned().unwrap()
        }
    }
}

fn monitor_config(role: Role) -> MonitorConfig {
    MonitorConfig {
        label: "127.0.0.2:5432".into(),
        role,
        interval: secs(1),
        timeout: secs(1),
        policy: policy(),
    }
}

#[tokio::test(start_paused = true)]
async fn monitor_publishes_state_changes_and_honours_reports() {
    let shutdown = Shutdown::new();
    let script = vec![up(), up(), up(), down(), down(), down(), up()];
    let seen_lsn = Arc::new(Mutex::new(Vec::new()));
    let prober = Scripted(Arc::new(Mutex::new(script.into())), seen_lsn.clone());

    let (primary_tx, primary_rx) = tokio::sync::watch::channel(Arc::new(HealthSnapshot {
        label: "primary".into(),
        role: Role::Primary,
        state: HealthState::Healthy,
        last_probe: Some(ProbeResult::Reachable(ServerFacts {
            in_recovery: false,
            current_lsn: Some(Lsn(42)),
            ..replica_facts(0, 0)
        })),
        checked_at: None,
        probes: 1,
        failed_probes: 0,
    }));
    let monitor = spawn_monitor(
        monitor_config(Role::Replica),
        prober,
        Some(primary_rx),
        shutdown.signal(),
    );
    let mut rx = monitor.subscribe();
    // The routed-read check follows every published snapshot.
    assert!(!monitor.is_usable(), "not usable before its first probes");

    // Probes at t=0,1 → healthy at t=1.
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().state, HealthState::Healthy);
    assert!(monitor.is_usable());
    // Three failures at t=3,4,5 → unhealthy.
    rx.changed().await.unwrap();
    let snap = rx.borrow_and_update().clone();
    assert_eq!(snap.state.name(), "unhealthy");
    assert!(!monitor.is_usable());
    assert_eq!((snap.probes, snap.failed_probes), (6, 3));
    assert_eq!(seen_lsn.lock().unwrap()[0], Some(Lsn(42)));

    // Back to healthy at t=7 (rise 2), then a passive report bans it.
    rx.changed().await.unwrap();
    assert!(rx.borrow_and_update().is_usable());
    assert!(monitor.is_usable());
    monitor.report_connection_failure();
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().state.name(), "banned");
    assert!(!monitor.is_usable());
    drop(primary_tx);

    shutdown.trigger();
    tokio::time::sleep(secs(1)).await;
    assert!(monitor.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_hanging_probe_counts_as_a_failure() {
    struct Hangs;
    impl Prober for Hangs {
        async fn probe(&mut self, _: Option<Lsn>) -> ProbeResult {
            std::future::pending().await
        }
    }
    let shutdown = Shutdown::new();
    let monitor = spawn_monitor(
        monitor_config(Role::Primary),
        Hangs,
        None,
        shutdown.signal(),
    );
    let mut rx = monitor.subscribe();
    rx.changed().await.unwrap();
    let snap = rx.borrow().clone();
    assert_eq!(snap.state.name(), "unhealthy");
    assert_eq!(snap.failed_probes, 3);
    let ProbeResult::Unreachable { error } = snap.last_probe.clone().unwrap() else {
        panic!("expected a failure");
    };
    assert!(error.contains("timed out"), "{error}");
}
