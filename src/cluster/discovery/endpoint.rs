//! Endpoints, endpoint sets and the difference between two sets.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use super::DiscoveryError;

/// Weight of an endpoint that carries none of its own (static, A/AAAA).
pub const DEFAULT_WEIGHT: u32 = 100;

/// One server address. Equality and hashing use `addr` only: the same
/// address found twice is the same server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The DNS name this address was found under: the SRV target, the A/AAAA
    /// name or the static host name; `None` for an IP literal.
    pub name: Option<String>,
    /// Relative share of traffic (SRV weight, else [`DEFAULT_WEIGHT`]); never 0.
    pub weight: u32,
    /// SRV priority (lower is preferred); 0 for other sources.
    pub priority: u16,
}

impl Endpoint {
    /// An endpoint with no name, the default weight and priority 0.
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            name: None,
            weight: DEFAULT_WEIGHT,
            priority: 0,
        }
    }

    /// True when anything but the address differs (a re-weighted endpoint).
    fn attributes_differ(&self, other: &Endpoint) -> bool {
        self.name != other.name || self.weight != other.weight || self.priority != other.priority
    }
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl Eq for Endpoint {}

impl Hash for Endpoint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr.hash(state);
    }
}

/// An immutable snapshot of a source's endpoints, sorted by address without
/// duplicates. `version` counts published changes; 0 means "never resolved".
#[derive(Debug, Clone, Default)]
pub struct EndpointSet {
    endpoints: Vec<Endpoint>,
    version: u64,
}

impl EndpointSet {
    /// Sorts by address and drops repeated addresses (the first one wins).
    pub fn new(mut endpoints: Vec<Endpoint>, version: u64) -> Self {
        // Stable sort keeps the first of equal addresses first for dedup.
        endpoints.sort_by_key(|e| e.addr);
        endpoints.dedup_by(|later, earlier| later.addr == earlier.addr);
        EndpointSet { endpoints, version }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// True once a lookup has succeeded at least once.
    pub fn is_resolved(&self) -> bool {
        self.version > 0
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.endpoints.iter().map(|e| e.addr).collect()
    }

    pub fn get(&self, addr: SocketAddr) -> Option<&Endpoint> {
        self.endpoints
            .binary_search_by_key(&addr, |e| e.addr)
            .ok()
            .map(|i| &self.endpoints[i])
    }

    /// True when both sets hold the same endpoints with the same attributes
    /// (versions are ignored).
    pub fn same_endpoints(&self, other: &EndpointSet) -> bool {
        self.endpoints.len() == other.endpoints.len()
            && self
                .endpoints
                .iter()
                .zip(&other.endpoints)
                .all(|(a, b)| a.addr == b.addr && !a.attributes_differ(b))
    }

    /// What changed going from `old` to `self`.
    pub fn diff(&self, old: &EndpointSet) -> Diff {
        let mut diff = Diff::default();
        for new in &self.endpoints {
            match old.get(new.addr) {
                None => diff.added.push(new.clone()),
                Some(before) if before.attributes_differ(new) => diff.changed.push(new.clone()),
                Some(_) => {}
            }
        }
        diff.removed = old
            .endpoints
            .iter()
            .filter(|e| self.get(e.addr).is_none())
            .cloned()
            .collect();
        diff
    }
}

/// The change between two endpoint sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<Endpoint>,
    pub removed: Vec<Endpoint>,
    /// Still present, with a new weight, priority or name.
    pub changed: Vec<Endpoint>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// A `host:port` pair as written in configuration; the host is an IP
/// literal or a DNS name. IPv6 literals are written `[::1]:5432`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        HostPort {
            host: host.into(),
            port,
        }
    }

    /// The address when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort::new(addr.ip().to_string(), addr.port())
    }
}

impl FromStr for HostPort {
    type Err = DiscoveryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || DiscoveryError::InvalidAddress(text.to_string());
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        // A bare IPv6 literal has colons but no brackets: refuse rather than guess.
        if host.is_empty() || host.contains(':') {
            return Err(invalid());
        }
        let port = port.parse::<u16>().map_err(|_| invalid())?;
        Ok(HostPort::new(host, port))
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.socket_addr() {
            Some(addr) => addr.fmt(f),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}
