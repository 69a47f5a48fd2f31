use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Default)]
struct Counting {
    opened: AtomicUsize,
    fail: AtomicBool,
    /// Connections numbered below this may not be reused (a RECONNECT).
    reuse_from: AtomicUsize,
}

impl Connector for Arc<Counting> {
    type Conn = usize;
    type Error = Refused;
    async fn connect(&self) -> Result<usize, Refused> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Refused);
        }
        Ok(self.opened.fetch_add(1, Ordering::SeqCst))
    }
    fn may_reuse(&self, conn: &usize) -> bool {
        *conn >= self.reuse_from.load(Ordering::SeqCst)
    }
}

fn settings(size: usize) -> PoolSettings {
    PoolSettings {
        login_retry: Duration::from_millis(200),
        ..PoolSettings::with_size(size)
    }
}

fn counting_pool(s: PoolSettings) -> (Pool<Arc<Counting>>, Arc<Counting>) {
    let c = Arc::new(Counting::default());
    (Pool::new(c.clone(), s, vec![]), c)
}

#[tokio::test]
async fn release_reuses_and_drop_closes() {
    let (pool, c) = counting_pool(settings(2));
    let a = pool.get().await.unwrap();
    assert_eq!(*a, 0);
    assert_eq!(pool.stats().checked_out, 1);
    a.release();
    assert_eq!(pool.stats().checked_out, 0);
    let b = pool.get().await.unwrap();
    assert_eq!(*b, 0, "released connection is reused");
    drop(b);
    assert_eq!(pool.stats().live, 0, "dropped guard closes its connection");
    let d = pool.get().await.unwrap();
    assert_eq!(*d, 1);
    assert_eq!(c.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn never_exceeds_size_under_load() {
    let (pool, c) = counting_pool(settings(3));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let pool = pool.clone();
        let peak = peak.clone();
        tasks.push(tokio::spawn(async move {
            let conn = pool.get().await.unwrap();
            peak.fetch_max(pool.stats().live, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            conn.release();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 3);
    assert!(c.opened.load(Ordering::SeqCst) <= 3);
    assert_eq!(pool.stats().idle, pool.stats().live);
}

#[tokio::test]
async fn waiters_are_served_in_order() {
    let (pool, _) = counting_pool(settings(1));
    let held = pool.get().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let pool = pool.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let conn = pool.get().await.unwrap();
            order.lock().unwrap().push(i);
            conn.release();
        }));
        // Let each waiter enqueue before the next one.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pool.stats().waiting, 5);
    held.release();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn wait_timeout_fails_the_checkout() {
    let mut s = settings(1);
    s.wait_timeout = Some(Duration::from_millis(30));
    let (pool, _) = counting_pool(s);
    let _held = pool.get().await.unwrap();
    assert!(matches!(pool.get().await, Err(PoolError::WaitTimeout)));
}

#[tokio::test]
async fn a_reused_wait_timer_times_each_wait_from_its_own_start() {
    let mut s = settings(1);
    s.wait_timeout = Some(Duration::from_millis(300));
    let (pool, _) = counting_pool(s);
    let mut timer = ReusableSleep::new();
    let held = pool.get().await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        held.release();
    });
    // Served halfway through its wait; the timer stays armed for 150 ms more.
    let _second = pool
        .get_timed(Instant::now(), &mut timer)
        .await
        .expect("released in time");
    let started = Instant::now();
    let third = pool.get_timed(Instant::now(), &mut timer).await;
    assert!(matches!(third, Err(PoolError::WaitTimeout)));
    // Timers never fire early: a timer still set for the first wait's end
    // would have failed this wait after about 150 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reserve_serves_after_reserve_timeout() {
    let mut s = settings(1);
    s.reserve_size = 1;
    s.reserve_timeout = Duration::from_millis(20);
    let (pool, _) = counting_pool(s);
    let _held = pool.get().await.unwrap();
    let extra = pool.get().await.expect("reserve connection");
    assert_eq!(pool.stats().live, 2);
    drop(extra);
}

#[tokio::test]
async fn shared_limit_evicts_idle_connection_of_a_sibling_pool() {
    let limit = ConnLimit::new("db", 1);
    let a = Pool::new(
        Arc::new(Counting::default()),
        settings(5),
        vec![limit.clone()],
    );
    let b = Pool::new(
        Arc::new(Counting::default()),
        settings(5),
        vec![limit.clone()],
    );
    a.get().await.unwrap().release();
    assert_eq!(a.stats().idle, 1);
    let conn = b
        .get()
        .await
        .expect("idle sibling connection is closed to make room");
    assert_eq!(a.stats().live, 0);
    assert_eq!(limit.available(), 0);
    drop(conn);
    assert_eq!(limit.available(), 1);
}

#[tokio::test]
async fn failed_login_fails_fast_until_retry_interval() {
    let (pool, c) = counting_pool(settings(2));
    c.fail.store(true, Ordering::SeqCst);
    assert!(matches!(pool.get().await, Err(PoolError::Connect(_))));
    c.fail.store(false, Ordering::SeqCst);
    assert!(matches!(pool.get().await, Err(PoolError::RecentFailure(_))));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(pool.get().await.is_ok());
}

#[tokio::test]
async fn maintain_warms_min_size_and_evicts_idle_and_old() {
    let mut s = settings(4);
    s.min_size = 2;
    s.idle_timeout = Some(Duration::from_millis(20));
    let (pool, c) = counting_pool(s);
    pool.maintain().await;
    assert_eq!((pool.stats().live, pool.stats().idle), (2, 2));
    tokio::time::sleep(Duration::from_millis(40)).await;
    pool.maintain().await;
    // Both idle ones expired and were replaced to keep the minimum.
    assert_eq!(pool.stats().live, 2);
    assert_eq!(c.opened.load(Ordering::SeqCst), 4);

    let mut s = settings(2);
    s.lifetime = Some(Duration::from_millis(10));
    let (pool, _) = counting_pool(s);
    let conn = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    conn.release();
    assert_eq!(pool.stats().live, 0, "past its lifetime: closed at release");
}

#[tokio::test]
async fn maintain_closes_idle_connections_that_may_not_be_reused() {
    let (pool, c) = counting_pool(settings(4));
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    a.release();
    b.release();
    assert_eq!(pool.stats().idle, 2);
    c.reuse_from.store(1, Ordering::SeqCst);
    pool.maintain().await;
    assert_eq!((pool.stats().live, pool.stats().idle), (1, 1));
    assert_eq!(*pool.get().await.unwrap(), 1, "the one still reusable");
}

#[tokio::test]
async fn a_checkout_reports_how_long_it_waited() {
    let (pool, _) = counting_pool(settings(1));
    pool.get().await.unwrap().release();
    let held = pool.get().await.unwrap();
    assert_eq!(
        held.waited(),
        Duration::ZERO,
        "a free slot and an idle connection are no wait"
    );
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.unwrap() })
    };
    // Real time (the pool reads std's clock); only a lower bound is asserted.
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.release();
    let second = waiter.await.unwrap();
    assert!(
        second.waited() >= Duration::from_millis(50),
        "{:?}",
        second.waited()
    );
}

