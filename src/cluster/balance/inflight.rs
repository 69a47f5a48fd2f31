//! Counting requests in flight per endpoint.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Counts one request in flight on an endpoint for as long as it lives;
/// hold it across the request (it is `Send`), drop it when the reply is in.
#[derive(Debug)]
pub struct InFlight {
    counter: Arc<AtomicU32>,
}

impl InFlight {
    pub fn enter(counter: &Arc<AtomicU32>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight {
            counter: counter.clone(),
        }
    }

    /// Requests in flight on the same endpoint, this one included.
    pub fn outstanding(&self) -> u32 {
        self.counter.load(Ordering::Relaxed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}
