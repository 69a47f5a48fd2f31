//! pgrelay's own cancel keys, and the list of connected clients behind them:
//! each client gets a (process id, secret) pair that maps to whichever server
//! runs its query right now, and to nothing else. The same entry says who the
//! client is and what it is doing, for the console's `SHOW CLIENTS`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;

use super::kill::KillSwitch;
use crate::admin::{ClientRow, ClientState};
use crate::backend::{CancelTarget, PendingCancel};

#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<i32, Entry>>,
}

struct Entry {
    secret: i32,
    slot: Arc<CancelSlot>,
}

impl Entry {
    /// Compared in constant time: the secret is what makes a cancel valid.
    fn secret_matches(&self, secret: i32) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.secret.to_be_bytes().ct_eq(&secret.to_be_bytes()))
    }
}

/// Who a logged-in client is: set once, after its login.
#[derive(Debug, Clone)]
pub struct ClientCard {
    pub user: String,
    pub database: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub connect_time: SystemTime,
    /// TLS version and cipher, empty for plain TCP.
    pub tls: String,
    /// As sent in the startup packet (a later change is kept in the slot).
    pub application_name: String,
}

/// What a client is doing now.
#[derive(Debug, Default, Clone)]
struct Activity {
    /// The server attached to the client, if any.
    target: Option<CancelTarget>,
    /// Since when the client has waited for a server, while it does.
    waiting_since: Option<Instant>,
    /// A cancel arrived during the current wait.
    wait_cancelled: bool,
    /// When the client last asked for a server.
    last_request: Option<Instant>,
}

/// One client: the server it is attached to, if any, and who it is.
#[derive(Default)]
pub struct CancelSlot {
    activity: Mutex<Activity>,
    card: OnceLock<ClientCard>,
    /// Named statements the client has prepared (kept in transaction pooling).
    prepared: AtomicUsize,
    /// The client's `application_name` once it changed it after login.
    application_name: Mutex<Option<String>>,
    /// The console's `KILL`/`KILL_CLIENT`: ends the session at once.
    kill: KillSwitch,
    /// Rung when a cancel arrives while the client waits for a server.
    wait_cancelled: tokio::sync::Notify,
    /// Its pools' count of cancels on their way to a server, once known.
    cancels_forwarding: OnceLock<Arc<AtomicUsize>>,
}

impl CancelSlot {
    /// The client asked for a server at `at` and waits for one.
    pub fn waiting(&self, at: Instant) {
        let mut activity = self.lock();
        activity.waiting_since = Some(at);
        activity.wait_cancelled = false;
        activity.last_request = Some(at);
    }

    /// Returns once a cancel arrives for the client's current wait for a
    /// server (begun by [`CancelSlot::waiting`]). PostgreSQL would cancel the
    /// query that waits; a pooler that let it wait on would leave the client
    /// stuck until a server frees up (PgBouncer's issue #1222).
    async fn wait_cancelled(&self) {
        loop {
            let rung = self.wait_cancelled.notified();
            tokio::pin!(rung);
            // Registered before the check: a cancel in between still wakes it.
            rung.as_mut().enable();
            // Once a server is attached the checkout is past waiting: a
            // cancel goes to the server instead.
            let cancelled = {
                let activity = self.lock();
                activity.wait_cancelled && activity.target.is_none()
            };
            if cancelled {
                return;
            }
            rung.await;
        }
    }

