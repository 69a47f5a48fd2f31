//! Tokenising the query string once: routing hints in comments, splitting into
//! statements at top-level `;`, and small token rewrites for PostgreSQL syntax
//! sqlparser does not accept. Tokens (not raw text) are used so that `;`, `--`
//! or `DELETE` inside string literals, dollar quotes and identifiers never count.

use std::ops::Range;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, TokenizerError, Whitespace};

/// A routing hint written in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hint {
    Primary,
    Replica,
}

/// One statement's tokens and where it sits in the original text.
#[derive(Debug, Clone)]
pub struct Segment {
    pub tokens: Vec<TokenWithSpan>,
    /// Byte range of the statement in the original text (for reports).
    pub text: Range<usize>,
}

impl Segment {
    /// The first two unquoted words, upper-cased (`("PREPARE", Some("TRANSACTION"))`),
    /// skipping leading parentheses.
    pub fn leading_words(&self) -> (Option<String>, Option<String>) {
        let mut words = self
            .tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::LParen))
            .map(|t| match &t.token {
                Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
                _ => None,
            });
        let first = words.next().flatten();
        let second = words.next().flatten();
        (first, second)
    }

    /// Upper-cased unquoted words in order, for keyword-level fallbacks.
    pub fn words(&self) -> impl Iterator<Item = String> + '_ {
        self.tokens.iter().filter_map(|t| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        })
    }

    /// Lower-cased names of words directly followed by `(` (possible function calls).
    pub fn called_names(&self) -> Vec<String> {
        let significant: Vec<&Token> = self
            .tokens
            .iter()
            .map(|t| &t.token)
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect();
        significant
            .windows(2)
            .filter_map(|pair| match pair {
                [Token::Word(w), Token::LParen] => Some(w.value.to_ascii_lowercase()),
                _ => None,
            })
            .collect()
    }
}

/// The tokenised query string.
#[derive(Debug, Clone)]
pub struct Lexed {
    pub hint: Option<Hint>,
    pub segments: Vec<Segment>,
}

/// Tokenises `sql`, finds hints and splits it into statements.
pub fn lex(sql: &str) -> Result<Lexed, TokenizerError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location()?;
    let hint = find_hint(&tokens);
    let lines = LineIndex::new(sql);
    let mut segments = Vec::new();
    let mut current = Vec::new();
    for token in tokens {
        if token.token == Token::SemiColon {
            push_segment(&mut segments, std::mem::take(&mut current), &lines);
        } else {
            current.push(token);
        }
    }
    push_segment(&mut segments, current, &lines);
    Ok(Lexed { hint, segments })
}

fn push_segment(segments: &mut Vec<Segment>, tokens: Vec<TokenWithSpan>, lines: &LineIndex<'_>) {
    let mut significant = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF));
    let Some(first) = significant.next() else {
        return;
    };
    let last = significant.next_back().unwrap_or(first);
    let start = lines.offset(first.span.start);
    let end = lines.offset(last.span.end).max(start);
    segments.push(Segment {
        tokens: rewrite_for_parser(tokens),
        text: start..end,
    });
}

/// Primary wins if both hints appear.
fn find_hint(tokens: &[TokenWithSpan]) -> Option<Hint> {
    let mut hint = None;
    for token in tokens {
        let comment = match &token.token {
            Token::Whitespace(Whitespace::SingleLineComment { comment, .. }) => comment,
            Token::Whitespace(Whitespace::MultiLineComment(comment)) => comment,
            _ => continue,
        };
        let lower = comment.to_ascii_lowercase();
        if lower.contains("pgrelay:primary") {
            return Some(Hint::Primary);
        }
        if lower.contains("pgrelay:replica") {
            hint = Some(Hint::Replica);
        }
    }
    hint
}

fn is_word(token: &Token, keyword: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
}

