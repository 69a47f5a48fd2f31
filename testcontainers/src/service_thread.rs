//! An in-process network service on its own thread and tokio runtime, so the
//! crate's services (DNS server, delay relay) keep a blocking API that sync
//! tests, `#[tokio::test]`s and binaries share. Dropping the handle stops the
//! service and joins its thread; the runtime's tasks die with it.

use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// What a service reports once, when it is listening (or why it is not).
pub(crate) type ReadySender<T, E> = mpsc::Sender<Result<T, E>>;

/// Errors a service can start with: its own bind errors, plus the two the
/// thread itself can meet.
pub(crate) trait ServiceError: From<std::io::Error> + Send + 'static {
    /// The thread ended without reporting readiness.
    fn stopped() -> Self;
}

/// A running service thread; stops the service when dropped.
pub(crate) struct ServiceThread {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServiceThread {
    /// Runs `serve` on a new thread named `name` inside a current-thread
    /// runtime. `serve` must send its readiness once through the sender and
    /// then serve until the receiver fires. Returns what it reported.
    pub(crate) fn spawn<T, E, F, Fut>(name: &str, serve: F) -> Result<(T, ServiceThread), E>
    where
        T: Send + 'static,
        E: ServiceError,
        F: FnOnce(ReadySender<T, E>, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                runtime.block_on(serve(ready_tx, shutdown_rx));
            })?;
        let ready = match ready_rx.recv() {
            Ok(ready) => ready,
            Err(_) => Err(E::stopped()),
        };
        let handle = ServiceThread {
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        };
        // On an error, dropping `handle` joins the thread that reported it.
        ready.map(|value| (value, handle))
    }
}

impl Drop for ServiceThread {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
