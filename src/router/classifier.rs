//! The classifier: cached per-text analysis + session context → [`Decision`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::analyze::Access;
use super::cache::AnalysisCache;
use super::effect::{Effect, RouteCommand, TxControl};
use super::kind::StatementKind;
use super::lexer::Hint;
use super::normalize::write_literal_free_key;
use super::route::{Overruled, PrimaryCause, Reason, Route, Target};
use super::ruleset::{RuleSet, UnknownFunctions};
use super::session::{RouteOverride, SessionContext, TxState};
use super::text::{analyze_text, StatementAnalysis, TextAnalysis};

/// The router's answer for one query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub route: Route,
    /// Session effects of all statements, in order. Empty (no allocation) for plain queries.
    pub effects: Vec<Effect>,
    /// Kind of the statement that decided the route (the first one otherwise).
    pub kind: StatementKind,
}

impl Decision {
    /// The pgrelay command to answer locally, if this is one.
    pub fn intercept(&self) -> Option<&RouteCommand> {
        self.effects.iter().find_map(|e| match e {
            Effect::Intercept(cmd) => Some(cmd),
            _ => None,
        })
    }
}

/// Counters since the classifier was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassifierStats {
    pub classified: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Classifications whose text had a statement sqlparser could not parse (sent to the primary).
    pub parse_failures: u64,
    pub cache_entries: usize,
    pub cache_capacity: usize,
}

#[derive(Default)]
struct Counters {
    classified: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    parse_failures: AtomicU64,
}

/// Statement classifier; share it between sessions behind an `Arc`.
pub struct Classifier {
    rules: RuleSet,
    cache: AnalysisCache,
    /// Cache keys mask literals unless a rule's regex could see them.
    literal_free_keys: bool,
    /// A rule matches on the application name (see [`Classifier::depends_on_application_name`]).
    names_applications: bool,
    counters: Counters,
}

