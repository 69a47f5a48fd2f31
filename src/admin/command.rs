//! Parsing of admin console statements (`SHOW POOLS;`, `PAUSE mydb;`, ...).
//!
//! The console speaks a handful of fixed commands, not SQL, so a small
//! tokenizer (words and double-quoted identifiers) is enough.

use super::AdminError;

/// One admin console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    ShowPools,
    ShowStats,
    /// `SHOW STATS`' totals alone, without the `total_` prefix.
    ShowStatsTotals,
    /// `SHOW STATS`' averages alone, without the `avg_` prefix.
    ShowStatsAverages,
    /// Totals and averages over every database, one (name, value) row each.
    ShowTotals,
    ShowDatabases,
    ShowClients,
    ShowServers,
    ShowConfig,
    ShowVersion,
    ShowLists,
    ShowHelp,
    /// pgrelay's own: replica endpoints with health, lag and balancing state.
    ShowReplicas,
    /// Known users: the auth file's and any a pool was made for.
    ShowUsers,
    /// Whether the whole pooler is paused (`PAUSE` without a database).
    ShowState,
    Reload,
    /// Pause one database, or all of them with `None`.
    Pause(Option<String>),
    /// Resume one database, or all of them with `None`.
    Resume(Option<String>),
    /// Close the servers of one database (all with `None`) as they are
    /// released, so new ones are opened.
    Reconnect(Option<String>),
    /// Wait until no server marked by `RECONNECT` is left.
    WaitClose(Option<String>),
    /// Refuse new client logins to a database.
    Disable(String),
    /// Take client logins to a database again.
    Enable(String),
    /// Drop a database's clients and servers now, and pause it.
    Kill(String),
    /// Drop one client (its `SHOW CLIENTS` id) and the server it holds.
    KillClient(i32),
    /// Change one setting while running (`SET name = value`); a later
    /// `RELOAD` reads the configuration again, as in PgBouncer.
    Set {
        name: String,
        value: String,
    },
    Shutdown,
}

/// PgBouncer commands pgrelay knows by name but does not implement; they get
/// "not supported" (0A000) rather than "invalid command" (42601), which tells
/// an operator the spelling is right.
const UNSUPPORTED_COMMANDS: &[&str] = &["SUSPEND"];

const UNSUPPORTED_SHOW: &[&str] = &[
    "FDS",
    "SOCKETS",
    "ACTIVE_SOCKETS",
    "MEM",
    "DNS_HOSTS",
    "DNS_ZONES",
    "PEERS",
    "PEER_POOLS",
];

/// Longest piece of client text echoed back in an error message.
const ECHO_LIMIT: usize = 64;

impl AdminCommand {
    /// Parses one statement. Keywords are case-insensitive; surrounding
    /// whitespace and trailing semicolons are ignored. A database argument is
    /// taken verbatim, or unquoted when written as `"name"`.
    pub fn parse(sql: &str) -> Result<AdminCommand, AdminError> {
        let text = sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        // A SET's value may hold anything a quoted string can (a `"`, say):
        // it is parsed from the text, not from the tokens.
        let trimmed = text.trim_start();
        if let Some(rest) = trimmed
            .get(..3)
            .filter(|kw| kw.eq_ignore_ascii_case("set"))
            .and_then(|_| trimmed.get(3..))
            .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        {
            return parse_set(rest)
                .map(|(name, value)| AdminCommand::Set { name, value })
                .ok_or(AdminError::BadSet);
        }
        let tokens = tokenize(text)?;
        let Some((first, args)) = tokens.split_first() else {
            return Err(AdminError::Empty);
        };
        let invalid = || AdminError::InvalidCommand(echo(text.trim()));
        let keyword = first.keyword().ok_or_else(invalid)?;
        match keyword.as_str() {
            "SHOW" => parse_show(args, text),
            "RELOAD" if args.is_empty() => Ok(AdminCommand::Reload),
            "SHUTDOWN" if args.is_empty() => Ok(AdminCommand::Shutdown),
            "PAUSE" => optional_database(args)
                .map(AdminCommand::Pause)
                .ok_or_else(invalid),
            "RESUME" => optional_database(args)
                .map(AdminCommand::Resume)
                .ok_or_else(invalid),
            "RECONNECT" => optional_database(args)
                .map(AdminCommand::Reconnect)
                .ok_or_else(invalid),
            "WAIT_CLOSE" => optional_database(args)
                .map(AdminCommand::WaitClose)
                .ok_or_else(invalid),
            "DISABLE" => one_database(args)
                .map(AdminCommand::Disable)
                .ok_or_else(invalid),
            "ENABLE" => one_database(args)
                .map(AdminCommand::Enable)
                .ok_or_else(invalid),
            "KILL" => one_database(args)
                .map(AdminCommand::Kill)
                .ok_or_else(invalid),
            "KILL_CLIENT" => client_id(args)
                .map(AdminCommand::KillClient)
                .ok_or_else(invalid),
            k if UNSUPPORTED_COMMANDS.contains(&k) => Err(AdminError::Unsupported(k.to_string())),
            _ => Err(invalid()),
        }
    }

