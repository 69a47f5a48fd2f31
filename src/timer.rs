//! Where pgrelay's timers live.
//!
//! tokio's time driver does its bookkeeping on every park of the runtime that
//! owns it: about 1,200 instructions per `pgbench -S` transaction, a tenth of
//! pgrelay's work per transaction at one client (BENCHMARKS.md). Serving
//! clients needs a timer seldom (a pool wait, an idle limit, a login), so the
//! serving runtime can park on I/O alone while every timer sits on a small
//! runtime of its own thread ([`TimerThread`]). A timer made through
//! [`Timers`] works from any runtime: its task is woken across threads only
//! when it fires.
//!
//! Nothing outside this module may call `tokio::time`'s timer constructors
//! (the test at the bottom checks): on a serving runtime without a time
//! driver they panic.

use std::future::{Future, IntoFuture};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::{Interval, Sleep, Timeout};

/// A handle to the runtime that keeps pgrelay's timers.
#[derive(Debug, Clone)]
pub struct Timers {
    runtime: Handle,
}

impl Timers {
    /// Timers on the runtime this is called from, which must have its time
    /// driver enabled (tests, and the multi-threaded runtime).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn current() -> Self {
        Timers {
            runtime: Handle::current(),
        }
    }

    pub fn sleep(&self, duration: Duration) -> Sleep {
        let _timer_runtime = self.runtime.enter();
        tokio::time::sleep(duration)
    }

    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        let _timer_runtime = self.runtime.enter();
        tokio::time::sleep_until(deadline.into())
    }

    /// `future`, failing with `Elapsed` unless it completes within `duration`.
    pub fn timeout<F: IntoFuture>(&self, duration: Duration, future: F) -> Timeout<F::IntoFuture> {
        let _timer_runtime = self.runtime.enter();
        tokio::time::timeout(duration, future)
    }

    pub fn timeout_at<F: IntoFuture>(
        &self,
        deadline: Instant,
        future: F,
    ) -> Timeout<F::IntoFuture> {
        let _timer_runtime = self.runtime.enter();
        tokio::time::timeout_at(deadline.into(), future)
    }

    /// Ticks at once, then every `period`.
    pub fn interval(&self, period: Duration) -> Interval {
        let _timer_runtime = self.runtime.enter();
        tokio::time::interval(period)
    }

    /// Runs `future` on the timer runtime: for work whose libraries make
    /// timers of their own (hickory's DNS lookups), and whose sockets no
    /// session shares.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }
}

/// A thread running the timer runtime; stopped and joined on drop. Drop it
/// after the runtimes whose tasks hold its timers.
#[derive(Debug)]
pub struct TimerThread {
    timers: Timers,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TimerThread {
    pub fn start() -> std::io::Result<TimerThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let timers = Timers {
            runtime: runtime.handle().clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pgrelay-timers".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(TimerThread {
            timers,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn timers(&self) -> Timers {
        self.timers.clone()
    }
}

impl Drop for TimerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What `pgrelay run` serves on. One worker thread: a current-thread
/// runtime that parks on I/O alone, its timers on a [`TimerThread`]. More:
/// tokio's work-stealing scheduler with a time driver of its own (0 = one
/// thread per core).
#[derive(Debug)]
pub struct Runtimes {
    // Declared, so dropped, first: tasks holding timers end before the timer thread.
    serving: tokio::runtime::Runtime,
    timer_thread: Option<TimerThread>,
}

impl Runtimes {
    pub fn build(worker_threads: u32) -> std::io::Result<Runtimes> {
        if worker_threads == 1 {
            let timer_thread = TimerThread::start()?;
            let serving = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?;
            return Ok(Runtimes {
                serving,
                timer_thread: Some(timer_thread),
            });
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if worker_threads > 1 {
            builder.worker_threads(worker_threads as usize);
        }
        Ok(Runtimes {
            serving: builder.enable_all().build()?,
            timer_thread: None,
        })
    }

    /// Runs `main`, given the timers to use, on the serving runtime.
    pub fn block_on<F, Fut>(&self, main: F) -> Fut::Output
    where
        F: FnOnce(Timers) -> Fut,
        Fut: Future,
    {
        self.serving.block_on(async {
            let timers = match &self.timer_thread {
                Some(thread) => thread.timers(),
                None => Timers::current(),
            };
            main(timers).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime like the one that serves clients: I/O only, no time driver.
    fn serving_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap()
    }

    #[test]
    fn timers_from_the_timer_thread_fire_on_a_runtime_without_time() {
        let thread = TimerThread::start().unwrap();
        let timers = thread.timers();
        serving_runtime().block_on(async {
            let started = Instant::now();
            timers.sleep(Duration::from_millis(30)).await;
            assert!(started.elapsed() >= Duration::from_millis(30));

            let never = std::future::pending::<()>();
            assert!(timers
                .timeout(Duration::from_millis(10), never)
                .await
                .is_err());
            let ready = timers.timeout_at(Instant::now() + Duration::from_secs(5), async { 7 });
            assert_eq!(ready.await.unwrap(), 7);

            let mut ticks = timers.interval(Duration::from_millis(5));
            ticks.tick().await;
            ticks.tick().await;
            // Reset after its first poll, the sleep keeps its runtime.
            let sleep = timers.sleep_until(Instant::now() + Duration::from_secs(60));
            tokio::pin!(sleep);
            sleep
                .as_mut()
                .reset((Instant::now() + Duration::from_millis(5)).into());
            sleep.await;
        });
    }

    #[test]
    fn spawned_work_runs_on_the_timer_runtime() {
        let thread = TimerThread::start().unwrap();
        let timers = thread.timers();
        let on = serving_runtime().block_on(async {
            timers
                .spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap()
        });
        assert_eq!(on.as_deref(), Some("pgrelay-timers"));
    }

    #[test]
    #[should_panic(expected = "timers are disabled")]
    fn a_serving_runtime_has_no_timers_of_its_own() {
        // What the source check below guards against.
        serving_runtime().block_on(async {
            drop(tokio::time::sleep(Duration::from_millis(1)));
        });
    }

    /// Only this module may construct tokio timers in `src/`: anywhere else
    /// they would land on the serving runtime, which has no time driver.
    #[test]
    fn no_other_source_file_makes_tokio_timers() {
        const CONSTRUCTORS: [&str; 5] = [
            "time::sleep",
            "time::timeout",
            "time::interval",
            "time::{sleep",
            "time::{timeout",
        ];
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![src];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                // Unit tests run on tokio's test runtime, which has a time driver.
                if name == "timer.rs" || name == "tests.rs" || name.ends_with("_tests.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    if CONSTRUCTORS.iter().any(|c| line.contains(c)) {
                        offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "use crate::timer::Timers:\n{}",
            offenders.join("\n")
        );
    }
}
