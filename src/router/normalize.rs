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

/// Writes into `key` (cleared first) the cache key for `sql`: literal digits
/// become `0` and the bytes inside single-quoted strings become `x`. Returns
/// false, leaving `key` unspecified, when `sql` is its own key (no literal to
/// mask, or a text that must not be normalised). The caller owns the buffer
/// so a session can reuse one instead of allocating a key per statement.
pub fn write_literal_free_key(sql: &str, key: &mut Vec<u8>) -> bool {
    key.clear();
    let bytes = sql.as_bytes();
    if !leads_with_normalisable_keyword(bytes)
        || memchr::memchr(b'\\', bytes).is_some()
        || mentions_pgrelay(bytes)
    {
        return false;
    }
    // Bytes outside literals are copied in runs, up to the next literal.
    let mut masked_any = false;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let Some((end, masked)) = next_token(bytes, i) else {
            return false;
        };
        if masked {
            key.extend_from_slice(&bytes[copied..i]);
            mask_literal(&bytes[i..end], key);
            copied = end;
            masked_any = true;
        }
        i = end;
    }
    if !masked_any {
        return false;
    }
    key.extend_from_slice(&bytes[copied..]);
    // Only ASCII bytes were substituted for whole literals or digits, so the
    // key is UTF-8 like `sql`.
    is_single_statement(key)
}

/// The end of the token starting at `i` and whether it is a literal to mask;
/// `None` for what the scanner refuses (unterminated or nested constructs,
/// dollar quoting).
fn next_token(bytes: &[u8], i: usize) -> Option<(usize, bool)> {
    Some(match bytes[i] {
        b'\'' => (quoted_end(bytes, i, b'\'')?, true),
        b'"' => (quoted_end(bytes, i, b'"')?, false),
        b'-' if bytes.get(i + 1) == Some(&b'-') => (
            memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n),
            false,
        ),
        b'/' if bytes.get(i + 1) == Some(&b'*') => {
            // Nested comments end at the last of their closers; refuse them
            // rather than mis-scan.
            let end = memchr::memmem::find(&bytes[i + 2..], b"*/")? + i + 4;
            if memchr::memmem::find(&bytes[i + 2..end - 2], b"/*").is_some() {
                return None;
            }
            (end, false)
        }
        b'$' => {
            // `$1` is a parameter; `$tag$` starts a dollar-quoted string.
            if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            (i + 1 + digits_from(bytes, i + 1), false)
        }
        b'0'..=b'9' if !follows_identifier(bytes, i) => (i + digits_from(bytes, i), true),
        b'0'..=b'9' => (i + 1, false),
        _ => (i + 1 + plain_run(&bytes[i + 1..]), false),
    })
}

/// Bytes that may start a literal, a quoted name, a comment or a parameter.
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = b'0';
    while b <= b'9' {
        table[b as usize] = true;
        b += 1;
    }
    table[b'\'' as usize] = true;
    table[b'"' as usize] = true;
    table[b'-' as usize] = true;
    table[b'/' as usize] = true;
    table[b'$' as usize] = true;
    table
};

/// How many leading bytes of `bytes` the scanner may skip over.
fn plain_run(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| SPECIAL[b as usize])
        .unwrap_or(bytes.len())
}

/// Digits become `0`; inside a string every byte but the quotes becomes `x`
/// (a doubled quote stays, so the text keeps its shape).
fn mask_literal(literal: &[u8], key: &mut Vec<u8>) {
    if literal[0] == b'\'' {
        key.push(b'\'');
        let inner = &literal[1..literal.len() - 1];
        key.extend(inner.iter().map(|&c| if c == b'\'' { c } else { b'x' }));
        key.push(b'\'');
    } else {
        key.resize(key.len() + literal.len(), b'0');
    }
}

fn digits_from(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count()
}

fn leads_with_normalisable_keyword(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let word_len = bytes[start..]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    let word = &bytes[start..start + word_len];
    NORMALISED_LEADERS
        .iter()
        .any(|leader| word.eq_ignore_ascii_case(leader.as_bytes()))
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

/// Whether `bytes` mention pgrelay in any case (a `pgrelay.*` setting or a
/// `pgrelay:` hint). Searches for the word's last letter: SQL holds few 'y's
/// (table names such as `pgbench_accounts` hold many 'p's), and a miss costs
/// one vectorised pass, less than a substring searcher's set-up.
pub fn mentions_pgrelay(bytes: &[u8]) -> bool {
    const WORD: &[u8; 7] = b"pgrelay";
    memchr::memchr2_iter(b'y', b'Y', bytes).any(|last| {
        last >= WORD.len() - 1 && bytes[last + 1 - WORD.len()..=last].eq_ignore_ascii_case(WORD)
    })
}

#[cfg(test)]
mod tests {
    use super::{mentions_pgrelay, write_literal_free_key};

    #[test]
    fn pgrelay_is_found_in_any_case_and_position() {
        for sql in [
            "pgrelay",
            "SET pgrelay.route = primary",
            "SET PgReLaY.route TO auto",
            "/* PGRELAY:replica */ SELECT 1",
            "select 1 -- ends with pgrelay",
            "y pgrelay y",
        ] {
            assert!(mentions_pgrelay(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "",
            "y",
            "relay",
            "grelay",
            "pg relay",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "SELECT * FROM t ORDER BY id LIMIT 1",
            "pgrelaX pgrela",
        ] {
            assert!(!mentions_pgrelay(sql.as_bytes()), "{sql}");
        }
    }

    fn key(sql: &str) -> Option<String> {
        let mut key = vec![b'?'; 3];
        write_literal_free_key(sql, &mut key).then(|| String::from_utf8(key).unwrap())
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
