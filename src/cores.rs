//! Thread per core: one current-thread runtime per core, each serving the
//! clients placed on it.
//!
//! Under tokio's work-stealing scheduler a socket's readiness can wake its
//! task on the other core, and at one client that costs more than the
//! pooler's own work (BENCHMARKS.md: "One client: where the kernel wakes the
//! pooler"). Here a session stays on the core it was placed on, and the pools
//! prefer servers opened on the caller's core, moving one over only when the
//! core has none idle, so a transaction's wake-ups stay on one thread.
//!
//! Core 0 is the runtime the entry point runs on (with the listeners,
//! probes and upkeep); the others run on threads of their own until their
//! [`Cores`] is dropped.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::oneshot;

thread_local! {
    static CURRENT: Cell<u16> = const { Cell::new(0) };
}

/// The core the calling thread serves. 0 on core 0 and on every thread that
/// is not a per-core runtime's (a work-stealing worker, a test), so without
/// per-core runtimes every connection is local to every caller.
pub fn current() -> u16 {
    CURRENT.with(Cell::get)
}

/// Re-registers `tcp` with the reactor of the runtime the caller runs on.
/// A socket stays with the reactor it was registered with, which would wake
/// this core's task from another thread on every readiness. Must be called
/// from within a runtime.
pub fn rehome(tcp: TcpStream) -> io::Result<TcpStream> {
    TcpStream::from_std(tcp.into_std()?)
}

/// The runtimes clients are placed on.
pub struct Cores {
    cores: Vec<Core>,
    /// Dropping these ends the other cores' runtimes (and their threads).
    _stop: Vec<oneshot::Sender<()>>,
}

struct Core {
    index: u16,
    handle: Handle,
    sessions: Arc<AtomicUsize>,
}

impl Cores {
    /// Only the caller's runtime: sessions run where they are accepted.
    pub fn single() -> Cores {
        Cores {
            cores: vec![Core::new(0, Handle::current())],
            _stop: Vec::new(),
        }
    }

    /// `count` cores: the caller's runtime, which must be a current-thread
    /// one, as core 0, and `count - 1` more current-thread runtimes on new
    /// threads. On a work-stealing runtime, or for one core, [`Cores::single`].
    pub fn start(count: usize, idle_poll_time: Duration) -> io::Result<Cores> {
        let here = Handle::current();
        if here.runtime_flavor() != RuntimeFlavor::CurrentThread {
            return Ok(Cores::single());
        }
        crate::idle_poll::start(idle_poll_time);
        if count <= 1 {
            return Ok(Cores::single());
        }
        let mut cores = vec![Core::new(0, here)];
        let mut stops = Vec::new();
        for index in 1..count {
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            let runtime = crate::idle_poll::current_thread_runtime()?;
            cores.push(Core::new(index, runtime.handle().clone()));
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("pgrelay-core-{index}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(index));
                    // Ends on a stop or when the sender is dropped.
                    let _ = runtime.block_on(async move {
                        crate::idle_poll::start(idle_poll_time);
                        stopped.await
                    });
                })?;
            stops.push(stop);
        }
        Ok(Cores {
            cores,
            _stop: stops,
        })
    }

    /// How many cores clients are placed on.
    pub fn count(&self) -> usize {
        self.cores.len()
    }

    /// The core with the fewest sessions, counted until the returned
    /// placement is dropped (hold it for the session's life).
    pub fn place(&self) -> Placement {
        let core = self
            .cores
            .iter()
            .min_by_key(|c| c.sessions.load(Ordering::Relaxed))
            .expect("at least one core");
        core.sessions.fetch_add(1, Ordering::Relaxed);
        Placement {
            core: core.index,
            handle: core.handle.clone(),
            sessions: core.sessions.clone(),
        }
    }

    /// Sessions per core now.
    #[cfg(test)]
    fn sessions(&self) -> Vec<usize> {
        self.cores
            .iter()
            .map(|c| c.sessions.load(Ordering::Relaxed))
            .collect()
    }
}

impl Core {
    fn new(index: u16, handle: Handle) -> Core {
        Core {
            index,
            handle,
            sessions: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Where one session runs; counts it against its core until dropped.
pub struct Placement {
    pub core: u16,
    pub handle: Handle,
    sessions: Arc<AtomicUsize>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_each_session_on_the_least_loaded_core_and_runs_it_there() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let cores = Cores::start(3, Duration::ZERO).unwrap();
            assert_eq!(cores.count(), 3);
            let first = cores.place();
            let second = cores.place();
            let third = cores.place();
            let mut placed = vec![first.core, second.core, third.core];
            placed.sort_unstable();
            assert_eq!(placed, vec![0, 1, 2]);
            assert_eq!(cores.sessions(), vec![1, 1, 1]);
            drop(second);
            let again = cores.place();
            assert_eq!(cores.sessions(), vec![1, 1, 1]);
            // A task spawned on a placement's handle sees that core as current.
            let seen = again.handle.spawn(async { current() }).await.unwrap();
            assert_eq!(seen, again.core);
            assert_eq!(current(), 0);
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_work_stealing_runtime_is_one_core() {
        let cores = Cores::start(4, Duration::ZERO).unwrap();
        assert_eq!(cores.count(), 1);
        let placed = cores.place();
        assert_eq!(placed.core, 0);
        assert_eq!(cores.sessions(), vec![1]);
        drop(placed);
        assert_eq!(cores.sessions(), vec![0]);
    }

    #[tokio::test]
    async fn a_rehomed_socket_still_carries_its_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut client = rehome(client).unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}
