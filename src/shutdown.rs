//! A shutdown signal threaded through every task that must stop cleanly.

use tokio::sync::watch;

/// Owned by the entry point; triggering it tells every [`ShutdownSignal`].
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

/// A cheap, clonable view of the shutdown state.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            tx: watch::channel(false).0,
        }
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl ShutdownSignal {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is triggered (at once if it already was).
    pub async fn triggered(&mut self) {
        // An error means the Shutdown was dropped: treat that as shutting down.
        let _ = self.rx.wait_for(|&stop| stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signal_sees_trigger() {
        let shutdown = Shutdown::new();
        let mut signal = shutdown.signal();
        assert!(!signal.is_triggered());
        shutdown.trigger();
        signal.triggered().await;
        assert!(signal.is_triggered());
    }
}
