//! A loopback TCP relay that makes one server slow: every chunk the server
//! sends is held for a fixed delay before it reaches the client; client
//! bytes pass straight through.
//!
//! Like [`crate::DnsServer`] it runs on a `ServiceThread`, so sync tests,
//! `#[tokio::test]`s and benchmarks share one blocking API. Dropping it stops
//! the listener and every relayed connection (the runtime and its tasks go
//! with the thread).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::service_thread::{ReadySender, ServiceError, ServiceThread};

/// Read size on the server side; a chunk is what one read returns.
const CHUNK_BYTES: usize = 16 * 1024;

/// Errors of the delaying relay.
#[derive(Debug, thiserror::Error)]
pub enum DelayRelayError {
    /// Tests and benchmarks only touch loopback; anything else is refused.
    #[error("{0} is not a loopback address")]
    NotLoopback(IpAddr),
    #[error("relay socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the relay thread is not running")]
    Stopped,
}

impl ServiceError for DelayRelayError {
    fn stopped() -> Self {
        DelayRelayError::Stopped
    }
}

/// A running relay from [`DelayRelay::addr`] to its target; stops when dropped.
pub struct DelayRelay {
    addr: SocketAddr,
    _service: ServiceThread,
}

impl DelayRelay {
    /// Listens on `bind_ip` (an ephemeral port) and relays each accepted
    /// connection to `target`, holding every chunk from `target` for `delay`.
    /// Both addresses must be loopback.
    pub fn start(
        bind_ip: IpAddr,
        target: SocketAddr,
        delay: Duration,
    ) -> Result<Self, DelayRelayError> {
        for ip in [bind_ip, target.ip()] {
            if !ip.is_loopback() {
                return Err(DelayRelayError::NotLoopback(ip));
            }
        }
        let (addr, service) = ServiceThread::spawn("pgrelay-delay-relay", move |ready, stop| {
            serve(bind_ip, target, delay, ready, stop)
        })?;
        tracing::debug!(%addr, %target, ?delay, "delay relay started");
        Ok(DelayRelay {
            addr,
            _service: service,
        })
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds, reports the address, accepts until `stop` fires.
async fn serve(
    bind_ip: IpAddr,
    target: SocketAddr,
    delay: Duration,
    ready: ReadySender<SocketAddr, DelayRelayError>,
    stop: oneshot::Receiver<()>,
) {
    let listener = match TcpListener::bind((bind_ip, 0)).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let reported = match listener.local_addr() {
        Ok(addr) => ready.send(Ok(addr)).is_ok(),
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            false
        }
    };
    if !reported {
        return;
    }
    tokio::select! {
        _ = stop => {}
        _ = accept_loop(listener, target, delay) => {}
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, delay: Duration) {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(relay_connection(inbound, target, delay));
            }
            Err(e) => {
                tracing::warn!(error = %e, "delay relay stopped accepting");
                return;
            }
        }
    }
}

/// One client connection: client bytes go straight up; each chunk read from
/// the server is held for `delay`, then written down. Either side closing
/// ends both directions.
async fn relay_connection(inbound: TcpStream, target: SocketAddr, delay: Duration) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut client_in, mut client_out) = inbound.into_split();
    let (mut server_in, mut server_out) = outbound.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut client_in, &mut server_out).await;
    };
    let down = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        while let Ok(n) = server_in.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tokio::time::sleep(delay).await;
            if client_out.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
