//! The primary's address when `host` is a DNS name: re-resolved like replica
//! discovery (TTL-clamped, last good answer kept), so a failover that moves
//! the name sends new connections to the new address, and servers still
//! connected to the old one are closed instead of pooled again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use super::discovery::{self, DiscoveryConfig, EndpointSet};
use crate::shutdown::ShutdownSignal;

/// The current address(es) of a database's primary, as last resolved.
/// Cloned into every pool connector of the database; one discovery task
/// behind all of them.
#[derive(Debug, Clone)]
pub struct PrimaryAddress {
    rx: watch::Receiver<Arc<EndpointSet>>,
}

impl PrimaryAddress {
    /// A fixed view, for tests and for callers that resolve elsewhere.
    pub fn from_receiver(rx: watch::Receiver<Arc<EndpointSet>>) -> Self {
        PrimaryAddress { rx }
    }

    /// The addresses to connect to, in order; waits up to `wait` for the
    /// first lookup. Empty when none has succeeded yet.
    pub async fn addrs(&self, wait: Duration) -> Vec<SocketAddr> {
        let mut rx = self.rx.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(|set| set.is_resolved())).await;
        let set = rx.borrow().clone();
        set.addrs()
    }

    /// Whether a server connected to `peer` is still the primary as far as
    /// DNS says. Before the first answer every address counts as current.
    pub fn is_current(&self, peer: SocketAddr) -> bool {
        let set = self.rx.borrow();
        !set.is_resolved() || set.get(peer).is_some()
    }
}

/// Keeps a DNS primary's address fresh; dropping it stops both tasks.
pub struct PrimaryWatch {
    _discovery: discovery::Discovery,
    watcher: JoinHandle<()>,
    address: PrimaryAddress,
}

impl Drop for PrimaryWatch {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl PrimaryWatch {
    /// Starts re-resolving `config.source` and logging and counting (in
    /// `moved`) each change of address after the first answer.
    pub fn spawn<R: discovery::Resolve>(
        database: &str,
        config: DiscoveryConfig,
        resolver: R,
        moved: IntCounter,
        shutdown: ShutdownSignal,
    ) -> Self {
        let found = discovery::spawn(config, resolver, shutdown);
        let rx = found.subscribe();
        let watcher = tokio::spawn(report_moves(database.to_string(), rx.clone(), moved));
        PrimaryWatch {
            _discovery: found,
            watcher,
            address: PrimaryAddress { rx },
        }
    }

    pub fn address(&self) -> PrimaryAddress {
        self.address.clone()
    }
}

async fn report_moves(
    database: String,
    mut rx: watch::Receiver<Arc<EndpointSet>>,
    moved: IntCounter,
) {
    let mut previous = rx.borrow_and_update().clone();
    while rx.changed().await.is_ok() {
        let current = rx.borrow_and_update().clone();
        if previous.is_resolved() && previous.addrs() != current.addrs() {
            warn!(
                database,
                from = ?previous.addrs(),
                to = ?current.addrs(),
                "primary moved; new connections go to the new address, servers on the old one close at release"
            );
            moved.inc();
        }
        previous = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::discovery::Endpoint;

    fn set(last: u8, version: u64) -> Arc<EndpointSet> {
        let addr = SocketAddr::from(([127, 0, 0, last], 5432));
        Arc::new(EndpointSet::new(vec![Endpoint::new(addr)], version))
    }

    #[tokio::test]
    async fn only_the_resolved_address_is_current_and_moves_are_counted() {
        let (tx, rx) = watch::channel(Arc::new(EndpointSet::default()));
        let address = PrimaryAddress::from_receiver(rx.clone());
        let old = SocketAddr::from(([127, 0, 0, 1], 5432));
        let new = SocketAddr::from(([127, 0, 0, 2], 5432));
        assert!(address.is_current(old), "unresolved: anything goes");
        assert!(address.addrs(Duration::from_millis(10)).await.is_empty());

        let moved = IntCounter::new("moved", "test").unwrap();
        let watcher = tokio::spawn(report_moves("app".into(), rx, moved.clone()));
        tx.send(set(1, 1)).unwrap();
        tokio::task::yield_now().await; // the watcher sees each set
        assert_eq!(address.addrs(Duration::ZERO).await, [old]);
        assert!(address.is_current(old) && !address.is_current(new));

        tx.send(set(2, 2)).unwrap();
        tokio::task::yield_now().await;
        assert!(!address.is_current(old) && address.is_current(new));
        drop(tx);
        watcher.await.unwrap();
        assert_eq!(moved.get(), 1, "the first answer is not a move");
    }
}
