//! A pool's checkout slots.
//!
//! The main slots are split into one line per core ([`crate::cores`]). A
//! checkout takes a free slot of its own core, else any core's free slot,
//! else it waits in its own core's line. A returned slot goes back to its
//! core's line, so when clients queue, a server released on a core is taken
//! by a client of that core: no wake-up crosses to the other thread and no
//! socket moves between reactors (one FIFO line for all cores measured about
//! 10 % fewer transactions at 500 clients than PgBouncer; BENCHMARKS.md).
//!
//! Slots follow demand. A returned slot moves to another core's line when
//! that core's waiters have less than half the slots per waiter that the
//! returning core's have (a core with waiters and no slots takes the next
//! slot returned anywhere), and a free slot never stays in a line without
//! waiters while another core's clients wait.
//!
//! The reserve is a [`CoreSlots`] of one line: it is used rarely.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// A pool's slots, one line per core.
pub(super) struct CoreSlots {
    lines: Box<[Line]>,
    /// Permits a shrink still has to take back: each slot returned while
    /// this is above zero is retired instead.
    owed: AtomicUsize,
}

struct Line {
    sem: Arc<Semaphore>,
    /// Permits of this line, free or handed out.
    total: AtomicUsize,
    /// Checkouts of this core waiting in the line.
    waiting: AtomicUsize,
}

/// A main slot held by a checkout; give it back with [`CoreSlots::give_back`].
pub(super) struct MainSlot {
    permit: OwnedSemaphorePermit,
    line: usize,
}

impl CoreSlots {
    /// `size` slots spread evenly over `cores` lines.
    pub(super) fn new(size: usize, cores: usize) -> Self {
        let cores = cores.max(1);
        let lines = (0..cores)
            .map(|i| {
                let share = size / cores + usize::from(i < size % cores);
                Line {
                    sem: Arc::new(Semaphore::new(share)),
                    total: AtomicUsize::new(share),
                    waiting: AtomicUsize::new(0),
                }
            })
            .collect();
        CoreSlots {
            lines,
            owed: AtomicUsize::new(0),
        }
    }

    /// The line of `core`; a core beyond the pool's count (a pool made for
    /// fewer cores) shares a line.
    fn line_of(&self, core: u16) -> usize {
        usize::from(core) % self.lines.len()
    }

    /// A free slot, of `core`'s line first.
    pub(super) fn try_acquire(&self, core: u16) -> Option<MainSlot> {
        let line = self.line_of(core);
        self.try_line(line).or_else(|| self.try_others(line))
    }

    fn try_line(&self, line: usize) -> Option<MainSlot> {
        let permit = self.lines[line].sem.clone().try_acquire_owned().ok()?;
        Some(MainSlot { permit, line })
    }

    fn try_others(&self, line: usize) -> Option<MainSlot> {
        (0..self.lines.len())
            .filter(|&other| other != line)
            .find_map(|other| self.try_line(other))
    }

    /// Waits in `core`'s line for a slot.
    pub(super) async fn acquire(&self, core: u16) -> Result<MainSlot, AcquireError> {
        let line = self.line_of(core);
        let own = &self.lines[line];
        let _waiting = Waiting::count(&own.waiting);
        if self.lines.len() > 1 {
            // Counted as waiting before the last look at the other lines: a
            // slot returned to one of them after that look sees the count
            // and is moved here (`give_back`).
            fence(Ordering::SeqCst);
            if let Some(slot) = self.try_line(line).or_else(|| self.try_others(line)) {
                return Ok(slot);
            }
        }
        let permit = own.sem.clone().acquire_owned().await?;
        Ok(MainSlot { permit, line })
    }

