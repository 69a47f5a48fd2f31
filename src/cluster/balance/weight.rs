//! Scaling a configured weight by how well an endpoint is doing.

use std::time::Duration;

/// The smallest health factor: a struggling but usable endpoint keeps a
/// trickle of traffic so the balancer notices when it recovers.
pub const MIN_HEALTH_FACTOR: f64 = 0.01;

/// What [`effective_weight`] looks at; build it from a health snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSignals {
    /// The endpoint's smoothed latency.
    pub latency: Duration,
    /// Latency considered normal (e.g. the best in the group); at or below
    /// it there is no penalty. Zero disables the latency penalty.
    pub reference_latency: Duration,
    /// Share of recent requests or probes that failed, 0.0..=1.0.
    pub error_rate: f64,
    /// Replication lag; at `max_lag` the weight is cut to a tenth.
    pub lag: Duration,
    /// Zero disables the lag penalty.
    pub max_lag: Duration,
}

impl LoadSignals {
    /// No penalties at all.
    pub const NEUTRAL: LoadSignals = LoadSignals {
        latency: Duration::ZERO,
        reference_latency: Duration::ZERO,
        error_rate: 0.0,
        lag: Duration::ZERO,
        max_lag: Duration::ZERO,
    };

    /// The combined factor in `[MIN_HEALTH_FACTOR, 1]`.
    pub fn factor(&self) -> f64 {
        let latency = if self.reference_latency.is_zero() || self.latency <= self.reference_latency
        {
            1.0
        } else {
            self.reference_latency.as_secs_f64() / self.latency.as_secs_f64()
        };
        let errors = 1.0 - clamp01(self.error_rate);
        let lag = if self.max_lag.is_zero() {
            1.0
        } else {
            1.0 - 0.9 * clamp01(self.lag.as_secs_f64() / self.max_lag.as_secs_f64())
        };
        (latency * errors * lag).clamp(MIN_HEALTH_FACTOR, 1.0)
    }
}

/// `configured × factor`: never more than configured, never 0 unless
/// configured is 0 (an operator's way to drain an endpoint).
pub fn effective_weight(configured: f64, signals: &LoadSignals) -> f64 {
    if !(configured.is_finite() && configured > 0.0) {
        return 0.0;
    }
    configured * signals.factor()
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() {
        // Unknown counts as the worst case rather than silently as perfect.
        1.0
    } else {
        x.clamp(0.0, 1.0)
    }
}
