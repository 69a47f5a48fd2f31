//! A time-decayed moving average of latency.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Exponentially weighted moving average whose memory fades with time, not
/// with sample count: after `decay` without samples an old value weighs
/// 1/e, and a sample's weight grows with the time since the previous one
/// (so a burst of samples at one instant counts as the first). Safe to share; the lock is held for a few arithmetic operations and
/// never across `.await`.
#[derive(Debug)]
pub struct Ewma {
    decay_secs: f64,
    state: Mutex<Option<(f64, Instant)>>,
}

impl Ewma {
    /// `decay` is the time constant; shorter reacts faster.
    pub fn new(decay: Duration) -> Self {
        Ewma {
            decay_secs: decay.as_secs_f64().max(f64::MIN_POSITIVE),
            state: Mutex::new(None),
        }
    }

    /// Folds `sample` in as seen at `now`; the first sample is taken as is.
    pub fn observe_at(&self, sample: Duration, now: Instant) {
        let sample = sample.as_secs_f64();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let next = match *state {
            None => sample,
            Some((value, at)) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let keep = decay_factor(elapsed / self.decay_secs);
                value * keep + sample * (1.0 - keep)
            }
        };
        *state = Some((next, now.max(state.map_or(now, |(_, at)| at))));
    }

    /// The average faded toward zero by the time since the last sample, so an
    /// endpoint that stopped being picked because it once looked slow is tried
    /// again once its bad figure has aged (the "peak EWMA" behaviour).
    pub fn faded(&self, now: Instant) -> Duration {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.map_or(Duration::ZERO, |(value, at)| {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            Duration::from_secs_f64(value * decay_factor(elapsed / self.decay_secs))
        })
    }

    /// The current average; zero before the first sample.
    pub fn get(&self) -> Duration {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.map_or(Duration::ZERO, |(value, _)| Duration::from_secs_f64(value))
    }
}

/// e^-x. Under load samples arrive microseconds apart against a decay of
/// seconds, so x is tiny and 1 − x is exact to within x²/2 (< 5·10⁻⁷ here),
/// without a call to `exp` on every routed read.
fn decay_factor(x: f64) -> f64 {
    if x < 1e-3 {
        1.0 - x
    } else {
        (-x).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::decay_factor;

    #[test]
    fn the_decay_factor_matches_exp_on_both_sides_of_the_shortcut() {
        for x in [
            0.0f64, 1e-9, 1e-6, 5e-4, 9.99e-4, 1e-3, 0.01, 0.5, 1.0, 20.0,
        ] {
            let exact = (-x).exp();
            assert!(
                (decay_factor(x) - exact).abs() <= 5e-7,
                "x = {x}: {} vs {exact}",
                decay_factor(x)
            );
        }
    }
}
