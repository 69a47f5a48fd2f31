//! Per-statement analysis of a parsed statement: kind, whether it reads or writes,
//! and its session effects. This is the pure, cacheable part of classification.

use std::sync::Arc;

use sqlparser::ast::{
    ContextModifier, CopySource, CopyTarget, DiscardObject, Expr, Reset, Set, SetExpr, Statement,
    TransactionAccessMode, TransactionMode, Value,
};

use super::effect::{Effect, PinReason, RouteCommand, TxControl};
use super::functions::{FunctionCatalog, FunctionClass};
use super::inspect::{collect, object_name, Facts};
use super::kind::StatementKind;
use super::route::PrimaryCause;
use super::session::RouteOverride;

/// The setting pgrelay answers itself.
pub const ROUTE_SETTING: &str = "pgrelay.route";

/// Whether a statement reads, writes, or is control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Positively a read.
    Read,
    /// A read except that it calls a function on no list; `unknown_functions` decides.
    ReadWithUnknownFunction(Arc<str>),
    /// Must run on the primary.
    Primary(PrimaryCause),
    /// Transaction or session control: stays on the transaction's server, primary outside one.
    Control,
}

/// Kind, access and effects of one parsed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub kind: StatementKind,
    pub access: Access,
    pub effects: Vec<Effect>,
}

impl Verdict {
    fn new(kind: StatementKind, access: Access) -> Self {
        Self {
            kind,
            access,
            effects: Vec::new(),
        }
    }

    fn primary(kind: StatementKind) -> Self {
        Self::new(kind, Access::Primary(PrimaryCause::Statement(kind)))
    }

    fn with(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }
}

/// Analyses a parsed statement. `leading` is the kind implied by its first keyword.
pub fn analyze_statement(
    statement: &Statement,
    leading: StatementKind,
    catalog: &FunctionCatalog,
) -> (Verdict, Facts) {
    let facts = collect(statement);
    let mut verdict = verdict_for(statement, leading, &facts, catalog);
    // Session-lasting functions pin wherever they execute; EXPLAIN decides that itself.
    if !matches!(statement, Statement::Explain { .. }) {
        verdict.effects.extend(function_pins(&facts, catalog));
    }
    (verdict, facts)
}

fn verdict_for(
    statement: &Statement,
    leading: StatementKind,
    facts: &Facts,
    catalog: &FunctionCatalog,
) -> Verdict {
    use StatementKind as K;
    match statement {
        Statement::Query(query) => match &*query.body {
            SetExpr::Insert(_) => Verdict::primary(K::Insert),
            SetExpr::Update(_) => Verdict::primary(K::Update),
            SetExpr::Delete(_) => Verdict::primary(K::Delete),
            SetExpr::Merge(_) => Verdict::primary(K::Merge),
            _ => query_verdict(K::Select, facts, catalog),
        },
        Statement::Insert(_) => Verdict::primary(K::Insert),
        Statement::Update(_) => Verdict::primary(K::Update),
        Statement::Delete(_) => Verdict::primary(K::Delete),
        Statement::Merge(_) => Verdict::primary(K::Merge),
        Statement::Explain {
            analyze,
            options,
            statement: inner,
            ..
        } => explain_verdict(
            *analyze || options_analyze(options.as_deref()),
            inner,
            catalog,
        ),
        // `EXPLAIN <table>` (DESCRIBE) is not PostgreSQL: the server rejects it, so treat it as unparsed.
        Statement::ExplainTable { .. } => Verdict::new(
            K::Explain,
            Access::Primary(PrimaryCause::Unparsed(Arc::from(
                "EXPLAIN <table> is not PostgreSQL syntax",
            ))),
        ),
        Statement::Copy {
            source, to, target, ..
        } => copy_verdict(source, *to, target, facts, catalog),
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            if name == ROUTE_SETTING {
                Verdict::new(K::PgRelay, Access::Control)
                    .with(Effect::Intercept(RouteCommand::Show))
            } else {
                Verdict::new(K::Show, Access::Read)
            }
        }
        _ if leading == K::Show => Verdict::new(K::Show, Access::Read),
        Statement::StartTransaction {
            modes, statements, ..
        } if statements.is_empty() => {
            let read_only = modes.contains(&TransactionMode::AccessMode(
                TransactionAccessMode::ReadOnly,
            ));
            let access = if read_only {
                Access::Read
            } else {
                Access::Primary(PrimaryCause::ReadWriteTransaction)
            };
            Verdict::new(K::Transaction, access)
                .with(Effect::Transaction(TxControl::Begin { read_only }))
        }
        Statement::Commit { .. } => control(K::Transaction, TxControl::Commit),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => control(K::Transaction, TxControl::RollbackToSavepoint),
        Statement::Rollback { .. } => control(K::Transaction, TxControl::Rollback),
        Statement::Savepoint { .. } => control(K::Transaction, TxControl::Savepoint),
        Statement::ReleaseSavepoint { .. } => control(K::Transaction, TxControl::ReleaseSavepoint),
        Statement::Set(set) => set_verdict(set),
        Statement::Reset(reset) => reset_verdict(&reset.reset),
        Statement::Discard { object_type } => {
            let verdict = Verdict::new(K::Set, Access::Control);
            match object_type {
                DiscardObject::ALL => verdict.with(Effect::ResetAll),
                _ => verdict,
            }
        }
        Statement::LISTEN { .. } => {
            Verdict::primary(K::Notify).with(Effect::PinSession(PinReason::Listen))
        }
        Statement::Prepare { .. } => {
            Verdict::primary(K::Prepared).with(Effect::PinSession(PinReason::PreparedStatement))
        }
        Statement::Declare { stmts, .. } => {
            if stmts.iter().any(|d| d.hold == Some(true)) {
                Verdict::primary(K::Cursor).with(Effect::PinSession(PinReason::HoldCursor))
            } else {
                Verdict::new(K::Cursor, Access::Control)
                    .with(Effect::PinTransaction(PinReason::Cursor))
            }
        }
        Statement::Fetch { .. } | Statement::Close { .. } => {
            Verdict::new(K::Cursor, Access::Control)
        }
        Statement::CreateTable(create) if create.temporary => temp_object(),
        Statement::CreateView(create) if create.temporary => temp_object(),
        Statement::CreateSequence {
            temporary: true, ..
        } => temp_object(),
        // Everything else changes data, schema or server state.
        _ => Verdict::primary(match leading {
            K::Select | K::Unknown => K::Other,
            other => other,
        }),
    }
}

