//! Classifier-level tests: rule loading, rule matching, cache, hints, the
//! `pgrelay.route` command, session effects and transaction handling.

use std::path::PathBuf;
use std::sync::Arc;

use super::*;

fn ctx() -> SessionContext<'static> {
    SessionContext::new("app", "alice")
}

fn with_rules(yaml: &str) -> Classifier {
    Classifier::new(
        RuleSet::builtin_with(&[(yaml, "test.yaml")]).expect("valid rules"),
        64,
    )
}

fn builtin() -> Classifier {
    Classifier::new(RuleSet::builtin(), 64)
}

fn rule_error(yaml: &str) -> (usize, Option<String>, String) {
    match RuleSet::from_yaml_str(yaml, "bad.yaml") {
        Err(RouterError::InvalidRule {
            origin,
            index,
            name,
            reason,
        }) => {
            assert_eq!(origin, "bad.yaml");
            (index, name, reason)
        }
        other => panic!("expected InvalidRule, got {other:?}"),
    }
}

#[test]
fn shipped_default_rules_load_and_have_lists() {
    let rules = RuleSet::builtin();
    assert!(rules.rules().is_empty(), "default rules are only examples");
    assert_eq!(rules.unknown_functions(), UnknownFunctions::Primary);
    assert_eq!(rules.catalog().classify("nextval"), FunctionClass::Write);
    assert_eq!(rules.catalog().classify("count"), FunctionClass::ReadOnly);
    assert_eq!(
        rules.catalog().classify("pg_advisory_lock"),
        FunctionClass::SessionPinning
    );
}

#[test]
fn rule_errors_name_file_rule_and_reason() {
    let (index, name, reason) = rule_error(
        "rules:\n  - name: ok\n    target: primary\n  - name: typo\n    match: {tabels: [t]}\n    target: primary\n",
    );
    assert_eq!((index, name.as_deref()), (2, Some("typo")));
    assert!(reason.contains("unknown field `tabels`"), "{reason}");

    let (index, _, reason) = rule_error("rules:\n  - match: {regex: '('}\n    target: replicas\n");
    assert_eq!(index, 1);
    assert!(reason.contains("bad regex"), "{reason}");

    let (_, _, reason) = rule_error("rules:\n  - name: r\n    target: standby\n");
    assert!(reason.contains("unknown target"), "{reason}");

    let (_, _, reason) = rule_error("rules:\n  - name: r\n    target: 'group:'\n");
    assert!(reason.contains("group name"), "{reason}");

    let (_, _, reason) = rule_error("rules:\n  - match: {kind: [selects]}\n    target: primary\n");
    assert!(reason.contains("unknown kind"), "{reason}");

    let (_, _, reason) = rule_error("rules:\n  - match: {tables: ['a b']}\n    target: primary\n");
    assert!(reason.contains("tables"), "{reason}");
}

#[test]
fn rules_sending_writes_to_replicas_are_refused() {
    let (_, name, reason) = rule_error(
        "rules:\n  - name: bad\n    match: {kind: [select, insert]}\n    target: group:olap\n",
    );
    assert_eq!(name.as_deref(), Some("bad"));
    assert!(reason.contains("insert always writes"), "{reason}");
    // The same kinds to the primary are fine.
    RuleSet::from_yaml_str(
        "rules:\n  - match: {kind: [insert, ddl]}\n    target: primary\n",
        "ok.yaml",
    )
    .unwrap();
}

#[test]
fn file_level_errors() {
    let err = RuleSet::from_yaml_str("unknown_key: 1\n", "f.yaml").unwrap_err();
    assert!(
        matches!(err, RouterError::Yaml { ref origin, .. } if origin == "f.yaml"),
        "{err}"
    );
    let err = RuleSet::from_yaml_str("write_functions: ['bad name']\n", "f.yaml").unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::InvalidFunction {
                list: "write_functions",
                ..
            }
        ),
        "{err}"
    );
    let err = RuleSet::from_yaml_str("unknown_functions: replica\n", "f.yaml").unwrap_err();
    assert!(
        err.to_string().contains("requires a write_functions list"),
        "{err}"
    );
    let err = RuleSet::from_yaml_str("unknown_functions: sometimes\n", "f.yaml").unwrap_err();
    assert!(matches!(err, RouterError::Yaml { .. }), "{err}");
}

