//! PgBouncer's `userlist.txt`: one `"user" "secret"` pair per line.

use std::collections::HashMap;
use std::path::Path;

pub use super::secret::{ScramSecret, Secret};
use super::AuthError;

/// Users and their secrets, keyed by user name.
#[derive(Debug, Clone, Default)]
pub struct Userlist {
    users: HashMap<String, Secret>,
}

impl Userlist {
    /// Parses userlist text; `origin` names the source in error messages (usually the path).
    /// A later line for the same user replaces an earlier one, as in PgBouncer.
    pub fn parse(src: &str, origin: &str) -> Result<Userlist, AuthError> {
        let mut users = HashMap::new();
        for (index, raw) in src.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let syntax_error = |reason: &str| AuthError::UserlistSyntax {
                origin: origin.to_string(),
                line: index + 1,
                reason: reason.to_string(),
            };
            let (user, rest) =
                quoted(line).map_err(|r| syntax_error(&format!("user name: {r}")))?;
            let (secret, rest) =
                quoted(rest.trim_start()).map_err(|r| syntax_error(&format!("secret: {r}")))?;
            if !rest.trim().is_empty() {
                return Err(syntax_error("unexpected text after the secret"));
            }
            if user.is_empty() {
                return Err(syntax_error("empty user name"));
            }
            if users
                .insert(user.clone(), Secret::from_stored(&secret))
                .is_some()
            {
                tracing::warn!(%origin, line = index + 1, %user, "duplicate userlist entry replaces an earlier one");
            }
        }
        Ok(Userlist { users })
    }

    pub fn load(path: &Path) -> Result<Userlist, AuthError> {
        let src = std::fs::read_to_string(path).map_err(|source| AuthError::UserlistIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&src, &path.display().to_string())
    }

    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    /// Every user the list names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Reads one `"..."` token at the start of `text` (where `""` is a literal quote);
/// returns the unescaped content and the text after the closing quote.
fn quoted(text: &str) -> Result<(String, &str), &'static str> {
    let body = text
        .strip_prefix('"')
        .ok_or("expected a double-quoted string")?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            value.push(c);
            continue;
        }
        if body[i + 1..].starts_with('"') {
            value.push('"');
            chars.next();
        } else {
            return Ok((value, &body[i + 1..]));
        }
    }
    Err("missing closing double quote")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_line(src: &str) -> (usize, String) {
        match Userlist::parse(src, "users.txt").unwrap_err() {
            err @ AuthError::UserlistSyntax { line, .. } => (line, err.to_string()),
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn parses_users_comments_and_escaped_quotes() {
        let md5 = format!("md5{}", "0123456789abcdef".repeat(2));
        let scram = ScramSecret::from_password("pw", b"saltsalt", 4096);
        let src = format!(
            "; PgBouncer style comment\n\
             # shell style comment\n\
             \n\
             \"alice\" \"plain pw\"\n\
             \t\"bob\"   \"{md5}\"   \n\
             \"say \"\"hi\"\"\" \"a\"\"b\"\n\
             \"carol\" \"{}\"\n\
             \"dave\" \"\"\n",
            scram.to_stored_text()
        );
        let list = Userlist::parse(&src, "users.txt").unwrap();
        assert_eq!(list.len(), 5);
        assert!(!list.is_empty());
        assert_eq!(list.get("alice"), Some(&Secret::Plain("plain pw".into())));
        assert_eq!(list.get("bob"), Some(&Secret::Md5(md5)));
        assert_eq!(list.get("say \"hi\""), Some(&Secret::Plain("a\"b".into())));
        assert_eq!(list.get("carol"), Some(&Secret::Scram(scram)));
        assert_eq!(list.get("dave"), Some(&Secret::Plain(String::new())));
        assert_eq!(list.get("nobody"), None);
    }

    #[test]
    fn later_duplicate_wins() {
        let list = Userlist::parse("\"u\" \"one\"\n\"u\" \"two\"\n", "x").unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list.get("u"), Some(&Secret::Plain("two".into())));
    }

    #[test]
    fn reports_errors_with_origin_and_line() {
        let (line, msg) = error_line("\"ok\" \"pw\"\n\n\"broken \"pw\"\n");
        assert_eq!(line, 3);
        assert!(msg.starts_with("users.txt:3: "), "{msg}");

        assert_eq!(error_line("user \"pw\"").0, 1);
        assert_eq!(error_line("\"u\"\n").0, 1);
        assert_eq!(error_line("# c\n\"u\" pw\n").0, 2);
        assert_eq!(error_line("\"u\" \"pw\" extra\n").0, 1);
        assert_eq!(error_line("\"u\" \"pw").0, 1);
        assert_eq!(error_line("\"\" \"pw\"").0, 1);
    }

    #[test]
    fn empty_input_is_an_empty_list() {
        let list = Userlist::parse("\n; only comments\n", "x").unwrap();
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userlist.txt");
        std::fs::write(&path, "\"u\" \"pw\"\n").unwrap();
        assert_eq!(Userlist::load(&path).unwrap().len(), 1);

        std::fs::write(&path, "\"u\" \"pw\"\nbad\n").unwrap();
        let msg = Userlist::load(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}:2:", path.display())), "{msg}");

        let missing = dir.path().join("missing.txt");
        let err = Userlist::load(&missing).unwrap_err();
        assert!(matches!(err, AuthError::UserlistIo { .. }));
        assert!(err.to_string().contains("missing.txt"));
    }
}
