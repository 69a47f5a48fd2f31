//! The `Resolve` seam and its hickory-resolver implementation.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use super::{DiscoveryError, DiscoverySource, Endpoint, HostPort};

/// One successful lookup: the endpoints and how long the answer is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub endpoints: Vec<Endpoint>,
    /// Smallest TTL among the records used; `Duration::MAX` when no record
    /// was involved (IP literals only).
    pub ttl: Duration,
}

/// Turns a source into endpoints once. Implemented by [`HickoryResolve`]
/// and by scripted resolvers in tests.
pub trait Resolve: Send + Sync + 'static {
    fn lookup(
        &self,
        source: &DiscoverySource,
    ) -> impl Future<Output = Result<Resolved, DiscoveryError>> + Send;
}

/// DNS through hickory-resolver, with its response cache off so every
/// lookup asks the server (the discovery task does its own TTL timing).
#[derive(Clone)]
pub struct HickoryResolve {
    resolver: TokioResolver,
}

impl std::fmt::Debug for HickoryResolve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryResolve").finish_non_exhaustive()
    }
}

impl HickoryResolve {
    /// Uses `nameserver` (UDP, falling back to TCP) if given, else the
    /// system configuration (`/etc/resolv.conf`).
    pub fn new(nameserver: Option<SocketAddr>) -> Result<Self, DiscoveryError> {
        let mut builder = match nameserver {
            Some(server) => {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = server.port();
                        c
                    })
                    .collect();
                let name_server = NameServerConfig::new(server.ip(), true, connections);
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(setup_error)?,
        };
        let options = builder.options_mut();
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder.build().map_err(setup_error)?;
        Ok(HickoryResolve { resolver })
    }

    /// Every A/AAAA address of `name` and the smallest TTL among them.
    async fn addresses(&self, name: &str) -> Result<(Vec<IpAddr>, Duration), DiscoveryError> {
        let lookup = self
            .resolver
            .lookup_ip(name)
            .await
            .map_err(|e| lookup_error(name, e))?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(DiscoveryError::NoRecords(name.to_string()));
        }
        Ok((
            ips,
            min_ttl(lookup.as_lookup().answers().iter().map(|r| r.ttl)),
        ))
    }

    async fn lookup_static(&self, list: &[HostPort]) -> Result<Resolved, DiscoveryError> {
        let mut resolved = Resolved {
            endpoints: Vec::with_capacity(list.len()),
            ttl: Duration::MAX,
        };
        for item in list {
            if let Some(addr) = item.socket_addr() {
                resolved.endpoints.push(Endpoint::new(addr));
                continue;
            }
            // Any failing name fails the whole lookup so the last good set
            // stays, rather than silently dropping that server.
            let (ips, ttl) = self.addresses(&item.host).await?;
            resolved.ttl = resolved.ttl.min(ttl);
            let name = item.host.trim_end_matches('.');
            resolved
                .endpoints
                .extend(ips.into_iter().map(|ip| Endpoint {
                    name: Some(name.to_string()),
                    ..Endpoint::new(SocketAddr::new(ip, item.port))
                }));
        }
        Ok(resolved)
    }

    async fn lookup_a(&self, name: &str, port: u16) -> Result<Resolved, DiscoveryError> {
        let (ips, ttl) = self.addresses(name).await?;
        let name = name.trim_end_matches('.');
        Ok(Resolved {
            endpoints: ips
                .into_iter()
                .map(|ip| Endpoint {
                    name: Some(name.to_string()),
                    ..Endpoint::new(SocketAddr::new(ip, port))
                })
                .collect(),
            ttl,
        })
    }

    async fn lookup_srv(&self, name: &str) -> Result<Resolved, DiscoveryError> {
        let lookup = self
            .resolver
            .srv_lookup(name)
            .await
            .map_err(|e| lookup_error(name, e))?;
        let mut resolved = Resolved {
            endpoints: Vec::new(),
            ttl: min_ttl(lookup.answers().iter().map(|r| r.ttl)),
        };
        for record in lookup.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            // RFC 2782: a target of "." means the service is not offered there.
            if srv.target.is_root() {
                continue;
            }
            let target = srv.target.to_string();
            let (ips, ttl) = match self.addresses(&target).await {
                Ok(found) => found,
                Err(DiscoveryError::NoRecords(_)) => {
                    tracing::warn!(srv = name, target, "SRV target has no addresses; skipped");
                    continue;
                }
                Err(e) => return Err(e),
            };
            resolved.ttl = resolved.ttl.min(ttl);
            let display_name = target.trim_end_matches('.').to_string();
            resolved
                .endpoints
                .extend(ips.into_iter().map(|ip| Endpoint {
                    addr: SocketAddr::new(ip, srv.port),
                    name: Some(display_name.clone()),
                    // Weight 0 means "rarely" in RFC 2782, not "never": keep it usable.
                    weight: u32::from(srv.weight).max(1),
                    priority: srv.priority,
                }));
        }
        if resolved.endpoints.is_empty() {
            return Err(DiscoveryError::NoRecords(name.to_string()));
        }
        Ok(resolved)
    }
}

impl Resolve for HickoryResolve {
    async fn lookup(&self, source: &DiscoverySource) -> Result<Resolved, DiscoveryError> {
        match source {
            DiscoverySource::Static(list) => self.lookup_static(list).await,
            DiscoverySource::DnsA { name, port } => self.lookup_a(name, *port).await,
            DiscoverySource::DnsSrv { name } => self.lookup_srv(name).await,
        }
    }
}

fn min_ttl(ttls: impl Iterator<Item = u32>) -> Duration {
    ttls.min()
        .map(|secs| Duration::from_secs(secs.into()))
        .unwrap_or(Duration::MAX)
}

fn lookup_error(name: &str, error: NetError) -> DiscoveryError {
    if error.is_no_records_found() {
        DiscoveryError::NoRecords(name.to_string())
    } else {
        DiscoveryError::Lookup {
            name: name.to_string(),
            reason: error.to_string(),
        }
    }
}

fn setup_error(error: NetError) -> DiscoveryError {
    DiscoveryError::ResolverSetup(error.to_string())
}