    /// `fut`, or `None` if a cancel ends the current wait first. `fut` is
    /// polled first, and alone while it completes at once (a checkout with a
    /// free server): the cancel's waiter is registered only for a real wait.
    /// Pinned by the caller: a checkout's future moved in here would be
    /// copied on every call.
    pub async fn unless_cancelled<T>(
        &self,
        mut fut: std::pin::Pin<&mut impl std::future::Future<Output = T>>,
    ) -> Option<T> {
        use std::future::Future;
        use std::task::Poll;
        let mut cancelled = std::pin::pin!(self.wait_cancelled());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(done));
            }
            cancelled.as_mut().poll(cx).map(|()| None)
        })
        .await
    }

    pub fn attach(&self, target: CancelTarget) {
        let mut activity = self.lock();
        activity.target = Some(target);
        activity.waiting_since = None;
    }

    pub fn detach(&self) {
        let mut activity = self.lock();
        activity.target = None;
        activity.waiting_since = None;
    }

    pub fn set_prepared(&self, count: usize) {
        self.prepared.store(count, Ordering::Relaxed);
    }

    /// The client set `application_name` (its server reported the new value).
    pub fn set_application_name(&self, name: &str) {
        *self
            .application_name
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(name.to_string());
    }

    fn application_name(&self, card: &ClientCard) -> String {
        let renamed = self
            .application_name
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        renamed
            .clone()
            .unwrap_or_else(|| card.application_name.clone())
    }

    /// Thrown when the console kills this client.
    pub fn kill_switch(&self) -> &KillSwitch {
        &self.kill
    }

    /// Who the client is, once it has logged in.
    pub fn card(&self) -> Option<&ClientCard> {
        self.card.get()
    }

    /// Says who the client is; only the first call counts.
    pub fn describe(&self, card: ClientCard) {
        let _ = self.card.set(card);
    }

    /// Counts the client's cancels in `counter` (its pools', for `SHOW POOLS`).
    pub fn count_cancels_in(&self, counter: Arc<AtomicUsize>) {
        let _ = self.cancels_forwarding.set(counter);
    }

    /// A cancel for the attached server, counted on its gate before the
    /// lock `detach` takes is released: the server runs nothing new until
    /// the cancel is done. A client still waiting for a server has its wait
    /// cancelled instead.
    fn begin_cancel(&self) -> Option<PendingCancel> {
        let mut activity = self.lock();
        if let Some(target) = &activity.target {
            return Some(target.begin());
        }
        if activity.waiting_since.is_some() {
            activity.wait_cancelled = true;
            self.wait_cancelled.notify_waiters();
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Activity> {
        // Every update is one assignment: a panic cannot leave it half done.
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A client's cancel on its way to its server, counted in its pools'
/// `SHOW POOLS` until sent (or dropped).
pub struct OutgoingCancel {
    pending: PendingCancel,
    counted: Option<Forwarding>,
}

struct Forwarding(Arc<AtomicUsize>);

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl OutgoingCancel {
    pub fn key(&self) -> crate::backend::CancelKey {
        self.pending.key()
    }

    /// Sends it and waits for the postmaster ([`PendingCancel::send`]).
    pub async fn send(self, timeout: Duration) -> Result<(), crate::backend::BackendError> {
        let sent = self.pending.send(timeout).await;
        drop(self.counted);
        sent
    }
}

/// Removes the client's keys when its session ends.
pub struct Registration<'a> {
    registry: &'a CancelRegistry,
    pub process_id: i32,
    pub secret: i32,
    pub slot: Arc<CancelSlot>,
    /// When the client connected (registered right after its startup packet).
    pub connect_time: SystemTime,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.map.lock().unwrap().remove(&self.process_id);
    }
}

impl CancelRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&self) -> Registration<'_> {
        let mut rng = rand::rng();
        let slot = Arc::new(CancelSlot::default());
        let mut map = self.map.lock().unwrap();
        let process_id = loop {
            let candidate = rng.random_range(1..i32::MAX);
            if !map.contains_key(&candidate) {
                break candidate;
            }
        };
        let secret = rng.random::<i32>();
        map.insert(
            process_id,
            Entry {
                secret,
                slot: slot.clone(),
            },
        );
        Registration {
            registry: self,
            process_id,
            secret,
            slot,
            connect_time: SystemTime::now(),
        }
    }
}

