//! An in-process authoritative DNS server whose records tests can change at
//! run time (hickory-server's in-memory zone handler behind a Catalog).
//!
//! It runs on a `ServiceThread` (its own thread and tokio runtime) so sync
//! tests, `#[tokio::test]`s and the demo can all use the same blocking API.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;

use crate::service_thread::{ReadySender, ServiceError, ServiceThread};

/// Zone served unless the caller picks another.
pub const DEFAULT_ZONE: &str = "pgrelay.test.";
/// Short, so resolvers notice record changes quickly.
pub const DEFAULT_TTL: u32 = 2;

const TCP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const TCP_RESPONSE_BUFFER: usize = 64;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const BIND_ATTEMPTS: u32 = 20;
const SOA_SERIAL: u32 = 1;

type RecordMap = BTreeMap<RrKey, Arc<RecordSet>>;
type ZoneEdit = Box<dyn FnOnce(&mut RecordMap) + Send>;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("{name} is outside the served zone {zone}")]
    OutsideZone { name: String, zone: String },
    #[error("DNS server socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the DNS server thread is not running")]
    Stopped,
}

impl ServiceError for DnsError {
    fn stopped() -> Self {
        DnsError::Stopped
    }
}

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Name,
    handler: Arc<InMemoryZoneHandler>,
    runtime: tokio::runtime::Handle,
    _service: ServiceThread,
}

impl DnsServer {
    /// Starts a server for `zone` (e.g. `pgrelay.test.`) on 127.0.0.1, UDP
    /// and TCP on the same free port.
    pub fn start(zone: &str) -> Result<Self, DnsError> {
        // The zone apex is always absolute, with or without the caller's dot.
        let zone = parse_name(&format!("{}.", zone.trim_end_matches('.')))?;
        let handler = Arc::new(new_zone_handler(&zone));
        let thread_handler = handler.clone();
        let thread_zone = zone.clone();
        let ((addr, runtime), service) =
            ServiceThread::spawn("pgrelay-dns", move |ready, stop| {
                serve(thread_zone, thread_handler, ready, stop)
            })?;
        tracing::debug!(%addr, %zone, "DNS server started");
        Ok(DnsServer {
            addr,
            zone,
            handler,
            runtime,
            _service: service,
        })
    }

    /// Where to send queries (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The zone apex, e.g. `pgrelay.test.`.
    pub fn zone(&self) -> String {
        self.zone.to_string()
    }

    /// The fully qualified form of `name` (relative names are under the zone).
    pub fn fqdn(&self, name: &str) -> Result<String, DnsError> {
        Ok(self.resolve_name(name)?.to_string())
    }

    /// Replaces all A records of `name`; an empty list removes them.
    pub fn set_a(&self, name: &str, addrs: &[Ipv4Addr], ttl: u32) -> Result<(), DnsError> {
        let rdata = addrs.iter().map(|a| RData::A(A(*a))).collect();
        self.replace(name, RecordType::A, rdata, ttl)
    }

    /// Replaces all AAAA records of `name`; an empty list removes them.
    pub fn set_aaaa(&self, name: &str, addrs: &[Ipv6Addr], ttl: u32) -> Result<(), DnsError> {
        let rdata = addrs.iter().map(|a| RData::AAAA(AAAA(*a))).collect();
        self.replace(name, RecordType::AAAA, rdata, ttl)
    }

    /// Replaces all SRV records of `name` (e.g. `_postgresql._tcp.replicas`)
    /// with `(priority, weight, port, target)` entries; targets may be
    /// relative to the zone.
    pub fn set_srv(
        &self,
        name: &str,
        entries: &[(u16, u16, u16, &str)],
        ttl: u32,
    ) -> Result<(), DnsError> {
        let rdata = entries
            .iter()
            .map(|(priority, weight, port, target)| {
                let target = self.resolve_name(target)?;
                Ok(RData::SRV(SRV::new(*priority, *weight, *port, target)))
            })
            .collect::<Result<Vec<_>, DnsError>>()?;
        self.replace(name, RecordType::SRV, rdata, ttl)
    }

