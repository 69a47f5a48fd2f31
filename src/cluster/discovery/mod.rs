//! Discovery: turns a replica group's source (a static list, DNS A/AAAA
//! records or DNS SRV records) into the current set of endpoints.
//!
//! One background task per source ([`spawn`]) resolves it, publishes an
//! immutable `Arc<EndpointSet>` through a `tokio::sync::watch` channel and
//! re-resolves when the answer's TTL runs out (clamped to
//! `[min_ttl, max_ttl]`). A failed or empty lookup never replaces a good set:
//! the last good set stays published and the lookup is retried after
//! `failure_retry`. Consumers compare snapshots with [`EndpointSet::diff`].
//!
//! Resolution goes through the [`Resolve`] trait so the task is tested with a
//! scripted resolver; [`HickoryResolve`] is the real one.

mod endpoint;
mod resolve;
mod task;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

pub use endpoint::{Diff, Endpoint, EndpointSet, HostPort, DEFAULT_WEIGHT};
pub use resolve::{HickoryResolve, Resolve, Resolved};
pub use task::{spawn, Discovery, DiscoveryCounts};

/// Where a replica group's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoverySource {
    /// Fixed addresses; host names among them are resolved like `DnsA`.
    Static(Vec<HostPort>),
    /// Every A/AAAA record of `name` is one endpoint at `port`.
    DnsA { name: String, port: u16 },
    /// Every SRV record of `name` is one endpoint (target's addresses, SRV port).
    DnsSrv { name: String },
}

impl DiscoverySource {
    /// The conventional SRV name for PostgreSQL servers of `domain`:
    /// `_postgresql._tcp.<domain>`.
    pub fn postgres_srv(domain: &str) -> Self {
        DiscoverySource::DnsSrv {
            name: format!("_postgresql._tcp.{domain}"),
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            DiscoverySource::Static(list) => {
                let items: Vec<String> = list.iter().map(HostPort::to_string).collect();
                format!("static [{}]", items.join(", "))
            }
            DiscoverySource::DnsA { name, port } => format!("A/AAAA {name} port {port}"),
            DiscoverySource::DnsSrv { name } => format!("SRV {name}"),
        }
    }
}

/// How one source is resolved and refreshed.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    pub source: DiscoverySource,
    /// Ask this server (UDP, then TCP) instead of the system resolver.
    pub nameserver: Option<SocketAddr>,
    /// Re-resolve no sooner than this, whatever the records' TTL says.
    pub min_ttl: Duration,
    /// Re-resolve at least this often, whatever the records' TTL says.
    pub max_ttl: Duration,
    /// Wait after a failed or empty lookup before trying again.
    pub failure_retry: Duration,
    /// Longest one lookup (including SRV target lookups) may take.
    pub lookup_timeout: Duration,
}

impl DiscoveryConfig {
    /// A config for `source` with the default timings.
    pub fn new(source: DiscoverySource) -> Self {
        DiscoveryConfig {
            source,
            nameserver: None,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            failure_retry: Duration::from_secs(5),
            lookup_timeout: Duration::from_secs(10),
        }
    }

    /// The wait before the next lookup after a good answer with `ttl`.
    pub fn refresh_after(&self, ttl: Duration) -> Duration {
        // max_ttl wins if the two are misconfigured (min > max).
        ttl.max(self.min_ttl).min(self.max_ttl)
    }
}

/// Why a lookup produced no endpoints.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error("could not set up the DNS resolver: {0}")]
    ResolverSetup(String),
    #[error("DNS lookup of {name} failed: {reason}")]
    Lookup { name: String, reason: String },
    #[error("DNS name {0} has no records")]
    NoRecords(String),
    #[error("DNS lookup of {name} took longer than {timeout:?}")]
    Timeout { name: String, timeout: Duration },
    #[error("invalid address {0:?}: expected host:port")]
    InvalidAddress(String),
    #[error("discovery stopped before the first successful lookup")]
    Stopped,
}

impl DiscoveryError {
    /// A client that finds no replica to connect to sees this SQLSTATE.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            DiscoveryError::InvalidAddress(_) | DiscoveryError::ResolverSetup(_) => "F0000", // config_file_error
            _ => "08001", // sqlclient_unable_to_establish_sqlconnection
        }
    }

    /// True when the name exists in no form (NXDOMAIN or no records).
    pub fn is_no_records(&self) -> bool {
        matches!(self, DiscoveryError::NoRecords(_))
    }
}
