//! A generic connection pool: a checkout guard, FIFO waiters, a reserve,
//! shared connection limits, and idle/lifetime eviction.
//!
//! It knows nothing of PostgreSQL: the connection type comes from a
//! [`Connector`], so the pool is unit-tested with a stand-in.
//!
//! Invariants:
//! - every live connection holds one permit of each [`ConnLimit`] it counts against;
//! - a checkout holds one slot permit (main or reserve), so live connections never
//!   exceed `size + reserve_size`: a connection is created only when no idle one
//!   exists, i.e. when every live connection is checked out under a permit;
//! - a guard dropped without [`Pooled::release`] closes its connection: only a
//!   caller that knows the connection is clean may put it back.

mod limit;
mod slots;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::OwnedSemaphorePermit;

use crate::cores;
use crate::timer::ReusableSleep;

pub use limit::ConnLimit;
use slots::{CoreSlots, MainSlot};

/// Opens connections for a pool.
pub trait Connector: Send + Sync + 'static {
    type Conn: Send + 'static;
    type Error: std::error::Error + Send + Sync + 'static;
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
    /// A cheap check, without waiting, that an idle connection is still usable.
    fn is_alive(&self, _conn: &Self::Conn) -> bool {
        true
    }
    /// Whether a released connection may be pooled again (false closes it).
    fn may_reuse(&self, _conn: &Self::Conn) -> bool {
        true
    }
    /// Moves an idle connection opened on another core onto the caller's
    /// (see [`crate::cores`]); `None` closes it.
    fn rehome(&self, conn: Self::Conn) -> Option<Self::Conn> {
        Some(conn)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub size: usize,
    pub min_size: usize,
    pub reserve_size: usize,
    /// How long a waiter waits before it may use the reserve.
    pub reserve_timeout: Duration,
    /// How long a checkout may wait in all (`query_wait_timeout`); `None` waits forever.
    pub wait_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    /// After a failed connect, new checkouts fail at once for this long.
    pub login_retry: Duration,
    /// The per-core runtimes the main slots are split over (1 without
    /// them); read when the pool is made.
    pub cores: usize,
}

impl PoolSettings {
    /// `size` connections and nothing else: no minimum, no reserve, no
    /// eviction, a 5 s wait limit and a 1 s login retry.
    pub fn with_size(size: usize) -> Self {
        PoolSettings {
            size,
            min_size: 0,
            reserve_size: 0,
            reserve_timeout: Duration::from_secs(5),
            wait_timeout: Some(Duration::from_secs(5)),
            idle_timeout: None,
            lifetime: None,
            login_retry: Duration::from_secs(1),
            cores: 1,
        }
    }
}

#[derive(Debug, Error)]
pub enum PoolError<E: std::error::Error + 'static> {
    #[error("timed out waiting for a server connection")]
    WaitTimeout,
    #[error(transparent)]
    Connect(E),
    #[error("server login failed recently ({0}); not retrying yet")]
    RecentFailure(String),
    #[error("pool is closed")]
    Closed,
}

impl<E: std::error::Error + 'static> PoolError<E> {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            PoolError::WaitTimeout => "08P01",
            PoolError::Connect(_) | PoolError::RecentFailure(_) => "08006",
            PoolError::Closed => "57P01",
        }
    }
}

/// Counters for metrics and the admin console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub live: usize,
    pub idle: usize,
    pub waiting: usize,
    /// Checkouts holding a slot: handed out, or still opening their connection.
    pub checked_out: usize,
}

/// A live connection with the permits and counters that its existence holds.
/// Always boxed: it moves between the idle list and checkouts on every
/// transaction, and a pointer moves for free where the struct would be copied.
struct Entry<T> {
    conn: T,
    /// Creation time plus the pool's lifetime, computed once: checked at
    /// every checkout and release.
    retire_at: Option<Instant>,
    /// When it was last put back (idle timeout).
    idle_since: Instant,
    /// The core whose runtime its socket is registered with.
    home: u16,
    _limits: Vec<OwnedSemaphorePermit>,
    _live: LiveToken,
}

