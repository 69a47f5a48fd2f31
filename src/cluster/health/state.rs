//! The per-endpoint health state machine: pure, fed with probe results and
//! passive signals, with the time passed in.

use std::time::{Duration, Instant};

use super::probe::{ProbeResult, ServerFacts};

/// What an endpoint is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// Thresholds of the state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive reachable probes before a down endpoint is used again.
    pub rise: u32,
    /// Consecutive failed probes before an up endpoint is taken out.
    pub fall: u32,
    /// First ban after a failure on real traffic; doubles per repeated ban.
    pub ban_base: Duration,
    pub ban_max: Duration,
    /// A replica further behind than this (bytes of WAL) is `Lagging`; None = no limit.
    pub max_lag_bytes: Option<u64>,
    /// A replica further behind than this (replay delay) is `Lagging`; None = no limit.
    pub max_lag: Option<Duration>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            rise: 2,
            fall: 3,
            ban_base: Duration::from_secs(1),
            ban_max: Duration::from_secs(60),
            max_lag_bytes: None,
            max_lag: None,
        }
    }
}

/// Where an endpoint stands. Only `Healthy` takes traffic for its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Not enough probes yet for a verdict.
    Unknown,
    Healthy,
    /// Reachable and in the right role but too far behind the primary.
    Lagging {
        bytes: Option<u64>,
        delay: Option<Duration>,
    },
    /// Reachable but not what it should be: a "replica" that is not in
    /// recovery, or a "primary" that is.
    WrongRole {
        in_recovery: bool,
    },
    /// Failed `fall` probes in a row.
    Unhealthy {
        since: Instant,
    },
    /// Failed on real traffic; not probed back in before `until`.
    Banned {
        until: Instant,
    },
}

impl HealthState {
    pub fn is_usable(&self) -> bool {
        matches!(self, HealthState::Healthy)
    }

    /// Reachable as far as the last verdict goes (usable or not).
    fn is_up(&self) -> bool {
        matches!(
            self,
            HealthState::Healthy | HealthState::Lagging { .. } | HealthState::WrongRole { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Lagging { .. } => "lagging",
            HealthState::WrongRole { .. } => "wrong_role",
            HealthState::Unhealthy { .. } => "unhealthy",
            HealthState::Banned { .. } => "banned",
        }
    }
}

/// The state an up endpoint with these facts should be in.
pub fn classify(facts: &ServerFacts, role: Role, policy: &HealthPolicy) -> HealthState {
    let role_ok = match role {
        Role::Primary => !facts.in_recovery,
        Role::Replica => facts.in_recovery,
    };
    if !role_ok {
        return HealthState::WrongRole {
            in_recovery: facts.in_recovery,
        };
    }
    if role == Role::Primary {
        return HealthState::Healthy;
    }
    let over_bytes =
        matches!((facts.lag_bytes, policy.max_lag_bytes), (Some(lag), Some(max)) if lag > max);
    let over_delay = matches!((facts.lag, policy.max_lag), (Some(lag), Some(max)) if lag > max);
    if over_bytes || over_delay {
        HealthState::Lagging {
            bytes: facts.lag_bytes,
            delay: facts.lag,
        }
    } else {
        HealthState::Healthy
    }
}

/// The health of one endpoint over time.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    role: Role,
    policy: HealthPolicy,
    state: HealthState,
    ok_streak: u32,
    fail_streak: u32,
    /// Bans in a row without a long healthy spell in between.
    strikes: u32,
    up_since: Option<Instant>,
}

impl HealthTracker {
    pub fn new(role: Role, policy: HealthPolicy) -> Self {
        HealthTracker {
            role,
            policy,
            state: HealthState::Unknown,
            ok_streak: 0,
            fail_streak: 0,
            strikes: 0,
            up_since: None,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Length of the next ban: `ban_base × 2^strikes`, capped at `ban_max`.
    pub fn next_ban(&self) -> Duration {
        let factor = 1u32.checked_shl(self.strikes.min(31)).unwrap_or(u32::MAX);
        self.policy
            .ban_base
            .saturating_mul(factor)
            .min(self.policy.ban_max)
    }

    /// Feeds one probe result seen at `now`; returns the new state.
    pub fn observe(&mut self, result: &ProbeResult, now: Instant) -> HealthState {
        match result {
            ProbeResult::Reachable(facts) => self.on_reachable(facts, now),
            ProbeResult::Unreachable { .. } => self.on_unreachable(now),
        }
        self.state
    }

    /// A connection failure or timeout on real traffic: banned at once.
    /// Reports arriving while already banned (a burst from many sessions)
    /// add nothing.
    pub fn connection_failed(&mut self, now: Instant) -> HealthState {
        match self.state {
            HealthState::Banned { until } if now < until => {}
            _ => self.ban(now),
        }
        self.state
    }

    fn on_reachable(&mut self, facts: &ServerFacts, now: Instant) {
        self.fail_streak = 0;
        let verdict = classify(facts, self.role, &self.policy);
        if self.state.is_up() {
            // Role and lag are facts, not flukes: follow them at once.
            self.state = verdict;
            self.forgive_after_stable_spell(now);
            return;
        }
        if let HealthState::Banned { until } = self.state {
            if now < until {
                // Probes during the ban do not count towards re-admission.
                self.ok_streak = 0;
                return;
            }
        }
        self.ok_streak += 1;
        if self.ok_streak >= self.policy.rise.max(1) {
            self.state = verdict;
            self.up_since = Some(now);
        }
    }

    fn on_unreachable(&mut self, now: Instant) {
        self.ok_streak = 0;
        self.fail_streak += 1;
        match self.state {
            HealthState::Banned { until } if now >= until => {
                // Still failing after the ban: a repeated failure, longer ban.
                self.ban(now);
            }
            HealthState::Banned { .. } | HealthState::Unhealthy { .. } => {}
            _ if self.fail_streak >= self.policy.fall.max(1) => {
                self.state = HealthState::Unhealthy { since: now };
                self.up_since = None;
            }
            _ => {}
        }
    }

    fn ban(&mut self, now: Instant) {
        let until = now + self.next_ban();
        self.strikes = self.strikes.saturating_add(1);
        self.ok_streak = 0;
        self.up_since = None;
        self.state = HealthState::Banned { until };
    }

    /// Strikes are forgotten once the endpoint has stayed up for `ban_max`.
    fn forgive_after_stable_spell(&mut self, now: Instant) {
        if let Some(since) = self.up_since {
            if now.saturating_duration_since(since) >= self.policy.ban_max {
                self.strikes = 0;
            }
        }
    }
}
