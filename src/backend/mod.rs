//! One server connection: connect (TCP, optionally TLS), log in, and the
//! protocol state pgrelay keeps about it.

mod cancel;
mod list;
mod login;
mod options;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::backend::{self as be, ErrorFields, TxStatus};
use crate::protocol::framing::{self, Frame};
use crate::protocol::ProtocolError;
use crate::stream::Stream;

pub use cancel::{deliver, send_cancel, CancelGate, CancelKey, CancelTarget, PendingCancel};
pub use list::{ServerCard, ServerList};
pub use login::ServerSecret;
pub use options::{ConnectOptions, LiveOptions, ServerTlsPolicy};

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("could not connect to server {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to server {0}")]
    ConnectTimeout(String),
    #[error("server {0} refused TLS but sslmode requires it")]
    TlsRefused(String),
    #[error("TLS handshake with server {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("server login failed: {}", .0.message)]
    Login(ErrorFields),
    #[error("server requested {0} authentication, which pgrelay does not support")]
    UnsupportedAuth(&'static str),
    #[error("no password is known for the server login of user {0:?}")]
    NoPassword(String),
    #[error(
        "user {0:?} has a SCRAM secret in the userlist and no client has logged in \
         with it since pgrelay started, so pgrelay cannot log in to the server yet"
    )]
    NoClientKey(String),
    #[error("SCRAM pass-through login failed: {0}")]
    PassThrough(#[source] crate::auth::AuthError),
    #[error("server error: {}", .0.message)]
    Server(ErrorFields),
    #[error("server protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("server connection closed")]
    Closed,
    #[error("server connection I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl BackendError {
    /// The SQLSTATE a client sees when this error ends its request.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            BackendError::Login(_)
            | BackendError::NoPassword(_)
            | BackendError::NoClientKey(_)
            | BackendError::PassThrough(_) => "08004", // server rejected the connection
            BackendError::UnsupportedAuth(_) => "28000",
            BackendError::Server(_) => "XX000",
            BackendError::Protocol(_) => "08P01",
            _ => "08006", // connection_failure
        }
    }

    /// True when the server (not the client) is at fault and the connection is gone.
    pub fn is_connection_failure(&self) -> bool {
        !matches!(self, BackendError::Server(_))
    }
}

/// A logged-in server connection.
/// How much [`ServerConn::write_or_fill`] reads at once.
const READ_CHUNK: usize = 8192;

/// What [`ServerConn::write_or_fill`] managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bytes of the input were written.
    Wrote(usize),
    /// Bytes the server sent were appended to `rbuf`.
    Read(usize),
}

pub struct ServerConn {
    stream: Stream,
    /// Bytes read from the server and not yet consumed.
    pub rbuf: BytesMut,
    params: Vec<(String, String)>,
    cancel: CancelKey,
    /// Cancels forwarded to this server and not yet confirmed: nothing is
    /// written to it while any is pending.
    cancels: Arc<CancelGate>,
    created: Instant,
    max_message: usize,
    /// Statements pgrelay prepared here under its own names (transaction pooling).
    prepared: HashSet<Arc<str>>,
    /// The client parameter values this server's tracked parameters were last
    /// seen to match; cleared when the server reports a change.
    synced_to: Option<Arc<Vec<(String, String)>>>,
    /// Its place on the console's server list, if a pool opened it.
    listing: Option<list::Listing>,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("addr", &self.cancel.addr)
            .field("pid", &self.cancel.process_id)
            .finish_non_exhaustive()
    }
}

