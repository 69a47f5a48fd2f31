//! Discovery task tests with a scripted resolver and paused tokio time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::shutdown::Shutdown;

type Step = Result<Resolved, DiscoveryError>;

/// Answers from a script, repeating the last step once the script runs out,
/// and records when each lookup happened.
#[derive(Clone)]
struct Scripted {
    steps: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
    hang: bool,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Self {
        Scripted {
            steps: Arc::new(Mutex::new(steps.into())),
            calls: Arc::new(Mutex::new(Vec::new())),
            hang: false,
        }
    }

    fn call_offsets(&self, start: Instant) -> Vec<Duration> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - start)
            .collect()
    }
}

impl Resolve for Scripted {
    async fn lookup(&self, _source: &DiscoverySource) -> Result<Resolved, DiscoveryError> {
        self.calls.lock().unwrap().push(Instant::now());
        if self.hang {
            std::future::pending::<()>().await;
        }
        let mut steps = self.steps.lock().unwrap();
        if steps.len() > 1 {
            steps.pop_front().unwrap()
        } else {
            steps.front().cloned().expect("script is not empty")
        }
    }
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], 5432))
}

fn ok(lasts: &[u8], ttl_secs: u64) -> Step {
    Ok(Resolved {
        endpoints: lasts.iter().map(|l| Endpoint::new(addr(*l))).collect(),
        ttl: Duration::from_secs(ttl_secs),
    })
}

fn failed() -> Step {
    Err(DiscoveryError::Lookup {
        name: "db".into(),
        reason: "SERVFAIL".into(),
    })
}

fn config(min: u64, max: u64, retry: u64) -> DiscoveryConfig {
    DiscoveryConfig {
        min_ttl: Duration::from_secs(min),
        max_ttl: Duration::from_secs(max),
        failure_retry: Duration::from_secs(retry),
        ..DiscoveryConfig::new(DiscoverySource::DnsA {
            name: "db.test.".into(),
            port: 5432,
        })
    }
}

fn secs(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|s| Duration::from_secs(*s)).collect()
}

#[tokio::test(start_paused = true)]
async fn re_resolves_when_ttl_expires_clamped_between_min_and_max() {
    let shutdown = Shutdown::new();
    let script = Scripted::new(vec![ok(&[2], 0), ok(&[2], 1000), ok(&[2], 10)]);
    let start = Instant::now();
    let discovery = spawn(config(5, 60, 3), script.clone(), shutdown.signal());
    tokio::time::sleep(Duration::from_secs(86)).await;
    // ttl 0 → min 5 s; ttl 1000 → max 60 s; ttl 10 → 10 s (repeated).
    assert_eq!(script.call_offsets(start), secs(&[0, 5, 65, 75, 85]));
    // Identical answers publish once.
    assert_eq!(discovery.current().version(), 1);
    assert_eq!(discovery.counts().updates, 1);
}

#[tokio::test(start_paused = true)]
async fn failed_and_empty_lookups_keep_the_last_good_set() {
    let shutdown = Shutdown::new();
    let empty = Ok(Resolved {
        endpoints: vec![],
        ttl: Duration::from_secs(10),
    });
    let nxdomain = Err(DiscoveryError::NoRecords("db.test.".into()));
    let script = Scripted::new(vec![
        ok(&[2, 3], 10),
        failed(),
        empty,
        nxdomain,
        ok(&[3, 4], 10),
    ]);
    let start = Instant::now();
    let discovery = spawn(config(1, 60, 3), script.clone(), shutdown.signal());
    let first = discovery.ready().await.unwrap();
    assert_eq!(first.addrs(), vec![addr(2), addr(3)]);
    let mut rx = discovery.subscribe();

    // Three bad lookups (t=10, 13, 16) change nothing.
    tokio::time::sleep(Duration::from_secs(18)).await;
    assert!(!rx.has_changed().unwrap());
    assert_eq!(discovery.current().addrs(), vec![addr(2), addr(3)]);
    let counts = discovery.counts();
    assert_eq!((counts.lookups, counts.failures, counts.empty), (4, 1, 2));

    // The retry at t=19 brings a new set.
    rx.changed().await.unwrap();
    let second = rx.borrow_and_update().clone();
    assert_eq!(second.addrs(), vec![addr(3), addr(4)]);
    assert_eq!(second.version(), 2);
    let diff = second.diff(&first);
    assert_eq!(diff.added, vec![Endpoint::new(addr(4))]);
    assert_eq!(diff.removed, vec![Endpoint::new(addr(2))]);
    assert_eq!(script.call_offsets(start), secs(&[0, 10, 13, 16, 19]));
}

