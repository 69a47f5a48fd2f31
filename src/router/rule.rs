//! One routing rule: conditions on the statement and the session, and a target.

use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;

use super::functions::validate_entry;
use super::kind::{kind_names, StatementKind};
use super::route::Target;
use super::session::SessionContext;
use super::text::StatementAnalysis;

/// A single value or a list of values in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(value) => vec![value],
            Self::Many(values) => values,
        }
    }
}

/// A rule as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub conditions: MatchSpec,
    pub target: String,
}

/// Conditions of a rule; all given ones must hold, a list holds if any entry does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MatchSpec {
    kind: Option<OneOrMany>,
    tables: Option<OneOrMany>,
    functions: Option<OneOrMany>,
    regex: Option<String>,
    database: Option<OneOrMany>,
    user: Option<OneOrMany>,
    application_name: Option<OneOrMany>,
}

/// A lower-cased, optionally schema-qualified name in a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QualifiedName {
    schema: Option<String>,
    name: String,
}

impl QualifiedName {
    fn parse(entry: &str) -> Result<Self, String> {
        validate_entry(entry)?;
        if entry.contains('*') {
            return Err("wildcards are not supported in rule names".into());
        }
        let lower = entry.to_lowercase();
        Ok(match lower.split_once('.') {
            Some((schema, name)) => Self {
                schema: Some(schema.to_string()),
                name: name.to_string(),
            },
            None => Self {
                schema: None,
                name: lower,
            },
        })
    }

    /// `orders` matches `orders` in any schema; `sales.orders` matches `sales.orders`
    /// and an unqualified `orders` (which the search_path may resolve there).
    fn matches(&self, written: &str) -> bool {
        let mut parts = written.rsplit('.');
        let name = parts.next().unwrap_or_default();
        let schema = parts.next();
        name == self.name
            && match (&self.schema, schema) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            }
    }
}

/// A compiled, validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's `name`, or `<file>#<index>` when it has none.
    pub name: Arc<str>,
    pub target: Target,
    kinds: Vec<StatementKind>,
    tables: Vec<QualifiedName>,
    functions: Vec<QualifiedName>,
    regex: Option<Regex>,
    databases: Vec<String>,
    users: Vec<String>,
    application_names: Vec<String>,
}

/// Parses `primary`, `replicas`, `group:<name>`.
pub fn parse_target(text: &str) -> Result<Target, String> {
    match text.trim() {
        "primary" => Ok(Target::Primary),
        "replicas" => Ok(Target::Replicas),
        other => match other.strip_prefix("group:") {
            Some(group)
                if !group.is_empty()
                    && group
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
            {
                Ok(Target::Group(Arc::from(group)))
            }
            Some(group) => Err(format!("invalid replica group name {group:?}")),
            None => Err(format!(
                "unknown target {other:?} (expected primary, replicas or group:<name>)"
            )),
        },
    }
}

fn names(list: Option<OneOrMany>) -> Result<Vec<QualifiedName>, String> {
    list.map(OneOrMany::into_vec)
        .unwrap_or_default()
        .iter()
        .map(|entry| QualifiedName::parse(entry).map_err(|e| format!("{entry:?}: {e}")))
        .collect()
}

impl Rule {
    /// Validates and compiles a rule. `fallback_name` names rules without `name`.
    pub(super) fn compile(spec: RuleSpec, fallback_name: String) -> Result<Self, String> {
        let target = parse_target(&spec.target)?;
        let m = spec.conditions;
        let kinds = m
            .kind
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .iter()
            .map(|k| {
                k.parse::<StatementKind>()
                    .map_err(|_| format!("unknown kind {k:?} (expected one of: {})", kind_names()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A rule can only make routing more conservative: sending a kind that is
        // never a read to replicas could never be honoured, so it is a mistake.
        if !target.is_primary() {
            if let Some(kind) = kinds.iter().find(|k| !k.can_be_read()) {
                return Err(format!(
                    "kind {kind} always writes; a rule may only send it to primary, not {target}"
                ));
            }
        }
        let regex = m
            .regex
            .map(|r| Regex::new(&r).map_err(|e| format!("bad regex: {e}")))
            .transpose()?;
        let plain = |list: Option<OneOrMany>| list.map(OneOrMany::into_vec).unwrap_or_default();
        Ok(Self {
            name: Arc::from(spec.name.unwrap_or(fallback_name)),
            target,
            kinds,
            tables: names(m.tables).map_err(|e| format!("tables: {e}"))?,
            functions: names(m.functions).map_err(|e| format!("functions: {e}"))?,
            regex,
            databases: plain(m.database),
            users: plain(m.user),
            application_names: plain(m.application_name),
        })
    }

    /// Conditions that depend only on the statement text (cacheable).
    /// Whether the rule looks at the raw text (and so at literal values).
    pub fn has_text_pattern(&self) -> bool {
        self.regex.is_some()
    }

    pub fn matches_statement(&self, statement: &StatementAnalysis, sql: &str) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&statement.kind))
            && (self.tables.is_empty()
                || statement
                    .tables
                    .iter()
                    .any(|t| self.tables.iter().any(|rule| rule.matches(t))))
            && (self.functions.is_empty()
                || statement
                    .functions
                    .iter()
                    .any(|f| self.functions.iter().any(|rule| rule.matches(f))))
            && self.regex.as_ref().is_none_or(|re| re.is_match(sql))
    }

    /// Whether the rule looks at the client's application name, which a
    /// session may change as it goes.
    pub fn names_applications(&self) -> bool {
        !self.application_names.is_empty()
    }

    /// Conditions on the session (exact, case-sensitive names).
    pub fn matches_session(&self, ctx: &SessionContext<'_>) -> bool {
        let holds = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
        };
        holds(&self.databases, Some(ctx.database))
            && holds(&self.users, Some(ctx.user))
            && holds(&self.application_names, ctx.application_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_match_as_documented() {
        let bare = QualifiedName::parse("Orders").unwrap();
        let qualified = QualifiedName::parse("sales.orders").unwrap();
        assert!(bare.matches("orders"));
        assert!(bare.matches("sales.orders"));
        assert!(qualified.matches("sales.orders"));
        assert!(qualified.matches("orders"));
        assert!(!qualified.matches("hr.orders"));
        assert!(!bare.matches("orders_archive"));
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("primary"), Ok(Target::Primary));
        assert_eq!(parse_target("replicas"), Ok(Target::Replicas));
        assert_eq!(
            parse_target("group:analytics"),
            Ok(Target::Group(Arc::from("analytics")))
        );
        assert!(parse_target("group:").is_err());
        assert!(parse_target("standby").is_err());
    }
}