struct LiveToken(Arc<AtomicUsize>);

impl LiveToken {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        LiveToken(counter.clone())
    }
}

impl Drop for LiveToken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Inner<C: Connector> {
    connector: C,
    /// Replaced whole by [`Pool::reconfigure`]; read off the fast path only.
    settings: Mutex<PoolSettings>,
    /// What every waiting checkout reads, outside that lock.
    wait: WaitSettings,
    main: CoreSlots,
    reserve: CoreSlots,
    idle: Mutex<Vec<Box<Entry<C::Conn>>>>,
    live: Arc<AtomicUsize>,
    waiting: AtomicUsize,
    limits: Vec<Arc<ConnLimit>>,
    last_failure: Mutex<Option<(Instant, String)>>,
}

pub struct Pool<C: Connector> {
    inner: Arc<Inner<C>>,
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<C: Connector> Pool<C> {
    pub fn new(connector: C, settings: PoolSettings, limits: Vec<Arc<ConnLimit>>) -> Self {
        let inner = Arc::new(Inner {
            connector,
            main: CoreSlots::new(settings.size, settings.cores),
            // Used rarely: one line for all cores.
            reserve: CoreSlots::new(settings.reserve_size, 1),
            settings: Mutex::new(settings),
            wait: WaitSettings::new(&settings),
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
            waiting: AtomicUsize::new(0),
            limits,
            last_failure: Mutex::new(None),
        });
        for limit in &inner.limits {
            let member: Weak<dyn limit::EvictIdle> = Arc::downgrade(&inner) as _;
            limit.register(member);
        }
        Pool { inner }
    }

    pub fn connector(&self) -> &C {
        &self.inner.connector
    }

    pub fn settings(&self) -> PoolSettings {
        self.inner.settings()
    }

    /// Applies new settings (a configuration reload) to the running pool.
    /// A larger size frees slots at once; a smaller one takes slots away as
    /// checkouts return them, so no checkout is cut short, and upkeep closes
    /// idle connections above the new size. Timeouts apply to the next wait,
    /// connect or upkeep round; a new lifetime to connections opened after.
    pub fn reconfigure(&self, settings: PoolSettings) {
        let old = std::mem::replace(&mut *self.inner.settings.lock().unwrap(), settings);
        self.inner.wait.store(&settings);
        self.inner.main.resize(old.size, settings.size);
        self.inner
            .reserve
            .resize(old.reserve_size, settings.reserve_size);
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            checked_out: self.inner.main.in_use() + self.inner.reserve.in_use(),
            live: self.inner.live.load(Ordering::Relaxed),
            idle: self.inner.idle.lock().unwrap().len(),
            waiting: self.inner.waiting.load(Ordering::Relaxed),
        }
    }

    /// Checks out a connection: an idle one (most recently used first), else a new one.
    pub async fn get(&self) -> Result<Pooled<C>, PoolError<C::Error>> {
        self.get_timed(Instant::now(), &mut ReusableSleep::new())
            .await
    }

    /// [`Pool::get`] for a caller that checks out again and again (a client
    /// session): a wait for a slot re-arms `timer` rather than making a timer.
    /// `started` is when the caller asked (it has just read the clock): the
    /// wait limit runs from then, and it serves the lifetime check and the
    /// checkout time when a slot and an idle connection are at hand.
    pub async fn get_timed(
        &self,
        started: Instant,
        timer: &mut ReusableSleep,
    ) -> Result<Pooled<C>, PoolError<C::Error>> {
        let inner = &self.inner;
        let deadline = || inner.wait.timeout().map(|t| started + t);
        let here = cores::current();
        // The common case, a free slot, needs no timers.
        let (slot, waited) = match inner.main.try_acquire(here) {
            Some(slot) => (Slot::Main(slot), false),
            None => {
                inner.waiting.fetch_add(1, Ordering::Relaxed);
                let slot = self.acquire_slot(here, deadline(), timer).await;
                inner.waiting.fetch_sub(1, Ordering::Relaxed);
                (slot?, true)
            }
        };
        let now = if waited { Instant::now() } else { started };
        if let Some(entry) = inner.pop_idle(now, here) {
            return Ok(Pooled::new(entry, slot, inner.clone(), started, now));
        }
        // Boxed: connecting (TLS, SCRAM) is rare next to checkouts, and its
        // state would otherwise be carried by every waiting caller's future.
        let entry = Box::pin(inner.open(deadline(), here)).await?;
        Ok(Pooled::new(
            entry,
            slot,
            inner.clone(),
            started,
            Instant::now(),
        ))
    }

