//! Table-driven routing test over `tests/data/routes.txt` (format described there).

use pgrelay::router::{
    Classifier, Decision, RouteOverride, RuleSet, SessionContext, StatementKind, Target,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Read,
    Write,
    UnknownFunction,
    Control,
    Intercept,
}

struct Case {
    line: usize,
    class: Class,
    sql: String,
}

fn cases() -> Vec<Case> {
    let src = include_str!("data/routes.txt");
    src.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let (class, sql) = l
                .split_once(" | ")
                .unwrap_or_else(|| panic!("line {}: expected `<class> | <sql>`", i + 1));
            let class = match class.trim() {
                "read" => Class::Read,
                "write" => Class::Write,
                "ufunc" => Class::UnknownFunction,
                "control" => Class::Control,
                "intercept" => Class::Intercept,
                other => panic!("line {}: unknown class {other:?}", i + 1),
            };
            Case {
                line: i + 1,
                class,
                sql: sql.replace("\\n", "\n"),
            }
        })
        .collect()
}

struct Harness {
    default: Classifier,
    trusting: Classifier,
}

impl Harness {
    fn new() -> Self {
        let trusting = RuleSet::builtin_with(&[("unknown_functions: replica", "trusting.yaml")])
            .expect("valid rules");
        Self {
            default: Classifier::new(RuleSet::builtin(), 4096),
            trusting: Classifier::new(trusting, 4096),
        }
    }
}

fn ctx(route_override: RouteOverride) -> SessionContext<'static> {
    SessionContext {
        route_override,
        ..SessionContext::new("app", "alice")
    }
}

/// Returns a description of every expectation the case breaks.
fn check(h: &Harness, case: &Case) -> Vec<String> {
    let auto = ctx(RouteOverride::Auto);
    let replica = ctx(RouteOverride::Replica);
    let mut problems = Vec::new();
    let mut expect = |what: &str, decision: &Decision, want: &Target| {
        if &decision.route.target != want {
            problems.push(format!(
                "{what}: want {want}, got {} ({})",
                decision.route.target, decision.route.reason
            ));
        }
    };
    let plain = h.default.classify(&case.sql, &auto);
    match case.class {
        Class::Read => {
            expect("default", &plain, &Target::Replicas);
            let hinted = format!("/* pgrelay:primary */ {}", case.sql);
            expect(
                "primary hint",
                &h.default.classify(&hinted, &auto),
                &Target::Primary,
            );
            let forced = ctx(RouteOverride::Primary);
            expect(
                "route=primary",
                &h.default.classify(&case.sql, &forced),
                &Target::Primary,
            );
        }
        Class::Write => {
            expect("default", &plain, &Target::Primary);
            expect(
                "route=replica",
                &h.default.classify(&case.sql, &replica),
                &Target::Primary,
            );
            let hinted = format!("/* pgrelay:replica */ {}", case.sql);
            expect(
                "replica hint",
                &h.default.classify(&hinted, &auto),
                &Target::Primary,
            );
            expect(
                "unknown_functions: replica",
                &h.trusting.classify(&case.sql, &auto),
                &Target::Primary,
            );
        }
        Class::UnknownFunction => {
            expect("default", &plain, &Target::Primary);
            expect(
                "route=replica",
                &h.default.classify(&case.sql, &replica),
                &Target::Replicas,
            );
            expect(
                "unknown_functions: replica",
                &h.trusting.classify(&case.sql, &auto),
                &Target::Replicas,
            );
        }
        Class::Control => {
            expect("default", &plain, &Target::Primary);
            expect(
                "route=replica",
                &h.default.classify(&case.sql, &replica),
                &Target::Primary,
            );
            if !matches!(
                plain.kind,
                StatementKind::Transaction | StatementKind::Set | StatementKind::Cursor
            ) {
                problems.push(format!("control statement has kind {}", plain.kind));
            }
        }
        Class::Intercept => {
            if plain.intercept().is_none() || plain.kind != StatementKind::PgRelay {
                problems.push(format!("not intercepted: {plain:?}"));
            }
        }
    }
    if case.class != Class::Intercept && plain.intercept().is_some() {
        problems.push("unexpectedly intercepted".into());
    }
    problems
}

