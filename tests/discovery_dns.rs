//! Discovery against the in-process DNS server: A, SRV and static sources,
//! record changes within a TTL, and keeping the last good set on NXDOMAIN.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgrelay::cluster::discovery::{
    spawn, Discovery, DiscoveryConfig, DiscoverySource, EndpointSet, HickoryResolve, HostPort,
    Resolve,
};
use pgrelay::shutdown::Shutdown;
use pgrelay_testcontainers::DnsServer;

const TTL: u32 = 1;
const WAIT: Duration = Duration::from_secs(10);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn sock(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from((ip(last), port))
}

fn start_discovery(dns: &DnsServer, source: DiscoverySource, shutdown: &Shutdown) -> Discovery {
    let config = DiscoveryConfig {
        nameserver: Some(dns.addr()),
        min_ttl: Duration::from_millis(200),
        max_ttl: Duration::from_secs(30),
        failure_retry: Duration::from_millis(200),
        lookup_timeout: Duration::from_secs(5),
        ..DiscoveryConfig::new(source)
    };
    let resolver = HickoryResolve::new(config.nameserver).expect("resolver");
    spawn(config, resolver, shutdown.signal())
}

/// The first resolved set, waited for (bounded).
async fn ready(discovery: &Discovery) -> Arc<EndpointSet> {
    tokio::time::timeout(WAIT, discovery.ready())
        .await
        .expect("ready in time")
        .expect("first lookup succeeds")
}

/// Waits (bounded) until the published set satisfies `done`.
async fn wait_for_set(
    discovery: &Discovery,
    what: &str,
    done: impl Fn(&EndpointSet) -> bool,
) -> Duration {
    let started = Instant::now();
    let mut rx = discovery.subscribe();
    let outcome = tokio::time::timeout(WAIT, rx.wait_for(|set| done(set))).await;
    match outcome {
        Ok(Ok(_)) => started.elapsed(),
        _ => panic!(
            "{what}: not seen within {WAIT:?}; last set {:?}",
            discovery.current()
        ),
    }
}

#[tokio::test]
async fn a_records_are_discovered_and_follow_changes() {
    let dns = DnsServer::start("disc.test").unwrap();
    dns.set_a("replicas", &[ip(2), ip(3), ip(4)], TTL).unwrap();
    let shutdown = Shutdown::new();
    let source = DiscoverySource::DnsA {
        name: "replicas.disc.test.".into(),
        port: 6543,
    };
    let discovery = start_discovery(&dns, source, &shutdown);

    let first = ready(&discovery).await;
    assert_eq!(
        first.addrs(),
        vec![sock(2, 6543), sock(3, 6543), sock(4, 6543)]
    );
    // The queried name, for verify-full against the servers' certificates.
    assert!(first
        .endpoints()
        .iter()
        .all(|e| e.name.as_deref() == Some("replicas.disc.test")));

    dns.set_a("replicas", &[ip(2), ip(3), ip(4), ip(5)], TTL)
        .unwrap();
    let took = wait_for_set(&discovery, "added record", |s| s.len() == 4).await;
    println!("added record seen after {took:?}");
    assert!(
        took < Duration::from_millis(2500),
        "about one TTL, took {took:?}"
    );
    let added = discovery.current();
    let diff = added.diff(&first);
    assert_eq!(diff.added.len(), 1);
    assert_eq!(diff.added[0].addr, sock(5, 6543));
    assert!(diff.removed.is_empty());

    dns.set_a("replicas", &[ip(3), ip(4), ip(5)], TTL).unwrap();
    let took = wait_for_set(&discovery, "removed record", |s| s.len() == 3).await;
    println!("removed record seen after {took:?}");
    let diff = discovery.current().diff(&added);
    assert_eq!(diff.removed.len(), 1);
    assert_eq!(diff.removed[0].addr, sock(2, 6543));
    shutdown.trigger();
}