    /// True for the read-only `SHOW` commands that stats users may run.
    pub fn is_show(&self) -> bool {
        !matches!(
            self,
            AdminCommand::Reload
                | AdminCommand::Pause(_)
                | AdminCommand::Resume(_)
                | AdminCommand::Reconnect(_)
                | AdminCommand::WaitClose(_)
                | AdminCommand::Disable(_)
                | AdminCommand::Enable(_)
                | AdminCommand::Kill(_)
                | AdminCommand::KillClient(_)
                | AdminCommand::Set { .. }
                | AdminCommand::Shutdown
        )
    }

    /// The CommandComplete tag PgBouncer sends for this command.
    pub fn command_tag(&self) -> &'static str {
        match self {
            AdminCommand::Reload => "RELOAD",
            AdminCommand::Pause(_) => "PAUSE",
            AdminCommand::Resume(_) => "RESUME",
            AdminCommand::Reconnect(_) => "RECONNECT",
            AdminCommand::WaitClose(_) => "WAIT_CLOSE",
            AdminCommand::Disable(_) => "DISABLE",
            AdminCommand::Enable(_) => "ENABLE",
            AdminCommand::Kill(_) => "KILL",
            AdminCommand::KillClient(_) => "KILL_CLIENT",
            AdminCommand::Set { .. } => "SET",
            AdminCommand::Shutdown => "SHUTDOWN",
            _ => "SHOW",
        }
    }
}

fn parse_show(args: &[Token], text: &str) -> Result<AdminCommand, AdminError> {
    let [subject] = args else {
        return Err(AdminError::InvalidCommand(echo(text.trim())));
    };
    let Some(subject) = subject.keyword() else {
        return Err(AdminError::UnknownShow(echo(subject.text())));
    };
    let cmd = match subject.as_str() {
        "POOLS" => AdminCommand::ShowPools,
        "STATS" => AdminCommand::ShowStats,
        "STATS_TOTALS" => AdminCommand::ShowStatsTotals,
        "STATS_AVERAGES" => AdminCommand::ShowStatsAverages,
        "TOTALS" => AdminCommand::ShowTotals,
        "DATABASES" => AdminCommand::ShowDatabases,
        "CLIENTS" => AdminCommand::ShowClients,
        "SERVERS" => AdminCommand::ShowServers,
        "CONFIG" => AdminCommand::ShowConfig,
        "VERSION" => AdminCommand::ShowVersion,
        "LISTS" => AdminCommand::ShowLists,
        "HELP" => AdminCommand::ShowHelp,
        "REPLICAS" => AdminCommand::ShowReplicas,
        "USERS" => AdminCommand::ShowUsers,
        "STATE" => AdminCommand::ShowState,
        s if UNSUPPORTED_SHOW.contains(&s) => {
            return Err(AdminError::Unsupported(format!("SHOW {s}")))
        }
        s => return Err(AdminError::UnknownShow(echo(s))),
    };
    Ok(cmd)
}

