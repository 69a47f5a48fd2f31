//! Polling before sleeping: a per-core runtime that runs out of work keeps
//! asking the kernel for readiness, without blocking, for a short window
//! before it parks in `epoll_wait`.
//!
//! On a virtual machine an idle CPU halts, and waking a halted virtual CPU
//! costs tens of microseconds: at one client a pooler on the critical path
//! pays that twice per transaction (BENCHMARKS.md, "Polling before
//! sleeping"). A thread that is still polling when the reply arrives pays
//! only the readiness check.
//!
//! Polling costs CPU only where the CPU would otherwise idle:
//! - between checks the thread yields its CPU, and stops polling as soon as
//!   another thread took it (a busy CPU does not halt, so sleeping there
//!   costs no slow wake-up);
//! - it does not start while the machine has more runnable threads than
//!   CPUs (`/proc/loadavg`): a polling CPU never goes idle, so the kernel
//!   would not pull a waiting thread over to it;
//! - the window adapts as the guest kernel's `haltpoll` governor does: it
//!   grows after a sleep shorter than `idle_poll_time` (polling longer would
//!   have caught that wake-up) and halves after a longer one, so a trickle of
//!   queries, where polling would only burn CPU, brings it down to nothing;
//! - `auto` turns it off under a CPU quota (a cgroup's `cpu.max` or
//!   `cpu.cfs_quota_us`), where every polled microsecond counts against the
//!   quota.
//!
//! The runtime's park hooks and one task per core drive it: when the runtime
//! is about to park and has done work since it last polled, the hook wakes
//! the poller task, which yields (one zero-timeout readiness check each
//! time) until the window passes without other work running in between.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// A gap between two of the poller's turns longer than this means other
/// tasks ran in between (or another thread had the CPU). An empty turn is
/// two system calls (a zero-timeout `epoll_wait` and a `sched_yield`) and
/// two clock reads.
const WORK_GAP: Duration = Duration::from_micros(4);

thread_local! {
    static POLLER: RefCell<Option<Poller>> = const { RefCell::new(None) };
}

/// This thread's poller, present once [`start`] ran here.
struct Poller {
    window: Window,
    state: State,
    /// When the runtime last parked for real (not polled instead).
    parked_at: Option<Instant>,
    load: LoadGauge,
}

enum State {
    /// The poller task waits; `worked` says the runtime woke from a park
    /// since the poller last finished, so the next park polls first.
    Asleep { waker: Option<Waker>, worked: bool },
    /// The poller task is polling.
    Polling,
}

/// How long to poll before the next park, adapted to how long the runtime's
/// sleeps turn out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    now: Duration,
    max: Duration,
}

impl Window {
    fn new(max: Duration) -> Window {
        Window { now: max, max }
    }

    /// The polling window now.
    fn get(&self) -> Duration {
        self.now
    }

    /// Adapts to a sleep of `slept`: one shorter than the maximum window
    /// would have been caught by polling, so the window grows (doubling,
    /// from an eighth of the maximum); a longer one would have been polled
    /// for nothing, so it halves, to zero below an eighth.
    fn after_sleep(&mut self, slept: Duration) {
        let floor = self.max / 8;
        self.now = if slept < self.max {
            (self.now * 2).clamp(floor, self.max)
        } else if self.now / 2 < floor {
            Duration::ZERO
        } else {
            self.now / 2
        };
    }
}

/// Whether the machine has more runnable threads than CPUs, read from
/// `/proc/loadavg` at most once a millisecond. Then another thread waits for
/// a CPU, and a polling thread would keep the kernel from moving it to this
/// one (a CPU pulls waiting threads over when it goes idle), so polling costs
/// throughput; a CPU that is never idle does not halt anyway.
struct LoadGauge {
    file: Option<std::fs::File>,
    cpus: usize,
    read_at: Option<Instant>,
    busy: bool,
}

impl LoadGauge {
    fn new() -> LoadGauge {
        LoadGauge {
            file: std::fs::File::open("/proc/loadavg").ok(),
            cpus: online_cpus(),
            read_at: None,
            busy: false,
        }
    }

    fn busy(&mut self) -> bool {
        let now = Instant::now();
        if self
            .read_at
            .is_some_and(|at| now.duration_since(at) < Duration::from_millis(1))
        {
            return self.busy;
        }
        self.read_at = Some(now);
        let mut text = [0u8; 128];
        let read = self.file.as_ref().and_then(|file| {
            use std::os::unix::fs::FileExt;
            file.read_at(&mut text, 0).ok()
        });
        // Without /proc, polling stays on: the yield check still stops it
        // on a contended CPU.
        self.busy = read
            .and_then(|n| runnable_threads(&text[..n]))
            .is_some_and(|runnable| runnable > self.cpus);
        self.busy
    }
}