    /// Returns a slot: retired if a shrink is owed one, moved to a core with
    /// much more demand, else back to its own line.
    pub(super) fn give_back(&self, slot: MainSlot) {
        let MainSlot { permit, line } = slot;
        // With nothing owed this is one load: `fetch_update` writes only
        // when the closure returns a value.
        if self
            .owed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1))
            .is_ok()
        {
            permit.forget();
            self.lines[line].total.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if self.lines.len() == 1 {
            return; // `permit` drops back into the only line.
        }
        if let Some(to) = self.hungrier_than(line) {
            self.move_permit(permit, line, to);
            return;
        }
        drop(permit);
        // A checkout of another core may have looked at this line just before
        // the slot came back and now waits in its own line.
        fence(Ordering::SeqCst);
        if self.lines[line].waiting.load(Ordering::Relaxed) > 0 {
            return;
        }
        let hungry = (0..self.lines.len())
            .find(|&other| other != line && self.lines[other].waiting.load(Ordering::Relaxed) > 0);
        if let Some(to) = hungry {
            if let Ok(permit) = self.lines[line].sem.clone().try_acquire_owned() {
                self.move_permit(permit, line, to);
            }
        }
    }

    /// A line whose waiters have less than half the slots per waiter of
    /// `line`'s (any line with waiters when `line` has none).
    fn hungrier_than(&self, line: usize) -> Option<usize> {
        let here = &self.lines[line];
        let (waiting, total) = (
            here.waiting.load(Ordering::Relaxed),
            here.total.load(Ordering::Relaxed),
        );
        (0..self.lines.len()).find(|&other| {
            let there = &self.lines[other];
            let their_waiting = there.waiting.load(Ordering::Relaxed);
            other != line
                && their_waiting > 0
                && their_waiting * total > 2 * waiting * there.total.load(Ordering::Relaxed)
        })
    }

    fn move_permit(&self, permit: OwnedSemaphorePermit, from: usize, to: usize) {
        permit.forget();
        self.lines[from].total.fetch_sub(1, Ordering::Relaxed);
        self.lines[to].total.fetch_add(1, Ordering::Relaxed);
        self.lines[to].sem.add_permits(1);
    }

    pub(super) fn in_use(&self) -> usize {
        self.lines
            .iter()
            .map(|l| {
                l.total
                    .load(Ordering::Relaxed)
                    .saturating_sub(l.sem.available_permits())
            })
            .sum()
    }

    /// Goes from `from` to `to` slots: growth spreads new slots over the
    /// lines at once; a shrink takes free slots now and the rest as
    /// checkouts return them.
    pub(super) fn resize(&self, from: usize, to: usize) {
        if to >= from {
            let mut grow = to - from;
            // Cancel what an earlier shrink still owes first.
            while grow > 0
                && self
                    .owed
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1))
                    .is_ok()
            {
                grow -= 1;
            }
            for i in 0..grow {
                let line = &self.lines[i % self.lines.len()];
                line.total.fetch_add(1, Ordering::Relaxed);
                line.sem.add_permits(1);
            }
            return;
        }
        let mut excess = from - to;
        for line in self.lines.iter() {
            let forgotten = line.sem.forget_permits(excess);
            line.total.fetch_sub(forgotten, Ordering::Relaxed);
            excess -= forgotten;
        }
        self.owed.fetch_add(excess, Ordering::Relaxed);
    }

    pub(super) fn close(&self) {
        for line in self.lines.iter() {
            line.sem.close();
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.lines[0].sem.is_closed()
    }
}