    /// Removes every record of `name`.
    pub fn remove(&self, name: &str) -> Result<(), DnsError> {
        let lower = LowerName::new(&self.resolve_name(name)?);
        self.edit(Box::new(move |records| {
            records.retain(|key, _| key.name != lower);
        }))
    }

    fn replace(
        &self,
        name: &str,
        record_type: RecordType,
        rdata: Vec<RData>,
        ttl: u32,
    ) -> Result<(), DnsError> {
        let name = self.resolve_name(name)?;
        let key = RrKey::new(LowerName::new(&name), record_type);
        let mut set = RecordSet::with_ttl(name, record_type, ttl);
        for data in rdata {
            set.add_rdata(data);
        }
        self.edit(Box::new(move |records| {
            if set.is_empty() {
                records.remove(&key);
            } else {
                records.insert(key, Arc::new(set));
            }
        }))
    }

    /// Applies `change` on the server's runtime (the zone lock is async) and
    /// waits for it, so the change is visible when this returns.
    fn edit(&self, change: ZoneEdit) -> Result<(), DnsError> {
        let (done_tx, done_rx) = mpsc::channel();
        let handler = self.handler.clone();
        self.runtime.spawn(async move {
            let mut records = handler.records_mut().await;
            change(&mut records);
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(COMMAND_TIMEOUT)
            .map_err(|_| DnsError::Stopped)
    }

    fn resolve_name(&self, name: &str) -> Result<Name, DnsError> {
        let parsed = parse_name(name)?;
        let fqdn = if parsed.is_fqdn() {
            parsed
        } else {
            parsed
                .append_domain(&self.zone)
                .map_err(|e| invalid(name, e))?
        };
        if !self.zone.zone_of(&fqdn) {
            return Err(DnsError::OutsideZone {
                name: fqdn.to_string(),
                zone: self.zone.to_string(),
            });
        }
        Ok(fqdn)
    }
}

type Ready = (SocketAddr, tokio::runtime::Handle);

/// Binds, reports readiness, serves until `stop` fires.
async fn serve(
    zone: Name,
    handler: Arc<InMemoryZoneHandler>,
    ready: ReadySender<Ready, DnsError>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let (udp, tcp) = match bind_same_port().await {
        Ok(sockets) => sockets,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let addr = match udp.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let mut catalog = Catalog::new();
    let handlers: Vec<Arc<dyn ZoneHandler>> = vec![handler];
    catalog.upsert(LowerName::new(&zone), handlers);
    let mut server = Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_REQUEST_TIMEOUT, TCP_RESPONSE_BUFFER);
    if ready
        .send(Ok((addr, tokio::runtime::Handle::current())))
        .is_err()
    {
        return;
    }
    tokio::select! {
        _ = stop => {}
        result = server.block_until_done() => {
            if let Err(e) = result {
                tracing::warn!(error = %e, "DNS server stopped");
            }
        }
    }
    let _ = server.shutdown_gracefully().await;
}

/// UDP and TCP on one port: bind UDP to an ephemeral port, then try TCP on it.
async fn bind_same_port() -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), DnsError> {
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = udp.local_addr()?.port();
        match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.map(DnsError::Io).unwrap_or(DnsError::Stopped))
}

fn new_zone_handler(zone: &Name) -> InMemoryZoneHandler {
    let mut handler = InMemoryZoneHandler::empty(zone.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(
        Name::from_ascii("ns")
            .and_then(|n| n.append_domain(zone))
            .unwrap_or_else(|_| zone.clone()),
        Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(zone))
            .unwrap_or_else(|_| zone.clone()),
        SOA_SERIAL,
        3600,
        600,
        86_400,
        DEFAULT_TTL,
    );
    handler.upsert_mut(
        Record::from_rdata(zone.clone(), DEFAULT_TTL, RData::SOA(soa)),
        SOA_SERIAL,
    );
    handler
}

fn parse_name(name: &str) -> Result<Name, DnsError> {
    Name::from_ascii(name).map_err(|e| invalid(name, e))
}

fn invalid(name: &str, reason: impl std::fmt::Display) -> DnsError {
    DnsError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}