    /// Waits for a slot. Without a reserve this is one semaphore wait under the
    /// caller's timer, small enough to live in the caller's future: with
    /// hundreds of clients queued, a boxed wait per checkout costs more than
    /// the wait's own bookkeeping (allocator bins run out of cached blocks).
    async fn acquire_slot(
        &self,
        here: u16,
        deadline: Option<Instant>,
        timer: &mut ReusableSleep,
    ) -> Result<Slot, PoolError<C::Error>> {
        let inner = &self.inner;
        if inner.wait.has_reserve() {
            return Box::pin(self.acquire_slot_or_reserve(here, deadline)).await;
        }
        let main = inner.main.acquire(here);
        let slot = match deadline {
            Some(d) => tokio::select! {
                biased;
                slot = main => slot,
                _ = timer.until(d) => return Err(PoolError::WaitTimeout),
            },
            None => main.await,
        };
        slot.map(Slot::Main).map_err(|_| PoolError::Closed)
    }

    /// Waits for a slot; after `reserve_timeout`, takes a reserve slot if one
    /// frees first.
    async fn acquire_slot_or_reserve(
        &self,
        here: u16,
        deadline: Option<Instant>,
    ) -> Result<Slot, PoolError<C::Error>> {
        let inner = &self.inner;
        let main = inner.main.acquire(here);
        tokio::pin!(main);
        let reserve_at = tokio::time::Instant::now() + inner.settings().reserve_timeout;
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_deadline);
        tokio::select! {
            biased;
            slot = &mut main => return slot.map(Slot::Main).map_err(|_| PoolError::Closed),
            _ = tokio::time::sleep_until(reserve_at) => {}
            _ = &mut until_deadline => return Err(PoolError::WaitTimeout),
        }
        let reserve = inner.reserve.acquire(here);
        tokio::select! {
            biased;
            slot = &mut main => slot.map(Slot::Main).map_err(|_| PoolError::Closed),
            slot = reserve => slot.map(Slot::Reserve).map_err(|_| PoolError::Closed),
            _ = &mut until_deadline => Err(PoolError::WaitTimeout),
        }
    }

    /// Closes idle connections past their idle timeout or lifetime, no
    /// longer to be reused, or above the pool's size (after a reload made it
    /// smaller), and opens connections up to `min_size`. Call periodically.
    pub async fn maintain(&self) {
        let inner = &self.inner;
        let settings = inner.settings();
        let now = Instant::now();
        let expired: Vec<Box<Entry<C::Conn>>> = {
            let mut idle = inner.idle.lock().unwrap();
            let (keep, mut expired): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *idle).into_iter().partition(|e| {
                    !inner.is_past_lifetime(e, now)
                        && inner.connector.may_reuse(&e.conn)
                        && settings
                            .idle_timeout
                            .is_none_or(|t| now.duration_since(e.idle_since) < t)
                });
            *idle = keep;
            // Oldest first, as the shared limits evict.
            let most = settings.size + settings.reserve_size;
            let live = inner
                .live
                .load(Ordering::Relaxed)
                .saturating_sub(expired.len());
            let over = live.saturating_sub(most).min(idle.len());
            expired.extend(idle.drain(..over));
            expired
        };
        drop(expired);
        while inner.live.load(Ordering::Relaxed) < settings.min_size {
            let here = cores::current();
            let Some(slot) = inner.main.try_acquire(here) else {
                break;
            };
            let opened = inner.open(Some(Instant::now()), here).await;
            let failed = opened.is_err();
            if let Ok(entry) = opened {
                inner.push_idle(entry, Instant::now());
            }
            inner.main.give_back(slot);
            if failed {
                break;
            }
        }
    }

    /// Closes the idle connections; the pool goes on (opening new ones as needed).
    pub fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.inner.idle.lock().unwrap());
        drop(idle);
    }

    /// Stops handing out connections and closes the idle ones.
    pub fn close(&self) {
        self.inner.main.close();
        self.inner.reserve.close();
        self.close_idle();
    }
}

