//! Human-readable account of a classification, for `pgrelay route "<SQL>"`.

use std::fmt::Write;

use super::analyze::Access;
use super::classifier::Classifier;
use super::lexer::Hint;
use super::session::SessionContext;

fn describe_access(access: &Access) -> String {
    match access {
        Access::Read => "read".into(),
        Access::ReadWithUnknownFunction(name) => format!("read, but calls unlisted {name}()"),
        Access::Primary(cause) => format!("primary-only: {cause}"),
        Access::Control => "transaction/session control".into(),
    }
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// Explains how `sql` is routed for `ctx`: the decision, then per statement its
/// kind, access, tables, functions, the rule that matched and the route.
/// Does not touch the classifier's counters or cache.
pub fn explain(classifier: &Classifier, sql: &str, ctx: &SessionContext<'_>) -> String {
    let analysis = classifier.analyze_uncached(sql);
    let mut routes = Vec::new();
    let decision = classifier.decide(&analysis, ctx, Some(&mut routes));

    let mut out = String::new();
    let _ = writeln!(
        out,
        "decision: {} ({})",
        decision.route.target, decision.route.reason
    );
    let _ = writeln!(out, "kind: {}", decision.kind);
    let hint = match analysis.hint {
        Some(Hint::Primary) => "pgrelay:primary",
        Some(Hint::Replica) => "pgrelay:replica",
        None => "none",
    };
    let _ = writeln!(
        out,
        "session: database={} user={} application_name={} route={} tx={} pinned={}; hint: {hint}",
        ctx.database,
        ctx.user,
        ctx.application_name.unwrap_or("-"),
        ctx.route_override,
        ctx.tx,
        ctx.session_pinned
    );
    if decision.effects.is_empty() {
        let _ = writeln!(out, "effects: none");
    } else {
        let effects: Vec<String> = decision.effects.iter().map(|e| e.to_string()).collect();
        let _ = writeln!(out, "effects: {}", effects.join("; "));
    }
    let total = analysis.statements.len();
    for (i, (statement, route)) in analysis.statements.iter().zip(&routes).enumerate() {
        let text = sql.get(statement.text.clone()).unwrap_or(sql);
        let rule = statement
            .candidate_rules
            .iter()
            .map(|&r| &classifier.rules().rules()[r])
            .find(|rule| rule.matches_session(ctx))
            .map_or_else(
                || "none".to_string(),
                |r| format!("{} -> {}", r.name, r.target),
            );
        let _ = writeln!(out, "statement {}/{total}: {text}", i + 1);
        let _ = writeln!(
            out,
            "  kind: {}; access: {}",
            statement.kind,
            describe_access(&statement.access)
        );
        let _ = writeln!(
            out,
            "  tables: {}; functions: {}",
            list_or_dash(&statement.tables),
            list_or_dash(&statement.functions)
        );
        let _ = writeln!(out, "  first matching rule: {rule}");
        let _ = writeln!(out, "  route: {} ({})", route.target, route.reason);
    }
    out
}
