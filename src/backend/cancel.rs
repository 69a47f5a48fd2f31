//! Cancel requests to one server, and the gate that keeps the server from
//! running anything new while one is on its way.
//!
//! A cancel names a backend process, not a query: whatever runs there when
//! the postmaster signals it is cancelled. So a server must not start another
//! query (the same client's next one, or in transaction pooling another
//! client's) until the postmaster has acted on every cancel pgrelay forwarded
//! to it. The postmaster closes the cancel connection only after it signalled
//! the backend (PostgreSQL signals twice, the process and its group, and a
//! preempted cancel child can send the second one late), and PostgreSQL drops
//! a cancel that reaches an idle backend: waiting for that close is enough.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::BackendError;

/// Identifies one server backend for cancel requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelKey {
    pub addr: SocketAddr,
    pub process_id: i32,
    pub secret_key: i32,
}

/// The cancels forwarded to one server that the postmaster has not yet
/// confirmed; shared by the connection and whoever forwards a cancel to it.
#[derive(Debug, Default)]
pub struct CancelGate {
    in_flight: AtomicUsize,
    settled: Notify,
    /// A cancel was sent but never confirmed: it may still land on a later
    /// query, so the connection must not be used again.
    unconfirmed: AtomicBool,
}

impl CancelGate {
    /// Returns once no forwarded cancel is pending. One atomic load when none is.
    pub async fn settled(&self) {
        while self.pending() {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cancel ending in between
            // still wakes this waiter.
            notified.as_mut().enable();
            if !self.pending() {
                return;
            }
            notified.await;
        }
    }

    pub fn pending(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) != 0
    }

    pub fn unconfirmed(&self) -> bool {
        self.unconfirmed.load(Ordering::Relaxed)
    }
}

/// What a client's cancel reaches: a server and its gate.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub key: CancelKey,
    gate: Arc<CancelGate>,
}

impl CancelTarget {
    pub fn new(key: CancelKey, gate: Arc<CancelGate>) -> Self {
        Self { key, gate }
    }

    /// Holds the server's gate shut until the returned cancel is sent and
    /// confirmed. Call while the server is known to be attached to the
    /// client (under the lock its detach takes), so no later query can slip
    /// in between.
    pub fn begin(&self) -> PendingCancel {
        self.gate.in_flight.fetch_add(1, Ordering::AcqRel);
        PendingCancel {
            key: self.key,
            gate: self.gate.clone(),
        }
    }
}

/// A cancel counted on its server's gate; sending it (or dropping it unsent)
/// opens the gate again.
#[derive(Debug)]
pub struct PendingCancel {
    key: CancelKey,
    gate: Arc<CancelGate>,
}

impl PendingCancel {
    pub fn key(&self) -> CancelKey {
        self.key
    }

    /// Sends the request and waits until the postmaster closes the connection.
    /// A request that may have been written but was not confirmed (a timeout
    /// or an error after connecting) marks the server unusable: it may yet be
    /// cancelled at any moment.
    pub async fn send(self, timeout: Duration) -> Result<(), BackendError> {
        let mut written = false;
        let sent = tokio::time::timeout(timeout, send_request(self.key, &mut written))
            .await
            .unwrap_or_else(|_| Err(BackendError::ConnectTimeout(self.key.addr.to_string())));
        if sent.is_err() && written {
            self.gate.unconfirmed.store(true, Ordering::Relaxed);
        }
        sent
    }
}

impl Drop for PendingCancel {
    fn drop(&mut self) {
        if self.gate.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.gate.settled.notify_waiters();
        }
    }
}

/// Sends a CancelRequest for `key` on a fresh connection, with no gate: for a
/// server that is being closed anyway.
pub async fn send_cancel(key: CancelKey, timeout: Duration) -> Result<(), BackendError> {
    let mut written = false;
    tokio::time::timeout(timeout, send_request(key, &mut written))
        .await
        .map_err(|_| BackendError::ConnectTimeout(key.addr.to_string()))?
}

async fn send_request(key: CancelKey, written: &mut bool) -> Result<(), BackendError> {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(key.process_id, key.secret_key, &mut out);
    deliver(key.addr, &out, written).await
}

/// Writes a cancel-type request to `addr` on a fresh connection and waits
/// for the receiver to close it, which a postmaster (or a pgrelay peer) does
/// once it has acted on the request. `written` turns true from the first
/// write attempt: even a failed write may have reached the receiver.
pub async fn deliver(
    addr: SocketAddr,
    request: &[u8],
    written: &mut bool,
) -> Result<(), BackendError> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| BackendError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    *written = true;
    tcp.write_all(request).await?;
    let mut sink = [0u8; 16];
    while tcp.read(&mut sink).await? != 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CancelTarget {
        let key = CancelKey {
            addr: "127.0.0.1:1".parse().unwrap(),
            process_id: 1,
            secret_key: 2,
        };
        CancelTarget::new(key, Arc::new(CancelGate::default()))
    }

    #[tokio::test]
    async fn the_gate_opens_when_the_last_pending_cancel_ends() {
        let target = target();
        let gate = target.gate.clone();
        tokio::time::timeout(Duration::from_secs(1), gate.settled())
            .await
            .expect("no cancel: open");
        let first = target.begin();
        let second = target.begin();
        assert!(gate.pending());
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.settled().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one cancel still pending");
        drop(second);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("opened")
            .unwrap();
        assert!(!gate.pending());
        assert!(!gate.unconfirmed());
    }

    #[tokio::test]
    async fn a_cancel_that_cannot_connect_leaves_the_server_usable() {
        let target = target();
        let refused = target.begin().send(Duration::from_secs(2)).await;
        assert!(
            matches!(refused, Err(BackendError::Connect { .. })),
            "{refused:?}"
        );
        assert!(!target.gate.pending());
        assert!(!target.gate.unconfirmed());
    }

    #[tokio::test]
    async fn a_cancel_cut_off_after_it_was_written_retires_the_server() {
        // A listener that reads the request, then resets the connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reset = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 16];
            s.read_exact(&mut buf).await.unwrap();
            // A zero linger resets on close without blocking, which is what
            // the deprecation warns of for other values.
            #[allow(deprecated)]
            s.set_linger(Some(Duration::ZERO)).unwrap();
        });
        let mut target = target();
        target.key.addr = addr;
        let sent = target.begin().send(Duration::from_secs(5)).await;
        reset.await.unwrap();
        assert!(sent.is_err(), "{sent:?}");
        assert!(!target.gate.pending());
        assert!(target.gate.unconfirmed());
    }

    #[tokio::test]
    async fn a_cancel_sent_but_never_confirmed_retires_the_server() {
        // A listener that reads the request and never closes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 16];
            s.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut target = target();
        target.key.addr = addr;
        let sent = target.begin().send(Duration::from_millis(200)).await;
        assert!(
            matches!(sent, Err(BackendError::ConnectTimeout(_))),
            "{sent:?}"
        );
        assert!(!target.gate.pending());
        assert!(target.gate.unconfirmed());
        held.abort();
    }
}
