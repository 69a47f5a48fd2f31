//! The pooled server connections alive now, for the console's `SHOW SERVERS`.
//!
//! A pool's connector lists each connection it opens; the connection carries
//! its [`Listing`], so whatever path closes it (release past its lifetime, a
//! broken socket, a drained replica) also takes it off the list.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::CancelKey;

impl CancelKey {
    /// The console's id for this server (`ptr` in `SHOW SERVERS`, `link` in
    /// `SHOW CLIENTS`): derived from the key, so a client attached to the
    /// server names the same id without the two lists sharing state.
    pub fn console_id(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (self.addr, self.process_id).hash(&mut h);
        h.finish()
    }
}

/// Who a server connection is. When it was last used is not kept: a
/// per-checkout clock conversion cost 1 % of a transaction's instructions.
#[derive(Debug)]
pub struct ServerCard {
    pub key: CancelKey,
    pub user: String,
    pub database: String,
    pub local: Option<SocketAddr>,
    pub connect_time: SystemTime,
    /// TLS version and cipher, empty for plain TCP.
    pub tls: String,
    prepared: AtomicUsize,
    /// Set by the console's `RECONNECT`: closed when next released.
    close_needed: AtomicBool,
}

impl ServerCard {
    /// Statements pgrelay has prepared on it.
    pub fn prepared(&self) -> usize {
        self.prepared.load(Ordering::Relaxed)
    }

    /// Whether the server is to be closed instead of pooled again.
    pub fn close_needed(&self) -> bool {
        self.close_needed.load(Ordering::Relaxed)
    }
}

/// The list of live pooled servers. Health probes are not on it.
#[derive(Debug, Default)]
pub struct ServerList {
    cards: Mutex<HashMap<u64, Arc<ServerCard>>>,
    next: AtomicU64,
    /// Counts `RECONNECT`s, so a server that was logging in during one (not
    /// yet on the list to be marked) is marked when it is added.
    reconnects: AtomicU64,
}

impl ServerList {
    pub fn new() -> Arc<Self> {
        Arc::new(ServerList::default())
    }

    /// Every listed server, in the order they were opened.
    pub fn cards(&self) -> Vec<Arc<ServerCard>> {
        let mut cards: Vec<(u64, Arc<ServerCard>)> = self
            .cards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, c)| (*n, c.clone()))
            .collect();
        cards.sort_by_key(|(n, _)| *n);
        cards.into_iter().map(|(_, c)| c).collect()
    }

    /// The `RECONNECT` count now: read before a connection starts, passed to
    /// [`ServerConn::list_in`](super::ServerConn::list_in) once it is up.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Acquire)
    }

    /// `RECONNECT`: marks the listed servers of `database` (of every database
    /// with `None`) to be closed when released. Servers still logging in are
    /// marked as they are added, whatever their database: closing one server
    /// too many only costs a new login.
    pub fn mark_close_needed(&self, database: Option<&str>) {
        let cards = self.cards.lock().unwrap_or_else(|e| e.into_inner());
        self.reconnects.fetch_add(1, Ordering::AcqRel);
        for card in cards.values() {
            if database.is_none_or(|d| card.database == d) {
                card.close_needed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Whether a listed server of `database` (of any with `None`) is still
    /// marked by `RECONNECT`: `WAIT_CLOSE` waits for none.
    pub fn any_close_needed(&self, database: Option<&str>) -> bool {
        let cards = self.cards.lock().unwrap_or_else(|e| e.into_inner());
        cards
            .values()
            .any(|c| c.close_needed() && database.is_none_or(|d| c.database == d))
    }

    pub(super) fn add(self: &Arc<Self>, card: ServerCard, reconnects_at_start: u64) -> Listing {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let card = Arc::new(card);
        let mut cards = self.cards.lock().unwrap_or_else(|e| e.into_inner());
        // Under the list's lock, so a RECONNECT either saw this card or
        // counted before this read.
        if self.reconnects.load(Ordering::Acquire) != reconnects_at_start {
            card.close_needed.store(true, Ordering::Relaxed);
        }
        cards.insert(number, card.clone());
        drop(cards);
        Listing {
            list: self.clone(),
            number,
            card,
        }
    }
}

/// A connection's place on the list; dropping it takes the connection off.
#[derive(Debug)]
pub(super) struct Listing {
    list: Arc<ServerList>,
    number: u64,
    card: Arc<ServerCard>,
}

impl Listing {
    pub(super) fn set_prepared(&self, count: usize) {
        self.card.prepared.store(count, Ordering::Relaxed);
    }

    pub(super) fn close_needed(&self) -> bool {
        self.card.close_needed()
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        self.list
            .cards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.number);
    }
}

impl ServerCard {
    pub(super) fn new(
        key: CancelKey,
        user: &str,
        database: &str,
        local: Option<SocketAddr>,
        tls: String,
    ) -> Self {
        ServerCard {
            key,
            user: user.to_string(),
            database: database.to_string(),
            local,
            connect_time: SystemTime::now(),
            tls,
            prepared: AtomicUsize::new(0),
            close_needed: AtomicBool::new(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: i32) -> CancelKey {
        CancelKey {
            addr: "127.0.0.1:5432".parse().unwrap(),
            process_id: pid,
            secret_key: 1,
        }
    }

    #[test]
    fn a_listing_is_removed_when_dropped_and_counts_prepared_statements() {
        let list = ServerList::new();
        let card = |pid| ServerCard::new(key(pid), "u", "db", None, String::new());
        let a = list.add(card(1), 0);
        let b = list.add(card(2), 0);
        let pids: Vec<i32> = list.cards().iter().map(|c| c.key.process_id).collect();
        assert_eq!(pids, vec![1, 2], "in the order opened");
        a.set_prepared(3);
        assert_eq!(list.cards()[0].prepared(), 3);
        drop(a);
        let pids: Vec<i32> = list.cards().iter().map(|c| c.key.process_id).collect();
        assert_eq!(pids, vec![2]);
        drop(b);
        assert!(list.cards().is_empty());
    }

    #[test]
    fn console_ids_differ_by_backend_and_address() {
        assert_eq!(key(1).console_id(), key(1).console_id());
        assert_ne!(key(1).console_id(), key(2).console_id());
        let elsewhere = CancelKey {
            addr: "127.0.0.2:5432".parse().unwrap(),
            ..key(1)
        };
        assert_ne!(key(1).console_id(), elsewhere.console_id());
    }

    #[test]
    fn reconnect_marks_its_database_and_servers_that_were_logging_in() {
        let list = ServerList::new();
        let card = |pid, db| ServerCard::new(key(pid), "u", db, None, String::new());
        let a = list.add(card(1, "a"), list.reconnects());
        let b = list.add(card(2, "b"), list.reconnects());
        let started = list.reconnects();
        list.mark_close_needed(Some("a"));
        assert!(a.close_needed() && !b.close_needed());
        assert!(list.any_close_needed(Some("a")) && !list.any_close_needed(Some("b")));
        // Its login began before the RECONNECT: it may use the old settings.
        let late = list.add(card(3, "b"), started);
        assert!(late.close_needed());
        let fresh = list.add(card(4, "b"), list.reconnects());
        assert!(!fresh.close_needed());
        drop((a, late));
        assert!(
            !list.any_close_needed(None),
            "closed servers leave the list"
        );
        list.mark_close_needed(None);
        assert!(b.close_needed() && fresh.close_needed());
    }
}