fn control(kind: StatementKind, tx: TxControl) -> Verdict {
    Verdict::new(kind, Access::Control).with(Effect::Transaction(tx))
}

fn temp_object() -> Verdict {
    Verdict::primary(StatementKind::Ddl).with(Effect::PinSession(PinReason::TempTable))
}

/// `EXPLAIN (ANALYZE)` / `(ANALYZE true)`; `(ANALYZE false)` / `off` / `0` do not execute.
fn options_analyze(options: Option<&[sqlparser::ast::UtilityOption]>) -> bool {
    options.unwrap_or_default().iter().any(|option| {
        option.name.value.eq_ignore_ascii_case("analyze")
            && match &option.arg {
                None => true,
                Some(arg) => {
                    let text = arg.to_string().to_ascii_lowercase();
                    !matches!(text.as_str(), "false" | "off" | "0" | "'false'" | "'off'")
                }
            }
    })
}

fn explain_verdict(analyze: bool, inner: &Statement, catalog: &FunctionCatalog) -> Verdict {
    let kind = StatementKind::Explain;
    if !analyze {
        // Plain EXPLAIN only plans; nothing is executed.
        return Verdict::new(kind, Access::Read);
    }
    let (inner_verdict, _) = analyze_statement(inner, StatementKind::Unknown, catalog);
    let access = match inner_verdict.access {
        Access::Read => Access::Read,
        Access::ReadWithUnknownFunction(name) => Access::ReadWithUnknownFunction(name),
        Access::Primary(_) | Access::Control => Access::Primary(PrimaryCause::ExplainAnalyzeWrite),
    };
    Verdict {
        kind,
        access,
        effects: inner_verdict.effects,
    }
}

fn copy_verdict(
    source: &CopySource,
    to: bool,
    target: &CopyTarget,
    facts: &Facts,
    catalog: &FunctionCatalog,
) -> Verdict {
    let kind = StatementKind::Copy;
    if !to {
        return Verdict::new(kind, Access::Primary(PrimaryCause::CopyFrom));
    }
    if !matches!(target, CopyTarget::Stdout) {
        return Verdict::new(kind, Access::Primary(PrimaryCause::CopyToServer));
    }
    match source {
        CopySource::Table { .. } => Verdict::new(kind, Access::Read),
        // A DML body (`COPY (DELETE … RETURNING *) TO STDOUT`) is caught as a data-modifying query.
        CopySource::Query(_) => query_verdict(kind, facts, catalog),
    }
}

/// A query that is a read unless something inside it writes or locks.
fn query_verdict(kind: StatementKind, facts: &Facts, catalog: &FunctionCatalog) -> Verdict {
    let access = if facts.locking {
        Access::Primary(PrimaryCause::LockingClause)
    } else if facts.data_modifying_query {
        Access::Primary(PrimaryCause::DataModifyingCte)
    } else if facts.select_into.is_some() {
        Access::Primary(PrimaryCause::SelectInto)
    } else {
        function_access(facts, catalog)
    };
    let verdict = Verdict::new(kind, access);
    match facts.select_into {
        Some(true) => verdict.with(Effect::PinSession(PinReason::TempTable)),
        _ => verdict,
    }
}

