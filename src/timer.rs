//! A timer kept across many waits of one task.
//!
//! A new `tokio::time::Sleep` per wait takes the time driver's lock twice: to
//! enter the wheel on its first poll and to leave it when dropped. A timer
//! that stays registered and is moved to a later deadline costs one atomic
//! update instead; the driver re-files it when its old deadline comes round.
//! Waits whose limit is fixed (a pool's `query_wait_timeout`, a session's idle
//! limits) only ever move the deadline later, so they take that path.

use std::pin::Pin;
use std::time::Instant;

use tokio::time::Sleep;

/// Created on first use and boxed, so that an owner that never waits carries
/// one pointer. A timer left armed after its wait ended may wake its task once
/// when the deadline passes; owners treat a wake-up as a hint, not an event.
#[derive(Default)]
pub struct ReusableSleep(Option<Pin<Box<Sleep>>>);

impl ReusableSleep {
    pub const fn new() -> Self {
        ReusableSleep(None)
    }

    /// The timer, set to fire at `deadline`.
    pub fn until(&mut self, deadline: Instant) -> Pin<&mut Sleep> {
        let deadline = tokio::time::Instant::from_std(deadline);
        match &mut self.0 {
            Some(sleep) => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep.as_mut()
            }
            slot @ None => slot
                .insert(Box::pin(tokio::time::sleep_until(deadline)))
                .as_mut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The paused test clock: std's `Instant::now` does not move with it.
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_each_new_deadline() {
        let mut timer = ReusableSleep::new();
        let start = now();
        timer.until(start + Duration::from_secs(5)).await;
        let first = now();
        assert!(first >= start + Duration::from_secs(5));
        timer.until(first + Duration::from_secs(3)).await;
        assert!(now() >= first + Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_postpones_an_armed_timer() {
        let mut timer = ReusableSleep::new();
        let start = now();
        // Armed and polled once, so it is registered with the driver.
        let early = tokio::time::timeout(
            Duration::from_secs(1),
            timer.until(start + Duration::from_secs(2)),
        )
        .await;
        assert!(early.is_err(), "the 2 s timer cannot fire within 1 s");
        let later = start + Duration::from_secs(10);
        timer.until(later).await;
        assert!(
            now() >= later,
            "the timer fired at its old deadline instead of the new one"
        );
    }
}
