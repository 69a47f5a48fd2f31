//! Statement kinds: the coarse category of a statement, used by rules and reports.

use std::fmt;
use std::str::FromStr;

/// What sort of statement a piece of SQL is. Derived from the parsed statement
/// when possible and from the leading keyword otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// `SELECT`, `VALUES`, `TABLE` (and a parenthesised query).
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    /// `COPY` in either direction.
    Copy,
    /// `CREATE`, `ALTER`, `DROP`, `COMMENT`, `SECURITY LABEL`, `IMPORT FOREIGN SCHEMA`.
    Ddl,
    Truncate,
    /// `GRANT`, `REVOKE`.
    Dcl,
    /// `BEGIN`, `START TRANSACTION`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`, `PREPARE TRANSACTION`.
    Transaction,
    /// `SET`, `RESET`, `DISCARD`.
    Set,
    Show,
    Explain,
    /// `CALL`, `DO`.
    Call,
    /// `LOCK TABLE`.
    Lock,
    /// `VACUUM`, `ANALYZE`, `CLUSTER`, `REINDEX`, `REFRESH MATERIALIZED VIEW`, `CHECKPOINT`.
    Maintenance,
    /// `DECLARE`, `FETCH`, `MOVE`, `CLOSE`.
    Cursor,
    /// SQL-level `PREPARE`, `EXECUTE`, `DEALLOCATE`.
    Prepared,
    /// `LISTEN`, `UNLISTEN`, `NOTIFY`.
    Notify,
    /// A pgrelay command answered by pgrelay itself (`SET/RESET/SHOW pgrelay.route`).
    PgRelay,
    /// A recognised keyword with no better category (`LOAD`, …).
    Other,
    /// Nothing recognisable (unparsable text with an unknown leading word).
    Unknown,
}

const ALL_KINDS: [StatementKind; 22] = [
    StatementKind::Select,
    StatementKind::Insert,
    StatementKind::Update,
    StatementKind::Delete,
    StatementKind::Merge,
    StatementKind::Copy,
    StatementKind::Ddl,
    StatementKind::Truncate,
    StatementKind::Dcl,
    StatementKind::Transaction,
    StatementKind::Set,
    StatementKind::Show,
    StatementKind::Explain,
    StatementKind::Call,
    StatementKind::Lock,
    StatementKind::Maintenance,
    StatementKind::Cursor,
    StatementKind::Prepared,
    StatementKind::Notify,
    StatementKind::PgRelay,
    StatementKind::Other,
    StatementKind::Unknown,
];

impl StatementKind {
    /// The lower-case name used in rule files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Merge => "merge",
            Self::Copy => "copy",
            Self::Ddl => "ddl",
            Self::Truncate => "truncate",
            Self::Dcl => "dcl",
            Self::Transaction => "transaction",
            Self::Set => "set",
            Self::Show => "show",
            Self::Explain => "explain",
            Self::Call => "call",
            Self::Lock => "lock",
            Self::Maintenance => "maintenance",
            Self::Cursor => "cursor",
            Self::Prepared => "prepared",
            Self::Notify => "notify",
            Self::PgRelay => "pgrelay",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }

    /// Whether a statement of this kind can ever be classified as a read.
    /// Rules that send statements to replicas may only name these kinds.
    pub fn can_be_read(self) -> bool {
        matches!(
            self,
            Self::Select | Self::Show | Self::Explain | Self::Copy | Self::Transaction
        )
    }

    /// Category for a statement's leading keyword (already upper-cased), and the
    /// keyword after it for the two-word cases.
    pub fn from_leading_words(first: &str, second: Option<&str>) -> Self {
        match first {
            "SELECT" | "VALUES" | "TABLE" | "WITH" => Self::Select,
            "INSERT" => Self::Insert,
            "UPDATE" => Self::Update,
            "DELETE" => Self::Delete,
            "MERGE" => Self::Merge,
            "COPY" => Self::Copy,
            "CREATE" | "ALTER" | "DROP" | "COMMENT" | "SECURITY" | "IMPORT" => Self::Ddl,
            "TRUNCATE" => Self::Truncate,
            "GRANT" | "REVOKE" => Self::Dcl,
            "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT"
            | "RELEASE" => Self::Transaction,
            "PREPARE" if second == Some("TRANSACTION") => Self::Transaction,
            "PREPARE" | "EXECUTE" | "DEALLOCATE" => Self::Prepared,
            "SET" | "RESET" | "DISCARD" => Self::Set,
            "SHOW" => Self::Show,
            "EXPLAIN" => Self::Explain,
            "CALL" | "DO" => Self::Call,
            "LOCK" => Self::Lock,
            "VACUUM" | "ANALYZE" | "ANALYSE" | "CLUSTER" | "REINDEX" | "REFRESH" | "CHECKPOINT" => {
                Self::Maintenance
            }
            "DECLARE" | "FETCH" | "MOVE" | "CLOSE" => Self::Cursor,
            "LISTEN" | "UNLISTEN" | "NOTIFY" => Self::Notify,
            "LOAD" => Self::Other,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule-file word was not a statement kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl FromStr for StatementKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        let lower = s.trim().to_ascii_lowercase();
        ALL_KINDS
            .iter()
            .copied()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// Every kind name, for error messages.
pub fn kind_names() -> String {
    ALL_KINDS
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in ALL_KINDS {
            assert_eq!(kind.as_str().parse::<StatementKind>(), Ok(kind));
        }
        assert!("selects".parse::<StatementKind>().is_err());
    }

    #[test]
    fn leading_words_map_to_kinds() {
        assert_eq!(
            StatementKind::from_leading_words("PREPARE", Some("TRANSACTION")),
            StatementKind::Transaction
        );
        assert_eq!(
            StatementKind::from_leading_words("PREPARE", Some("P")),
            StatementKind::Prepared
        );
        assert_eq!(
            StatementKind::from_leading_words("FROB", None),
            StatementKind::Unknown
        );
    }
}