#[test]
fn routing_table() {
    let harness = Harness::new();
    let cases = cases();
    assert!(cases.len() >= 300, "table has only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        for problem in check(&harness, case) {
            failures.push(format!("line {}: {:?}: {problem}", case.line, case.sql));
        }
    }
    let count = |class| cases.iter().filter(|c| c.class == class).count();
    println!(
        "{} cases: {} read, {} write, {} unknown-function, {} control, {} intercept",
        cases.len(),
        count(Class::Read),
        count(Class::Write),
        count(Class::UnknownFunction),
        count(Class::Control),
        count(Class::Intercept)
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The safety property over the whole table: nothing expected to write (or to
/// be unknown) is ever classified as a read, whatever the session asks for.
#[test]
fn no_write_or_unknown_is_classified_as_a_read() {
    let harness = Harness::new();
    let mut leaks = Vec::new();
    for case in cases() {
        if !matches!(case.class, Class::Write | Class::Control) {
            continue;
        }
        for route_override in [RouteOverride::Auto, RouteOverride::Replica] {
            for classifier in [&harness.default, &harness.trusting] {
                for sql in [
                    case.sql.clone(),
                    format!("/* pgrelay:replica */ {}", case.sql),
                ] {
                    let decision = classifier.classify(&sql, &ctx(route_override));
                    if !decision.route.target.is_primary() {
                        leaks.push(format!("line {}: {sql:?} -> {}", case.line, decision.route));
                    }
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "writes routed away from the primary:\n{}",
        leaks.join("\n")
    );
}

#[test]
fn unknown_functions_stay_on_primary_by_default() {
    let harness = Harness::new();
    for case in cases().iter().filter(|c| c.class == Class::UnknownFunction) {
        let decision = harness
            .default
            .classify(&case.sql, &ctx(RouteOverride::Auto));
        assert!(
            decision.route.target.is_primary(),
            "line {}: {:?}",
            case.line,
            decision
        );
    }
}

/// Every literal digit of `sql` changed to another digit (names like `t1` kept).
fn other_literals(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut prev = ' ';
    for c in sql.chars() {
        let ident = prev.is_alphanumeric() || prev == '_' || prev == '$';
        out.push(match c.to_digit(10) {
            Some(d) if !ident => char::from_digit((d + 3) % 10, 10).expect("a digit"),
            _ => c,
        });
        prev = if c.is_ascii_digit() && !ident { '0' } else { c };
    }
    out
}

/// The cache masks literals: a statement classified after a variant with other
/// literal values (a cache hit) must get exactly the decision it gets uncached.
#[test]
fn a_cached_variant_with_other_literals_decides_like_the_statement_itself() {
    let warm = Classifier::new(RuleSet::builtin(), 4096);
    let cold = Classifier::new(RuleSet::builtin(), 0);
    let ctx = ctx(RouteOverride::Auto);
    let (mut varied, mut shared) = (0, 0);
    for case in cases() {
        let variant = other_literals(&case.sql);
        warm.classify(&variant, &ctx);
        let hits_before = warm.stats().cache_hits;
        assert_eq!(
            warm.classify(&case.sql, &ctx),
            cold.classify(&case.sql, &ctx),
            "line {}: {}",
            case.line,
            case.sql
        );
        if variant != case.sql {
            varied += 1;
            shared += usize::from(warm.stats().cache_hits > hits_before);
        }
    }
    assert!(
        varied > 50,
        "only {varied} statements have literals to vary"
    );
    assert!(
        shared > varied / 2,
        "only {shared} of {varied} literal variants shared a cache entry"
    );
}