/// Counts a checkout as waiting in its line while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    /// Polls once: the output if ready (a waiter polled once is in its line).
    async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match Pin::new(&mut *f).poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    fn totals(slots: &CoreSlots) -> Vec<usize> {
        slots
            .lines
            .iter()
            .map(|l| l.total.load(Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn slots_are_spread_over_the_cores_and_a_free_one_is_taken_from_any() {
        let slots = CoreSlots::new(3, 2);
        assert_eq!(totals(&slots), vec![2, 1]);
        let held: Vec<MainSlot> = (0..3).map(|_| slots.try_acquire(1).unwrap()).collect();
        let lines: Vec<usize> = held.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![1, 0, 0], "its own line first");
        assert!(slots.try_acquire(0).is_none());
        assert_eq!(slots.in_use(), 3);
        for slot in held {
            slots.give_back(slot);
        }
        assert_eq!(slots.in_use(), 0);
        assert_eq!(totals(&slots), vec![2, 1]);
    }

    #[tokio::test]
    async fn a_returned_slot_goes_to_a_waiter_of_its_own_core_first() {
        let slots = CoreSlots::new(2, 2);
        let on_zero = slots.try_acquire(0).unwrap();
        let on_one = slots.try_acquire(1).unwrap();
        let mut waiter_zero = Box::pin(slots.acquire(0));
        let mut waiter_one = Box::pin(slots.acquire(1));
        assert!(poll_once(&mut waiter_zero).await.is_none());
        assert!(poll_once(&mut waiter_one).await.is_none());
        slots.give_back(on_zero);
        let got = poll_once(&mut waiter_zero)
            .await
            .expect("core 0's waiter served");
        assert_eq!(got.unwrap().line, 0);
        assert!(
            poll_once(&mut waiter_one).await.is_none(),
            "core 1 still waits"
        );
        slots.give_back(on_one);
        assert!(poll_once(&mut waiter_one).await.is_some());
    }

    #[tokio::test]
    async fn a_slot_returned_where_nobody_waits_moves_to_a_waiting_core() {
        // One slot, on core 0's line; core 1's client waits for it.
        let slots = CoreSlots::new(1, 2);
        let held = slots.try_acquire(1).unwrap();
        assert_eq!(held.line, 0);
        let mut waiter = Box::pin(slots.acquire(1));
        assert!(poll_once(&mut waiter).await.is_none());
        slots.give_back(held);
        let got = poll_once(&mut waiter).await.expect("not left waiting");
        assert_eq!(got.unwrap().line, 1);
        assert_eq!(totals(&slots), vec![0, 1]);
    }

    #[tokio::test]
    async fn a_core_with_waiters_and_no_slots_takes_the_next_slot_returned() {
        let slots = CoreSlots::new(2, 2);
        let first = slots.try_acquire(0).unwrap();
        let second = slots.try_acquire(0).unwrap();
        assert_eq!((first.line, second.line), (0, 1));
        let mut zero_a = Box::pin(slots.acquire(0));
        assert!(poll_once(&mut zero_a).await.is_none());
        // Core 1 has nobody waiting: its slot moves to core 0's waiter.
        slots.give_back(second);
        let zero_a = poll_once(&mut zero_a).await.unwrap().unwrap();
        assert_eq!(totals(&slots), vec![2, 0]);
        let mut one = Box::pin(slots.acquire(1));
        let mut zero_b = Box::pin(slots.acquire(0));
        assert!(poll_once(&mut one).await.is_none());
        assert!(poll_once(&mut zero_b).await.is_none());
        // Core 0 has a waiter too, but core 1 has none of the slots.
        slots.give_back(first);
        assert!(poll_once(&mut one).await.is_some(), "core 1 not starved");
        assert!(poll_once(&mut zero_b).await.is_none());
        assert_eq!(totals(&slots), vec![1, 1]);
        slots.give_back(zero_a);
        assert!(poll_once(&mut zero_b).await.is_some());
    }

    #[test]
    fn a_shrink_takes_free_slots_now_and_held_ones_as_they_return() {
        let slots = CoreSlots::new(4, 2);
        let held = [slots.try_acquire(0).unwrap(), slots.try_acquire(1).unwrap()];
        slots.resize(4, 1);
        assert_eq!(totals(&slots).iter().sum::<usize>(), 2, "the two free ones");
        assert!(slots.try_acquire(0).is_none());
        let [a, b] = held;
        slots.give_back(a);
        assert_eq!(totals(&slots).iter().sum::<usize>(), 1);
        assert!(slots.try_acquire(0).is_none(), "retired, not freed");
        slots.give_back(b);
        assert_eq!(totals(&slots).iter().sum::<usize>(), 1);
        let last = slots.try_acquire(0).expect("the one slot left");
        slots.give_back(last);
        slots.resize(1, 3);
        assert_eq!(totals(&slots).iter().sum::<usize>(), 3);
    }
}
