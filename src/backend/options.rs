//! Where and how server connections are opened: the options a pool's
//! connections share, the live cell a reload swaps them in, and TLS.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::ServerSecret;
use crate::config::SslMode;

/// Where and how to open server connections; shared by every connection of a pool.
#[derive(Clone)]
pub struct ConnectOptions {
    /// What to dial: a DNS name or an IP address.
    pub host: String,
    pub port: u16,
    /// The name the server's certificate must carry when `host` is an
    /// address found by looking this name up (verify-full checks the name
    /// the user configured, as libpq does, not the address it led to).
    pub tls_name: Option<String>,
    pub user: String,
    pub database: String,
    pub secret: ServerSecret,
    pub tls: ServerTlsPolicy,
    pub connect_timeout: Duration,
    /// Largest message accepted from the server.
    pub max_message: usize,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls_name", &self.tls_name)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("tls", &self.tls.mode)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// The same options for the server at `addr`, found under `name` (a DNS
    /// name; `None` when the address was configured as such).
    pub fn at_address(&self, addr: SocketAddr, name: Option<&str>) -> ConnectOptions {
        ConnectOptions {
            host: addr.ip().to_string(),
            port: addr.port(),
            tls_name: name.map(|n| n.trim_end_matches('.').to_string()),
            ..self.clone()
        }
    }

    /// The name checked against the server's certificate.
    pub(super) fn certificate_name(&self) -> &str {
        self.tls_name.as_deref().unwrap_or(&self.host)
    }
}

/// Connect options a reload may replace: a connection opened after
/// [`LiveOptions::replace`] uses the new ones. Clones share them, and so does
/// [`LiveOptions::at`], which dials a fixed address (a replica endpoint) with
/// whatever else is current.
#[derive(Clone)]
pub struct LiveOptions {
    current: Arc<RwLock<Arc<ConnectOptions>>>,
    dial: Option<(SocketAddr, Option<Arc<str>>)>,
}

impl LiveOptions {
    pub fn new(opts: ConnectOptions) -> Self {
        LiveOptions {
            current: Arc::new(RwLock::new(Arc::new(opts))),
            dial: None,
        }
    }

    /// The same options dialling `addr`, found under the DNS name `name`.
    pub fn at(&self, addr: SocketAddr, name: Option<&str>) -> Self {
        LiveOptions {
            current: self.current.clone(),
            dial: Some((addr, name.map(Arc::from))),
        }
    }

    /// What a connection opened now uses.
    pub fn get(&self) -> Arc<ConnectOptions> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match &self.dial {
            None => current,
            Some((addr, name)) => Arc::new(current.at_address(*addr, name.as_deref())),
        }
    }

    /// Swaps in `opts` for every sharer; true when the server a connection
    /// reaches or logs in as changes (host, port, database or user), so the
    /// servers already open are no longer what the configuration says.
    pub fn replace(&self, opts: ConnectOptions) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let moved = current.host != opts.host
            || current.port != opts.port
            || current.database != opts.database
            || current.user != opts.user;
        *current = Arc::new(opts);
        moved
    }
}

impl From<ConnectOptions> for LiveOptions {
    fn from(opts: ConnectOptions) -> Self {
        LiveOptions::new(opts)
    }
}

impl std::fmt::Debug for LiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveOptions")
            .field("current", &self.get())
            .finish()
    }
}

/// TLS towards servers, already built (building reads certificate files).
#[derive(Clone)]
pub struct ServerTlsPolicy {
    pub mode: SslMode,
    pub connector: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for ServerTlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTlsPolicy")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ServerTlsPolicy {
    pub fn disabled() -> Self {
        ServerTlsPolicy {
            mode: SslMode::Disable,
            connector: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(host: &str) -> ConnectOptions {
        ConnectOptions {
            host: host.to_string(),
            port: 5432,
            tls_name: None,
            user: "app".to_string(),
            database: "app".to_string(),
            secret: ServerSecret::Password("one".to_string()),
            tls: ServerTlsPolicy::disabled(),
            connect_timeout: Duration::from_secs(1),
            max_message: 1024,
        }
    }

    #[test]
    fn an_address_found_under_a_name_is_verified_as_that_name() {
        let addr: SocketAddr = "127.0.0.2:6000".parse().unwrap();
        let found = options("db.example").at_address(addr, Some("replicas.example."));
        assert_eq!((found.host.as_str(), found.port), ("127.0.0.2", 6000));
        assert_eq!(found.certificate_name(), "replicas.example");
        let literal = options("db.example").at_address(addr, None);
        assert_eq!(literal.certificate_name(), "127.0.0.2");
        assert_eq!(options("db.example").certificate_name(), "db.example");
    }

    #[test]
    fn a_replacement_reaches_every_sharer_and_reports_a_move() {
        let live = LiveOptions::new(options("10.0.0.1"));
        let addr: SocketAddr = "10.0.0.7:5433".parse().unwrap();
        let replica = live.at(addr, Some("r.example"));

        let mut rotated = options("10.0.0.1");
        rotated.secret = ServerSecret::Password("two".to_string());
        assert!(!live.replace(rotated), "a new password moves nothing");
        assert!(matches!(&replica.get().secret, ServerSecret::Password(p) if p == "two"));
        assert_eq!(
            replica.get().host,
            "10.0.0.7",
            "the replica keeps its address"
        );

        assert!(live.replace(options("10.0.0.2")), "a new host is a move");
        assert_eq!(live.clone().get().host, "10.0.0.2");
        let mut renamed = options("10.0.0.2");
        renamed.database = "other".to_string();
        assert!(live.replace(renamed), "so is a new database");
    }
}