#[tokio::test]
async fn a_newcomer_does_not_overtake_a_woken_waiter() {
    let (pool, c) = counting_pool(settings(1));
    let held = pool.get().await.unwrap();
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let conn = pool.get().await.unwrap();
            let id = *conn;
            conn.release();
            id
        })
    };
    tokio::task::yield_now().await;
    held.release();
    // Asks after the release but before the woken waiter ran: the slot is
    // already spoken for, so this checkout must wait its turn rather than
    // take the released connection or open a second one.
    let mut second = std::pin::pin!(pool.get());
    let ready_at_once =
        std::future::poll_fn(|cx| std::task::Poll::Ready(second.as_mut().poll(cx).is_ready()))
            .await;
    assert!(!ready_at_once, "the newcomer overtook the woken waiter");
    assert_eq!(first.await.unwrap(), 0, "the released connection itself");
    assert_eq!(*second.await.unwrap(), 0);
    assert_eq!(c.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slot_its_waiter_never_took_is_not_lost() {
    let (pool, c) = counting_pool(settings(1));
    let held = pool.get().await.unwrap();
    let gives_up = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| *c) })
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.stats().waiting, 1);
    // Given to the waiter, which is cancelled before it runs: the slot, and
    // the connection, must not be lost with it.
    held.release();
    gives_up.abort();
    assert!(gives_up.await.unwrap_err().is_cancelled());
    assert_eq!((pool.stats().live, pool.stats().idle), (1, 1));
    assert_eq!(*pool.get().await.unwrap(), 0);
    assert_eq!(c.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_closed_connection_passes_its_slot_to_a_waiter() {
    let (pool, c) = counting_pool(settings(1));
    let held = pool.get().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { *pool.get().await.unwrap() })
    };
    tokio::task::yield_now().await;
    drop(held);
    assert_eq!(
        waiter.await.unwrap(),
        1,
        "a new connection in the freed slot"
    );
    assert_eq!(c.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn close_fails_waiters_and_later_checkouts() {
    let (pool, _) = counting_pool(settings(1));
    let held = pool.get().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| *c) })
    };
    tokio::task::yield_now().await;
    pool.close();
    assert!(matches!(waiter.await.unwrap(), Err(PoolError::Closed)));
    assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    held.release();
    assert_eq!(
        (pool.stats().live, pool.stats().idle),
        (0, 0),
        "released into a closed pool: closed"
    );
}

