//! Health: is an endpoint reachable, in the role we expect, and close
//! enough behind the primary to serve reads?
//!
//! - [`HealthTracker`] is a pure hysteresis state machine (time passed in):
//!   `rise` reachable probes bring an endpoint in, `fall` failed ones take it
//!   out, a failure on real traffic bans it at once for a back-off that
//!   doubles on repeated bans (capped), and a banned endpoint comes back
//!   only after the ban has run out *and* it has passed `rise` probes.
//!   Wrong role (a replica not in recovery, a primary in recovery) and
//!   replication lag beyond the limits are followed at once.
//! - [`PgProber`] / [`probe`] ask a server with one query
//!   ([`PROBE_SQL`]) over a kept connection.
//! - [`spawn_monitor`] runs one probe task per endpoint and publishes an
//!   `Arc<HealthSnapshot>` through `watch`; receivers are woken only when
//!   the state changes, while the facts (lag, latency) refresh silently.

mod probe;
mod query;
mod state;
mod task;
#[cfg(test)]
mod tests;

use std::time::Duration;

use thiserror::Error;

use crate::backend::BackendError;

pub use probe::{facts_from_row, probe, Lsn, PgProber, ProbeResult, ServerFacts, PROBE_SQL};
pub use query::{first_row, parse_data_row, Row};
pub use state::{classify, HealthPolicy, HealthState, HealthTracker, Role};
pub use task::{spawn_monitor, HealthMonitor, HealthSnapshot, MonitorConfig, Prober};

/// Why a probe could not produce facts.
#[derive(Debug, Error)]
pub enum HealthError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("probe reply not understood: {0}")]
    BadReply(String),
    #[error("probe timed out after {0:?}")]
    Timeout(Duration),
}

impl HealthError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            HealthError::Backend(e) => e.sqlstate(),
            HealthError::BadReply(_) => "08P01", // protocol_violation
            HealthError::Timeout(_) => "08006",  // connection_failure
        }
    }
}