/// Read, unless a called function writes (first one wins) or is unlisted.
fn function_access(facts: &Facts, catalog: &FunctionCatalog) -> Access {
    let mut unknown = None;
    for name in &facts.functions {
        match catalog.classify(name) {
            FunctionClass::Write | FunctionClass::SessionPinning => {
                return Access::Primary(PrimaryCause::WriteFunction(Arc::from(name.as_str())));
            }
            FunctionClass::Unknown if unknown.is_none() => unknown = Some(name),
            _ => {}
        }
    }
    match unknown {
        Some(name) => Access::ReadWithUnknownFunction(Arc::from(name.as_str())),
        None => Access::Read,
    }
}

fn function_pins(facts: &Facts, catalog: &FunctionCatalog) -> Vec<Effect> {
    facts
        .functions
        .iter()
        .filter(|name| catalog.classify(name) == FunctionClass::SessionPinning)
        .map(|name| Effect::PinSession(PinReason::SessionFunction(Arc::from(name.as_str()))))
        .collect()
}

fn is_bare_word(expr: &Expr, word: &str) -> bool {
    matches!(expr, Expr::Identifier(ident) if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case(word))
}

/// `SET pgrelay.route = 'x'` / `TO x`.
fn route_command(values: &[Expr]) -> RouteCommand {
    let word = match values {
        [Expr::Value(v)] => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        [Expr::Identifier(ident)] => Some(ident.value.clone()),
        _ => None,
    };
    let Some(word) = word else {
        return RouteCommand::Invalid {
            value: values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
    };
    match word.parse::<RouteOverride>() {
        Ok(route) => RouteCommand::Set(route),
        Err(_) => RouteCommand::Invalid { value: word },
    }
}

fn session_set(name: &str, value: String) -> Verdict {
    Verdict::new(StatementKind::Set, Access::Control).with(Effect::SessionSet {
        name: name.to_string(),
        value,
    })
}

fn session_reset(name: &str) -> Verdict {
    Verdict::new(StatementKind::Set, Access::Control).with(Effect::Reset {
        name: name.to_string(),
    })
}

fn transaction_local() -> Verdict {
    Verdict::new(StatementKind::Set, Access::Control)
}

fn pin_set(reason: PinReason) -> Verdict {
    Verdict::new(StatementKind::Set, Access::Control).with(Effect::PinSession(reason))
}

fn set_verdict(set: &Set) -> Verdict {
    match set {
        Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => {
            let name = object_name(variable);
            if name == ROUTE_SETTING {
                return Verdict::new(StatementKind::PgRelay, Access::Control)
                    .with(Effect::Intercept(route_command(values)));
            }
            match scope {
                Some(ContextModifier::Local) => transaction_local(),
                Some(ContextModifier::Global) => pin_set(PinReason::UnreplayableSet),
                Some(ContextModifier::Session) | None => match values.as_slice() {
                    [value] if is_bare_word(value, "DEFAULT") => session_reset(&name),
                    _ => session_set(
                        &name,
                        values
                            .iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                },
            }
        }
        Set::SetTimeZone { local: true, .. } => transaction_local(),
        Set::SetTimeZone { value, .. } => {
            if is_bare_word(value, "DEFAULT") || is_bare_word(value, "LOCAL") {
                session_reset("timezone")
            } else {
                session_set("timezone", value.to_string())
            }
        }
        Set::SetNames { charset_name, .. } => {
            session_set("client_encoding", charset_name.to_string())
        }
        Set::SetNamesDefault {} => session_reset("client_encoding"),
        Set::SetRole {
            context_modifier: Some(ContextModifier::Local),
            ..
        } => transaction_local(),
        Set::SetRole { role_name, .. } => session_set(
            "role",
            role_name
                .as_ref()
                .map_or_else(|| "NONE".to_string(), |r| r.to_string()),
        ),
        Set::SetSessionAuthorization(_) => pin_set(PinReason::SessionAuthorization),
        Set::SetTransaction { session: true, .. } => pin_set(PinReason::SessionCharacteristics),
        Set::SetTransaction { .. } => transaction_local(),
        _ => pin_set(PinReason::UnreplayableSet),
    }
}

fn reset_verdict(reset: &Reset) -> Verdict {
    match reset {
        Reset::ALL => Verdict::new(StatementKind::Set, Access::Control).with(Effect::ResetAll),
        Reset::SessionAuthorization => session_reset("session_authorization"),
        Reset::ConfigurationParameter(name) => {
            let name = object_name(name);
            if name == ROUTE_SETTING {
                Verdict::new(StatementKind::PgRelay, Access::Control)
                    .with(Effect::Intercept(RouteCommand::Reset))
            } else {
                session_reset(&name)
            }
        }
    }
}
