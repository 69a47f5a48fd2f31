//! The client side: accepting connections, the startup handshake, client
//! authentication, and the per-client session that relays to pooled servers.

mod admin_session;
mod cancel;
mod cancel_peers;
mod client;
mod handshake;
mod kill;
mod listener;
mod login;
mod params;
mod prepared;
mod query;
mod relay;
mod routing;
mod session;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::admin::AdminError;
use crate::backend::BackendError;
use crate::cluster::{DatabaseSpec, PoolRegistry};
use crate::config::{AuthType, PoolMode, SslMode};
use crate::pool::PoolError;
use crate::protocol::ProtocolError;

pub use cancel::CancelRegistry;
pub use listener::{bind, serve, ListenerHandle};

/// Settings the client side reads; rebuilt on reload and picked up by new sessions.
#[derive(Debug, Clone)]
pub struct FrontendSettings {
    pub auth_type: AuthType,
    pub max_client_conn: usize,
    pub max_message: usize,
    pub client_login_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    /// A server that has not finished answering this long after a query was
    /// sent is given up on (PgBouncer's `query_timeout`).
    pub query_timeout: Option<Duration>,
    /// PgBouncer's `log_connections` / `log_disconnections`: a line per
    /// login and per client that leaves.
    pub log_connections: bool,
    pub log_disconnections: bool,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    /// Startup parameters accepted and dropped (lower case).
    pub ignore_startup_parameters: Vec<String>,
    /// Parameters re-applied when a client lands on a server that differs, in
    /// addition to the PgBouncer set (lower case).
    pub track_extra_parameters: Vec<String>,
    pub client_tls_mode: SslMode,
    /// Where a cancel request for keys no local client holds is passed on
    /// (`cancel_peers`): the other pgrelay processes behind the same address.
    pub cancel_peers: Vec<String>,
}

/// Looks up what a client asks for. Implemented by the application over the
/// current configuration and userlist; sessions hold no config of their own.
pub trait Directory: Send + Sync + 'static {
    fn settings(&self) -> Arc<FrontendSettings>;
    /// The database a client named, with the pool settings for `user`.
    fn database(&self, name: &str, user: &str) -> Option<DatabaseSpec>;
    /// The pools serving `user` on the database a client named, if the
    /// database is configured. Every login asks; an implementation may
    /// remember the answer for as long as its configuration stays the same.
    fn database_pools(
        &self,
        name: &str,
        user: &str,
        registry: &PoolRegistry,
    ) -> Option<Arc<crate::cluster::DatabasePools>> {
        let spec = self.database(name, user)?;
        Some(registry.get_or_create(user, spec))
    }
    /// The secret a client must prove for `user`, if the user is known.
    fn client_secret(&self, user: &str) -> Option<crate::auth::Secret>;
    /// Key for SCRAM mock authentication of unknown users (stable per process).
    fn scram_mock_key(&self) -> [u8; 32];
    /// A client proved `user`'s password over SCRAM, revealing its ClientKey:
    /// keep it if server logins need it (SCRAM pass-through).
    fn remember_scram_client_key(&self, _user: &str, _client_key: [u8; 32]) {}
    /// The statement classifier built from the current routing rules.
    fn classifier(&self) -> Arc<crate::router::Classifier>;
    /// What `user` may do on the admin console, if anything.
    fn admin_privilege(&self, user: &str) -> Option<crate::admin::Privilege>;
    /// The configuration in force, for the admin console.
    fn config(&self) -> crate::config::Config;
    /// The users the auth file names, for the console's `SHOW USERS`.
    fn auth_users(&self) -> Vec<String>;
    /// Re-reads the configuration from where it came from (admin `RELOAD`, SIGHUP).
    /// Running pools in `registry` take the new pool settings.
    fn reload(&self, registry: &PoolRegistry) -> Result<(), String>;
    /// The console's `SET name = value`: the setting changed in the
    /// configuration in force and applied as a reload applies it.
    fn set(&self, name: &str, value: &str, registry: &PoolRegistry) -> Result<(), AdminError>;
}