#[test]
fn load_reads_files_and_directories_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-default.yaml"), DEFAULT_RULES_YAML).unwrap();
    std::fs::write(
        dir.path().join("10-app.yaml"),
        "rules:\n  - name: first\n    match: {tables: [t]}\n    target: group:a\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let extra = other_dir.path().join("extra.yml");
    std::fs::write(&extra, "rules:\n  - name: second\n    target: primary\n").unwrap();

    let rules = RuleSet::load(&[dir.path().to_path_buf(), extra.clone()]).unwrap();
    let names: Vec<&str> = rules.rules().iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(rules.catalog().classify("nextval"), FunctionClass::Write);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "rules:\n  - target: nowhere\n").unwrap();
    let err = RuleSet::load(std::slice::from_ref(&bad)).unwrap_err();
    assert!(err.to_string().contains("bad.yaml: rule #1"), "{err}");
    let missing = RuleSet::load(&[PathBuf::from("/nonexistent/rules.yaml")]).unwrap_err();
    assert!(matches!(missing, RouterError::Io { .. }), "{missing}");
}

#[test]
fn rules_match_tables_sessions_and_regex_first_match_wins() {
    let c = with_rules(
        "rules:
  - name: balances-primary
    match: {tables: [billing.balances]}
    target: primary
  - name: reporting-user
    match: {user: reporting, kind: select}
    target: group:analytics
  - name: metabase
    match: {application_name: [metabase]}
    target: group:bi
  - name: tagged
    match: {regex: '(?i)/\\*\\s*report\\s*\\*/'}
    target: group:reports
",
    );
    let d = c.classify("SELECT * FROM Billing.Balances WHERE id = 1", &ctx());
    assert_eq!(d.route.target, Target::Primary);
    assert_eq!(d.route.reason, Reason::Rule(Arc::from("balances-primary")));
    // Unqualified reference matches the qualified rule too.
    let d = c.classify("SELECT * FROM balances", &ctx());
    assert_eq!(d.route.target, Target::Primary);

    let reporting = SessionContext {
        user: "reporting",
        ..ctx()
    };
    let d = c.classify("SELECT * FROM orders", &reporting);
    assert_eq!(d.route.target, Target::Group(Arc::from("analytics")));
    // First match wins: balances is still primary for the reporting user.
    let d = c.classify("SELECT * FROM balances", &reporting);
    assert_eq!(d.route.target, Target::Primary);

    let bi = SessionContext {
        application_name: Some("metabase"),
        ..ctx()
    };
    assert_eq!(
        c.classify("SELECT 1", &bi).route.target,
        Target::Group(Arc::from("bi"))
    );
    assert_eq!(
        c.classify("SELECT 1", &ctx()).route.target,
        Target::Replicas
    );
    assert_eq!(
        c.classify("/* report */ SELECT 1", &ctx()).route.target,
        Target::Group(Arc::from("reports"))
    );
}

#[test]
fn a_regex_rule_sees_each_text_s_own_literals() {
    let c = with_rules(
        "rules:\n  - name: vip\n    match: {regex: 'customer_id = 42\\b'}\n    target: primary\n",
    );
    let sql = |id: u32| format!("SELECT * FROM orders WHERE customer_id = {id}");
    assert_eq!(c.classify(&sql(42), &ctx()).route.target, Target::Primary);
    assert_eq!(c.classify(&sql(17), &ctx()).route.target, Target::Replicas);
    assert_eq!(c.classify(&sql(42), &ctx()).route.target, Target::Primary);
}