/// Opens its connections only after `delay`.
struct Slow {
    delay: Duration,
}

impl Connector for Slow {
    type Conn = ();
    type Error = Refused;
    async fn connect(&self) -> Result<(), Refused> {
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_checkout_still_connecting_counts_as_checked_out_not_live() {
    let pool = Pool::new(
        Slow {
            delay: Duration::from_millis(200),
        },
        settings(2),
        vec![],
    );
    let opening = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| c.release()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = pool.stats();
    assert_eq!((stats.checked_out, stats.live), (1, 0), "{stats:?}");
    opening.await.unwrap().unwrap();
    let stats = pool.stats();
    assert_eq!((stats.checked_out, stats.live, stats.idle), (0, 1, 1));
}

/// Settings of `size` whose checkouts give up quickly, to show a slot is missing.
fn impatient(size: usize) -> PoolSettings {
    PoolSettings {
        wait_timeout: Some(Duration::from_millis(50)),
        ..settings(size)
    }
}

#[tokio::test]
async fn a_larger_size_serves_a_waiting_checkout_at_once() {
    let (pool, _) = counting_pool(settings(1));
    let _held = pool.get().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|c| *c) }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool.stats().waiting, 1);
    pool.reconfigure(settings(2));
    let served = tokio::time::timeout(Duration::from_secs(1), waiter).await;
    assert!(matches!(served, Ok(Ok(Ok(1)))), "{served:?}");
    assert_eq!(pool.settings().size, 2);
}

#[tokio::test]
async fn a_smaller_size_takes_slots_back_as_checkouts_return() {
    let (pool, _) = counting_pool(impatient(3));
    let held: Vec<_> = [pool.get().await, pool.get().await, pool.get().await]
        .into_iter()
        .map(Result::unwrap)
        .collect();
    pool.reconfigure(impatient(1));
    assert_eq!(pool.stats().checked_out, 3, "nothing in use is cut short");
    let mut held = held.into_iter();
    held.next().unwrap().release();
    held.next().unwrap().release();
    tokio::task::yield_now().await;
    assert!(
        matches!(pool.get().await, Err(PoolError::WaitTimeout)),
        "the returned slots were taken back while one is still out"
    );
    held.next().unwrap().release();
    let one = pool.get().await.expect("the one slot left");
    assert!(matches!(pool.get().await, Err(PoolError::WaitTimeout)));
    assert_eq!(pool.stats().checked_out, 1);
    one.release();
}

#[tokio::test]
async fn growing_again_before_a_shrink_finished_ends_at_the_last_size() {
    let (pool, _) = counting_pool(impatient(2));
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    pool.reconfigure(impatient(1));
    pool.reconfigure(impatient(3));
    a.release();
    b.release();
    tokio::task::yield_now().await;
    let three: Vec<_> = [pool.get().await, pool.get().await, pool.get().await]
        .into_iter()
        .map(|c| c.expect("three slots"))
        .collect();
    assert!(matches!(pool.get().await, Err(PoolError::WaitTimeout)));
    assert_eq!(pool.stats().checked_out, 3);
    drop(three);
}

