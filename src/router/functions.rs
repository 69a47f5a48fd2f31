//! Function catalog: which function calls write, pin the session, or are known read-only.
//! The lists come from the rule files; nothing is hard-coded here.

use std::collections::HashSet;

use regex::Regex;

/// How a call to a function affects routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionClass {
    /// Writes or has side effects: the statement goes to the primary.
    Write,
    /// Writes and leaves session-lasting state (e.g. `pg_advisory_lock`): primary, and pin the session.
    SessionPinning,
    /// Known pure/read-only built-in.
    ReadOnly,
    /// On no list (typically user-defined): governed by `unknown_functions`.
    Unknown,
}

/// A function name as written in SQL, lower-cased: `nextval` or `public.nextval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionName<'a> {
    pub schema: Option<&'a str>,
    pub name: &'a str,
}

impl<'a> FunctionName<'a> {
    /// Splits a lower-cased dotted name; a database-qualified name keeps only schema and name.
    pub fn parse(full: &'a str) -> Self {
        match full.rsplit_once('.') {
            Some((prefix, name)) => Self {
                schema: Some(prefix.rsplit('.').next().unwrap_or(prefix)),
                name,
            },
            None => Self {
                schema: None,
                name: full,
            },
        }
    }
}

/// Checks a list entry: `name`, `schema.name`, with `*` wildcards.
pub fn validate_entry(entry: &str) -> Result<(), String> {
    if entry.is_empty() {
        return Err("empty name".into());
    }
    if entry.matches('.').count() > 1 {
        return Err("at most one '.' (schema.name)".into());
    }
    if entry.starts_with('.') || entry.ends_with('.') {
        return Err("empty schema or name part".into());
    }
    if let Some(bad) = entry
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '$' | '*' | '.')))
    {
        return Err(format!("unexpected character {bad:?}"));
    }
    Ok(())
}

/// Exact names plus wildcard patterns, matched case-insensitively (inputs are lower-cased).
#[derive(Debug, Clone, Default)]
struct NameMatcher {
    exact: HashSet<String>,
    patterns: Option<Regex>,
}

impl NameMatcher {
    fn build<'a>(entries: impl Iterator<Item = &'a str>) -> Self {
        let mut exact = HashSet::new();
        let mut globs = Vec::new();
        for entry in entries {
            let lower = entry.to_ascii_lowercase();
            if lower.contains('*') {
                let parts: Vec<String> = lower.split('*').map(regex::escape).collect();
                globs.push(parts.join(".*"));
            } else {
                exact.insert(lower);
            }
        }
        // Entries were validated (only word characters, '.', '$', '*'), so the pattern compiles.
        let patterns = (!globs.is_empty())
            .then(|| Regex::new(&format!("^(?:{})$", globs.join("|"))).ok())
            .flatten();
        Self { exact, patterns }
    }

    fn matches(&self, name: &str) -> bool {
        self.exact.contains(name) || self.patterns.as_ref().is_some_and(|re| re.is_match(name))
    }
}

/// One list split by qualification, so `nextval` and `public.nextval` entries behave differently.
#[derive(Debug, Clone, Default)]
struct FunctionList {
    bare: NameMatcher,
    qualified: NameMatcher,
}

impl FunctionList {
    fn build(entries: &[String]) -> Self {
        Self {
            bare: NameMatcher::build(
                entries
                    .iter()
                    .filter(|e| !e.contains('.'))
                    .map(|e| e.as_str()),
            ),
            qualified: NameMatcher::build(
                entries
                    .iter()
                    .filter(|e| e.contains('.'))
                    .map(|e| e.as_str()),
            ),
        }
    }

    /// `any_schema`: a bare entry also matches calls qualified with any schema
    /// (used for the conservative lists, so `public.nextval` still counts as a write).
    fn matches(&self, call: FunctionName<'_>, any_schema: bool) -> bool {
        let bare_applies = any_schema || matches!(call.schema, None | Some("pg_catalog"));
        if bare_applies && self.bare.matches(call.name) {
            return true;
        }
        match call.schema {
            Some(schema) => self.qualified.matches(&format!("{schema}.{}", call.name)),
            None => false,
        }
    }
}

/// The three function lists, compiled.
#[derive(Debug, Clone, Default)]
pub struct FunctionCatalog {
    writes: FunctionList,
    session_pinning: FunctionList,
    read_only: FunctionList,
}

impl FunctionCatalog {
    /// Entries must already have passed [`validate_entry`].
    pub fn new(writes: &[String], session_pinning: &[String], read_only: &[String]) -> Self {
        Self {
            writes: FunctionList::build(writes),
            session_pinning: FunctionList::build(session_pinning),
            read_only: FunctionList::build(read_only),
        }
    }

    /// Classifies a lower-cased, possibly schema-qualified function name.
    /// Write lists win over the read-only list; read-only entries only match
    /// unqualified or `pg_catalog.` calls, so a user's `app.lower()` stays unknown.
    pub fn classify(&self, full_name: &str) -> FunctionClass {
        let call = FunctionName::parse(full_name);
        if self.session_pinning.matches(call, true) {
            FunctionClass::SessionPinning
        } else if self.writes.matches(call, true) {
            FunctionClass::Write
        } else if self.read_only.matches(call, false) {
            FunctionClass::ReadOnly
        } else {
            FunctionClass::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn catalog() -> FunctionCatalog {
        FunctionCatalog::new(
            &strings(&["nextval", "pg_advisory_*lock*", "lo_*", "audit.log_event"]),
            &strings(&["pg_advisory_lock"]),
            &strings(&["count", "lower", "jsonb_*", "util.safe_fn"]),
        )
    }

    #[test]
    fn write_list_matches_any_schema_and_globs() {
        let c = catalog();
        assert_eq!(c.classify("nextval"), FunctionClass::Write);
        assert_eq!(c.classify("public.nextval"), FunctionClass::Write);
        assert_eq!(c.classify("pg_advisory_xact_lock"), FunctionClass::Write);
        assert_eq!(c.classify("pg_advisory_unlock_all"), FunctionClass::Write);
        assert_eq!(c.classify("pg_try_advisory_lock"), FunctionClass::Unknown);
        assert_eq!(c.classify("lo_unlink"), FunctionClass::Write);
        assert_eq!(c.classify("audit.log_event"), FunctionClass::Write);
        assert_eq!(c.classify("log_event"), FunctionClass::Unknown);
    }

    #[test]
    fn session_pinning_beats_write() {
        assert_eq!(
            catalog().classify("pg_advisory_lock"),
            FunctionClass::SessionPinning
        );
    }

    #[test]
    fn read_only_requires_unqualified_or_pg_catalog() {
        let c = catalog();
        assert_eq!(c.classify("count"), FunctionClass::ReadOnly);
        assert_eq!(c.classify("pg_catalog.lower"), FunctionClass::ReadOnly);
        assert_eq!(c.classify("app.lower"), FunctionClass::Unknown);
        assert_eq!(c.classify("jsonb_build_object"), FunctionClass::ReadOnly);
        assert_eq!(c.classify("util.safe_fn"), FunctionClass::ReadOnly);
        assert_eq!(c.classify("my_func"), FunctionClass::Unknown);
    }

    #[test]
    fn entries_are_validated() {
        assert!(validate_entry("pg_catalog.nextval").is_ok());
        assert!(validate_entry("a.b.c").is_err());
        assert!(validate_entry("bad name").is_err());
        assert!(validate_entry("").is_err());
        assert!(validate_entry("x(").is_err());
    }
}
