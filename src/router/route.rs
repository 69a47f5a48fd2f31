//! The routing decision: where a statement goes and why.

use std::fmt;
use std::sync::Arc;

use super::kind::StatementKind;
use super::session::TxState;

/// Where a statement is sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Primary,
    /// Any healthy replica of the default replica pool.
    Replicas,
    /// A named replica group (`group:<name>` in rule files).
    Group(Arc<str>),
}

impl Target {
    pub fn is_primary(&self) -> bool {
        matches!(self, Self::Primary)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Primary => f.write_str("primary"),
            Self::Replicas => f.write_str("replicas"),
            Self::Group(name) => write!(f, "group:{name}"),
        }
    }
}

/// Why a statement has to run on the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryCause {
    /// The statement itself modifies data, schema, or server state.
    Statement(StatementKind),
    LockingClause,
    SelectInto,
    DataModifyingCte,
    WriteFunction(Arc<str>),
    /// A function on no list, with `unknown_functions: primary`.
    UnknownFunction(Arc<str>),
    /// `EXPLAIN ANALYZE` executes its statement, which is not a read.
    ExplainAnalyzeWrite,
    CopyFrom,
    /// `COPY … TO 'file'` / `TO PROGRAM` runs on the server's filesystem.
    CopyToServer,
    /// `BEGIN` / `START TRANSACTION` without `READ ONLY`.
    ReadWriteTransaction,
    /// Session or transaction control outside a transaction (SET, COMMIT, FETCH, …).
    Control,
    /// sqlparser could not parse the statement (message kept for `explain`).
    Unparsed(Arc<str>),
}

impl fmt::Display for PrimaryCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Statement(kind) => write!(f, "{kind} statement is not a read"),
            Self::LockingClause => f.write_str("row-locking clause (FOR UPDATE/SHARE)"),
            Self::SelectInto => f.write_str("SELECT INTO creates a table"),
            Self::DataModifyingCte => {
                f.write_str("data-modifying query (INSERT/UPDATE/DELETE in WITH)")
            }
            Self::WriteFunction(name) => write!(f, "calls write function {name}()"),
            Self::UnknownFunction(name) => {
                write!(
                    f,
                    "calls unlisted function {name}() (unknown_functions: primary)"
                )
            }
            Self::ExplainAnalyzeWrite => f.write_str("EXPLAIN ANALYZE executes a write"),
            Self::CopyFrom => f.write_str("COPY FROM loads data"),
            Self::CopyToServer => f.write_str("COPY TO a server file or program"),
            Self::ReadWriteTransaction => f.write_str("read-write transaction"),
            Self::Control => f.write_str("session/transaction control outside a transaction"),
            Self::Unparsed(err) => write!(f, "unparsed SQL ({err})"),
        }
    }
}

/// What a statement's routing was about to follow before write safety overruled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overruled {
    ReplicaHint,
    ReplicaOverride,
    Rule(Arc<str>),
}

impl fmt::Display for Overruled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReplicaHint => f.write_str("pgrelay:replica hint"),
            Self::ReplicaOverride => f.write_str("pgrelay.route = replica"),
            Self::Rule(name) => write!(f, "rule {name:?}"),
        }
    }
}

/// Why the router chose its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Positively a read.
    Read,
    /// A read calling unlisted functions, allowed by `unknown_functions: replica`.
    UnknownFunctionAllowed(Arc<str>),
    /// Must run on the primary.
    Primary(PrimaryCause),
    /// Must run on the primary; a replica hint, override or rule was ignored.
    PrimaryOverruling {
        cause: PrimaryCause,
        overruled: Overruled,
    },
    /// Inside a transaction: its server is kept (the target is nominal).
    InTransaction(TxState),
    /// The session is pinned (temp table, LISTEN, …) and stays on the primary.
    SessionPinned,
    PrimaryHint,
    /// A replica hint made a read that calls unlisted functions go to a replica.
    ReplicaHint,
    PrimaryOverride,
    ReplicaOverride,
    /// The named routing rule matched.
    Rule(Arc<str>),
    /// Statements in one query string wanted different replica targets.
    MixedTargets,
    /// A pgrelay command answered by pgrelay itself.
    Intercepted,
    /// A pgrelay command inside a multi-statement string is forwarded, not answered.
    InterceptInMultiStatement,
    /// Empty query string (only whitespace, comments, `;`).
    Empty,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read => f.write_str("read-only statement"),
            Self::UnknownFunctionAllowed(name) => {
                write!(
                    f,
                    "read calling unlisted {name}() (unknown_functions: replica)"
                )
            }
            Self::Primary(cause) => cause.fmt(f),
            Self::PrimaryOverruling { cause, overruled } => {
                write!(f, "{cause}; {overruled} ignored for safety")
            }
            Self::InTransaction(tx) => write!(f, "inside a {tx}; stays on its server"),
            Self::SessionPinned => f.write_str("session is pinned to the primary"),
            Self::PrimaryHint => f.write_str("pgrelay:primary hint"),
            Self::ReplicaHint => f.write_str("pgrelay:replica hint"),
            Self::PrimaryOverride => f.write_str("pgrelay.route = primary"),
            Self::ReplicaOverride => f.write_str("pgrelay.route = replica"),
            Self::Rule(name) => write!(f, "rule {name:?} matched"),
            Self::MixedTargets => f.write_str("statements want different replica targets"),
            Self::Intercepted => f.write_str("pgrelay command, answered by pgrelay"),
            Self::InterceptInMultiStatement => {
                f.write_str("pgrelay command inside a multi-statement string is not intercepted")
            }
            Self::Empty => f.write_str("empty query"),
        }
    }
}

/// A target and the reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    pub reason: Reason,
}

impl Route {
    pub fn primary(reason: Reason) -> Self {
        Self {
            target: Target::Primary,
            reason,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.target, self.reason)
    }
}
