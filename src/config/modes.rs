//! Small enumerated settings shared by several layers (auth, TLS, pooling).
//! They live in `config` (a leaf) so every layer can name them.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// Error for a setting value that is not one of the accepted words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {setting}: expected one of {expected}")]
pub struct InvalidMode {
    pub setting: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident, $setting:literal, { $($variant:ident => $word:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The canonical configuration word for this value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }
        }

        impl FromStr for $name {
            type Err = InvalidMode;
            fn from_str(s: &str) -> Result<Self, InvalidMode> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($word $(| $alias)* => Ok(Self::$variant),)+
                    _ => Err(InvalidMode {
                        setting: $setting,
                        value: s.to_string(),
                        expected: concat!($($word, " "),+),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

word_enum!(
    /// How clients authenticate to pgrelay (`auth_type`).
    AuthType, "auth_type", {
    Trust => "trust",
    Plain => "plain",
    Md5 => "md5",
    ScramSha256 => "scram-sha-256",
});

word_enum!(
    /// When a server connection is returned to the pool (`pool_mode`).
    PoolMode, "pool_mode", {
    Session => "session",
    Transaction => "transaction",
    Statement => "statement",
});

word_enum!(
    /// TLS policy, with libpq's meaning of each word (`server_tls_sslmode`, `client_tls_sslmode`).
    SslMode, "sslmode", {
    Disable => "disable",
    Allow => "allow",
    Prefer => "prefer",
    Require => "require",
    VerifyCa => "verify-ca",
    VerifyFull => "verify-full",
});

word_enum!(
    /// Log line format (`log_format`, pgrelay's own setting).
    LogFormat, "log_format", {
    Text => "text",
    Json => "json",
});

word_enum!(
    /// How the runtime's threads share the clients (`scheduler`, pgrelay's own).
    Scheduler, "scheduler", {
    PerCore => "per_core" | "per-core",
    WorkStealing => "work_stealing" | "work-stealing",
});

// `word_enum!` writes the enum, so `#[default]` cannot mark a variant.
#[allow(clippy::derivable_impls)]
impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::PerCore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_words_case_insensitively() {
        assert_eq!(
            "SCRAM-SHA-256".parse::<AuthType>().unwrap(),
            AuthType::ScramSha256
        );
        assert_eq!(
            "transaction".parse::<PoolMode>().unwrap(),
            PoolMode::Transaction
        );
        assert_eq!(
            " verify-full ".parse::<SslMode>().unwrap(),
            SslMode::VerifyFull
        );
    }

    #[test]
    fn rejects_unknown_words_with_the_choices() {
        let err = "sometimes".parse::<SslMode>().unwrap_err();
        assert_eq!(err.setting, "sslmode");
        assert!(err.to_string().contains("verify-ca"), "{err}");
    }
}