/// `name = value` or `name TO value`, the value a bare word or a
/// single-quoted string (`''` inside stands for `'`). The name is lower-cased,
/// as setting names are.
fn parse_set(rest: &str) -> Option<(String, String)> {
    let rest = rest.trim();
    let (name, value) = match rest.split_once('=') {
        Some((name, value)) => (name.trim(), value.trim()),
        None => {
            let (name, after) = rest.split_once(char::is_whitespace)?;
            let (to, value) = after.trim_start().split_once(char::is_whitespace)?;
            if !to.eq_ignore_ascii_case("to") {
                return None;
            }
            (name, value.trim())
        }
    };
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if name.is_empty() || !name.chars().all(is_name_char) {
        return None;
    }
    let value = match value.strip_prefix('\'') {
        Some(quoted) => {
            let inner = quoted.strip_suffix('\'')?;
            if inner.replace("''", "").contains('\'') {
                return None;
            }
            inner.replace("''", "'")
        }
        None if value.is_empty() || value.contains(char::is_whitespace) => return None,
        None => value.to_string(),
    };
    Some((name.to_ascii_lowercase(), value))
}

/// `[db]` → `Some(db)`; none or more → `None`.
fn one_database(args: &[Token]) -> Option<String> {
    match args {
        [db] => Some(db.text().to_string()),
        _ => None,
    }
}

/// A client id as `SHOW CLIENTS` shows it in `ptr` (`0x…`), or in decimal.
fn client_id(args: &[Token]) -> Option<i32> {
    let [Token::Word(id)] = args else {
        return None;
    };
    match id.strip_prefix("0x").or_else(|| id.strip_prefix("0X")) {
        Some(hex) => i32::from_str_radix(hex, 16).ok(),
        None => id.parse().ok(),
    }
    .filter(|id| *id > 0)
}

/// `[]` → `Some(None)`, `[db]` → `Some(Some(db))`, anything longer → `None`.
fn optional_database(args: &[Token]) -> Option<Option<String>> {
    match args {
        [] => Some(None),
        [db] => Some(Some(db.text().to_string())),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
}

impl Token {
    /// The upper-cased word, if this token can be a keyword at all.
    fn keyword(&self) -> Option<String> {
        match self {
            Token::Word(w) => Some(w.to_ascii_uppercase()),
            Token::Quoted(_) => None,
        }
    }

    fn text(&self) -> &str {
        match self {
            Token::Word(w) | Token::Quoted(w) => w,
        }
    }
}

/// Splits on whitespace; `"..."` is one token with `""` standing for `"`, as
/// in SQL identifiers. One pass over the input, so bounded by its length.
fn tokenize(text: &str) -> Result<Vec<Token>, AdminError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut ident = String::new();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        ident.push('"');
                    }
                    Some('"') => break,
                    Some(ch) => ident.push(ch),
                    None => return Err(AdminError::UnterminatedQuote),
                }
            }
            tokens.push(Token::Quoted(ident));
        } else {
            let mut word = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '"' {
                    break;
                }
                word.push(ch);
                chars.next();
            }
            tokens.push(Token::Word(word));
        }
    }
    Ok(tokens)
}

