//! Resident memory of a pooler holding many idle clients: raw TCP clients
//! that log in (startup + md5 password) and then sit silent.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::error::{BenchError, Result};
use crate::pgbench::Endpoint;
use crate::pooler::RunningPooler;
use crate::process::vm_rss_kib;

/// Logins in flight at once: enough to be quick, few enough not to trip
/// a listen backlog.
const CONCURRENT_LOGINS: usize = 64;
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for the pooler to finish per-client bookkeeping before RSS is read.
const SETTLE: Duration = Duration::from_secs(1);

/// RSS with `clients` idle clients connected.
#[derive(Debug, Clone, Copy)]
pub struct MemoryPoint {
    pub clients: usize,
    pub rss_kib: u64,
}

#[derive(Debug, Clone)]
pub struct MemoryProfile {
    /// RSS with one logged-in client (pool and server parameters warmed up).
    pub warm_kib: u64,
    pub points: Vec<MemoryPoint>,
}

impl MemoryProfile {
    /// Added RSS per idle client at the largest count, in KiB.
    pub fn per_client_kib(&self) -> Option<f64> {
        let last = self.points.last()?;
        let added = last.rss_kib.saturating_sub(self.warm_kib) as f64;
        Some(added / (last.clients.saturating_sub(1)).max(1) as f64)
    }
}

/// Connects idle clients up to each count in `counts` (ascending) and reads
/// the pooler's VmRSS at each; the clients are closed at the end.
pub async fn measure(
    name: &str,
    pooler: &RunningPooler,
    endpoint: &Endpoint,
    counts: &[usize],
) -> Result<MemoryProfile> {
    let mut clients = Vec::with_capacity(counts.last().copied().unwrap_or(0));
    connect_more(name, endpoint, 1, &mut clients).await?;
    tokio::time::sleep(SETTLE).await;
    let warm_kib = vm_rss_kib(pooler.pid())?;
    let mut points = Vec::new();
    for &count in counts {
        let missing = count.saturating_sub(clients.len());
        connect_more(name, endpoint, missing, &mut clients).await?;
        tokio::time::sleep(SETTLE).await;
        let rss_kib = vm_rss_kib(pooler.pid())?;
        eprintln!("bench: {name} with {count} idle clients: VmRSS {rss_kib} KiB");
        points.push(MemoryPoint {
            clients: count,
            rss_kib,
        });
    }
    drop(clients);
    Ok(MemoryProfile { warm_kib, points })
}

async fn connect_more(
    name: &str,
    endpoint: &Endpoint,
    count: usize,
    into: &mut Vec<TcpStream>,
) -> Result<()> {
    let fail = |detail: String| BenchError::IdleClients {
        target: name.to_string(),
        detail,
    };
    let mut logins = JoinSet::new();
    let mut started = 0;
    while started < count || !logins.is_empty() {
        while started < count && logins.len() < CONCURRENT_LOGINS {
            let endpoint = endpoint.clone();
            logins.spawn(async move {
                tokio::time::timeout(LOGIN_TIMEOUT, login(&endpoint))
                    .await
                    .map_err(|_| "login timed out".to_string())?
            });
            started += 1;
        }
        match logins.join_next().await {
            Some(Ok(Ok(stream))) => into.push(stream),
            Some(Ok(Err(e))) => {
                return Err(fail(format!("client {} of {count}: {e}", into.len() + 1)))
            }
            Some(Err(e)) => return Err(fail(format!("login task failed: {e}"))),
            None => break,
        }
    }
    Ok(())
}

/// Startup + md5 (or cleartext/trust) login up to the first ReadyForQuery.
async fn login(endpoint: &Endpoint) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", endpoint.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut out = BytesMut::new();
    frontend::startup_message(
        [
            ("user", endpoint.user.as_str()),
            ("database", endpoint.database.as_str()),
        ],
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    let mut inbuf = BytesMut::with_capacity(1024);
    loop {
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            out.clear();
        }
        let message = loop {
            if let Some(m) = Message::parse(&mut inbuf).map_err(|e| format!("parse: {e}"))? {
                break m;
            }
            if stream
                .read_buf(&mut inbuf)
                .await
                .map_err(|e| format!("read: {e}"))?
                == 0
            {
                return Err("server closed the connection during login".into());
            }
        };
        match message {
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(
                    endpoint.user.as_bytes(),
                    endpoint.password.as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut out).map_err(|e| e.to_string())?;
            }
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(endpoint.password.as_bytes(), &mut out)
                    .map_err(|e| e.to_string())?;
            }
            Message::AuthenticationSasl(_) => {
                return Err("server asked for SASL; the idle-client bench uses md5".into())
            }
            Message::ErrorResponse(body) => {
                let text: Vec<String> = {
                    use fallible_iterator::FallibleIterator;
                    body.fields()
                        .map(|f| Ok(String::from_utf8_lossy(f.value_bytes()).into_owned()))
                        .collect()
                        .unwrap_or_default()
                };
                return Err(format!("server error: {}", text.join(" ")));
            }
            Message::ReadyForQuery(_) => return Ok(stream),
            _ => {}
        }
    }
}
