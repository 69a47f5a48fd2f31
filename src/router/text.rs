//! Analysis of a whole query string: hints plus one [`StatementAnalysis`] per
//! statement. Depends only on the text and the function lists, so it is cached.

use std::ops::Range;
use std::sync::Arc;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::analyze::{analyze_statement, Access, Verdict};
use super::effect::Effect;
use super::fallback::unparsed_effects;
use super::functions::FunctionCatalog;
use super::kind::StatementKind;
use super::lexer::{lex, Hint, Segment};
use super::route::PrimaryCause;

/// One statement of the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementAnalysis {
    /// Byte range in the query string.
    pub text: Range<usize>,
    pub kind: StatementKind,
    pub access: Access,
    pub effects: Vec<Effect>,
    /// Relations touched, lower-cased as written (`orders`, `sales.orders`).
    pub tables: Vec<String>,
    /// Functions called, lower-cased as written.
    pub functions: Vec<String>,
    /// Indices of rules whose text conditions (kind, tables, functions, regex) match;
    /// session conditions are checked per call.
    pub candidate_rules: Vec<usize>,
}

impl StatementAnalysis {
    pub fn is_unparsed(&self) -> bool {
        matches!(self.access, Access::Primary(PrimaryCause::Unparsed(_)))
    }
}

/// The cached analysis of one query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextAnalysis {
    pub hint: Option<Hint>,
    pub statements: Vec<StatementAnalysis>,
}

impl TextAnalysis {
    pub fn has_unparsed(&self) -> bool {
        self.statements.iter().any(StatementAnalysis::is_unparsed)
    }
}

/// Tokenises, splits and analyses `sql`. Never fails: what cannot be parsed is
/// recorded as an unparsed statement (routed to the primary).
pub fn analyze_text(sql: &str, catalog: &FunctionCatalog) -> TextAnalysis {
    let lexed = match lex(sql) {
        Ok(lexed) => lexed,
        Err(err) => {
            let first_word = sql
                .split(|c: char| !c.is_alphanumeric())
                .find(|w| !w.is_empty())
                .unwrap_or_default()
                .to_ascii_uppercase();
            return TextAnalysis {
                hint: None,
                statements: vec![StatementAnalysis {
                    text: 0..sql.len(),
                    kind: StatementKind::from_leading_words(&first_word, None),
                    access: Access::Primary(PrimaryCause::Unparsed(Arc::from(err.to_string()))),
                    effects: Vec::new(),
                    tables: Vec::new(),
                    functions: Vec::new(),
                    candidate_rules: Vec::new(),
                }],
            };
        }
    };
    TextAnalysis {
        hint: lexed.hint,
        statements: lexed
            .segments
            .into_iter()
            .map(|segment| analyze_segment(segment, catalog))
            .collect(),
    }
}

fn analyze_segment(segment: Segment, catalog: &FunctionCatalog) -> StatementAnalysis {
    let (first, second) = segment.leading_words();
    let leading =
        StatementKind::from_leading_words(first.as_deref().unwrap_or(""), second.as_deref());
    let Segment { tokens, text } = segment;
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let parsed = parser.parse_statements();
    match parsed {
        Ok(statements) if statements.len() == 1 => {
            let (verdict, facts) = analyze_statement(&statements[0], leading, catalog);
            let Verdict {
                kind,
                access,
                effects,
            } = verdict;
            StatementAnalysis {
                text,
                kind,
                access,
                effects,
                tables: facts.tables,
                functions: facts.functions,
                candidate_rules: Vec::new(),
            }
        }
        other => {
            let message = match other {
                Err(err) => err.to_string(),
                Ok(statements) => format!("expected one statement, parsed {}", statements.len()),
            };
            // The parser hands its tokens back, so the fallback needs no copy up front.
            let segment = Segment {
                tokens: parser.into_tokens(),
                text: text.clone(),
            };
            let (kind, effects) = unparsed_effects(&segment, catalog);
            StatementAnalysis {
                text,
                kind,
                access: Access::Primary(PrimaryCause::Unparsed(Arc::from(message))),
                effects,
                tables: Vec::new(),
                functions: segment.called_names(),
                candidate_rules: Vec::new(),
            }
        }
    }
}
