//! Side effects of a statement on session state, for the session layer to act on.

use std::fmt;
use std::sync::Arc;

use super::error::RouterError;
use super::session::RouteOverride;

/// Transaction control carried by a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxControl {
    Begin {
        read_only: bool,
    },
    Commit,
    Rollback,
    Savepoint,
    ReleaseSavepoint,
    RollbackToSavepoint,
    /// `PREPARE TRANSACTION`: ends the session's transaction like a commit.
    PrepareTransaction,
}

/// Why a session (or transaction) must stay on one server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PinReason {
    TempTable,
    Listen,
    /// A function with session-lasting state, e.g. `pg_advisory_lock`.
    SessionFunction(Arc<str>),
    PreparedStatement,
    HoldCursor,
    Cursor,
    SessionAuthorization,
    SessionCharacteristics,
    /// A `SET` form pgrelay cannot record for replay.
    UnreplayableSet,
    /// A session command sqlparser could not parse.
    UnparsedSessionCommand,
}

impl fmt::Display for PinReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TempTable => f.write_str("temporary table, view or sequence"),
            Self::Listen => f.write_str("LISTEN"),
            Self::SessionFunction(name) => write!(f, "{name}() holds session state"),
            Self::PreparedStatement => f.write_str("SQL PREPARE"),
            Self::HoldCursor => f.write_str("cursor WITH HOLD"),
            Self::Cursor => f.write_str("cursor"),
            Self::SessionAuthorization => f.write_str("SET SESSION AUTHORIZATION"),
            Self::SessionCharacteristics => f.write_str("SET SESSION CHARACTERISTICS"),
            Self::UnreplayableSet => f.write_str("SET form that cannot be replayed"),
            Self::UnparsedSessionCommand => f.write_str("unparsed session command"),
        }
    }
}

/// A `pgrelay.route` command that pgrelay answers without a server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteCommand {
    Set(RouteOverride),
    Reset,
    Show,
    /// `SET pgrelay.route` to a word that is not a route; answer with [`RouteCommand::error`].
    Invalid {
        value: String,
    },
}

impl RouteCommand {
    /// The error to send the client, for an invalid command.
    pub fn error(&self) -> Option<RouterError> {
        match self {
            Self::Invalid { value } => Some(RouterError::InvalidRouteValue {
                value: value.clone(),
            }),
            _ => None,
        }
    }
}

/// Something the session layer must do besides forwarding the statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Effect {
    /// A session-level `SET`: record it and replay it on every server the session uses.
    /// `value` is SQL text ready for `SET <name> TO <value>`.
    SessionSet {
        name: String,
        value: String,
    },
    /// `RESET <name>` (or `SET <name> TO DEFAULT`): forget the recorded value.
    Reset {
        name: String,
    },
    /// `RESET ALL` / `DISCARD ALL`: forget every recorded value.
    ResetAll,
    /// Keep the whole session on the server this statement runs on (the primary when idle).
    PinSession(PinReason),
    /// Keep the rest of the transaction on its server.
    PinTransaction(PinReason),
    Transaction(TxControl),
    /// Answer this command in pgrelay; do not forward it.
    Intercept(RouteCommand),
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SessionSet { name, value } => write!(f, "record SET {name} TO {value}"),
            Self::Reset { name } => write!(f, "forget SET {name}"),
            Self::ResetAll => f.write_str("forget all SETs"),
            Self::PinSession(why) => write!(f, "pin session ({why})"),
            Self::PinTransaction(why) => write!(f, "pin transaction ({why})"),
            Self::Transaction(tx) => write!(f, "transaction control {tx:?}"),
            Self::Intercept(cmd) => write!(f, "intercept {cmd:?}"),
        }
    }
}