#[tokio::test]
async fn upkeep_closes_idle_connections_above_a_smaller_size() {
    let (pool, _) = counting_pool(settings(3));
    let conns: Vec<_> = [pool.get().await, pool.get().await, pool.get().await]
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for c in conns {
        c.release();
    }
    assert_eq!(pool.stats().idle, 3);
    pool.reconfigure(settings(1));
    pool.maintain().await;
    assert_eq!(pool.stats().live, 1);
    assert_eq!(
        *pool.get().await.unwrap(),
        2,
        "the most recently used one stays"
    );
}

#[tokio::test]
async fn a_reconfigured_wait_limit_applies_to_the_next_wait() {
    let patient = PoolSettings {
        wait_timeout: None,
        ..PoolSettings::with_size(1)
    };
    let (pool, _) = counting_pool(patient);
    let held = pool.get().await.unwrap();
    let waiter = tokio::time::timeout(Duration::from_millis(200), pool.get()).await;
    assert!(waiter.is_err(), "without a wait limit a checkout waits on");
    pool.reconfigure(PoolSettings {
        wait_timeout: Some(Duration::from_millis(300)),
        ..PoolSettings::with_size(1)
    });
    let started = std::time::Instant::now();
    let limited = tokio::time::timeout(Duration::from_secs(5), pool.get()).await;
    assert!(
        matches!(limited, Ok(Err(PoolError::WaitTimeout))),
        "the new limit ends the wait"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    held.release();
}

/// Connections that know which core they are registered on.
#[derive(Default)]
struct Homed {
    opened: AtomicUsize,
    moved: AtomicUsize,
}

impl Connector for Arc<Homed> {
    type Conn = (usize, u16);
    type Error = Refused;
    async fn connect(&self) -> Result<(usize, u16), Refused> {
        Ok((self.opened.fetch_add(1, Ordering::SeqCst), cores::current()))
    }
    fn rehome(&self, (id, _): (usize, u16)) -> Option<(usize, u16)> {
        self.moved.fetch_add(1, Ordering::SeqCst);
        Some((id, cores::current()))
    }
}

#[test]
fn a_checkout_prefers_its_own_cores_connection_and_moves_another_only_when_none_is_idle() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cores = crate::cores::Cores::start(2, Duration::ZERO).unwrap();
        let (first, second) = (cores.place(), cores.place());
        assert_eq!((first.core, second.core), (0, 1));
        let other = second.handle.clone();
        let homed = Arc::new(Homed::default());
        let pool = Pool::new(homed.clone(), settings(4), vec![]);
        let on_other = |pool: Pool<Arc<Homed>>| {
            other.spawn(async move {
                let conn = pool.get().await.unwrap();
                let seen = *conn;
                (conn, seen)
            })
        };
        let (there, there_seen) = on_other(pool.clone()).await.unwrap();
        assert_eq!(there_seen, (0, 1), "opened on core 1");
        let here = pool.get().await.unwrap();
        assert_eq!(*here, (1, 0), "opened on core 0");
        // Core 0's connection is now the most recently used.
        there.release();
        here.release();
        let (again, seen) = on_other(pool.clone()).await.unwrap();
        assert_eq!(seen, (0, 1), "core 1 takes its own, not the most recent");
        assert_eq!(homed.moved.load(Ordering::SeqCst), 0);
        let (moved, seen) = on_other(pool.clone()).await.unwrap();
        assert_eq!(
            seen,
            (1, 1),
            "with none of its own idle, core 1 moves core 0's"
        );
        assert_eq!(homed.moved.load(Ordering::SeqCst), 1);
        assert_eq!(homed.opened.load(Ordering::SeqCst), 2);
        again.release();
        moved.release();
        let here = pool.get().await.unwrap();
        assert_eq!(*here, (1, 0), "and back again when core 0 asks");
        assert_eq!(homed.moved.load(Ordering::SeqCst), 2);
    });
}
