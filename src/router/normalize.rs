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

/// Writes into `key` (cleared first) the cache key for the SQL text `bytes`
/// (not necessarily UTF-8: see [`Classifier::cache_key`](super::Classifier::cache_key)): literal digits
/// become `0` and the bytes inside single-quoted strings become `x`. Returns
/// false, leaving `key` unspecified, when the text is its own key (no literal to
/// mask, or a text that must not be normalised). The caller owns the buffer
/// so a session can reuse one instead of allocating a key per statement.
///
/// One pass over the text: a routed simple-protocol read pays for it on every
/// statement, so the checks for backslashes, `pgrelay` and a second
/// statement ride on the token scan rather than each reading the text again.
pub fn write_literal_free_key(bytes: &[u8], key: &mut Vec<u8>) -> bool {
    key.clear();
    if !leads_with_normalisable_keyword(bytes) {
        return false;
    }
    let mut masked_any = false;
    // After a `;` outside literals only blanks and more `;` may follow.
    let mut ended = false;
    // Bytes outside literals are copied in runs, up to the next literal.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let Some((end, token)) = next_token(bytes, i) else {
            return false;
        };
        if ended
            && !matches!(token, Token::Semicolon)
            && !(matches!(token, Token::Plain) && bytes[i..end].iter().all(u8::is_ascii_whitespace))
        {
            return false;
        }
        match token {
            Token::Literal => {
                key.extend_from_slice(&bytes[copied..i]);
                if !mask_literal(&bytes[i..end], key) {
                    return false;
                }
                copied = end;
                masked_any = true;
            }
            Token::Semicolon => ended = true,
            Token::Plain | Token::Opaque => {}
        }
        i = end;
    }
    if !masked_any {
        return false;
    }
    key.extend_from_slice(&bytes[copied..]);
    // Only ASCII bytes were substituted for whole literals or digits, so the
    // key is UTF-8 if the text is.
    true
}

/// What the scanner found at one position.
enum Token {
    /// Names, keywords, operators, blanks, parameters: kept.
    Plain,
    /// A number or a single-quoted string: masked.
    Literal,
    /// A quoted name or a comment: kept, and may hold a `;`.
    Opaque,
    /// A `;` outside literals, names and comments.
    Semicolon,
}

/// The end of the token starting at `i` and what it is; `None` for what the
/// scanner refuses: unterminated or nested constructs, dollar quoting, a
/// backslash (escape strings), a mention of pgrelay.
fn next_token(bytes: &[u8], i: usize) -> Option<(usize, Token)> {
    Some(match bytes[i] {
        b'\'' => (quoted_end(bytes, i, b'\'')?, Token::Literal),
        b'"' => opaque(bytes, i, quoted_end(bytes, i, b'"')?)?,
        b'-' if bytes.get(i + 1) == Some(&b'-') => {
            let end = memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n);
            opaque(bytes, i, end)?
        }
        b'/' if bytes.get(i + 1) == Some(&b'*') => {
            // Nested comments end at the last of their closers; refuse them
            // rather than mis-scan.
            let end = memchr::memmem::find(&bytes[i + 2..], b"*/")? + i + 4;
            if memchr::memmem::find(&bytes[i + 2..end - 2], b"/*").is_some() {
                return None;
            }
            opaque(bytes, i, end)?
        }
        b'$' => {
            // `$1` is a parameter; `$tag$` starts a dollar-quoted string.
            if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            (i + 1 + digits_from(bytes, i + 1), Token::Plain)
        }
        b'0'..=b'9' if !follows_identifier(bytes, i) => (i + digits_from(bytes, i), Token::Literal),
        b'0'..=b'9' => (i + 1, Token::Plain),
        b';' => (i + 1, Token::Semicolon),
        b'\\' => return None,
        b'y' | b'Y' if ends_pgrelay(bytes, i) => return None,
        _ => (i + 1 + plain_run(&bytes[i + 1..]), Token::Plain),
    })
}

/// A quoted name or comment spanning `start..end`, unless it holds what the
/// scanner refuses anywhere.
fn opaque(bytes: &[u8], start: usize, end: usize) -> Option<(usize, Token)> {
    let token = &bytes[start..end];
    (memchr::memchr(b'\\', token).is_none() && !mentions_pgrelay(token))
        .then_some((end, Token::Opaque))
}