/// What every session shares.
pub struct Shared {
    pub directory: Arc<dyn Directory>,
    pub pools: Arc<PoolRegistry>,
    pub cancels: CancelRegistry,
    pub tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// One permit per logged-in client (`max_client_conn`), across listeners.
    pub client_slots: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `SHOW STATS` averages, advanced by the upkeep task.
    pub traffic: Arc<crate::metrics::TrafficWindow>,
    /// Told by the console's `SHUTDOWN`; the entry point then stops the
    /// process as it does on SIGTERM.
    pub stop_requested: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Error)]
pub enum FrontendError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("client connection I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed the connection")]
    ClientClosed,
    #[error("client login timed out")]
    LoginTimeout,
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("{0}")]
    AuthProtocol(String),
    #[error("SSL required")]
    TlsRequired,
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    /// The console's `DISABLE`.
    #[error("database \"{0}\" is not currently accepting connections")]
    DatabaseDisabled(String),
    #[error("unsupported startup parameter: {0}")]
    UnsupportedParameter(String),
    #[error("no user name in the startup packet")]
    NoUser,
    #[error("sorry, too many clients already (max_client_conn)")]
    TooManyClients,
    #[error("{0}")]
    Pool(#[from] PoolError<BackendError>),
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("client idle timeout")]
    IdleTimeout,
    #[error("terminating connection due to idle-in-transaction timeout")]
    IdleInTransaction,
    /// `query_timeout`: the server is closed, so whether the query took
    /// effect is unknown, as after a lost connection.
    #[error("query_timeout: the server did not answer within {0:?}; its connection was closed, so the query's outcome is unknown")]
    QueryTimeout(Duration),
    #[error("transaction blocks not allowed in statement pooling mode")]
    TransactionInStatementMode,
    #[error("pgrelay is shutting down")]
    ShuttingDown,
    /// The console's `KILL` or `KILL_CLIENT`.
    #[error("terminating connection due to administrator command")]
    Killed,
    #[error("no replica is available for this read (fallback: error)")]
    NoReplica,
    /// A cancel arrived while the statement waited for a server: it never
    /// reached one, and the session goes on.
    #[error("canceling statement due to user request")]
    WaitCancelled,
    #[error(transparent)]
    Router(#[from] crate::router::RouterError),
    #[error(
        "not allowed to use the admin console: \"{0}\" is in neither admin_users nor stats_users"
    )]
    NotAdmin(String),
}

impl FrontendError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            FrontendError::Protocol(e) => e.sqlstate(),
            FrontendError::AuthFailed(_) => "28P01",
            FrontendError::AuthProtocol(_) | FrontendError::TlsRequired | FrontendError::NoUser => {
                "28000"
            }
            FrontendError::UnknownDatabase(_) => "3D000",
            // PostgreSQL's code for a database that does not allow connections.
            FrontendError::DatabaseDisabled(_) => "55000",
            FrontendError::UnsupportedParameter(_) => "08P01",
            FrontendError::TooManyClients => "53300",
            // The server's own reason is more precise than "could not connect":
            // a refused login is 08004, an unreachable server 08006.
            FrontendError::Pool(PoolError::Connect(e)) => e.sqlstate(),
            FrontendError::Pool(e) => e.sqlstate(),
            FrontendError::Backend(e) => e.sqlstate(),
            FrontendError::IdleTimeout => "57P05",
            FrontendError::IdleInTransaction => "25P03",
            // Like a connection lost mid-query: the client cannot know whether
            // its statement ran (08006 tells drivers and poolers to reconnect).
            FrontendError::QueryTimeout(_) => "08006",
            FrontendError::TransactionInStatementMode => "0A000",
            FrontendError::ShuttingDown | FrontendError::Killed => "57P01",
            FrontendError::NoReplica => "08006",
            FrontendError::WaitCancelled => "57014",
            FrontendError::Router(e) => e.sqlstate(),
            FrontendError::NotAdmin(_) => "28000",
            FrontendError::Io(_) | FrontendError::ClientClosed | FrontendError::LoginTimeout => {
                "08006"
            }
        }
    }

    /// Whether the client hears of it (and metrics count it).
    pub fn is_reported(&self) -> bool {
        self.reportable()
    }

    /// Whether the client can still be told about it.
    fn reportable(&self) -> bool {
        !matches!(self, FrontendError::Io(_) | FrontendError::ClientClosed)
    }
}

/// The mode a session pools in, after per-database overrides.
fn releases_at_idle(mode: PoolMode) -> bool {
    !matches!(mode, PoolMode::Session)
}