/// Rewrites PostgreSQL forms sqlparser rejects into equivalents with the same
/// routing meaning: a leading `TABLE name` becomes `SELECT * FROM name`, and the
/// lock strengths `FOR NO KEY UPDATE` / `FOR KEY SHARE` become `FOR UPDATE` / `FOR SHARE`
/// (any locking clause routes to the primary, the strength does not matter).
fn rewrite_for_parser(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect();
    let mut drop = vec![false; tokens.len()];
    let mut leading_table = None;
    if let Some(&first) = significant.first() {
        if is_word(&tokens[first].token, "TABLE") {
            leading_table = Some(first);
        }
    }
    for (pos, &i) in significant.iter().enumerate() {
        if !is_word(&tokens[i].token, "FOR") {
            continue;
        }
        let next = |k: usize| significant.get(pos + k).map(|&j| (j, &tokens[j].token));
        match (next(1), next(2), next(3)) {
            (Some((a, t1)), Some((b, t2)), Some((_, t3)))
                if is_word(t1, "NO") && is_word(t2, "KEY") && is_word(t3, "UPDATE") =>
            {
                drop[a] = true;
                drop[b] = true;
            }
            (Some((a, t1)), Some((_, t2)), _) if is_word(t1, "KEY") && is_word(t2, "SHARE") => {
                drop[a] = true;
            }
            _ => {}
        }
    }
    if leading_table.is_none() && !drop.contains(&true) {
        return tokens;
    }
    let mut out = Vec::with_capacity(tokens.len() + 4);
    for (i, token) in tokens.into_iter().enumerate() {
        if drop[i] {
            continue;
        }
        if Some(i) == leading_table {
            let span = token.span;
            for replacement in [
                Token::make_keyword("SELECT"),
                Token::Whitespace(Whitespace::Space),
                Token::Mul,
                Token::Whitespace(Whitespace::Space),
                Token::make_keyword("FROM"),
            ] {
                out.push(TokenWithSpan::new(replacement, span));
            }
        } else {
            out.push(token);
        }
    }
    out
}

/// Converts tokenizer locations (1-based line, 1-based column in characters) to byte offsets.
struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, line_starts }
    }

    fn offset(&self, loc: Location) -> usize {
        let Some(&line_start) = usize::try_from(loc.line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|l| self.line_starts.get(l))
        else {
            return self.text.len();
        };
        let column = usize::try_from(loc.column).unwrap_or(1).saturating_sub(1);
        self.text[line_start..]
            .char_indices()
            .nth(column)
            .map_or(self.text.len(), |(i, _)| line_start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        lex(sql)
            .unwrap()
            .segments
            .iter()
            .map(|s| &sql[s.text.clone()])
            .collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let sql = "SELECT 'a;b', $$x;y$$; -- c;\n DELETE FROM t ;; ";
        assert_eq!(texts(sql), vec!["SELECT 'a;b', $$x;y$$", "DELETE FROM t"]);
    }

    #[test]
    fn offsets_follow_multibyte_text_and_lines() {
        let sql = "SELECT 'é';\n  SELECT 2";
        assert_eq!(texts(sql), vec!["SELECT 'é'", "SELECT 2"]);
    }

    #[test]
    fn hints_only_count_in_comments() {
        assert_eq!(
            lex("/* pgrelay:primary */ SELECT 1").unwrap().hint,
            Some(Hint::Primary)
        );
        assert_eq!(
            lex("SELECT 1 -- PGRELAY:replica").unwrap().hint,
            Some(Hint::Replica)
        );
        assert_eq!(lex("SELECT '/* pgrelay:primary */'").unwrap().hint, None);
        assert_eq!(
            lex("/* pgrelay:replica */ SELECT 1 /* pgrelay:primary */")
                .unwrap()
                .hint,
            Some(Hint::Primary)
        );
    }

    #[test]
    fn rewrites_table_and_lock_strengths() {
        let lexed = lex("TABLE t; SELECT 1 FOR NO KEY UPDATE; SELECT 1 FOR KEY SHARE").unwrap();
        let rendered: Vec<String> = lexed
            .segments
            .iter()
            .map(|s| s.tokens.iter().map(|t| t.to_string()).collect())
            .collect();
        assert_eq!(rendered[0], "SELECT * FROM t");
        assert_eq!(
            rendered[1].split_whitespace().collect::<Vec<_>>(),
            ["SELECT", "1", "FOR", "UPDATE"]
        );
        assert_eq!(
            rendered[2].split_whitespace().collect::<Vec<_>>(),
            ["SELECT", "1", "FOR", "SHARE"]
        );
    }

    #[test]
    fn leading_words_and_calls() {
        let lexed = lex("(PREPARE TRANSACTION 'x'); select pg_advisory_lock(1)").unwrap();
        assert_eq!(
            lexed.segments[0].leading_words(),
            (Some("PREPARE".into()), Some("TRANSACTION".into()))
        );
        assert_eq!(lexed.segments[1].called_names(), vec!["pg_advisory_lock"]);
    }
}