/// The wait limit and whether a reserve exists, as atomics: with hundreds of
/// clients queued nearly every checkout waits, and copying the settings out
/// of their lock twice per wait cost about 90 instructions per transaction.
struct WaitSettings {
    /// `query_wait_timeout` in nanoseconds; `u64::MAX` waits forever.
    timeout_nanos: AtomicU64,
    has_reserve: AtomicBool,
}

impl WaitSettings {
    fn new(settings: &PoolSettings) -> Self {
        let wait = WaitSettings {
            timeout_nanos: AtomicU64::new(u64::MAX),
            has_reserve: AtomicBool::new(false),
        };
        wait.store(settings);
        wait
    }

    fn store(&self, settings: &PoolSettings) {
        let nanos = settings.wait_timeout.map_or(u64::MAX, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX - 1)
        });
        self.timeout_nanos.store(nanos, Ordering::Relaxed);
        self.has_reserve
            .store(settings.reserve_size > 0, Ordering::Relaxed);
    }

    fn timeout(&self) -> Option<Duration> {
        match self.timeout_nanos.load(Ordering::Relaxed) {
            u64::MAX => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    fn has_reserve(&self) -> bool {
        self.has_reserve.load(Ordering::Relaxed)
    }
}

impl<C: Connector> Inner<C> {
    fn settings(&self) -> PoolSettings {
        *self.settings.lock().unwrap()
    }

    /// The most recently used idle connection on the caller's core, else the
    /// most recently used of all, moved to the caller's core.
    fn pop_idle(&self, now: Instant, here: u16) -> Option<Box<Entry<C::Conn>>> {
        loop {
            let entry = {
                let mut idle = self.idle.lock().unwrap();
                let at = idle
                    .iter()
                    .rposition(|e| e.home == here)
                    .or_else(|| idle.len().checked_sub(1))?;
                idle.remove(at)
            };
            // Alive is judged on the old core: a moved socket's readiness is
            // unknown until its new reactor has polled it.
            if self.is_past_lifetime(&entry, now) || !self.connector.is_alive(&entry.conn) {
                continue;
            }
            if entry.home == here {
                return Some(entry);
            }
            let mut entry = *entry;
            if let Some(conn) = self.connector.rehome(entry.conn) {
                entry.conn = conn;
                entry.home = here;
                return Some(Box::new(entry));
            }
        }
    }

    fn push_idle(&self, mut entry: Box<Entry<C::Conn>>, now: Instant) {
        if self.main.is_closed()
            || self.is_past_lifetime(&entry, now)
            || !self.connector.may_reuse(&entry.conn)
        {
            return;
        }
        entry.idle_since = now;
        self.idle.lock().unwrap().push(entry);
    }

    fn is_past_lifetime(&self, conn: &Entry<C::Conn>, now: Instant) -> bool {
        conn.retire_at.is_some_and(|at| now >= at)
    }

    /// `here`: the core the caller runs on, where the new socket is registered.
    async fn open(
        &self,
        deadline: Option<Instant>,
        here: u16,
    ) -> Result<Box<Entry<C::Conn>>, PoolError<C::Error>> {
        let settings = self.settings();
        if let Some((at, reason)) = &*self.last_failure.lock().unwrap() {
            if at.elapsed() < settings.login_retry {
                return Err(PoolError::RecentFailure(reason.clone()));
            }
        }
        let mut limits = Vec::with_capacity(self.limits.len());
        for limit in &self.limits {
            limits.push(
                limit
                    .acquire(deadline)
                    .await
                    .ok_or(PoolError::WaitTimeout)?,
            );
        }
        match self.connector.connect().await {
            Ok(conn) => {
                *self.last_failure.lock().unwrap() = None;
                let now = Instant::now();
                Ok(Box::new(Entry {
                    conn,
                    // A lifetime too long to add never ends.
                    retire_at: settings.lifetime.and_then(|l| now.checked_add(l)),
                    idle_since: now,
                    home: here,
                    _limits: limits,
                    _live: LiveToken::new(&self.live),
                }))
            }
            Err(e) => {
                *self.last_failure.lock().unwrap() = Some((Instant::now(), e.to_string()));
                Err(PoolError::Connect(e))
            }
        }
    }
}

impl<C: Connector> limit::EvictIdle for Inner<C> {
    fn evict_one_idle(&self) -> bool {
        // Oldest first: the least recently used connection is the cheapest to lose.
        let mut idle = self.idle.lock().unwrap();
        if idle.is_empty() {
            return false;
        }
        idle.remove(0);
        true
    }
}

/// A checked-out connection. Dropping it closes the connection; call
/// [`Pooled::release`] to return a clean one.
pub struct Pooled<C: Connector> {
    entry: Option<Box<Entry<C::Conn>>>,
    /// Always `Some` until dropped.
    slot: Option<Slot>,
    pool: Arc<Inner<C>>,
    requested: Instant,
    checked_out: Instant,
}

impl<C: Connector> Pooled<C> {
    fn new(
        entry: Box<Entry<C::Conn>>,
        slot: Slot,
        pool: Arc<Inner<C>>,
        requested: Instant,
        checked_out: Instant,
    ) -> Self {
        Pooled {
            entry: Some(entry),
            slot: Some(slot),
            pool,
            requested,
            checked_out,
        }
    }

    /// When [`Pool::get`] handed this connection out.
    pub fn checked_out(&self) -> Instant {
        self.checked_out
    }

    /// How long [`Pool::get`] took: waiting for a slot and opening a connection.
    pub fn waited(&self) -> Duration {
        // Most checkouts find a slot and an idle server at once: one clock
        // reading serves both, and the subtraction can be skipped.
        if self.checked_out == self.requested {
            return Duration::ZERO;
        }
        self.checked_out.duration_since(self.requested)
    }

    /// Returns a clean connection to the pool (closed instead if past its lifetime).
    pub fn release(self) {
        self.release_at(Instant::now());
    }

    /// [`Pooled::release`] for a caller that has just read the clock.
    pub fn release_at(mut self, now: Instant) {
        if let Some(entry) = self.entry.take() {
            self.pool.push_idle(entry, now);
        }
    }

    /// Takes the connection out of the pool for good (e.g. to close it politely).
    pub fn detach(mut self) -> C::Conn {
        self.entry
            .take()
            .expect("entry present until consumed")
            .conn
    }
}

impl<C: Connector> Drop for Pooled<C> {
    fn drop(&mut self) {
        // The connection goes first (closed, or already back in the idle
        // list), so whoever the slot goes to finds it or its room.
        drop(self.entry.take());
        match self.slot.take() {
            Some(Slot::Main(slot)) => self.pool.main.give_back(slot),
            Some(Slot::Reserve(slot)) => self.pool.reserve.give_back(slot),
            None => {}
        }
    }
}

/// The slot a checkout holds.
enum Slot {
    Main(MainSlot),
    Reserve(MainSlot),
}

impl<C: Connector> std::ops::Deref for Pooled<C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        &self
            .entry
            .as_ref()
            .expect("entry present until consumed")
            .conn
    }
}

impl<C: Connector> std::ops::DerefMut for Pooled<C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        &mut self
            .entry
            .as_mut()
            .expect("entry present until consumed")
            .conn
    }
}

#[cfg(test)]
mod tests;