impl ServerConn {
    pub async fn connect(opts: &ConnectOptions) -> Result<ServerConn, BackendError> {
        let addr_text = format!("{}:{}", opts.host, opts.port);
        let tcp = tokio::time::timeout(
            opts.connect_timeout,
            TcpStream::connect((opts.host.as_str(), opts.port)),
        )
        .await
        .map_err(|_| BackendError::ConnectTimeout(addr_text.clone()))?
        .map_err(|source| BackendError::Connect {
            addr: addr_text.clone(),
            source,
        })?;
        tcp.set_nodelay(true)?;
        let peer = tcp.peer_addr()?;
        let stream = login::negotiate_tls(tcp, opts, &addr_text).await?;
        let mut conn = ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            params: Vec::new(),
            cancel: CancelKey {
                addr: peer,
                process_id: 0,
                secret_key: 0,
            },
            cancels: Arc::default(),
            created: Instant::now(),
            max_message: opts.max_message,
            prepared: HashSet::new(),
            synced_to: None,
            listing: None,
        };
        let login = tokio::time::timeout(opts.connect_timeout, login::login(&mut conn, opts));
        login
            .await
            .map_err(|_| BackendError::ConnectTimeout(addr_text))??;
        Ok(conn)
    }

    /// Puts this connection on `servers` for `SHOW SERVERS` (a pool's
    /// connection, not a health probe's). `reconnects_at_start` is
    /// [`ServerList::reconnects`] read before the connection was begun.
    pub fn list_in(
        &mut self,
        servers: &Arc<ServerList>,
        user: &str,
        database: &str,
        reconnects_at_start: u64,
    ) {
        let card = ServerCard::new(
            self.cancel,
            user,
            database,
            self.stream.tcp().local_addr().ok(),
            self.stream.tls_description(),
        );
        self.listing = Some(servers.add(card, reconnects_at_start));
    }

    /// To be closed, not pooled again: marked by the console's `RECONNECT`,
    /// or a cancel sent to it was never confirmed.
    pub fn close_needed(&self) -> bool {
        self.listing.as_ref().is_some_and(|l| l.close_needed()) || self.cancels.unconfirmed()
    }

    fn note_prepared(&self) {
        if let Some(listing) = &self.listing {
            listing.set_prepared(self.prepared.len());
        }
    }

    /// The server's backend process id: unique per server at any moment.
    pub fn process_id(&self) -> i32 {
        self.cancel.process_id
    }

    pub fn created(&self) -> Instant {
        self.created
    }

    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    pub fn cancel_key(&self) -> CancelKey {
        self.cancel
    }

    /// Whether a cancel forwarded to this server is not yet confirmed.
    pub fn cancel_pending(&self) -> bool {
        self.cancels.pending()
    }

    /// Returns once every cancel forwarded to this server is confirmed.
    pub async fn cancels_settled(&self) {
        self.cancels.settled().await;
    }

    /// What a client attached to this server cancels.
    pub fn cancel_target(&self) -> CancelTarget {
        CancelTarget::new(self.cancel, self.cancels.clone())
    }

    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// An idle server says nothing unprompted: if its socket is readable now
    /// (a FATAL before it exits, or end of stream), the connection is gone.
    /// The connection registered with the caller's runtime (see
    /// [`crate::cores`]); an error has closed it.
    pub fn rehome(mut self) -> std::io::Result<ServerConn> {
        self.stream = self.stream.rehome()?;
        Ok(self)
    }

    pub fn is_idle_and_open(&self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        // tokio's cached readiness, read without taking the socket's waiter
        // lock: set only when the socket became readable after the last read
        // that drained it.
        self.stream
            .tcp()
            .try_io(tokio::io::Interest::READABLE, || Ok(()))
            .is_err()
    }

    pub fn has_prepared(&self, name: &str) -> bool {
        self.prepared.contains(name)
    }

    pub fn mark_prepared(&mut self, name: Arc<str>) {
        self.prepared.insert(name);
        self.note_prepared();
    }

    pub fn forget_prepared(&mut self, name: &str) {
        self.prepared.remove(name);
        self.note_prepared();
    }

    /// After `DISCARD ALL` or `DEALLOCATE ALL` the server has none left.
    pub fn forget_all_prepared(&mut self) {
        self.prepared.clear();
        self.note_prepared();
    }

    pub fn prepared_count(&self) -> usize {
        self.prepared.len()
    }

    /// Parameters the server reported (ParameterStatus), latest value each.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// Whether this server's tracked parameters are known to equal `values`
    /// (a client's, as last recorded by [`ServerConn::mark_params_synced`]).
    /// An equal snapshot of another client is adopted, so that the next
    /// checkout by the same client compares one pointer, not every value.
    pub fn params_synced_to(&mut self, values: &Arc<Vec<(String, String)>>) -> bool {
        match &self.synced_to {
            Some(s) if Arc::ptr_eq(s, values) => true,
            Some(s) if s == values => {
                self.synced_to = Some(values.clone());
                true
            }
            _ => false,
        }
    }

    pub fn mark_params_synced(&mut self, values: Arc<Vec<(String, String)>>) {
        self.synced_to = Some(values);
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Records a parameter's value: from the server's ParameterStatus, or
    /// set by pgrelay for one the server does not report. A name already
    /// known keeps the server's spelling.
    pub fn set_param(&mut self, name: &str, value: &str) {
        match self
            .params
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => {
                if v != value {
                    *v = value.to_string();
                    self.synced_to = None;
                }
            }
            None => {
                self.params.push((name.to_string(), value.to_string()));
                self.synced_to = None;
            }
        }
    }

    /// Drops a recorded value pgrelay has just `RESET` to the server's default.
    pub fn forget_param(&mut self, name: &str) {
        let before = self.params.len();
        self.params.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if self.params.len() != before {
            self.synced_to = None;
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        if self.cancels.pending() {
            self.cancels.settled().await;
        }
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Writes some of `bytes`, or, while the server cannot take them, reads
    /// what it sends: a server blocked writing a large result stops reading,
    /// so a proxy that only wrote would wait on it forever.
    pub async fn write_or_fill(&mut self, bytes: &[u8]) -> Result<Progress, BackendError> {
        use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
        if self.cancels.pending() {
            self.cancels.settled().await;
        }
        let progress = std::future::poll_fn(|cx| {
            if let Poll::Ready(written) = Pin::new(&mut self.stream).poll_write(cx, bytes) {
                return Poll::Ready(written.map(Progress::Wrote));
            }
            // Only reached while the server's input is full. Reading straight
            // into rbuf keeps a bounce buffer out of every session's future.
            let start = self.rbuf.len();
            self.rbuf.resize(start + READ_CHUNK, 0);
            let mut buf = ReadBuf::new(&mut self.rbuf[start..]);
            let polled = Pin::new(&mut self.stream).poll_read(cx, &mut buf);
            let n = buf.filled().len();
            self.rbuf.truncate(start + n);
            match polled {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Progress::Read(n))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        match progress {
            Progress::Wrote(0) | Progress::Read(0) => Err(BackendError::Closed),
            progress => Ok(progress),
        }
    }

    /// Reads more bytes from the server into `rbuf`; `Closed` at end of stream.
    pub async fn fill(&mut self) -> Result<usize, BackendError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(8192);
        }
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(BackendError::Closed),
            n => Ok(n),
        }
    }

    /// Takes the next complete message from `rbuf`, reading as needed.
    pub async fn next_message(&mut self) -> Result<BytesMut, BackendError> {
        loop {
            if let Some(len) = framing::check(&self.rbuf, self.max_message)? {
                return Ok(self.rbuf.split_to(len));
            }
            self.fill().await?;
        }
    }

    /// Runs a simple query whose results nobody wants (SET, reset and check
    /// queries), leaving the connection idle. A server error is returned after
    /// the connection is back at ReadyForQuery.
    pub async fn run_discarding(&mut self, sql: &str) -> Result<TxStatus, BackendError> {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out)?;
        self.write_all(&out).await?;
        let mut error = None;
        loop {
            let msg = self.next_message().await?;
            let frame = Frame::new(&msg);
            match frame.tag {
                be::tag::READY_FOR_QUERY => {
                    let status = be::ready_for_query_status(frame.body)?;
                    return match error {
                        Some(e) => Err(BackendError::Server(e)),
                        None => Ok(status),
                    };
                }
                be::tag::ERROR_RESPONSE => error = Some(be::error_fields(frame.body)?),
                be::tag::PARAMETER_STATUS => {
                    let (name, value) = be::parameter_status(frame.body)?;
                    if let Ok(value) = std::str::from_utf8(value) {
                        let (name, value) = (name.to_string(), value.to_string());
                        self.set_param(&name, &value);
                    }
                }
                be::tag::COPY_IN_RESPONSE => {
                    // Nothing pgrelay runs itself copies; refuse cleanly.
                    let mut fail = BytesMut::new();
                    postgres_protocol::message::frontend::copy_fail("not expected", &mut fail)?;
                    self.write_all(&fail).await?;
                }
                _ => {}
            }
        }
    }

    /// Says goodbye politely; errors do not matter, the socket closes either way.
    pub async fn terminate(mut self) {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::terminate(&mut out);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.stream.write_all(&out).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}
