//! How a user's credential is stored: a password, an MD5 hash, or a SCRAM secret.

use std::fmt;

use super::crypto::{self, Key};

/// PostgreSQL's default SCRAM iteration count (`scram_iterations`).
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;
/// Salt length PostgreSQL uses for new SCRAM secrets.
pub const DEFAULT_SCRAM_SALT_LEN: usize = 16;

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// A user's credential as found in the userlist (or fetched by `auth_query`).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    /// `"md5"` followed by 32 lowercase hex digits: md5(password || user).
    Md5(String),
    Scram(ScramSecret),
}

impl Secret {
    /// Classifies a stored secret the way PostgreSQL does: a well-formed MD5 hash or
    /// SCRAM secret is a hash, anything else is a plain password.
    pub fn from_stored(text: &str) -> Secret {
        if is_md5_hash(text) {
            Secret::Md5(text.to_ascii_lowercase())
        } else if let Some(scram) = ScramSecret::parse(text) {
            Secret::Scram(scram)
        } else {
            Secret::Plain(text.to_string())
        }
    }

    /// Short name of the storage kind, safe to log.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain",
            Secret::Md5(_) => "md5",
            Secret::Scram(_) => "scram-sha-256",
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(***)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(***)"),
            Secret::Scram(s) => write!(f, "Secret::Scram({s:?})"),
        }
    }
}

pub(crate) fn is_md5_hash(text: &str) -> bool {
    text.len() == 35 && text.starts_with("md5") && text[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A SCRAM-SHA-256 verifier as PostgreSQL stores it in `pg_authid.rolpassword`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(SCRAM_PREFIX)?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|&i| i > 0)?;
        let salt = crypto::unb64(salt).filter(|s| !s.is_empty())?;
        Some(ScramSecret {
            iterations,
            salt,
            stored_key: crypto::unb64_key(stored_key)?,
            server_key: crypto::unb64_key(server_key)?,
        })
    }

    /// Derives the verifier for `password` (SASLprep'd, as PostgreSQL does).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = crypto::salted_password(password, salt, iterations);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: crypto::sha256(&crypto::client_key(&salted)),
            server_key: crypto::server_key(&salted),
        }
    }

    /// Like [`ScramSecret::from_password`] with a fresh random salt and PostgreSQL's defaults.
    pub fn from_password_random_salt(password: &str) -> Self {
        let mut salt = [0u8; DEFAULT_SCRAM_SALT_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        Self::from_password(password, &salt, DEFAULT_SCRAM_ITERATIONS)
    }

    /// The text form PostgreSQL stores (inverse of [`ScramSecret::parse`]).
    /// Deliberately not `Display`, so it cannot slip into a log line by accident.
    pub fn to_stored_text(&self) -> String {
        format!(
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            crypto::b64(&self.salt),
            crypto::b64(&self.stored_key),
            crypto::b64(&self.server_key)
        )
    }

    pub(crate) fn stored_key(&self) -> &Key {
        &self.stored_key
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Iterations are public in the protocol anyway; salt and keys stay hidden.
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &"***")
            .field("stored_key", &"***")
            .field("server_key", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_stored_text_format() {
        let secret = ScramSecret::from_password("s3cret", b"0123456789abcdef", 4096);
        let text = secret.to_stored_text();
        assert!(
            text.starts_with("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$"),
            "{text}"
        );
        assert_eq!(ScramSecret::parse(&text), Some(secret));
    }

    #[test]
    fn parses_a_secret_computed_by_postgres_protocol() {
        // postgres_protocol implements PostgreSQL's own secret format byte for byte.
        let text = postgres_protocol::password::scram_sha_256(b"pencil");
        let parsed = ScramSecret::parse(&text).expect("valid secret");
        assert_eq!(parsed.iterations, 4096);
        assert_eq!(parsed.salt.len(), 16);
        let ours = ScramSecret::from_password("pencil", &parsed.salt, parsed.iterations);
        assert_eq!(ours, parsed);
        assert_eq!(ours.to_stored_text(), text);
    }

    #[test]
    fn parses_a_literal_postgres_secret() {
        // RFC 7677 vector in PostgreSQL's storage syntax.
        let text = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
                    WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
                    wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
        let parsed = ScramSecret::parse(text).unwrap();
        let salt = crypto::unb64("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        assert_eq!(parsed, ScramSecret::from_password("pencil", &salt, 4096));
    }

    #[test]
    fn rejects_malformed_secrets() {
        for bad in [
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB",
            "SCRAM-SHA-256$0:c2FsdA==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$x:c2FsdA==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-1$4096:c2FsdA==$a:b",
            "SCRAM-SHA-256$4096",
        ] {
            assert_eq!(ScramSecret::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn classifies_stored_secrets() {
        let md5 = "md5".to_string() + &"A".repeat(32);
        assert_eq!(
            Secret::from_stored(&md5),
            Secret::Md5(md5.to_ascii_lowercase())
        );
        assert!(matches!(Secret::from_stored("md5short"), Secret::Plain(_)));
        let scram = ScramSecret::from_password("x", b"salt", 16).to_stored_text();
        assert!(matches!(Secret::from_stored(&scram), Secret::Scram(_)));
    }

    #[test]
    fn debug_never_shows_secret_material() {
        let scram = ScramSecret::from_password("hunter2", b"NaClNaCl", 16);
        let shown = format!(
            "{:?} {:?} {:?}",
            Secret::Plain("hunter2".into()),
            Secret::Md5("md5deadbeef".into()),
            Secret::Scram(scram.clone())
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("deadbeef"), "{shown}");
        assert!(!shown.contains(&crypto::b64(&scram.stored_key)), "{shown}");
        assert!(!shown.contains(&crypto::b64(&scram.salt)), "{shown}");
        assert!(shown.contains("iterations: 16"), "{shown}");
    }
}
