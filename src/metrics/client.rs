//! The client connection gauges, kept right by a guard that each session owns:
//! whatever path a session ends by (error, panic, timeout), dropping its
//! [`ClientTracker`] takes it out of the gauges.

use std::sync::Arc;

use prometheus::{IntGauge, IntGaugeVec};

use super::labels::ClientState;
use super::pool::PoolMetrics;

/// `pgrelay_client_connections{state}` resolved per state.
pub(super) struct ClientGauges {
    /// Indexed by [`ClientState`].
    by_state: Vec<IntGauge>,
}

impl ClientGauges {
    pub(super) fn resolve(family: &IntGaugeVec) -> ClientGauges {
        ClientGauges {
            by_state: ClientState::ALL
                .iter()
                .map(|s| family.with_label_values(&[s.label()]))
                .collect(),
        }
    }

    fn get(&self, state: ClientState) -> &IntGauge {
        &self.by_state[state as usize]
    }
}

/// One client connection's place in the gauges. Created in state `Login` by
/// [`super::Metrics::client_connected`]; counted until dropped.
pub struct ClientTracker {
    global: Arc<ClientGauges>,
    pool: Option<PoolMetrics>,
    state: ClientState,
}

impl std::fmt::Debug for ClientTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTracker")
            .field("state", &self.state)
            .field("in_pool", &self.pool.is_some())
            .finish()
    }
}

impl ClientTracker {
    pub(super) fn new(global: Arc<ClientGauges>) -> ClientTracker {
        global.get(ClientState::Login).inc();
        ClientTracker {
            global,
            pool: None,
            state: ClientState::Login,
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The pool this client was attributed to at login, if any.
    pub fn pool(&self) -> Option<&PoolMetrics> {
        self.pool.as_ref()
    }

    /// Login succeeded: the client now counts in `pool`'s gauges, as idle.
    pub fn logged_in(&mut self, pool: PoolMetrics) {
        self.leave();
        self.pool = Some(pool);
        self.state = ClientState::Idle;
        self.enter();
    }

    /// Moves the client to `state` (Idle ↔ Waiting ↔ Active).
    pub fn set_state(&mut self, state: ClientState) {
        if state == self.state {
            return;
        }
        self.leave();
        self.state = state;
        self.enter();
    }

    fn enter(&self) {
        self.global.get(self.state).inc();
        if let Some(g) = self.pool.as_ref().and_then(|p| p.client_gauge(self.state)) {
            g.inc();
        }
    }

    fn leave(&self) {
        self.global.get(self.state).dec();
        if let Some(g) = self.pool.as_ref().and_then(|p| p.client_gauge(self.state)) {
            g.dec();
        }
    }
}

impl Drop for ClientTracker {
    fn drop(&mut self) {
        self.leave();
    }
}