#[tokio::test(start_paused = true)]
async fn ready_waits_for_the_first_success() {
    let shutdown = Shutdown::new();
    let script = Scripted::new(vec![failed(), failed(), ok(&[7], 30)]);
    let start = Instant::now();
    let discovery = spawn(config(1, 60, 4), script, shutdown.signal());
    assert!(!discovery.current().is_resolved());
    let set = discovery.ready().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(8));
    assert_eq!(set.addrs(), vec![addr(7)]);
    assert_eq!(discovery.counts().failures, 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_task_and_ready_reports_it() {
    let shutdown = Shutdown::new();
    let discovery = spawn(
        config(1, 60, 5),
        Scripted::new(vec![failed()]),
        shutdown.signal(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.trigger();
    assert_eq!(
        discovery.ready().await.unwrap_err(),
        DiscoveryError::Stopped
    );
    assert!(discovery.is_finished());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_the_task() {
    let shutdown = Shutdown::new();
    let script = Scripted::new(vec![ok(&[2], 5)]);
    let discovery = spawn(config(1, 60, 5), script.clone(), shutdown.signal());
    discovery.ready().await.unwrap();
    let mut rx = discovery.subscribe();
    drop(discovery);
    assert!(rx.changed().await.is_err(), "sender is gone with the task");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(script.calls.lock().unwrap().len(), 1);
    assert_eq!(
        rx.borrow().addrs(),
        vec![addr(2)],
        "last set stays readable"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_lookup_times_out_and_is_retried() {
    let shutdown = Shutdown::new();
    let mut script = Scripted::new(vec![ok(&[2], 5)]);
    script.hang = true;
    let mut cfg = config(1, 60, 2);
    cfg.lookup_timeout = Duration::from_secs(3);
    let start = Instant::now();
    let discovery = spawn(cfg, script.clone(), shutdown.signal());
    tokio::time::sleep(Duration::from_secs(11)).await;
    // Each attempt: 3 s timeout + 2 s retry wait.
    assert_eq!(script.call_offsets(start), secs(&[0, 5, 10]));
    assert_eq!(discovery.counts().failures, 2);
}

#[test]
fn refresh_after_clamps_ttl() {
    let cfg = config(5, 60, 1);
    assert_eq!(cfg.refresh_after(Duration::ZERO), Duration::from_secs(5));
    assert_eq!(
        cfg.refresh_after(Duration::from_secs(30)),
        Duration::from_secs(30)
    );
    assert_eq!(cfg.refresh_after(Duration::MAX), Duration::from_secs(60));
}

#[test]
fn endpoint_set_sorts_dedups_and_diffs() {
    let heavy = Endpoint {
        weight: 5,
        ..Endpoint::new(addr(3))
    };
    let old = EndpointSet::new(
        vec![
            Endpoint::new(addr(3)),
            Endpoint::new(addr(1)),
            Endpoint::new(addr(1)),
        ],
        1,
    );
    assert_eq!(old.addrs(), vec![addr(1), addr(3)]);
    let new = EndpointSet::new(vec![heavy.clone(), Endpoint::new(addr(9))], 2);
    let diff = new.diff(&old);
    assert_eq!(diff.added, vec![Endpoint::new(addr(9))]);
    assert_eq!(diff.removed, vec![Endpoint::new(addr(1))]);
    assert_eq!(diff.changed.len(), 1);
    assert_eq!(diff.changed[0].weight, 5);
    assert!(new.diff(&new).is_empty());
    assert!(!new.same_endpoints(&old));
}

#[test]
fn host_port_parses_literals_and_names() {
    let v4: HostPort = "10.0.0.1:5433".parse().unwrap();
    assert_eq!(
        v4.socket_addr(),
        Some(SocketAddr::from(([10, 0, 0, 1], 5433)))
    );
    let v6: HostPort = "[::1]:5432".parse().unwrap();
    assert_eq!(v6.to_string(), "[::1]:5432");
    let name: HostPort = "replica.db.internal:6432".parse().unwrap();
    assert_eq!(name, HostPort::new("replica.db.internal", 6432));
    assert_eq!(name.socket_addr(), None);
    for bad in ["replica", ":5432", "::1:5432", "host:99999", "host:"] {
        assert!(bad.parse::<HostPort>().is_err(), "{bad} must be refused");
    }
}