/// The runnable threads in `/proc/loadavg` ("0.50 0.40 0.30 3/250 1234"),
/// the reader itself included.
fn runnable_threads(loadavg: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(loadavg).ok()?;
    let field = text.split_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

/// CPUs the kernel runs threads on, all of the machine's (`/proc/loadavg`
/// counts them all), not only those this process may use.
fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| {
            list.trim()
                .split(',')
                .map(|range| match range.split_once('-') {
                    Some((first, last)) => {
                        (last.parse::<usize>().ok()? + 1).checked_sub(first.parse::<usize>().ok()?)
                    }
                    None => range.parse::<usize>().ok().map(|_| 1),
                })
                .sum::<Option<usize>>()
        })
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A current-thread runtime with the park hooks installed. The hooks do
/// nothing until [`start`] runs on the runtime's thread.
pub fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(before_park)
        .on_thread_unpark(after_unpark)
        .build()
}

/// Starts polling for up to `max` on the calling thread's runtime, which
/// must have been built by [`current_thread_runtime`] (on another runtime the
/// poller never runs). `Duration::ZERO` leaves it off.
pub fn start(max: Duration) {
    if max.is_zero() {
        return;
    }
    let running = POLLER.with(|p| {
        let mut p = p.borrow_mut();
        let running = p.is_some();
        match p.as_mut() {
            // A second pooler on this runtime (tests embed several): one
            // poller serves both.
            Some(poller) => poller.window = Window::new(max),
            None => {
                *p = Some(Poller {
                    window: Window::new(max),
                    state: State::Asleep {
                        waker: None,
                        worked: true,
                    },
                    parked_at: None,
                    load: LoadGauge::new(),
                })
            }
        }
        running
    });
    if !running {
        tokio::spawn(poll_while_busy());
    }
}

/// Whether the calling thread's poller is polling now.
#[cfg(test)]
fn polling() -> bool {
    POLLER.with(|p| {
        matches!(
            &*p.borrow(),
            Some(Poller {
                state: State::Polling,
                ..
            })
        )
    })
}

/// The calling thread's polling window now, if it has a poller.
#[cfg(test)]
fn window() -> Option<Duration> {
    POLLER.with(|p| p.borrow().as_ref().map(|p| p.window.get()))
}

fn before_park() {
    let waker = POLLER.with(|p| {
        let mut p = p.borrow_mut();
        let poller = p.as_mut()?;
        match &mut poller.state {
            State::Asleep {
                waker: waker @ Some(_),
                worked: true,
            } if !poller.window.get().is_zero() && !poller.load.busy() => {
                let waker = waker.take();
                poller.state = State::Polling;
                waker
            }
            _ => {
                poller.parked_at = Some(Instant::now());
                None
            }
        }
    });
    // Waking the poller puts it in the run queue, so the runtime runs it
    // instead of parking.
    if let Some(waker) = waker {
        waker.wake();
    }
}

fn after_unpark() {
    POLLER.with(|p| {
        let mut p = p.borrow_mut();
        let Some(poller) = p.as_mut() else { return };
        if let Some(parked_at) = poller.parked_at.take() {
            poller.window.after_sleep(parked_at.elapsed());
        }
        if let State::Asleep { worked, .. } = &mut poller.state {
            *worked = true;
        }
    });
}

async fn poll_while_busy() {
    loop {
        let window = poll_fn(|cx| {
            POLLER.with(|p| match p.borrow_mut().as_mut() {
                Some(Poller {
                    state: State::Asleep { waker, .. },
                    ..
                }) => {
                    *waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                Some(poller) => Poll::Ready(poller.window.get()),
                None => Poll::Pending,
            })
        })
        .await;
        poll_for(window).await;
        POLLER.with(|p| {
            if let Some(poller) = p.borrow_mut().as_mut() {
                poller.state = State::Asleep {
                    waker: None,
                    worked: false,
                };
            }
        });
    }
}

/// Yields to the runtime, one zero-timeout readiness check per turn, until
/// `window` passes without other work or another thread wants the CPU.
async fn poll_for(window: Duration) {
    let mut last = Instant::now();
    let mut until = last + window;
    loop {
        // Lets another thread that is ready to run on this CPU have it. If
        // one did, the CPU is not idle, and sleeping costs no slow wake-up.
        std::thread::yield_now();
        let yielded = Instant::now();
        if yielded.duration_since(last) > WORK_GAP {
            return;
        }
        // Back after the runtime's readiness check and whatever it woke.
        tokio::task::yield_now().await;
        let now = Instant::now();
        if now.duration_since(yielded) > WORK_GAP {
            until = now + window;
        } else if now >= until {
            return;
        }
        last = now;
    }
}

/// Whether a cgroup caps this process's CPU time: cgroup v2's `cpu.max` or
/// v1's `cpu.cfs_quota_us` set on the process's cgroup or an ancestor. A
/// container under a Kubernetes CPU limit is.
pub fn under_cpu_quota() -> bool {
    let Ok(cgroups) = std::fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    cgroups.lines().any(|line| {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let (root, file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "cpu.max")
        } else if controllers.split(',').any(|c| c == "cpu") {
            ("/sys/fs/cgroup/cpu", "cpu.cfs_quota_us")
        } else {
            return false;
        };
        let mut dir = std::path::PathBuf::from(format!("{root}{path}"));
        loop {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                if quota_set(&text) {
                    return true;
                }
            }
            if dir.as_os_str().len() <= root.len() || !dir.pop() {
                return false;
            }
        }
    })
}

