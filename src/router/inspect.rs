//! Walks a parsed statement (at any depth: subqueries, CTEs, EXPLAIN/COPY/DECLARE
//! bodies) and collects the facts routing needs.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, Query, Select, SetExpr, TableFactor, Visit, Visitor};

/// What a statement touches and contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Called functions, lower-cased, schema-qualified as written.
    pub functions: Vec<String>,
    /// Relations read or written, lower-cased, without CTE names.
    pub tables: Vec<String>,
    /// A `FOR UPDATE/SHARE` clause somewhere.
    pub locking: bool,
    /// `SELECT … INTO`: `Some(true)` when the new table is temporary.
    pub select_into: Option<bool>,
    /// `INSERT/UPDATE/DELETE/MERGE` used as a query (a data-modifying CTE).
    pub data_modifying_query: bool,
}

/// Lower-cased dotted form of an object name (`Public.Orders` → `public.orders`).
pub fn object_name(name: &ObjectName) -> String {
    let mut out = String::new();
    for part in &name.0 {
        if !out.is_empty() {
            out.push('.');
        }
        match part.as_ident() {
            Some(ident) => out.push_str(&ident.value.to_lowercase()),
            None => out.push_str(&part.to_string().to_lowercase()),
        }
    }
    out
}

/// Collects [`Facts`] from any AST node.
pub fn collect<N: Visit>(node: &N) -> Facts {
    let mut collector = Collector::default();
    // The collector never breaks, so the walk always completes.
    let _ = node.visit(&mut collector);
    let Collector {
        mut facts,
        cte_names,
        ..
    } = collector;
    facts.tables.retain(|t| !cte_names.contains(t));
    facts
}

#[derive(Default)]
struct Collector {
    facts: Facts,
    cte_names: Vec<String>,
    /// The next relation visited is the name of a table function, not a table.
    next_relation_is_function: bool,
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if !query.locks.is_empty() {
            self.facts.locking = true;
        }
        if matches!(
            *query.body,
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        ) {
            self.facts.data_modifying_query = true;
        }
        if let Some(with) = &query.with {
            self.cte_names.extend(
                with.cte_tables
                    .iter()
                    .map(|c| c.alias.name.value.to_lowercase()),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        if let Some(into) = &select.into {
            let temporary = self.facts.select_into.unwrap_or(false) || into.temporary;
            self.facts.select_into = Some(temporary);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            self.facts.functions.push(object_name(&function.name));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            // `FROM f(args)`: sqlparser represents it as a table with arguments.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.facts.functions.push(object_name(name));
                self.next_relation_is_function = true;
            }
            TableFactor::Function { name, .. } => {
                self.facts.functions.push(object_name(name));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if std::mem::take(&mut self.next_relation_is_function) {
            return ControlFlow::Continue(());
        }
        let name = object_name(relation);
        if !self.facts.tables.contains(&name) {
            self.facts.tables.push(name);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn facts(sql: &str) -> Facts {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        collect(&statements[0])
    }

    #[test]
    fn finds_functions_at_any_depth_and_in_from() {
        let f = facts(
            "SELECT a FROM t WHERE b IN (SELECT Public.NextVal('s')) AND c = lower(d) \
             UNION SELECT * FROM generate_series(1, 3)",
        );
        assert_eq!(
            f.functions,
            vec!["public.nextval", "lower", "generate_series"]
        );
        assert_eq!(f.tables, vec!["t"]);
    }

    #[test]
    fn finds_locks_in_subqueries() {
        assert!(facts("SELECT (SELECT id FROM q FOR UPDATE SKIP LOCKED LIMIT 1)").locking);
        assert!(!facts("SELECT id FROM q").locking);
    }

    #[test]
    fn finds_data_modifying_ctes_and_skips_cte_names() {
        let f = facts("WITH d AS (DELETE FROM s.t RETURNING *) SELECT * FROM d JOIN u ON true");
        assert!(f.data_modifying_query);
        assert_eq!(f.tables, vec!["s.t", "u"]);
    }

    #[test]
    fn finds_select_into() {
        assert_eq!(facts("SELECT * INTO TEMP x FROM t").select_into, Some(true));
        assert_eq!(facts("SELECT * INTO x FROM t").select_into, Some(false));
        assert_eq!(facts("SELECT * FROM t").select_into, None);
    }
}