#[test]
fn texts_differing_only_in_literals_share_one_cache_entry() {
    let c = builtin();
    for id in 0..100 {
        let d = c.classify(
            &format!("SELECT v FROM t WHERE id = {id} AND s = 'k{id}'"),
            &ctx(),
        );
        assert_eq!(d.route.target, Target::Replicas);
    }
    let stats = c.stats();
    assert_eq!(stats.cache_misses, 2, "one per literal length: {stats:?}");
    assert_eq!(stats.cache_entries, 2);
}

#[test]
fn classifying_by_key_shares_entries_with_classifying_by_text() {
    let c = builtin();
    let mut key = Vec::new();
    c.cache_key(b"SELECT v FROM t WHERE id = 7", &mut key);
    assert_eq!(key, b"SELECT v FROM t WHERE id = 0", "literals masked");
    let by_key = c.classify_by_key("SELECT v FROM t WHERE id = 7", &key, &ctx());
    assert_eq!(by_key, c.classify("SELECT v FROM t WHERE id = 8", &ctx()));
    assert_eq!((c.stats().cache_misses, c.stats().cache_hits), (1, 1));

    // Without a literal, or where one may matter, the key is the text itself.
    for sql in [
        "SELECT v FROM t",
        "SET application_name = 'x1'",
        "DELETE FROM t WHERE id = 1; SELECT 2",
    ] {
        c.cache_key(sql.as_bytes(), &mut key);
        assert_eq!(key, sql.as_bytes());
        assert_eq!(
            c.classify_by_key(sql, &key, &ctx()),
            c.classify(sql, &ctx()),
            "{sql}"
        );
    }
    let write = "UPDATE t SET v = 3 WHERE id = 7";
    c.cache_key(write.as_bytes(), &mut key);
    assert_eq!(
        c.classify_by_key(write, &key, &ctx()).route.target,
        Target::Primary
    );

    // A regex rule sees literals, so no key masks them.
    let regex = with_rules(
        "rules:\n  - name: vip\n    match: {regex: 'id = 42\\b'}\n    target: primary\n",
    );
    regex.cache_key(b"SELECT v FROM t WHERE id = 42", &mut key);
    assert_eq!(key, b"SELECT v FROM t WHERE id = 42");
    let vip = regex.classify_by_key("SELECT v FROM t WHERE id = 42", &key, &ctx());
    assert_eq!(vip.route.target, Target::Primary);
}

#[test]
fn a_text_in_another_encoding_shares_a_key_only_by_its_string_literals() {
    let c = builtin();
    let key_of = |sql: &[u8]| {
        let mut key = Vec::new();
        c.cache_key(sql, &mut key);
        key
    };
    // LATIN1 'é' is the single byte 0xE9: invalid UTF-8.
    assert_eq!(
        key_of(b"SELECT v FROM t WHERE s = 'caf\xe9!' AND id = 1"),
        key_of("SELECT v FROM t WHERE s = 'café' AND id = 2".as_bytes()),
    );
    assert_ne!(
        key_of(b"SELECT v FROM caf\xe9 WHERE id = 1"),
        key_of("SELECT v FROM café WHERE id = 1".as_bytes()),
    );
    assert_ne!(
        key_of(b"SELECT v FROM \"caf\xe9!\" WHERE id = 1"),
        key_of("SELECT v FROM \"café\" WHERE id = 1".as_bytes()),
    );
}

#[test]
fn rules_never_move_writes_off_the_primary() {
    let c = with_rules(
        "rules:\n  - name: all-bi\n    match: {application_name: bi}\n    target: group:bi\n",
    );
    let bi = SessionContext {
        application_name: Some("bi"),
        ..ctx()
    };
    let d = c.classify("DELETE FROM t", &bi);
    assert_eq!(d.route.target, Target::Primary);
    assert_eq!(
        d.route.reason,
        Reason::PrimaryOverruling {
            cause: PrimaryCause::Statement(StatementKind::Delete),
            overruled: Overruled::Rule(Arc::from("all-bi")),
        }
    );
    assert!(d.route.to_string().contains("ignored for safety"));
}

