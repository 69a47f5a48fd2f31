//! Balancing: choose one endpoint from a snapshot of candidates.
//!
//! Everything here is pure and works on any slice of [`Candidate`]s: the
//! caller builds the slice from its endpoint snapshot (weights already
//! scaled by [`effective_weight`]) and maps the returned position back.
//! A candidate with weight 0 (or not finite) is never chosen.
//!
//! Load figures come from [`Ewma`] (latency) and [`InFlight`] guards
//! (outstanding requests), both safe to share between sessions.

mod ewma;
mod inflight;
#[cfg(test)]
mod tests;
mod weight;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use ewma::Ewma;
pub use inflight::InFlight;
pub use weight::{effective_weight, LoadSignals, MIN_HEALTH_FACTOR};

/// One endpoint as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Configured weight × health factor; 0 = never pick.
    pub weight: f64,
    /// Requests in flight on this endpoint now.
    pub outstanding: u32,
    /// Smoothed recent latency.
    pub latency_ewma: Duration,
}

impl Candidate {
    pub fn new(weight: f64, outstanding: u32, latency_ewma: Duration) -> Self {
        Candidate {
            weight,
            outstanding,
            latency_ewma,
        }
    }

    fn is_eligible(&self) -> bool {
        self.weight.is_finite() && self.weight > 0.0
    }

    /// Expected cost of sending one more request here (lower is better):
    /// latency × queue depth, divided by weight.
    fn p2c_cost(&self) -> f64 {
        // A floor keeps outstanding counts meaningful before any latency is known.
        let latency = self
            .latency_ewma
            .max(Duration::from_micros(1))
            .as_secs_f64();
        latency * f64::from(self.outstanding.saturating_add(1)) / self.weight
    }
}

/// How to choose among candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each eligible candidate in turn (weights only exclude zeros).
    RoundRobin,
    /// At random, in proportion to weight.
    Random,
    /// The fewest requests in flight (ties: higher weight, then random).
    LeastOutstanding,
    /// Power of two choices: two weighted-random candidates, the one with
    /// the lower `latency × (outstanding + 1) / weight` wins.
    #[default]
    P2cEwma,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::LeastOutstanding,
        Strategy::P2cEwma,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastOutstanding => "least_outstanding",
            Strategy::P2cEwma => "p2c_ewma",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name in configuration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown load balancing strategy {0:?} (expected round_robin, random, least_outstanding or p2c_ewma)")]
pub struct UnknownStrategy(pub String);

impl UnknownStrategy {
    pub fn sqlstate(&self) -> &'static str {
        "F0000" // config_file_error
    }
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim();
        Strategy::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownStrategy(text.to_string()))
    }
}

/// Chooses candidates with one strategy; share it (it is `Sync`) so the
/// round-robin position is common to every session.
#[derive(Debug, Default)]
pub struct Balancer {
    strategy: Strategy,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(strategy: Strategy) -> Self {
        Balancer {
            strategy,
            next: AtomicUsize::new(0),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The position in `candidates` of the chosen one; `None` when no
    /// candidate has a positive weight.
    pub fn pick<R: Rng + ?Sized>(&self, candidates: &[Candidate], rng: &mut R) -> Option<usize> {
        match self.strategy {
            Strategy::RoundRobin => self.round_robin(candidates),
            Strategy::Random => weighted_random(candidates, None, rng),
            Strategy::LeastOutstanding => least_outstanding(candidates, rng),
            Strategy::P2cEwma => p2c(candidates, rng),
        }
    }

    fn round_robin(&self, candidates: &[Candidate]) -> Option<usize> {
        let eligible = candidates.iter().filter(|c| c.is_eligible()).count();
        if eligible == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % eligible;
        eligible_positions(candidates).nth(turn)
    }
}

fn eligible_positions(candidates: &[Candidate]) -> impl Iterator<Item = usize> + '_ {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_eligible())
        .map(|(i, _)| i)
}

/// A position drawn in proportion to weight, never `except`.
fn weighted_random<R: Rng + ?Sized>(
    candidates: &[Candidate],
    except: Option<usize>,
    rng: &mut R,
) -> Option<usize> {
    let usable = || eligible_positions(candidates).filter(|&i| Some(i) != except);
    let total: f64 = usable().map(|i| candidates[i].weight).sum();
    if total <= 0.0 {
        return None;
    }
    let mut point = rng.random::<f64>() * total;
    let mut last = None;
    for i in usable() {
        point -= candidates[i].weight;
        if point < 0.0 {
            return Some(i);
        }
        last = Some(i);
    }
    // Rounding left a sliver past the end: it belongs to the last one.
    last
}

fn least_outstanding<R: Rng + ?Sized>(candidates: &[Candidate], rng: &mut R) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut ties = 0u32;
    for i in eligible_positions(candidates) {
        let c = &candidates[i];
        let order = match best {
            None => std::cmp::Ordering::Less,
            Some(b) => {
                let b = &candidates[b];
                c.outstanding
                    .cmp(&b.outstanding)
                    .then(b.weight.total_cmp(&c.weight))
            }
        };
        match order {
            std::cmp::Ordering::Less => {
                best = Some(i);
                ties = 1;
            }
            std::cmp::Ordering::Equal => {
                // Reservoir sampling: each tied candidate equally likely,
                // so equal loads do not all pile onto the first one.
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = Some(i);
                }
            }
            std::cmp::Ordering::Greater => {}
        }
    }
    best
}

fn p2c<R: Rng + ?Sized>(candidates: &[Candidate], rng: &mut R) -> Option<usize> {
    let first = weighted_random(candidates, None, rng)?;
    let Some(second) = weighted_random(candidates, Some(first), rng) else {
        return Some(first);
    };
    if candidates[second].p2c_cost() < candidates[first].p2c_cost() {
        Some(second)
    } else {
        Some(first)
    }
}