impl crate::admin::ClientList for CancelRegistry {
    /// `SHOW CLIENTS`: every logged-in client, oldest first.
    fn clients(&self) -> Vec<ClientRow> {
        let slots: Vec<(i32, Arc<CancelSlot>)> = {
            let map = self.map.lock().unwrap();
            map.iter().map(|(id, e)| (*id, e.slot.clone())).collect()
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let wall_time = |at: Instant| {
            wall.checked_sub(now.saturating_duration_since(at))
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        let mut rows: Vec<ClientRow> = slots
            .into_iter()
            .filter_map(|(id, slot)| {
                let card = slot.card.get()?;
                let activity = slot.lock().clone();
                Some(ClientRow {
                    id: id as u64,
                    user: card.user.clone(),
                    database: card.database.clone(),
                    state: match activity.waiting_since {
                        Some(_) => ClientState::Waiting,
                        None => ClientState::Active,
                    },
                    peer: card.peer,
                    local: card.local,
                    connect_time: card.connect_time,
                    request_time: activity.last_request.map_or(card.connect_time, wall_time),
                    wait: activity
                        .waiting_since
                        .map_or(Duration::ZERO, |since| now.saturating_duration_since(since)),
                    link: activity.target.as_ref().map(|t| t.key.console_id()),
                    tls: card.tls.clone(),
                    application_name: slot.application_name(card),
                    prepared_statements: slot.prepared.load(Ordering::Relaxed) as u64,
                })
            })
            .collect();
        rows.sort_by_key(|r| (r.connect_time, r.id));
        rows
    }
}

impl CancelRegistry {
    /// `KILL_CLIENT`: ends the logged-in client `process_id` (as SHOW CLIENTS
    /// lists it); false if there is none.
    pub fn kill(&self, process_id: i32) -> bool {
        let map = self.map.lock().unwrap();
        match map.get(&process_id) {
            Some(entry) if entry.slot.card.get().is_some() => {
                entry.slot.kill.throw();
                true
            }
            _ => false,
        }
    }

    /// `KILL db`: ends every logged-in client of `database`; how many.
    pub fn kill_database(&self, database: &str) -> usize {
        let map = self.map.lock().unwrap();
        let mut killed = 0;
        for entry in map.values() {
            if entry
                .slot
                .card
                .get()
                .is_some_and(|c| c.database == database)
            {
                entry.slot.kill.throw();
                killed += 1;
            }
        }
        killed
    }

    /// True if a local client holds these keys (running a query or not).
    pub fn holds(&self, process_id: i32, secret: i32) -> bool {
        let map = self.map.lock().unwrap();
        map.get(&process_id)
            .is_some_and(|entry| entry.secret_matches(secret))
    }

    /// The cancel to send for a client's keys; `None` for wrong keys, an
    /// idle client, or one waiting for a server (whose wait it ends). The
    /// secret is compared in constant time.
    pub fn lookup(&self, process_id: i32, secret: i32) -> Option<OutgoingCancel> {
        let map = self.map.lock().unwrap();
        let entry = map.get(&process_id)?;
        if !entry.secret_matches(secret) {
            return None;
        }
        let pending = entry.slot.begin_cancel()?;
        let counted = entry.slot.cancels_forwarding.get().map(|counter| {
            counter.fetch_add(1, Ordering::Relaxed);
            Forwarding(counter.clone())
        });
        Some(OutgoingCancel { pending, counted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CancelGate, CancelKey};

    fn server() -> (CancelTarget, Arc<CancelGate>) {
        let key = CancelKey {
            addr: "127.0.0.1:5432".parse().unwrap(),
            process_id: 42,
            secret_key: 7,
        };
        let gate = Arc::new(CancelGate::default());
        (CancelTarget::new(key, gate.clone()), gate)
    }

    #[test]
    fn cancel_reaches_only_the_matching_attached_server() {
        let registry = CancelRegistry::new();
        let a = registry.register();
        let b = registry.register();
        assert_ne!(a.process_id, b.process_id);
        let (target, gate) = server();
        assert!(
            registry.lookup(a.process_id, a.secret).is_none(),
            "idle client"
        );
        a.slot.attach(target.clone());
        let cancel = registry.lookup(a.process_id, a.secret).expect("attached");
        assert_eq!(cancel.key(), target.key);
        assert!(gate.pending(), "the server waits for the cancel");
        drop(cancel);
        assert!(!gate.pending());
        assert!(registry
            .lookup(a.process_id, a.secret.wrapping_add(1))
            .is_none());
        assert!(registry.lookup(b.process_id, b.secret).is_none());
        assert!(!gate.pending(), "wrong keys hold nothing");
        a.slot.detach();
        assert!(registry.lookup(a.process_id, a.secret).is_none());
        let pid = a.process_id;
        drop(a);
        assert!(registry.map.lock().unwrap().get(&pid).is_none());
    }

    #[tokio::test]
    async fn a_cancel_ends_only_the_wait_it_arrived_during() {
        let registry = CancelRegistry::new();
        let a = registry.register();
        let ends = |slot: &Arc<CancelSlot>| {
            let slot = slot.clone();
            async move {
                let never = std::pin::pin!(std::future::pending::<()>());
                tokio::time::timeout(Duration::from_millis(50), slot.unless_cancelled(never))
                    .await
                    .is_ok()
            }
        };
        assert!(registry.lookup(a.process_id, a.secret).is_none(), "idle");
        a.slot.waiting(Instant::now());
        assert!(!ends(&a.slot).await, "no cancel yet");
        let waiter = tokio::spawn(ends(&a.slot));
        tokio::task::yield_now().await;
        assert!(
            registry.lookup(a.process_id, a.secret).is_none(),
            "nothing to send"
        );
        assert!(waiter.await.unwrap(), "the wait ends");
        // The next wait starts clean.
        a.slot.waiting(Instant::now());
        assert!(!ends(&a.slot).await);
        // A cancel that lost the race with the checkout goes nowhere: once a
        // server is attached the wait cannot end by cancel.
        assert!(registry.lookup(a.process_id, a.secret).is_none());
        let (target, gate) = server();
        a.slot.attach(target);
        assert!(!ends(&a.slot).await);
        drop(
            registry
                .lookup(a.process_id, a.secret)
                .expect("the server's cancel"),
        );
        assert!(!gate.pending());
    }

    #[test]
    fn a_cancel_is_counted_in_its_pools_until_sent_or_dropped() {
        let registry = CancelRegistry::new();
        let a = registry.register();
        let forwarding = Arc::new(AtomicUsize::new(0));
        a.slot.count_cancels_in(forwarding.clone());
        let (target, _gate) = server();
        a.slot.attach(target);
        let first = registry.lookup(a.process_id, a.secret).expect("attached");
        let second = registry.lookup(a.process_id, a.secret).expect("attached");
        assert_eq!(forwarding.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(forwarding.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(forwarding.load(Ordering::Relaxed), 0);
        assert!(registry.lookup(a.process_id, a.secret ^ 1).is_none());
        assert_eq!(
            forwarding.load(Ordering::Relaxed),
            0,
            "wrong keys count nothing"
        );
    }

    fn card(name: &str) -> ClientCard {
        ClientCard {
            user: "u".into(),
            database: "db".into(),
            peer: "127.0.0.1:40000".parse().unwrap(),
            local: "127.0.0.1:6432".parse().unwrap(),
            connect_time: SystemTime::now(),
            tls: String::new(),
            application_name: name.into(),
        }
    }

    #[test]
    fn clients_lists_described_clients_with_their_state_wait_and_server() {
        use crate::admin::ClientList;
        let registry = CancelRegistry::new();
        let a = registry.register();
        let _logging_in = registry.register();
        assert!(registry.clients().is_empty(), "not described yet");
        a.slot.describe(card("a"));
        let rows = registry.clients();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, a.process_id as u64);
        assert_eq!(rows[0].state, ClientState::Active);
        assert_eq!((rows[0].wait, rows[0].link), (Duration::ZERO, None));
        assert_eq!(rows[0].request_time, rows[0].connect_time, "no request yet");

        a.slot.waiting(Instant::now() - Duration::from_secs(2));
        let row = &registry.clients()[0];
        assert_eq!(row.state, ClientState::Waiting);
        assert!(row.wait >= Duration::from_secs(2), "{:?}", row.wait);

        let (target, _) = server();
        a.slot.attach(target.clone());
        let row = &registry.clients()[0];
        assert_eq!((row.state, row.wait), (ClientState::Active, Duration::ZERO));
        assert_eq!(row.link, Some(target.key.console_id()));
        a.slot.detach();
        assert_eq!(registry.clients()[0].link, None);
        a.slot.set_prepared(2);
        assert_eq!(registry.clients()[0].prepared_statements, 2);
        drop(a);
        assert!(registry.clients().is_empty());
    }
}
