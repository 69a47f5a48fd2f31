//! A shutdown signal threaded through every task that must stop cleanly.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use tokio::sync::Notify;

/// Owned by the entry point; triggering it (or dropping it) tells every
/// [`ShutdownSignal`].
#[derive(Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

/// A cheap, clonable view of the shutdown state.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    inner: Arc<Inner>,
}

/// Shutdown only ever goes from running to stopping, so a waiter registered
/// once stays registered until the one notification that matters.
#[derive(Debug, Default)]
struct Inner {
    stopping: AtomicBool,
    notify: Notify,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            inner: Arc::default(),
        }
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            inner: self.inner.clone(),
        }
    }

    pub fn trigger(&self) {
        // Set before notifying: a woken waiter must see it.
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
    }
}

impl Drop for Shutdown {
    /// Nobody is left to trigger it: treat that as shutting down.
    fn drop(&mut self) {
        self.trigger();
    }
}

impl ShutdownSignal {
    pub fn is_triggered(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// Resolves once shutdown is triggered (at once if it already was).
    ///
    /// Polled again by the same task, it costs one atomic load: a session
    /// polls it on every idle wait, and re-registering with the notifier
    /// each time would take its lock.
    pub async fn triggered(&self) {
        let inner = &*self.inner;
        // Created before the flag is checked, so a trigger in between still
        // reaches it (tokio's Notify guarantees that for notify_waiters).
        let notified = inner.notify.notified();
        tokio::pin!(notified);
        let mut registered: Option<Waker> = None;
        std::future::poll_fn(|cx| {
            if inner.stopping.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            match notified.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => {
                    registered = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn signal_sees_trigger() {
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        assert!(!signal.is_triggered());
        shutdown.trigger();
        signal.triggered().await;
        assert!(signal.is_triggered());
    }

    #[tokio::test]
    async fn a_waiter_polled_many_times_is_still_woken() {
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        let waiter = tokio::spawn(async move {
            let stop = signal.triggered();
            tokio::pin!(stop);
            // Polled repeatedly by the same task before the trigger, as a
            // session's idle wait is.
            for _ in 0..3 {
                tokio::select! {
                    biased;
                    _ = &mut stop => return true,
                    _ = tokio::task::yield_now() => {}
                }
            }
            stop.await;
            true
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.trigger();
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(woke, Ok(Ok(true))));
    }

    #[tokio::test]
    async fn dropping_the_owner_counts_as_shutdown() {
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        drop(shutdown);
        tokio::time::timeout(Duration::from_secs(5), signal.triggered())
            .await
            .expect("resolved");
    }
}