impl Classifier {
    /// `cache_capacity` query texts are kept (0 disables the cache).
    pub fn new(rules: RuleSet, cache_capacity: usize) -> Self {
        Self {
            literal_free_keys: !rules.rules().iter().any(|r| r.has_text_pattern()),
            names_applications: rules.rules().iter().any(|r| r.names_applications()),
            rules,
            cache: AnalysisCache::new(cache_capacity),
            counters: Counters::default(),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The (cached) session-independent analysis of `sql`.
    pub fn analyze(&self, sql: &str) -> Arc<TextAnalysis> {
        // The text itself first: prepared statements and repeated texts hit here
        // without paying for the masking scan.
        if let Some(hit) = self.cache.get(sql.as_bytes()) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        let mut masked = Vec::new();
        let key = if self.literal_free_keys && write_literal_free_key(sql.as_bytes(), &mut masked) {
            if let Some(hit) = self.cache.get(&masked) {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return hit;
            }
            &masked[..]
        } else {
            sql.as_bytes()
        };
        self.analyze_missed(sql, key)
    }

    /// Writes into `key` what the text `sql` is cached under: its
    /// literal-free shape, or the text itself. Texts with the same key get the
    /// same decision in the same context, so a session may remember decisions
    /// by key (see [`Classifier::classify_by_key`]).
    ///
    /// `sql` need not be UTF-8, so a session can compare keys before paying
    /// for the validation: a text whose key equals that of a UTF-8 text
    /// differs from it only inside string literals. Its bytes outside them
    /// are the other text's, and every run of non-ASCII bytes outside them
    /// is one of that text's runs, since masking writes ASCII only.
    pub fn cache_key(&self, sql: &[u8], key: &mut Vec<u8>) {
        if !(self.literal_free_keys && write_literal_free_key(sql, key)) {
            key.clear();
            key.extend_from_slice(sql);
        }
    }

    /// [`Classifier::classify`] for a text whose [`Classifier::cache_key`] the
    /// caller already computed: one cache lookup, no second scan.
    pub fn classify_by_key(&self, sql: &str, key: &[u8], ctx: &SessionContext<'_>) -> Decision {
        self.counters.classified.fetch_add(1, Ordering::Relaxed);
        let analysis = match self.cache.get(key) {
            Some(hit) => {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                hit
            }
            None => self.analyze_missed(sql, key),
        };
        self.decide_counted(&analysis, ctx)
    }

    fn analyze_missed(&self, sql: &str, key: &[u8]) -> Arc<TextAnalysis> {
        self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        let analysis = Arc::new(self.analyze_uncached(sql));
        self.cache.insert(key, Arc::clone(&analysis));
        analysis
    }

    /// Analyses `sql` without the cache: statements plus the rules whose text conditions match.
    pub(super) fn analyze_uncached(&self, sql: &str) -> TextAnalysis {
        let mut analysis = analyze_text(sql, self.rules.catalog());
        for statement in &mut analysis.statements {
            statement.candidate_rules = self
                .rules
                .rules()
                .iter()
                .enumerate()
                .filter(|(_, rule)| rule.matches_statement(statement, sql))
                .map(|(i, _)| i)
                .collect();
        }
        analysis
    }

    /// Classifies one simple-Query string or Parse statement.
    pub fn classify(&self, sql: &str, ctx: &SessionContext<'_>) -> Decision {
        self.counters.classified.fetch_add(1, Ordering::Relaxed);
        let analysis = self.analyze(sql);
        self.decide_counted(&analysis, ctx)
    }

    fn decide_counted(&self, analysis: &TextAnalysis, ctx: &SessionContext<'_>) -> Decision {
        if analysis.has_unparsed() {
            self.counters.parse_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.decide(analysis, ctx, None)
    }

    /// Whether a decision can change with the session's application name
    /// alone (a rule matches on it); otherwise only the text, the database,
    /// the user and [`SessionContext`]'s other fields decide.
    pub fn depends_on_application_name(&self) -> bool {
        self.names_applications
    }

    /// Counts a decision the session reused for a repeated text, as the cache
    /// hit it stands for.
    pub fn count_repeat(&self) {
        self.counters.classified.fetch_add(1, Ordering::Relaxed);
        self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> ClassifierStats {
        ClassifierStats {
            classified: self.counters.classified.load(Ordering::Relaxed),
            cache_hits: self.counters.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.counters.cache_misses.load(Ordering::Relaxed),
            parse_failures: self.counters.parse_failures.load(Ordering::Relaxed),
            cache_entries: self.cache.len(),
            cache_capacity: self.cache.capacity(),
        }
    }

    /// Applies the session to an analysis. `per_statement` receives each statement's route.
    pub(super) fn decide(
        &self,
        analysis: &TextAnalysis,
        ctx: &SessionContext<'_>,
        mut per_statement: Option<&mut Vec<Route>>,
    ) -> Decision {
        let statements = &analysis.statements;
        let Some(first) = statements.first() else {
            return Decision {
                route: Route::primary(Reason::Empty),
                effects: Vec::new(),
                kind: StatementKind::Other,
            };
        };
        let is_intercept =
            |s: &StatementAnalysis| s.effects.iter().any(|e| matches!(e, Effect::Intercept(_)));
        if statements.len() == 1 && is_intercept(first) {
            let route = Route::primary(Reason::Intercepted);
            if let Some(out) = per_statement {
                out.push(route.clone());
            }
            return Decision {
                route,
                effects: first.effects.clone(),
                kind: StatementKind::PgRelay,
            };
        }

        let mut tx = ctx.tx;
        let mut combined: Option<(Route, StatementKind)> = None;
        let mut effects = Vec::new();
        for statement in statements {
            let route = if is_intercept(statement) {
                Route::primary(Reason::InterceptInMultiStatement)
            } else {
                self.route_statement(statement, ctx, tx, analysis.hint)
            };
            effects.extend(
                statement
                    .effects
                    .iter()
                    .filter(|e| !matches!(e, Effect::Intercept(_)))
                    .cloned(),
            );
            tx = next_tx_state(tx, &statement.effects);
            if let Some(out) = per_statement.as_deref_mut() {
                out.push(route.clone());
            }
            combined = Some(match combined {
                None => (route, statement.kind),
                Some(done) if done.0.target.is_primary() => done,
                Some(_) if route.target.is_primary() => (route, statement.kind),
                Some(done) if done.0.target == route.target => done,
                Some((_, kind)) => (Route::primary(Reason::MixedTargets), kind),
            });
        }
        let (route, kind) = combined.unwrap_or((Route::primary(Reason::Empty), first.kind));
        Decision {
            route,
            effects,
            kind,
        }
    }

    fn route_statement(
        &self,
        statement: &StatementAnalysis,
        ctx: &SessionContext<'_>,
        tx: TxState,
        hint: Option<Hint>,
    ) -> Route {
        if ctx.session_pinned {
            return Route::primary(Reason::SessionPinned);
        }
        match tx {
            TxState::InReadOnlyTx => {
                return Route {
                    target: Target::Replicas,
                    reason: Reason::InTransaction(tx),
                }
            }
            TxState::InReadWriteTx => return Route::primary(Reason::InTransaction(tx)),
            TxState::Idle => {}
        }
        if hint == Some(Hint::Primary) {
            return Route::primary(Reason::PrimaryHint);
        }
        if ctx.route_override == RouteOverride::Primary {
            return Route::primary(Reason::PrimaryOverride);
        }
        let replica_asked = if hint == Some(Hint::Replica) {
            Some(Overruled::ReplicaHint)
        } else if ctx.route_override == RouteOverride::Replica {
            Some(Overruled::ReplicaOverride)
        } else {
            None
        };
        let rule = statement
            .candidate_rules
            .iter()
            .map(|&i| &self.rules.rules()[i])
            .find(|rule| rule.matches_session(ctx));

        let (cause, read_reason) = match &statement.access {
            Access::Read => (None, Reason::Read),
            Access::ReadWithUnknownFunction(name) => {
                match (&replica_asked, self.rules.unknown_functions()) {
                    (Some(Overruled::ReplicaHint), _) => (None, Reason::ReplicaHint),
                    (Some(_), _) => (None, Reason::ReplicaOverride),
                    (None, UnknownFunctions::Replica) => {
                        (None, Reason::UnknownFunctionAllowed(name.clone()))
                    }
                    (None, UnknownFunctions::Primary) => (
                        Some(PrimaryCause::UnknownFunction(name.clone())),
                        Reason::Read,
                    ),
                }
            }
            Access::Primary(cause) => (Some(cause.clone()), Reason::Read),
            Access::Control => return Route::primary(Reason::Primary(PrimaryCause::Control)),
        };
        if let Some(cause) = cause {
            // Safety first: nothing sends a (possible) write away from the primary.
            let overruled = replica_asked.or_else(|| {
                rule.filter(|r| !r.target.is_primary())
                    .map(|r| Overruled::Rule(r.name.clone()))
            });
            return Route::primary(match overruled {
                Some(overruled) => Reason::PrimaryOverruling { cause, overruled },
                None => Reason::Primary(cause),
            });
        }
        match rule {
            Some(rule) => Route {
                target: rule.target.clone(),
                reason: Reason::Rule(rule.name.clone()),
            },
            None => Route {
                target: Target::Replicas,
                reason: read_reason,
            },
        }
    }
}

/// Transaction state after a statement's transaction control.
fn next_tx_state(tx: TxState, effects: &[Effect]) -> TxState {
    effects.iter().fold(tx, |tx, effect| match effect {
        Effect::Transaction(TxControl::Begin { read_only }) if tx == TxState::Idle => {
            if *read_only {
                TxState::InReadOnlyTx
            } else {
                TxState::InReadWriteTx
            }
        }
        Effect::Transaction(
            TxControl::Commit | TxControl::Rollback | TxControl::PrepareTransaction,
        ) => TxState::Idle,
        _ => tx,
    })
}