/// Client text shortened for an error message, cut on a character boundary.
fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<AdminCommand, AdminError> {
        AdminCommand::parse(sql)
    }

    #[test]
    fn show_commands_ignore_case_whitespace_and_semicolons() {
        for sql in [
            "SHOW POOLS",
            "show pools;",
            "  Show\tPools ;; ",
            "SHOW POOLS;\n",
        ] {
            assert_eq!(parse(sql), Ok(AdminCommand::ShowPools), "{sql:?}");
        }
        let cases = [
            ("show stats", AdminCommand::ShowStats),
            ("show stats_totals", AdminCommand::ShowStatsTotals),
            ("SHOW STATS_AVERAGES;", AdminCommand::ShowStatsAverages),
            ("show totals", AdminCommand::ShowTotals),
            ("show databases", AdminCommand::ShowDatabases),
            ("show clients", AdminCommand::ShowClients),
            ("show servers", AdminCommand::ShowServers),
            ("show config", AdminCommand::ShowConfig),
            ("show version", AdminCommand::ShowVersion),
            ("show lists", AdminCommand::ShowLists),
            ("show users", AdminCommand::ShowUsers),
            ("SHOW STATE;", AdminCommand::ShowState),
            ("show help", AdminCommand::ShowHelp),
            ("show replicas", AdminCommand::ShowReplicas),
            ("reload;", AdminCommand::Reload),
            ("SHUTDOWN", AdminCommand::Shutdown),
        ];
        for (sql, want) in cases {
            assert_eq!(parse(sql), Ok(want), "{sql:?}");
        }
    }

    #[test]
    fn pause_and_resume_take_an_optional_database() {
        assert_eq!(parse("PAUSE"), Ok(AdminCommand::Pause(None)));
        assert_eq!(
            parse("pause MyDb;"),
            Ok(AdminCommand::Pause(Some("MyDb".into())))
        );
        assert_eq!(
            parse(r#"RESUME "odd ""name"";""#),
            Ok(AdminCommand::Resume(Some(r#"odd "name";"#.into())))
        );
        assert_eq!(parse("resume;"), Ok(AdminCommand::Resume(None)));
        assert!(matches!(
            parse("PAUSE a b"),
            Err(AdminError::InvalidCommand(_))
        ));
    }

    #[test]
    fn reconnect_and_wait_close_take_an_optional_database_disable_and_enable_one() {
        assert_eq!(parse("RECONNECT"), Ok(AdminCommand::Reconnect(None)));
        assert_eq!(
            parse("reconnect db1;"),
            Ok(AdminCommand::Reconnect(Some("db1".into())))
        );
        assert_eq!(parse("wait_close"), Ok(AdminCommand::WaitClose(None)));
        assert_eq!(
            parse("WAIT_CLOSE db1"),
            Ok(AdminCommand::WaitClose(Some("db1".into())))
        );
        assert_eq!(
            parse("DISABLE db1"),
            Ok(AdminCommand::Disable("db1".into()))
        );
        assert_eq!(parse("enable db1;"), Ok(AdminCommand::Enable("db1".into())));
        for sql in ["DISABLE", "ENABLE", "DISABLE a b", "RECONNECT a b"] {
            assert!(
                matches!(parse(sql), Err(AdminError::InvalidCommand(_))),
                "{sql:?}"
            );
        }
        for cmd in ["RECONNECT", "WAIT_CLOSE", "DISABLE x", "ENABLE x"] {
            let parsed = parse(cmd).unwrap();
            assert!(!parsed.is_show(), "{cmd}: admin users only");
            assert_eq!(parsed.command_tag(), cmd.split(' ').next().unwrap());
        }
    }

    #[test]
    fn unknown_commands_are_syntax_errors() {
        let err = parse("SELECT 1;").unwrap_err();
        assert_eq!(err.sqlstate(), "42601");
        assert_eq!(
            err.to_string(),
            "invalid command 'SELECT 1', use SHOW HELP;"
        );

        let err = parse("SHOW NONSENSE").unwrap_err();
        assert_eq!(err, AdminError::UnknownShow("NONSENSE".into()));
        assert_eq!(err.sqlstate(), "42601");

        for sql in ["SHOW", "SHOW POOLS extra", "RELOAD now", "\"SHOW\" POOLS"] {
            assert!(
                matches!(parse(sql), Err(AdminError::InvalidCommand(_))),
                "{sql:?}"
            );
        }
        assert_eq!(parse(" ;; "), Err(AdminError::Empty));
        assert_eq!(parse("PAUSE \"db"), Err(AdminError::UnterminatedQuote));
    }

    #[test]
    fn known_pgbouncer_commands_pgrelay_lacks_are_unsupported() {
        let err = parse("suspend").unwrap_err();
        assert_eq!(err, AdminError::Unsupported("SUSPEND".into()));
        assert_eq!(err.sqlstate(), "0A000");
        assert_eq!(
            parse("show fds").unwrap_err(),
            AdminError::Unsupported("SHOW FDS".into())
        );
    }

    #[test]
    fn set_takes_a_name_and_a_word_or_a_quoted_value() {
        let set = |name: &str, value: &str| AdminCommand::Set {
            name: name.into(),
            value: value.into(),
        };
        assert_eq!(
            parse("SET default_pool_size = 30;"),
            Ok(set("default_pool_size", "30"))
        );
        assert_eq!(
            parse("set Default_Pool_Size=30"),
            Ok(set("default_pool_size", "30"))
        );
        assert_eq!(
            parse("SET query_wait_timeout TO 5s"),
            Ok(set("query_wait_timeout", "5s"))
        );
        assert_eq!(
            parse("SET server_reset_query = 'DISCARD ALL; SELECT ''x\"y'''"),
            Ok(set("server_reset_query", "DISCARD ALL; SELECT 'x\"y'"))
        );
        assert_eq!(parse("SET admin_users = ''"), Ok(set("admin_users", "")));
        assert_eq!(parse("SET x = 'a'").unwrap().command_tag(), "SET");
        for bad in [
            "SET",
            "SET default_pool_size",
            "SET default_pool_size =",
            "SET = 30",
            "SET a b = 1",
            "SET x = two words",
            "SET x = 'open",
            "SET x = 'a'b'",
            "SET x TOO 1",
        ] {
            assert_eq!(parse(bad), Err(AdminError::BadSet), "{bad:?}");
            assert_eq!(AdminError::BadSet.sqlstate(), "42601");
        }
        assert!(matches!(
            parse("SETTINGS"),
            Err(AdminError::InvalidCommand(_))
        ));
        assert!(!set("a", "b").is_show(), "stats users may not SET");
    }

    #[test]
    fn kill_takes_a_database_and_kill_client_an_id_as_listed() {
        assert_eq!(parse("KILL app;"), Ok(AdminCommand::Kill("app".into())));
        assert_eq!(parse("kill_client 0x1f"), Ok(AdminCommand::KillClient(31)));
        assert_eq!(parse("KILL_CLIENT 31"), Ok(AdminCommand::KillClient(31)));
        for sql in [
            "KILL",
            "KILL a b",
            "KILL_CLIENT",
            "KILL_CLIENT 0xzz",
            "KILL_CLIENT -3",
        ] {
            assert!(
                matches!(parse(sql), Err(AdminError::InvalidCommand(_))),
                "{sql:?}"
            );
        }
        assert!(!parse("KILL app").unwrap().is_show(), "admin users only");
    }

    #[test]
    fn long_input_is_echoed_shortened() {
        let long = "x".repeat(500);
        let AdminError::InvalidCommand(echoed) = parse(&long).unwrap_err() else {
            panic!("expected InvalidCommand");
        };
        assert_eq!(echoed.len(), ECHO_LIMIT + 3);
        // Multi-byte characters are cut on a boundary, not mid-character.
        let wide = "é".repeat(100);
        let AdminError::InvalidCommand(echoed) = parse(&wide).unwrap_err() else {
            panic!("expected InvalidCommand");
        };
        assert_eq!(echoed.chars().count(), ECHO_LIMIT + 3);
    }

    #[test]
    fn only_show_commands_are_read_only() {
        assert!(AdminCommand::ShowConfig.is_show());
        assert!(AdminCommand::ShowReplicas.is_show());
        for cmd in [
            AdminCommand::Reload,
            AdminCommand::Pause(None),
            AdminCommand::Resume(Some("db".into())),
            AdminCommand::Shutdown,
        ] {
            assert!(!cmd.is_show(), "{cmd:?}");
            assert_ne!(cmd.command_tag(), "SHOW");
        }
        assert_eq!(AdminCommand::Pause(None).command_tag(), "PAUSE");
        assert_eq!(AdminCommand::ShowPools.command_tag(), "SHOW");
    }
}