/// `cpu.max` is "max 100000" without a quota and "<quota> <period>" with one;
/// `cpu.cfs_quota_us` is -1 without one.
fn quota_set(text: &str) -> bool {
    match text.split_whitespace().next() {
        Some("max") | None => false,
        Some(quota) => quota.parse::<i64>().is_ok_and(|q| q > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runnable_threads_and_online_cpus() {
        assert_eq!(runnable_threads(b"0.50 0.40 0.30 3/250 1234\n"), Some(3));
        assert_eq!(runnable_threads(b"0.50 0.40"), None);
        assert!(online_cpus() >= 1);
    }

    #[test]
    fn reads_cpu_quotas_of_both_cgroup_versions() {
        assert!(!quota_set("max 100000\n"));
        assert!(quota_set("50000 100000\n"));
        assert!(!quota_set("-1\n"));
        assert!(quota_set("150000\n"));
        assert!(!quota_set(""));
    }

    #[test]
    fn the_window_grows_after_short_sleeps_and_shrinks_to_nothing_after_long_ones() {
        let max = Duration::from_micros(80);
        let mut window = Window::new(max);
        assert_eq!(window.get(), max);
        // A trickle of queries: each sleep outlasts the window.
        let halvings: Vec<u64> = (0..4)
            .map(|_| {
                window.after_sleep(Duration::from_millis(5));
                window.get().as_micros() as u64
            })
            .collect();
        assert_eq!(halvings, vec![40, 20, 10, 0]);
        window.after_sleep(Duration::from_millis(5));
        assert_eq!(window.get(), Duration::ZERO);
        // Back-to-back work: sleeps shorter than the maximum grow it again.
        let growth: Vec<u64> = (0..5)
            .map(|_| {
                window.after_sleep(Duration::from_micros(30));
                window.get().as_micros() as u64
            })
            .collect();
        assert_eq!(growth, vec![10, 20, 40, 80, 80]);
    }

    #[test]
    fn a_runtime_polls_while_work_comes_and_sleeps_once_it_stops() {
        let max = Duration::from_millis(20);
        let runtime = current_thread_runtime().unwrap();
        runtime.block_on(async {
            assert_eq!(window(), None);
            start(max);
            assert_eq!(window(), Some(max));
            // The machine's load is not this test's to set: a busy test
            // machine would keep polling off throughout.
            POLLER.with(|p| p.borrow_mut().as_mut().unwrap().load.file = None);
            // Woken from another thread every millisecond, the runtime is
            // found polling, not asleep. Polling stops early when another
            // thread wants this CPU (by design), so a busy test machine gets
            // up to 3 s of tries. The ticking thread ends with the receiver.
            let (tick, mut ticks) = tokio::sync::mpsc::unbounded_channel::<()>();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(1));
                if tick.send(()).is_err() {
                    break;
                }
            });
            let mut seen_polling = false;
            for _ in 0..3000 {
                ticks.recv().await.unwrap();
                if polling() {
                    seen_polling = true;
                    break;
                }
            }
            drop(ticks);
            assert!(seen_polling, "never polling when woken every millisecond");
            // Idle: polling ends within its window and the thread sleeps,
            // so 300 ms idle cost far less than 300 ms of CPU.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before = thread_cpu_time();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let used = thread_cpu_time() - before;
            assert!(
                used < Duration::from_millis(60),
                "{used:?} of CPU while idle"
            );
        });
    }

    fn thread_cpu_time() -> Duration {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes only the timespec it is given.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        assert_eq!(rc, 0);
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }

    #[test]
    fn zero_leaves_the_runtime_without_a_poller() {
        let runtime = current_thread_runtime().unwrap();
        runtime.block_on(async {
            start(Duration::ZERO);
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(!polling());
            assert_eq!(window(), None);
        });
    }
}