/// Bytes that may start a token other than a plain run: literals, quoted
/// names, comments, parameters, `;`, and the characters that end the scan
/// (`\`, the `y` of `pgrelay`).
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = b'0';
    while b <= b'9' {
        table[b as usize] = true;
        b += 1;
    }
    let mut i = 0;
    let others = *b"'\"-/$;\\yY";
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any byte of an 8-byte word could be [`SPECIAL`]: one in
/// `"`..=`;` (0x22..=0x3B, which holds every special but three, and a few
/// operators and brackets), a `\`, a `y` or a `Y`. A false hit only sends
/// that word to the byte-by-byte check.
fn may_hold_special(word: u64) -> bool {
    let ascii = !word & HIGHS;
    let low = word & !HIGHS;
    // Adding 0x80 − n sets a byte's top bit exactly when it is ≥ n, and
    // cannot carry into the next byte from seven bits.
    let at_least_22 = low + ONES * (0x80 - 0x22);
    let at_least_3c = low + ONES * (0x80 - 0x3C);
    let in_range = at_least_22 & !at_least_3c & ascii;
    // `| 0x20` folds `Y` onto `y`; the backslash is looked for before folding
    // (which would turn it into `|`).
    in_range != 0
        || has_zero_byte(word ^ (ONES * b'\\' as u64))
        || has_zero_byte((word | (ONES * 0x20)) ^ (ONES * b'y' as u64))
}

/// Exact for "any": a borrow can only spill past a byte that is zero already.
fn has_zero_byte(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

/// How many leading bytes of `bytes` the scanner may skip over: whole words
/// without a candidate byte first, then byte by byte in a word with one.
fn plain_run(bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(word) = bytes.get(i..i + 8) {
        if may_hold_special(u64::from_ne_bytes(word.try_into().expect("8 bytes"))) {
            if let Some(at) = word.iter().position(|&b| SPECIAL[b as usize]) {
                return i + at;
            }
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| SPECIAL[b as usize])
        .unwrap_or(bytes.len() - i)
}

/// Digits become `0`; inside a string every byte but the quotes becomes `x`
/// (a doubled quote stays, so the text keeps its shape). False for a string
/// the scanner refuses: one holding a backslash or a mention of pgrelay.
fn mask_literal(literal: &[u8], key: &mut Vec<u8>) -> bool {
    if literal[0] != b'\'' {
        key.resize(key.len() + literal.len(), b'0');
        return true;
    }
    key.push(b'\'');
    let inner = &literal[1..literal.len() - 1];
    for (n, &c) in inner.iter().enumerate() {
        match c {
            b'\\' => return false,
            b'y' | b'Y' if ends_pgrelay(inner, n) => return false,
            b'\'' => key.push(c),
            _ => key.push(b'x'),
        }
    }
    key.push(b'\'');
    true
}

/// Whether the `y` at `i` ends the word `pgrelay`, in any case.
fn ends_pgrelay(bytes: &[u8], i: usize) -> bool {
    const WORD: &[u8; 7] = b"pgrelay";
    i + 1 >= WORD.len() && bytes[i + 1 - WORD.len()..=i].eq_ignore_ascii_case(WORD)
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
    use super::{may_hold_special, mentions_pgrelay, plain_run, write_literal_free_key, SPECIAL};

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
        write_literal_free_key(sql.as_bytes(), &mut key).then(|| String::from_utf8(key).unwrap())
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
    fn the_word_check_finds_every_candidate_byte_in_every_lane() {
        for b in 0..=255u8 {
            let candidate = (0x22..=0x3B).contains(&b) || matches!(b, b'\\' | b'y' | b'Y');
            assert!(
                !SPECIAL[b as usize] || candidate,
                "special {b:#x} is a candidate"
            );
            for lane in 0..8 {
                for filler in [b'a', b' ', 0xC3, b'_'] {
                    let mut word = [filler; 8];
                    word[lane] = b;
                    assert_eq!(
                        may_hold_special(u64::from_ne_bytes(word)),
                        candidate,
                        "byte {b:#x} in lane {lane} among {filler:#x}"
                    );
                }
            }
        }
        let text = b"select abalance from pgbench_accounts where aid = 1";
        assert_eq!(plain_run(text), text.len() - 1, "stops at the digit");
        assert_eq!(plain_run(b"abc(de)fgh,ijklmnop"), 19, "false hits pass");
        assert_eq!(
            plain_run("ünïcödé names ".as_bytes()),
            "ünïcödé names ".len()
        );
    }

    #[test]
    fn semicolons_only_end_a_statement_outside_names_and_comments() {
        assert_eq!(
            key("select \"a;b\" from t where id = 1 /* ; */").unwrap(),
            "select \"a;b\" from t where id = 0 /* ; */"
        );
        assert_eq!(
            key("select 'a;b' from t ;\n ;").unwrap(),
            "select 'xxx' from t ;\n ;"
        );
        for sql in [
            "select 1; -- done",
            "select 1; x",
            "select 1; 2",
            "select 1;\"t\"",
        ] {
            assert_eq!(key(sql), None, "{sql}");
        }
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
            "select 1 from \"a\\b\"",
            "select 1 /* c:\\ */",
            "select 'x\\' || 1",
            "select 'PgRelay' || 1",
            "select 1 from \"pgrelay\"",
            "select 1 -- pgRELAY",
        ] {
            assert_eq!(key(sql), None, "{sql}");
        }
        assert!(
            key("select 1;;  ").is_some(),
            "trailing semicolons are fine"
        );
    }
}