#[tokio::test]
async fn nxdomain_keeps_the_last_good_set() {
    let dns = DnsServer::start("gone.test").unwrap();
    dns.set_a("db", &[ip(2), ip(3)], TTL).unwrap();
    let shutdown = Shutdown::new();
    let source = DiscoverySource::DnsA {
        name: "db.gone.test.".into(),
        port: 5432,
    };
    let discovery = start_discovery(&dns, source, &shutdown);
    let good = ready(&discovery).await;
    assert_eq!(good.len(), 2);

    dns.remove("db").unwrap();
    // Wait (bounded) until at least two lookups came back empty.
    let deadline = Instant::now() + WAIT;
    while discovery.counts().empty < 2 {
        assert!(
            Instant::now() < deadline,
            "no empty lookups seen: {:?}",
            discovery.counts()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = discovery.current();
    assert_eq!(kept.addrs(), good.addrs());
    assert_eq!(kept.version(), good.version());

    // Once the name is back, the set follows it again.
    dns.set_a("db", &[ip(9)], TTL).unwrap();
    wait_for_set(&discovery, "record back", |s| {
        s.addrs() == vec![sock(9, 5432)]
    })
    .await;
    shutdown.trigger();
}

#[tokio::test]
async fn srv_records_give_targets_and_ports() {
    let dns = DnsServer::start("srv.test").unwrap();
    dns.set_a("r1", &[ip(2)], TTL).unwrap();
    dns.set_a("r2", &[ip(3)], TTL).unwrap();
    dns.set_srv(
        "_postgresql._tcp.replicas",
        &[(10, 5, 5433, "r1"), (10, 0, 5434, "r2")],
        TTL,
    )
    .unwrap();
    let shutdown = Shutdown::new();
    let discovery = start_discovery(
        &dns,
        DiscoverySource::postgres_srv("replicas.srv.test."),
        &shutdown,
    );
    let set = ready(&discovery).await;
    assert_eq!(set.addrs(), vec![sock(2, 5433), sock(3, 5434)]);
    let r1 = set.get(sock(2, 5433)).unwrap();
    assert_eq!(r1.name.as_deref(), Some("r1.srv.test"));
    assert_eq!((r1.weight, r1.priority), (5, 10));
    assert_eq!(
        set.get(sock(3, 5434)).unwrap().weight,
        1,
        "SRV weight 0 stays usable"
    );

    // A new SRV entry shows up.
    dns.set_a("r3", &[ip(4)], TTL).unwrap();
    dns.set_srv(
        "_postgresql._tcp.replicas",
        &[
            (10, 5, 5433, "r1"),
            (10, 0, 5434, "r2"),
            (10, 1, 5435, "r3"),
        ],
        TTL,
    )
    .unwrap();
    wait_for_set(&discovery, "new SRV target", |s| {
        s.get(sock(4, 5435)).is_some()
    })
    .await;
    shutdown.trigger();
}

#[tokio::test]
async fn static_lists_mix_literals_and_names() {
    let dns = DnsServer::start("static.test").unwrap();
    dns.set_a("named", &[ip(7), ip(8)], TTL).unwrap();
    let resolver = HickoryResolve::new(Some(dns.addr())).unwrap();
    let source = DiscoverySource::Static(vec![
        "127.0.0.5:5432".parse().unwrap(),
        HostPort::new("named.static.test.", 6000),
    ]);
    let resolved = resolver.lookup(&source).await.unwrap();
    let addrs: Vec<SocketAddr> = resolved.endpoints.iter().map(|e| e.addr).collect();
    assert_eq!(addrs, vec![sock(5, 5432), sock(7, 6000), sock(8, 6000)]);
    let names: Vec<Option<&str>> = resolved
        .endpoints
        .iter()
        .map(|e| e.name.as_deref())
        .collect();
    assert_eq!(
        names,
        vec![None, Some("named.static.test"), Some("named.static.test")]
    );
    assert_eq!(resolved.ttl, Duration::from_secs(TTL.into()));

    let missing = DiscoverySource::Static(vec![HostPort::new("missing.static.test.", 1)]);
    let error = resolver.lookup(&missing).await.unwrap_err();
    assert!(error.is_no_records(), "{error}");
}

#[tokio::test]
async fn a_and_aaaa_records_are_both_discovered() {
    let dns = DnsServer::start("dual.test").unwrap();
    dns.set_a("db", &[ip(2)], TTL).unwrap();
    dns.set_aaaa("db", &[std::net::Ipv6Addr::LOCALHOST], TTL)
        .unwrap();
    let resolver = HickoryResolve::new(Some(dns.addr())).unwrap();
    let source = DiscoverySource::DnsA {
        name: "db.dual.test.".into(),
        port: 5432,
    };
    let resolved = resolver.lookup(&source).await.unwrap();
    let set = EndpointSet::new(resolved.endpoints, 1);
    let v6: SocketAddr = "[::1]:5432".parse().unwrap();
    assert_eq!(set.addrs(), vec![sock(2, 5432), v6]);
}

#[tokio::test]
async fn a_silent_nameserver_counts_failures_and_never_reports_ready() {
    // Bound but never read: queries go unanswered.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let shutdown = Shutdown::new();
    let config = DiscoveryConfig {
        nameserver: Some(silent.local_addr().unwrap()),
        failure_retry: Duration::from_millis(100),
        lookup_timeout: Duration::from_millis(300),
        ..DiscoveryConfig::new(DiscoverySource::DnsA {
            name: "db.nowhere.test.".into(),
            port: 5432,
        })
    };
    let discovery = spawn(
        config.clone(),
        HickoryResolve::new(config.nameserver).unwrap(),
        shutdown.signal(),
    );
    let outcome = tokio::time::timeout(Duration::from_secs(2), discovery.ready()).await;
    assert!(outcome.is_err(), "no answer, so never ready");
    let counts = discovery.counts();
    assert!(counts.failures >= 2, "{counts:?}");
    assert_eq!(counts.updates, 0);
    assert!(!discovery.current().is_resolved());
    shutdown.trigger();
}