#[test]
fn rule_functions_match_calls() {
    let c = with_rules(
        "unknown_functions: replica\nrules:\n  - name: heavy\n    match: {functions: [reports.monthly]}\n    target: group:olap\n",
    );
    assert_eq!(
        c.classify("SELECT * FROM reports.monthly(2024)", &ctx())
            .route
            .target,
        Target::Group(Arc::from("olap"))
    );
    assert_eq!(
        c.classify("SELECT other_fn()", &ctx()).route.target,
        Target::Replicas
    );
}

#[test]
fn cache_counts_hits_and_stays_bounded() {
    let c = Classifier::new(RuleSet::builtin(), 20);
    c.classify("SELECT 1", &ctx());
    c.classify("SELECT 1", &ctx());
    c.classify("SELECT 1", &ctx());
    let stats = c.stats();
    assert_eq!(
        (stats.classified, stats.cache_misses, stats.cache_hits),
        (3, 1, 2)
    );
    for i in 0..500 {
        c.classify(&format!("SELECT {i}"), &ctx());
    }
    let stats = c.stats();
    assert!(stats.cache_entries <= stats.cache_capacity, "{stats:?}");
    assert!(
        stats.cache_capacity >= 20 && stats.cache_capacity < 40,
        "{stats:?}"
    );
    // The cached analysis does not freeze the session part of the decision.
    let pinned = SessionContext {
        session_pinned: true,
        ..ctx()
    };
    assert_eq!(
        c.classify("SELECT 499", &pinned).route.target,
        Target::Primary
    );
    assert_eq!(
        c.classify("SELECT 499", &ctx()).route.target,
        Target::Replicas
    );
}

#[test]
fn parse_failures_are_counted_per_classification() {
    let c = builtin();
    c.classify("SELEC 1", &ctx());
    c.classify("SELEC 1", &ctx());
    c.classify("SELECT 1", &ctx());
    assert_eq!(c.stats().parse_failures, 2);
}

#[test]
fn hints_and_overrides() {
    let c = builtin();
    let d = c.classify("/* pgrelay:replica */ SELECT my_report()", &ctx());
    assert_eq!(
        d.route,
        Route {
            target: Target::Replicas,
            reason: Reason::ReplicaHint
        }
    );
    let d = c.classify("SELECT 1 -- pgrelay:primary", &ctx());
    assert_eq!(d.route, Route::primary(Reason::PrimaryHint));
    let replica = SessionContext {
        route_override: RouteOverride::Replica,
        ..ctx()
    };
    let d = c.classify("SELECT my_report()", &replica);
    assert_eq!(d.route.reason, Reason::ReplicaOverride);
    let d = c.classify("INSERT INTO t VALUES (1)", &replica);
    assert_eq!(
        d.route.reason,
        Reason::PrimaryOverruling {
            cause: PrimaryCause::Statement(StatementKind::Insert),
            overruled: Overruled::ReplicaOverride
        }
    );
    let primary = SessionContext {
        route_override: RouteOverride::Primary,
        ..ctx()
    };
    assert_eq!(
        c.classify("SELECT 1", &primary).route,
        Route::primary(Reason::PrimaryOverride)
    );
    // A primary hint wins even over a replica override.
    assert_eq!(
        c.classify("/* pgrelay:primary */ SELECT 1", &replica)
            .route
            .reason,
        Reason::PrimaryHint
    );
}

