//! The in-process DNS server, queried with hickory-resolver over UDP and TCP.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use pgrelay_testcontainers::{Cluster, DnsError, DnsServer};

/// A resolver that only knows our server. Fresh per lookup so no cache
/// hides a record change.
fn resolver(server: SocketAddr, tcp: bool) -> TokioResolver {
    let mut connection = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    connection.port = server.port();
    let name_server = NameServerConfig::new(server.ip(), true, vec![connection]);
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![name_server]),
        TokioRuntimeProvider::default(),
    )
    .build()
    .expect("resolver builds")
}

async fn a_records(server: SocketAddr, name: &str) -> BTreeSet<Ipv4Addr> {
    match resolver(server, false).ipv4_lookup(name).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

async fn srv_records(server: SocketAddr, name: &str, tcp: bool) -> BTreeSet<(u16, String)> {
    let lookup = resolver(server, tcp)
        .srv_lookup(name)
        .await
        .expect("SRV answer");
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.port, srv.target.to_string())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn answers_a_aaaa_srv_and_reflects_changes() {
    let dns = DnsServer::start("example.test").unwrap();
    assert_eq!(dns.zone(), "example.test.");
    let server = dns.addr();
    assert!(server.ip().is_loopback());

    let two = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
    dns.set_a("db", &two, 1).unwrap();
    assert_eq!(a_records(server, "db.example.test.").await, two.into());

    // Replacing, not appending.
    dns.set_a("db.example.test.", &[two[1]], 1).unwrap();
    assert_eq!(a_records(server, "db.example.test.").await, [two[1]].into());

    dns.set_aaaa("db", &[Ipv6Addr::LOCALHOST], 1).unwrap();
    let ips: BTreeSet<IpAddr> = resolver(server, false)
        .ipv6_lookup("db.example.test.")
        .await
        .unwrap()
        .answers()
        .iter()
        .filter_map(|r| r.data.ip_addr())
        .collect();
    assert_eq!(ips, [IpAddr::V6(Ipv6Addr::LOCALHOST)].into());

    dns.set_srv(
        "_pg._tcp.db",
        &[(10, 5, 6432, "db"), (20, 5, 6433, "other.example.test.")],
        1,
    )
    .unwrap();
    let expected: BTreeSet<_> = [
        (6432, "db.example.test.".to_string()),
        (6433, "other.example.test.".to_string()),
    ]
    .into();
    assert_eq!(
        srv_records(server, "_pg._tcp.db.example.test.", false).await,
        expected
    );
    assert_eq!(
        srv_records(server, "_pg._tcp.db.example.test.", true).await,
        expected,
        "over TCP"
    );

    dns.remove("db").unwrap();
    assert!(a_records(server, "db.example.test.").await.is_empty());
    assert!(resolver(server, false)
        .ipv6_lookup("db.example.test.")
        .await
        .is_err());

    assert!(matches!(
        dns.set_a("elsewhere.org.", &two, 1),
        Err(DnsError::OutsideZone { .. })
    ));
}

#[tokio::test]
async fn cluster_publishes_primary_replicas_and_srv() {
    let cluster = Cluster::builder().replicas(2).dns(true).start().unwrap();
    let dns = cluster.dns().expect("dns enabled");
    let server = dns.addr();
    let zone = dns.zone();
    assert_eq!(zone, "pgrelay.test.");

    assert_eq!(
        a_records(server, &format!("primary.{zone}")).await,
        [Ipv4Addr::new(127, 0, 0, 1)].into()
    );
    assert_eq!(
        a_records(server, &format!("replicas.{zone}")).await,
        [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)].into()
    );
    let srv = srv_records(server, &format!("_postgresql._tcp.replicas.{zone}"), false).await;
    let port = cluster.port();
    let expected: BTreeSet<_> = [
        (port, format!("replica-1.{zone}")),
        (port, format!("replica-2.{zone}")),
    ]
    .into();
    assert_eq!(srv, expected);
    for replica in cluster.replicas() {
        let name = format!("{}.{zone}", replica.name());
        assert_eq!(a_records(server, &name).await, [replica.addr()].into());
    }

    // Tests take a replica out of rotation by editing the records.
    dns.set_a("replicas", &[cluster.replicas()[1].addr()], 1)
        .unwrap();
    assert_eq!(
        a_records(server, &format!("replicas.{zone}")).await,
        [Ipv4Addr::new(127, 0, 0, 3)].into()
    );
}
