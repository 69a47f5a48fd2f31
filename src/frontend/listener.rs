//! Accepts client connections and runs one session task per client.
//! On shutdown it stops accepting, lets sessions finish their transactions up
//! to a deadline, then ends whatever is left.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::session::run_connection;
use super::Shared;
use crate::cores::{self, Cores};
use crate::shutdown::ShutdownSignal;

/// What the entry point keeps of a running listener.
pub struct ListenerHandle {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `addr` (`host:port`) for clients as `TcpListener::bind` does (the
/// first address it resolves to that binds, `SO_REUSEADDR` set), with
/// `SO_REUSEPORT` too when `reuse_port` (PgBouncer's `so_reuseport`): then
/// several processes may bind the same address and the kernel spreads new
/// connections over them.
pub async fn bind(addr: &str, reuse_port: bool) -> std::io::Result<TcpListener> {
    let mut last = None;
    for candidate in tokio::net::lookup_host(addr).await? {
        let socket = if candidate.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        let bound = socket
            .set_reuseaddr(true)
            .and_then(|()| socket.set_reuseport(reuse_port))
            .and_then(|()| socket.bind(candidate))
            .and_then(|()| socket.listen(LISTEN_BACKLOG));
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    }))
}

/// The backlog `TcpListener::bind` asks for (std's and mio's), which is also
/// PgBouncer's `listen_backlog` default.
const LISTEN_BACKLOG: u32 = 128;

/// Serves clients on `listener` until `shutdown`, then drains for at most `drain`.
/// Each session runs on the core of `cores` with the fewest sessions.
pub fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    cores: Arc<Cores>,
    shutdown: ShutdownSignal,
    drain: Duration,
) -> std::io::Result<ListenerHandle> {
    let local_addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, shared, cores, shutdown, drain));
    Ok(ListenerHandle { local_addr, task })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cores: Arc<Cores>,
    shutdown: ShutdownSignal,
    drain: Duration,
) {
    let accepting_core = cores::current();
    let mut sessions = JoinSet::new();
    // One wait for the listener's life: a new one per accepted connection
    // would register with the shutdown notifier (and take its lock) each time.
    let stop = shutdown.triggered();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let shared = shared.clone();
                    let signal = shutdown.clone();
                    let slots = shared.client_slots.clone();
                    let placement = cores.place();
                    let handle = placement.handle.clone();
                    sessions.spawn_on(async move {
                        let moved = if placement.core == accepting_core {
                            Ok(tcp)
                        } else {
                            cores::rehome(tcp)
                        };
                        let tcp = match moved {
                            Ok(tcp) => tcp,
                            Err(e) => {
                                warn!(error = %e, %peer, "could not move a client to its core");
                                return;
                            }
                        };
                        let admit = move || slots.try_acquire_owned().ok();
                        run_connection(tcp, shared, signal, admit).await;
                        drop(placement);
                        tracing::trace!(%peer, "connection closed");
                    }, &handle);
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = &mut stop => break,
        }
    }
    drop(listener);
    info!(
        sessions = sessions.len(),
        "stopped accepting; draining sessions"
    );
    let drained = tokio::time::timeout(drain, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            remaining = sessions.len(),
            "drain deadline passed; closing remaining sessions"
        );
        sessions.shutdown().await;
    }
}