#[test]
fn pgrelay_route_commands_are_intercepted() {
    let c = builtin();
    let cases = [
        (
            "SET pgrelay.route = 'replica'",
            RouteCommand::Set(RouteOverride::Replica),
        ),
        (
            "SET pgrelay.route TO primary",
            RouteCommand::Set(RouteOverride::Primary),
        ),
        (
            "set pgrelay.route to 'AUTO'",
            RouteCommand::Set(RouteOverride::Auto),
        ),
        ("RESET pgrelay.route", RouteCommand::Reset),
        ("SHOW pgrelay.route", RouteCommand::Show),
    ];
    for (sql, want) in cases {
        let d = c.classify(sql, &ctx());
        assert_eq!(d.intercept(), Some(&want), "{sql}");
        assert_eq!(d.route.reason, Reason::Intercepted);
    }
    let d = c.classify("SET pgrelay.route = 'sideways'", &ctx());
    let err = d
        .intercept()
        .and_then(RouteCommand::error)
        .expect("invalid value");
    assert_eq!(err.sqlstate(), "22023");
    assert!(err.to_string().contains("sideways"));
    // Intercepted even inside a transaction or a pinned session.
    let busy = SessionContext {
        tx: TxState::InReadWriteTx,
        session_pinned: true,
        ..ctx()
    };
    assert!(c
        .classify("SHOW pgrelay.route", &busy)
        .intercept()
        .is_some());
    // Not intercepted inside a multi-statement string.
    let d = c.classify("SET pgrelay.route = 'replica'; SELECT 1", &ctx());
    assert_eq!(d.intercept(), None);
    assert_eq!(d.route, Route::primary(Reason::InterceptInMultiStatement));
}

