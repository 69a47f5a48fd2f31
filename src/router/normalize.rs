//! Cache keys that ignore literal values, so `... WHERE id = 7` and
//! `... WHERE id = 8` share one cached analysis instead of each paying a full
//! parse (simple-protocol clients inline their parameters).
//!
//! Only texts whose analysis cannot depend on a literal are normalised: one
//! DML or query statement, no `pgrelay` command or hint, no backslash or
//! dollar quoting (whose lexing this scanner does not attempt). The key keeps
//! the text's length and every byte outside literals, so byte ranges recorded
//! in a cached analysis fit every text that maps to it.

/// Leading keywords of statements whose routing does not depend on literal
/// values (SET, for one, records its value and is never normalised).
const NORMALISED_LEADERS: [&str; 7] = [
    "select", "insert", "update", "delete", "with", "values", "table",
];

/// The cache key for `sql`: literal digits become `0` and the bytes inside
/// single-quoted strings become `x`. `None` when `sql` is its own key (no
/// literal to mask, or a text that must not be normalised).
pub fn literal_free_key(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    if !leads_with_normalisable_keyword(sql)
        || memchr::memchr(b'\\', bytes).is_some()
        || contains_ignore_ascii_case(bytes, b"pgrelay")
    {
        return None;
    }
    let mut key = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => {
                let end = quoted_end(bytes, i, b'\'')?;
                key.push(b'\'');
                for &inner in &bytes[i + 1..end - 1] {
                    // A doubled quote is part of the literal; keep it so the
                    // scan stays in step, mask everything else.
                    key.push(if inner == b'\'' { b'\'' } else { b'x' });
                }
                key.push(b'\'');
                changed |= end - i > 2;
                i = end;
            }
            b'"' => {
                let end = quoted_end(bytes, i, b'"')?;
                key.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n);
                key.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // Nested comments end at the last of their closers; keep it simple
                // and refuse them rather than mis-scan.
                let end = memchr::memmem::find(&bytes[i + 2..], b"*/")? + i + 4;
                if memchr::memmem::find(&bytes[i + 2..end - 2], b"/*").is_some() {
                    return None;
                }
                key.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            b'$' => {
                // `$1` is a parameter; `$tag$` starts a dollar-quoted string.
                let next = bytes.get(i + 1);
                if !next.is_some_and(u8::is_ascii_digit) {
                    return None;
                }
                let end = i
                    + 1
                    + bytes[i + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .count();
                key.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            b'0'..=b'9' if !follows_identifier(bytes, i) => {
                let end = i + bytes[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                key.resize(key.len() + (end - i), b'0');
                changed |= bytes[i..end].iter().any(|&d| d != b'0');
                i = end;
            }
            _ => {
                key.push(b);
                i += 1;
            }
        }
    }
    if !is_single_statement(&key) {
        return None;
    }
    // Only ASCII bytes were substituted for whole literals or digits: still UTF-8.
    let key = String::from_utf8(key).ok()?;
    changed.then_some(key)
}

fn leads_with_normalisable_keyword(sql: &str) -> bool {
    let word: String = sql
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    NORMALISED_LEADERS
        .iter()
        .any(|leader| word.eq_ignore_ascii_case(leader))
}

/// The index just past the quote closing the one at `start` (`''` and `""`
/// are escaped quotes inside); `None` when unterminated.
fn quoted_end(bytes: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let at = i + memchr::memchr(quote, &bytes[i..])?;
        if bytes.get(at + 1) == Some(&quote) {
            i = at + 2;
        } else {
            return Some(at + 1);
        }
    }
}

/// Digits right after a letter, digit, `_` or `$` belong to a name (`t1`).
fn follows_identifier(bytes: &[u8], i: usize) -> bool {
    i > 0 && {
        let prev = bytes[i - 1];
        prev.is_ascii_alphanumeric() || prev == b'_' || prev == b'$' || prev >= 0x80
    }
}

/// No `;` except trailing ones (outside literals, which are masked by now;
/// quoted identifiers and comments may still hold one, which only makes this
/// refuse more).
fn is_single_statement(key: &[u8]) -> bool {
    let trimmed = key
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != b';')
        .map_or(&key[..0], |last| &key[..=last]);
    memchr::memchr(b';', trimmed).is_none()
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::literal_free_key;

    fn key(sql: &str) -> Option<String> {
        literal_free_key(sql)
    }

    #[test]
    fn numbers_and_strings_are_masked_in_place() {
        assert_eq!(
            key("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;").unwrap(),
            "SELECT abalance FROM pgbench_accounts WHERE aid = 0000;"
        );
        assert_eq!(
            key("select * from t where name = 'it''s' and id = 12").unwrap(),
            "select * from t where name = 'xx''x' and id = 00"
        );
        assert_eq!(
            key("SELECT 1").unwrap(),
            key("SELECT 7").unwrap(),
            "same shape, same key"
        );
        let text = "UPDATE t SET v = 'é' WHERE id = 3";
        assert_eq!(key(text).unwrap().len(), text.len(), "length preserved");
    }

    #[test]
    fn names_comments_and_parameters_are_kept() {
        assert_eq!(
            key("select * from t1 join \"x 2\" on a2 = $1 + 3").unwrap(),
            "select * from t1 join \"x 2\" on a2 = $1 + 0"
        );
        assert_eq!(key("select a from t1"), None, "nothing to mask");
        assert_eq!(
            key("select 5 /* route 9 */ -- 8\n, 6").unwrap(),
            "select 0 /* route 9 */ -- 8\n, 0"
        );
    }

    #[test]
    fn texts_whose_route_may_depend_on_a_literal_keep_their_text() {
        for sql in [
            "SET pgrelay.route = 'primary'",
            "SET application_name = 'x1'",
            "select 1 /* pgrelay:primary */",
            "SELECT set_config('PGRELAY.route', 'replica', false)",
            "select 1; delete from t where id = 2",
            "select $$ 1 $$",
            "select E'\\x41'",
            "select 'unterminated",
            "select /* a /* nested */ b */ 1",
        ] {
            assert_eq!(key(sql), None, "{sql}");
        }
        assert!(
            key("select 1;;  ").is_some(),
            "trailing semicolons are fine"
        );
    }
}
