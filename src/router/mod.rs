//! Statement classifier and routing rules: SQL text + session state → [`Decision`].
//!
//! Pure and synchronous (no I/O, no async). The session layer calls
//! [`Classifier::classify`] for every simple Query and every extended-protocol
//! Parse, then acts on the [`Decision`]: forward to [`Decision::route`]'s target,
//! answer [`Decision::intercept`] itself, and apply [`Decision::effects`].
//!
//! # What is a read
//! A statement goes to a replica only when it is positively a read: `SELECT`,
//! `VALUES`, `TABLE`, `SHOW`, `EXPLAIN` (and `EXPLAIN ANALYZE` only of a read),
//! `COPY … TO STDOUT` of a table or a read query, `BEGIN … READ ONLY`. And even then not
//! when it contains, at any depth, a locking clause (`FOR UPDATE/NO KEY UPDATE/
//! SHARE/KEY SHARE`), `SELECT INTO`, a data-modifying CTE, or a call of a function
//! on the rule files' write lists. A read calling a function on no list is
//! governed by `unknown_functions` (primary by default). Anything sqlparser
//! cannot parse goes to the primary and is counted in [`ClassifierStats::parse_failures`].
//! A query string with several statements goes to the primary if any one does.
//!
//! # Precedence, per statement
//! 1. `SET/RESET/SHOW pgrelay.route` alone in a query string: [`Effect::Intercept`].
//! 2. A pinned session ([`SessionContext::session_pinned`]): primary.
//! 3. Inside a transaction: the transaction's server (the target is nominal:
//!    primary for read-write, replicas for read-only; the session layer keeps the server).
//!    `BEGIN`s in the same string are followed.
//! 4. A `pgrelay:primary` comment hint, then `pgrelay.route = primary`: primary.
//! 5. A possible write: primary. A replica hint, `pgrelay.route = replica` or a rule
//!    to replicas is ignored and the reason says so.
//! 6. The first matching rule's target (rules can send reads anywhere).
//! 7. Replicas.
//!
//! A replica hint or `pgrelay.route = replica` lets reads calling unlisted functions go to replicas.
//!
//! # Session state (effects)
//! - `SET`/`SET SESSION`/`SET TIME ZONE`/`SET NAMES`/`SET ROLE`: [`Effect::SessionSet`]
//!   (record and replay wherever later statements run); `RESET x` / `SET x TO DEFAULT`:
//!   [`Effect::Reset`]; `RESET ALL` / `DISCARD ALL`: [`Effect::ResetAll`].
//!   `SET LOCAL` and `SET TRANSACTION` have no effect: they end with the transaction.
//! - [`Effect::PinSession`] (pin to the server the statement runs on; the primary when idle):
//!   `CREATE TEMP TABLE/VIEW/SEQUENCE`, `SELECT … INTO TEMP`, `LISTEN`, SQL `PREPARE`,
//!   `DECLARE … WITH HOLD`, functions on `session_pinning_functions`
//!   (`pg_advisory_lock`, `set_config`, …), `SET SESSION AUTHORIZATION`,
//!   `SET SESSION CHARACTERISTICS`, and any `SET`/`RESET` form that cannot be replayed or parsed.
//! - [`Effect::PinTransaction`]: `DECLARE` without `HOLD` (the transaction is on one server anyway).
//!   Transaction-level advisory locks (`pg_advisory_xact_lock`) are writes and pin nothing more.
//! - [`Effect::Transaction`]: `BEGIN`/`START TRANSACTION` (with `read_only`), `COMMIT`/`END`,
//!   `ROLLBACK`/`ABORT`, `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`, `PREPARE TRANSACTION`.
//!   Outside a transaction, control statements (`COMMIT`, `SET`, `FETCH`, …) go to the primary.
//!
//! # Caching
//! The pure analysis of a text (statements, kinds, access, effects, tables,
//! functions, rules whose text conditions match) is cached in a sharded LRU keyed by the
//! text with literal values masked (see `normalize`; not when a rule has a
//! `regex`, which may look at literals); hints live in the text. Session conditions, overrides and transaction
//! state are applied after the cache on every call.

mod analyze;
mod cache;
mod classifier;
mod effect;
mod error;
mod explain;
mod fallback;
mod functions;
mod inspect;
mod kind;
mod lexer;
mod normalize;
mod route;
mod rule;
mod ruleset;
mod session;
mod text;

pub use analyze::Access;
pub use classifier::{Classifier, ClassifierStats, Decision};
pub use effect::{Effect, PinReason, RouteCommand, TxControl};
pub use error::RouterError;
pub use explain::explain;
pub use functions::{FunctionCatalog, FunctionClass};
pub use kind::StatementKind;
pub use lexer::Hint;
pub use normalize::mentions_pgrelay;
pub use route::{Overruled, PrimaryCause, Reason, Route, Target};
pub use rule::Rule;
pub use ruleset::{RuleSet, UnknownFunctions, DEFAULT_RULES_YAML};
pub use session::{RouteOverride, SessionContext, TxState};
pub use text::{StatementAnalysis, TextAnalysis};

#[cfg(test)]
mod tests;