#[test]
fn session_effects() {
    let c = builtin();
    let effects = |sql: &str| c.classify(sql, &ctx()).effects;
    assert_eq!(
        effects("SET search_path TO app, public"),
        [Effect::SessionSet {
            name: "search_path".into(),
            value: "app, public".into()
        }]
    );
    assert_eq!(
        effects("SET TIME ZONE 'UTC'"),
        [Effect::SessionSet {
            name: "timezone".into(),
            value: "'UTC'".into()
        }]
    );
    assert_eq!(
        effects("SET work_mem TO DEFAULT"),
        [Effect::Reset {
            name: "work_mem".into()
        }]
    );
    assert_eq!(
        effects("RESET work_mem"),
        [Effect::Reset {
            name: "work_mem".into()
        }]
    );
    assert_eq!(effects("RESET ALL"), [Effect::ResetAll]);
    assert_eq!(effects("DISCARD ALL"), [Effect::ResetAll]);
    assert!(effects("SET LOCAL work_mem = '1MB'").is_empty());
    assert_eq!(
        effects("LISTEN jobs"),
        [Effect::PinSession(PinReason::Listen)]
    );
    assert_eq!(
        effects("CREATE TEMP TABLE x (a int)"),
        [Effect::PinSession(PinReason::TempTable)]
    );
    assert_eq!(
        effects("PREPARE p AS SELECT 1"),
        [Effect::PinSession(PinReason::PreparedStatement)]
    );
    assert_eq!(
        effects("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
        [Effect::PinSession(PinReason::HoldCursor)]
    );
    assert_eq!(
        effects("DECLARE c CURSOR FOR SELECT 1"),
        [Effect::PinTransaction(PinReason::Cursor)]
    );
    assert_eq!(
        effects("SELECT pg_advisory_lock(42)"),
        [Effect::PinSession(PinReason::SessionFunction(Arc::from(
            "pg_advisory_lock"
        )))]
    );
    assert!(effects("SELECT pg_advisory_xact_lock(42)").is_empty());
    // Plain EXPLAIN does not run the function, EXPLAIN ANALYZE does.
    assert!(effects("EXPLAIN SELECT pg_advisory_lock(1)").is_empty());
    assert_eq!(
        effects("EXPLAIN ANALYZE SELECT pg_advisory_lock(1)").len(),
        1
    );
    // Unparsed session commands still pin (keyword fallback).
    assert_eq!(
        effects("SET XML OPTION DOCUMENT"),
        [Effect::PinSession(PinReason::UnparsedSessionCommand)]
    );
    assert_eq!(
        effects("BEGIN READ ONLY DEFERRABLE"),
        [Effect::Transaction(TxControl::Begin { read_only: true })]
    );
}

#[test]
fn transactions_keep_their_server() {
    let c = builtin();
    let in_ro = SessionContext {
        tx: TxState::InReadOnlyTx,
        ..ctx()
    };
    let in_rw = SessionContext {
        tx: TxState::InReadWriteTx,
        ..ctx()
    };
    let d = c.classify("SELECT 1", &in_rw);
    assert_eq!(
        d.route,
        Route::primary(Reason::InTransaction(TxState::InReadWriteTx))
    );
    let d = c.classify("COMMIT", &in_ro);
    assert_eq!(d.route.target, Target::Replicas);
    assert_eq!(d.effects, [Effect::Transaction(TxControl::Commit)]);
    // A primary hint inside a read-only transaction cannot move it.
    let d = c.classify("/* pgrelay:primary */ SELECT 1", &in_ro);
    assert_eq!(d.route.reason, Reason::InTransaction(TxState::InReadOnlyTx));
    // BEGIN in the same string is followed.
    let d = c.classify("BEGIN READ ONLY; SELECT my_func(); COMMIT", &ctx());
    assert_eq!(d.route.target, Target::Replicas);
    let d = c.classify("BEGIN; SELECT 1", &ctx());
    assert_eq!(d.route.target, Target::Primary);
    // After COMMIT in the same string, classification resumes.
    let d = c.classify("BEGIN READ ONLY; COMMIT; DELETE FROM t", &ctx());
    assert_eq!(d.route.target, Target::Primary);
}

#[test]
fn pinned_sessions_stay_on_primary() {
    let c = builtin();
    let pinned = SessionContext {
        session_pinned: true,
        ..ctx()
    };
    assert_eq!(
        c.classify("SELECT 1", &pinned).route,
        Route::primary(Reason::SessionPinned)
    );
}

#[test]
fn mixed_replica_targets_fall_back_to_primary() {
    let c = with_rules("rules:\n  - name: t-to-a\n    match: {tables: [t]}\n    target: group:a\n");
    let d = c.classify("SELECT * FROM t; SELECT * FROM u", &ctx());
    assert_eq!(d.route, Route::primary(Reason::MixedTargets));
    let d = c.classify("SELECT * FROM t; SELECT * FROM t", &ctx());
    assert_eq!(d.route.target, Target::Group(Arc::from("a")));
}

#[test]
fn empty_query_goes_to_primary() {
    let d = builtin().classify(" ; -- nothing\n", &ctx());
    assert_eq!(d.route, Route::primary(Reason::Empty));
}

#[test]
fn explain_describes_each_statement() {
    let c = with_rules("rules:\n  - name: t-to-a\n    match: {tables: [t]}\n    target: group:a\n");
    let text = explain(&c, "SELECT count(*) FROM t; DELETE FROM u", &ctx());
    assert!(
        text.starts_with("decision: primary (delete statement is not a read)"),
        "{text}"
    );
    assert!(
        text.contains("statement 1/2: SELECT count(*) FROM t"),
        "{text}"
    );
    assert!(
        text.contains("first matching rule: t-to-a -> group:a"),
        "{text}"
    );
    assert!(
        text.contains("route: group:a (rule \"t-to-a\" matched)"),
        "{text}"
    );
    assert!(text.contains("statement 2/2: DELETE FROM u"), "{text}");
    assert!(text.contains("tables: u; functions: -"), "{text}");
    assert_eq!(c.stats().classified, 0, "explain does not count as traffic");
}

#[test]
fn classifier_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Classifier>();

    // Room for every text in every shard (16 shards of 64): with 128, a shard
    // that hashed more than its 8 texts evicted one, and the bound on hits
    // below failed now and then (599 hits in one CI run).
    let c = Classifier::new(RuleSet::builtin(), 1024);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let c = &c;
            scope.spawn(move || {
                for i in 0..200 {
                    let sql = format!("SELECT * FROM t{} WHERE id = $1", (i + t) % 50);
                    assert_eq!(c.classify(&sql, &ctx()).route.target, Target::Replicas);
                }
            });
        }
    });
    let stats = c.stats();
    assert_eq!(stats.classified, 800);
    assert_eq!(stats.cache_hits + stats.cache_misses, 800);
    assert!(
        stats.cache_misses >= 50,
        "each distinct text is parsed at least once"
    );
    assert!(stats.cache_hits >= 600, "{stats:?}");
}
