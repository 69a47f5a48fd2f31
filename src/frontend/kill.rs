//! The console's `KILL`/`KILL_CLIENT` switch for one client session.
//!
//! A session checks it on every wake, so the check must cost next to
//! nothing: one atomic load, plus a waker comparison. A `select!` against a
//! shutdown-style notifier cost about 200 instructions per transaction at 50
//! clients (BENCHMARKS.md, "Optimisations, measured").

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

/// Thrown once by the console; the session it belongs to ends at its next wake.
#[derive(Debug, Default)]
pub struct KillSwitch {
    thrown: AtomicBool,
    /// The session's task, woken when the switch is thrown.
    waker: Mutex<Option<Waker>>,
}

impl KillSwitch {
    pub fn throw(&self) {
        // Set before waking: the woken session must see it.
        self.thrown.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn is_thrown(&self) -> bool {
        self.thrown.load(Ordering::Acquire)
    }

    /// Runs `fut` to its end, or drops it wherever it waits once the switch
    /// is thrown (`None`). `fut` is polled first, so work it can finish in
    /// the same wake is not cut short.
    pub async fn guard<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let mut registered: Option<Waker> = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if self.is_thrown() {
                return Poll::Ready(None);
            }
            if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                let waker = cx.waker().clone();
                *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker.clone());
                registered = Some(waker);
                // A throw between the check above and the store found no
                // waker to wake: look again now that it is stored.
                if self.is_thrown() {
                    return Poll::Ready(None);
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_finished_future_is_not_killed() {
        let switch = KillSwitch::default();
        assert_eq!(switch.guard(async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn a_throw_ends_a_future_that_waits() {
        let switch = Arc::new(KillSwitch::default());
        let guarded = {
            let switch = switch.clone();
            tokio::spawn(async move { switch.guard(std::future::pending::<()>()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!guarded.is_finished());
        switch.throw();
        let out = tokio::time::timeout(Duration::from_secs(5), guarded)
            .await
            .expect("the guarded future ended")
            .unwrap();
        assert_eq!(out, None);
    }

    #[tokio::test]
    async fn a_switch_thrown_before_the_wait_ends_it_at_once() {
        let switch = KillSwitch::default();
        switch.throw();
        assert_eq!(switch.guard(std::future::pending::<()>()).await, None);
    }

    #[tokio::test]
    async fn a_future_woken_many_times_is_still_killed() {
        let switch = Arc::new(KillSwitch::default());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
        let guarded = {
            let switch = switch.clone();
            tokio::spawn(async move {
                switch
                    .guard(async move {
                        let mut seen = 0;
                        while rx.recv().await.is_some() {
                            seen += 1;
                        }
                        seen
                    })
                    .await
            })
        };
        for i in 0..50 {
            tx.send(i).await.unwrap();
        }
        switch.throw();
        let out = tokio::time::timeout(Duration::from_secs(5), guarded)
            .await
            .expect("the guarded future ended")
            .unwrap();
        assert_eq!(
            out, None,
            "the channel stayed open: only the switch ends it"
        );
        drop(tx);
    }
}
