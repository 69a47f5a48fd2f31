//! What the router needs to know about the client session.

use std::fmt;
use std::str::FromStr;

use super::error::RouterError;

/// The session-level `pgrelay.route` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RouteOverride {
    /// Classify every statement.
    #[default]
    Auto,
    /// Send everything to the primary.
    Primary,
    /// Send reads (including reads calling unlisted functions) to replicas; writes still go to the primary.
    Replica,
}

impl RouteOverride {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Primary => "primary",
            Self::Replica => "replica",
        }
    }
}

impl fmt::Display for RouteOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RouteOverride {
    type Err = RouterError;

    fn from_str(s: &str) -> Result<Self, RouterError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "default" => Ok(Self::Auto),
            "primary" => Ok(Self::Primary),
            "replica" | "replicas" => Ok(Self::Replica),
            _ => Err(RouterError::InvalidRouteValue {
                value: s.to_string(),
            }),
        }
    }
}

/// Transaction state of the client session, as tracked by the session layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TxState {
    #[default]
    Idle,
    InReadOnlyTx,
    InReadWriteTx,
}

impl fmt::Display for TxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Idle => "no transaction",
            Self::InReadOnlyTx => "read-only transaction",
            Self::InReadWriteTx => "read-write transaction",
        })
    }
}

/// Per-call view of the session; cheap to build for every statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionContext<'a> {
    pub database: &'a str,
    pub user: &'a str,
    pub application_name: Option<&'a str>,
    pub route_override: RouteOverride,
    pub tx: TxState,
    /// Set once the session layer has applied a `PinSession` effect.
    pub session_pinned: bool,
}

impl<'a> SessionContext<'a> {
    /// An idle, unpinned session with automatic routing.
    pub fn new(database: &'a str, user: &'a str) -> Self {
        Self {
            database,
            user,
            application_name: None,
            route_override: RouteOverride::Auto,
            tx: TxState::Idle,
            session_pinned: false,
        }
    }
}
